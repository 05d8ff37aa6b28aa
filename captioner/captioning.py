"""The one batch-captioning loop: images (or cached features) in, captions with their maps out.

The API, the CLI, `evaluate` and validation during training all caption through
`caption_batches`, so encoding, beam search and turning word ids into words live in one place.
A `Captioner` is a model with its vocabulary and preprocessing on one device; `load_captioner`
in `captioner.api` builds one from a checkpoint.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from captioner.config import Config
from captioner.features.encoder import default_encode_chunk, encode
from captioner.features.inference import inference_encoder
from captioner.image.loading import ImageLoadError, load_image
from captioner.image.preprocess import Preprocess, preprocess_for
from captioner.model.caption_model import CaptionModel
from captioner.model.hard_attention import DECODE_RULES
from captioner.words.search import beam_search
from captioner.words.vocab import Vocab

ImageInput = str | os.PathLike | Image.Image


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: list[str]  # without <start> and <end>
    score: float  # log-probability of the caption under the model (hard attention: given the regions read)
    alphas: np.ndarray  # (len(tokens), G, G), one attention map per word; hard attention: the region read


@dataclass(frozen=True)
class SearchOptions:
    """How captions are decoded: beam width, length limit and the final length normalisation.

    `hard_decode` is how a hard-attention model reads each word's context, deterministically:
    "argmax", the most likely region (its caption's maps are then one-hot: the region read), or
    "expectation", the alpha-weighted mean, as soft attention reads it (the authors' code does
    this at test time; the maps are alpha). Soft models ignore it.
    """

    beam_size: int = 3
    max_len: int = 50
    length_penalty: float = 0.0
    hard_decode: str = "argmax"

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {self.beam_size}")
        if self.max_len < 1:
            raise ValueError(f"max_len must be at least 1, got {self.max_len}")
        if self.hard_decode not in DECODE_RULES:
            raise ValueError(f"hard_decode must be one of {tuple(DECODE_RULES)}, got {self.hard_decode!r}")


class CaptionedBatch(NamedTuple):
    index: list[int]  # positions in the input of the captioned items
    captions: list[Caption]  # one per entry of `index`
    skipped: list[str]  # one error line per item of the batch that could not be loaded


def decode(model: CaptionModel, vocab: Vocab, features: torch.Tensor, options: SearchOptions) -> list[Caption]:
    """features (B, P, E) -> the best beam-search caption of each image, with its maps."""
    G = model.config.grid
    hyps = beam_search(model.decoder, features, start_id=vocab.start_id, end_id=vocab.end_id,
                       pad_id=vocab.pad_id, beam_size=options.beam_size, max_len=options.max_len,
                       length_penalty=options.length_penalty, hard_decode=options.hard_decode)
    out = []
    for (best,) in hyps:
        words = vocab.decode(best.tokens)
        alphas = best.alphas.numpy().reshape(len(best.tokens), G, G)  # (T, G, G)
        out.append(Caption(" ".join(words), words, best.score, alphas))
    return out


def caption_batches(model: CaptionModel, vocab: Vocab, batches: Iterable[Any], *, options: SearchOptions,
                    device: torch.device, from_features: bool = False,
                    encode_chunk: int | None = None) -> Iterator[CaptionedBatch]:
    """Caption each batch (anything with `images` (B, ...), `index` (B,) and `skipped`, such as
    `collate_eval`'s), lazily: a folder of any size streams through in constant memory.

    `from_features=True` takes `images` as region features (B, P, E) from the feature cache.
    The model is in eval mode while captioning and gets its previous mode back afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            index = batch.index.tolist()
            captions: list[Caption] = []
            if index:
                with torch.inference_mode():
                    x = batch.images.to(device)
                    features = x if from_features else encode(model.encoder, x, chunk=encode_chunk)  # (B, P, E)
                    captions = decode(model, vocab, features, options)
            yield CaptionedBatch(index, captions, list(batch.skipped))
    finally:
        model.train(was_training)


class _Item(NamedTuple):
    image: torch.Tensor | None  # (3, S, S), None when the file could not be read
    index: int
    error: ImageLoadError | None = None


class _Batch(NamedTuple):
    images: torch.Tensor  # (B, 3, S, S)
    index: torch.Tensor  # (B,) positions in the input
    skipped: list[str]
    failed: list[tuple[int, ImageLoadError]]  # position and error of each unreadable image


def _collate(items: Sequence[_Item]) -> _Batch:
    kept = [it for it in items if it.image is not None]
    failed = [(it.index, it.error) for it in items if it.error is not None]
    images = torch.stack([it.image for it in kept]) if kept else torch.zeros(0)
    return _Batch(images, torch.tensor([it.index for it in kept], dtype=torch.long),
                  [str(err) for _, err in failed], failed)


class _Images(Dataset):
    """Paths or PIL images -> preprocessed tensors; an unreadable file is an item with its error."""

    def __init__(self, sources: Sequence[ImageInput], preprocess: Preprocess) -> None:
        self.sources, self.preprocess = sources, preprocess

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int) -> _Item:
        try:
            return _Item(self.preprocess(load_image(self.sources[i])), i)
        except ImageLoadError as err:
            return _Item(None, i, err)


class CaptionResult(NamedTuple):
    index: int  # position in the input
    caption: Caption | None  # None when the image could not be read
    error: ImageLoadError | None = None  # why, naming the file


class Captioner:
    """A model, its vocabulary and its preprocessing, on one device."""

    def __init__(self, model: CaptionModel, vocab: Vocab, config: Config, device: torch.device, *,
                 checkpoint_info: dict[str, Any] | None = None, encode_chunk: int | None = None,
                 engine: str | None = "auto") -> None:
        """Takes over `model` for inference: its encoder becomes `inference_encoder(engine)`'s
        forward-only copy (BatchNorms folded; OpenVINO or ONNX Runtime on a CPU where installed, with
        "auto"); `engine=None` keeps the encoder as it is."""
        if engine is not None:
            model.encoder = inference_encoder(model.encoder, image_size=config.model.image_size,
                                              device=device, engine=engine)
        self.model = model.to(device).eval()
        self.vocab = vocab
        self.config = config
        self.device = device
        self.checkpoint_info = dict(checkpoint_info or {})
        self.preprocess: Preprocess = preprocess_for(config.model)
        self.encode_chunk = (encode_chunk if encode_chunk is not None
                             else default_encode_chunk(device, config.model.backbone,
                                                  getattr(self.model.encoder, "engine", "torch")))

    @property
    def grid(self) -> int:
        return self.config.model.grid

    def caption_batches(self, batches: Iterable[Any], options: SearchOptions, *,
                        from_features: bool = False) -> Iterator[CaptionedBatch]:
        """`caption_batches` with this captioner's model, vocabulary and device."""
        return caption_batches(self.model, self.vocab, batches, options=options, device=self.device,
                               from_features=from_features, encode_chunk=self.encode_chunk)

    def caption_tensors(self, images: torch.Tensor, *, beam_size: int = 3, max_len: int = 50,
                        length_penalty: float = 0.0, hard_decode: str = "argmax") -> list[Caption]:
        """images (B, 3, S, S), already preprocessed -> one Caption each (a single batch).
        `hard_decode`: see `SearchOptions`."""
        batch = _Batch(images, torch.arange(len(images)), [], [])
        [done] = self.caption_batches([batch], SearchOptions(beam_size, max_len, length_penalty, hard_decode))
        return done.captions

    def caption_iter(self, images: Sequence[ImageInput], *, beam_size: int = 3, max_len: int = 50,
                     batch_size: int = 16, length_penalty: float = 0.0, num_workers: int = 0,
                     hard_decode: str = "argmax") -> Iterator[CaptionResult]:
        """Caption paths or PIL images in batches and yield them in input order as they are done.
        An image that cannot be read gives a result with its error; the others are captioned."""
        loader = DataLoader(_Images(images, self.preprocess), batch_size=batch_size,
                            num_workers=num_workers, collate_fn=_collate)
        options = SearchOptions(beam_size, max_len, length_penalty, hard_decode)
        for batch in loader:
            [done] = self.caption_batches([batch], options)
            results: dict[int, CaptionResult] = {i: CaptionResult(i, c) for i, c in zip(done.index, done.captions)}
            results |= {i: CaptionResult(i, None, err) for i, err in batch.failed}
            yield from (results[i] for i in sorted(results))

    def caption(self, images: Sequence[ImageInput], *, beam_size: int = 3, max_len: int = 50,
                batch_size: int = 16, length_penalty: float = 0.0, hard_decode: str = "argmax") -> list[Caption]:
        """Caption paths or PIL images, batched. An unreadable file raises `ImageLoadError`.
        `hard_decode`: see `SearchOptions`."""
        out = []
        for result in self.caption_iter(images, beam_size=beam_size, max_len=max_len, batch_size=batch_size,
                                        length_penalty=length_penalty, hard_decode=hard_decode):
            if result.error is not None:
                raise result.error
            out.append(result.caption)
        return out
