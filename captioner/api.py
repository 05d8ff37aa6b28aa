"""The Python API: `load_captioner()` returns a ready model with its preprocessing.

    from captioner import load_captioner
    cap = load_captioner()                 # the embedded default model
    [c] = cap.caption(["photo.jpg"])
    c.text, c.tokens, c.score, c.alphas    # alphas: (len(tokens), G, G), each map sums to 1
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from captioner.checkpoint import CheckpointError, LoadedModel, load_model
from captioner.config import Config, ConfigError
from captioner.image.preprocess import Preprocess, preprocess_for
from captioner.image.loading import load_image
from captioner.model.caption_model import CaptionModel
from captioner.words.search import beam_search
from captioner.words.vocab import Vocab

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default.pt"
ENCODE_CHUNK_CPU = 4


@dataclass(frozen=True)
class Caption:
    text: str
    tokens: list[str]  # without <start> and <end>
    score: float  # log-probability of the caption under the model
    alphas: np.ndarray  # (len(tokens), G, G), one attention map per word


def resolve_device(device: str | torch.device | None, field: str = "--device") -> torch.device:
    """None or "auto": CUDA when available, else CPU. Errors name `field`, where the value came from."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{field} {device!r}: not a device (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"{field} {device!r}: no such CUDA device on this machine")
    return dev


class Captioner:
    """A model, its vocabulary and its preprocessing, on one device."""

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.model: CaptionModel = loaded.model.to(device).eval()
        self.vocab: Vocab = loaded.vocab
        self.config: Config = loaded.config
        self.checkpoint_info = {k: v for k, v in loaded.checkpoint.items()
                                if k in ("epoch", "step", "best_score", "metric")}
        self.preprocess: Preprocess = preprocess_for(loaded.config.model)
        self.device = device

    @property
    def grid(self) -> int:
        return self.config.model.grid

    def caption_tensors(self, images: torch.Tensor, *, beam_size: int = 3, max_len: int = 50,
                        length_penalty: float = 0.0) -> list[Caption]:
        """images (B, 3, S, S), already preprocessed -> one Caption each (a single batch)."""
        G = self.grid
        with torch.inference_mode():
            # On a CPU the CNN runs on a few images at a time: its activations at 448 px are
            # ~50 MB per image, and chunks of 4 halve peak memory for 32 images (bench/).
            chunk = ENCODE_CHUNK_CPU if self.device.type == "cpu" else len(images)
            features = torch.cat([self.model.encode(part.to(self.device))
                                  for part in images.split(chunk)])  # (B, P, E)
            hyps = beam_search(self.model.decoder, features, start_id=self.vocab.start_id,
                               end_id=self.vocab.end_id, pad_id=self.vocab.pad_id,
                               beam_size=beam_size, max_len=max_len, length_penalty=length_penalty)
        out = []
        for (best,) in hyps:
            words = self.vocab.decode(best.tokens)
            alphas = best.alphas.numpy().reshape(len(best.tokens), G, G)  # (T, G, G)
            out.append(Caption(" ".join(words), words, best.score, alphas))
        return out

    def caption(self, images: Sequence[str | Path | Image.Image], *, beam_size: int = 3,
                max_len: int = 50, batch_size: int = 16, length_penalty: float = 0.0) -> list[Caption]:
        """Caption paths or PIL images, batched. Unreadable files raise `ImageLoadError`."""
        results: list[Caption] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            batch = torch.stack([self.preprocess(load_image(im)) for im in chunk])  # (B, 3, S, S)
            results += self.caption_tensors(batch, beam_size=beam_size, max_len=max_len,
                                            length_penalty=length_penalty)
        return results


def load_captioner(checkpoint: str | Path | None = None, device: str | torch.device | None = None) -> Captioner:
    """Load a checkpoint (None: the embedded default model) onto `device` (None: auto)."""
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if checkpoint is None and not path.is_file():
        raise CheckpointError(f"{path}: the embedded default model is missing from this install")
    dev = resolve_device(device)
    return Captioner(load_model(path, map_location="cpu"), dev)
