"""Records in, padded batches out: the torch side of the data.

Records (:class:`~captioner.data.annotations.ImageRecord`, read by
:mod:`captioner.data.annotations`) say *what* to train on; pixels come from a separate
``source`` indexed like the records (an :class:`ImageSource` that decodes files, or a feature
cache), so the same datasets serve end-to-end training and training on precomputed encoder
features. A file that fails to load never crashes a DataLoader worker: the item comes back with
``image=None`` and the collate function drops it and reports it in ``skipped``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from captioner.data.annotations import ImageRecord
from captioner.data.splits import stable_unit
from captioner.image.loading import ImageLoadError, load_image
from captioner.words.vocab import Vocab

__all__ = [
    "CaptionBatch",
    "CaptionDataset",
    "CaptionItem",
    "EvalBatch",
    "EvalDataset",
    "EvalItem",
    "ImageSource",
    "check_images",
    "collate_captions",
    "collate_eval",
    "records_tokens",
]


# ----------------------------------------------------------------------------- checks


def check_images(records: Sequence[ImageRecord], max_missing_fraction: float = 0.5) -> int:
    """Count records whose image file does not exist; raise if more than the allowed fraction.

    Only existence is checked, by listing each directory once (cheap even for 100k images on a
    network file system); decoding problems surface later as :class:`ImageLoadError`. A mostly
    missing image set almost always means a wrong ``images`` directory, hence the error.
    """
    listing: dict[Path, set[str]] = {}
    missing: list[Path] = []
    for r in records:
        parent = r.path.parent
        if parent not in listing:
            try:
                with os.scandir(parent) as it:
                    listing[parent] = {e.name for e in it if e.is_file()}
            except OSError:
                listing[parent] = set()
        if r.path.name not in listing[parent]:
            missing.append(r.path)
    if records and len(missing) > max_missing_fraction * len(records):
        examples = ", ".join(str(m) for m in missing[:3])
        raise FileNotFoundError(
            f"{len(missing)} of {len(records)} image files are missing (more than "
            f"{max_missing_fraction:.0%} allowed), e.g. {examples}; is the images directory right?"
        )
    return len(missing)


# ----------------------------------------------------------------------------- pixels


class ImageSource:
    """Decoded, transformed images by index: ``source[i] = transform(load_image(paths[i]))``.

    Holds only paths and the transform (no open files), so it pickles into DataLoader workers.
    """

    def __init__(
        self, paths: Sequence[str | os.PathLike], transform: Callable[[Image.Image], torch.Tensor]
    ) -> None:
        self.paths = tuple(Path(p) for p in paths)
        self.transform = transform

    @classmethod
    def from_records(
        cls, records: Sequence[ImageRecord], transform: Callable[[Image.Image], torch.Tensor]
    ) -> ImageSource:
        return cls([r.path for r in records], transform)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        """Raises :class:`ImageLoadError` for an unusable file."""
        return self.transform(load_image(self.paths[i]))


# ----------------------------------------------------------------------------- training data


class CaptionItem(NamedTuple):
    """One training example. ``image`` is None when loading failed; ``error`` then says why."""

    image: torch.Tensor | None
    caption: torch.Tensor  # (L,) int64: <start> w1 .. wn <end>
    index: int  # position in ``records``
    error: str | None = None


class CaptionBatch(NamedTuple):
    """Padded training batch. A NamedTuple so DataLoader's ``pin_memory`` handles it."""

    images: torch.Tensor  # (B, ...) e.g. (B, 3, H, W) or cached features
    captions: torch.Tensor  # (B, T) int64, padded with <pad> = 0
    lengths: torch.Tensor  # (B,) int64, real tokens incl. <start> and <end>
    mask: torch.Tensor  # (B, T) bool, True on real tokens
    index: torch.Tensor  # (B,) int64 record indices
    skipped: list[str]  # errors of the items dropped from this batch

    def to(self, device: torch.device | str, non_blocking: bool = False) -> CaptionBatch:
        """Move the tensors to ``device`` (``skipped`` stays a list)."""
        return self._replace(
            images=self.images.to(device, non_blocking=non_blocking),
            captions=self.captions.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            mask=self.mask.to(device, non_blocking=non_blocking),
            index=self.index.to(device, non_blocking=non_blocking),
        )


def _load_or_error(source: Any, i: int) -> tuple[torch.Tensor | None, str | None]:
    try:
        return source[i], None
    except ImageLoadError as e:
        warnings.warn(f"skipping image: {e}", stacklevel=3)
        return None, str(e)


def _check_source(records: Sequence[ImageRecord], source: Any) -> None:
    if hasattr(source, "__len__") and len(source) != len(records):
        raise ValueError(
            f"source has {len(source)} items but there are {len(records)} records; "
            "it must be indexed like the records"
        )


class CaptionDataset(Dataset):
    """(image, caption) pairs for teacher-forced training.

    ``policy="all"`` gives one item per caption, so an epoch visits every caption of every
    image (what the paper's training does). ``policy="one"`` gives one item per image with a
    caption drawn from ``(seed, epoch, image_id)``: call :meth:`set_epoch` before each epoch
    (not compatible with ``persistent_workers=True``, whose workers keep their old copy).

    Captions longer than ``max_len`` tokens keep their first ``max_len`` tokens, then
    ``<end>``; ``truncated`` counts them. Captions without tokens are dropped
    (``empty_captions``), and images left without captions are not served (``skipped_images``).
    Token ids are stored in one flat array, cheap to pickle into workers even for COCO.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocab,
        source: Any,
        *,
        max_len: int = 50,
        policy: str = "all",
        seed: int = 0,
    ) -> None:
        if policy not in ("all", "one"):
            raise ValueError(f"CaptionDataset: policy must be 'all' or 'one', got {policy!r}")
        if max_len < 1:
            raise ValueError(f"CaptionDataset: max_len must be >= 1, got {max_len}")
        _check_source(records, source)
        self.source = source
        self.max_len = max_len
        self.policy = policy
        self.seed = seed
        self.epoch = 0
        self.truncated = 0
        self.empty_captions = 0
        self.skipped_images = 0

        flat: list[int] = []
        cap_offsets = [0]  # caption c spans flat[cap_offsets[c]:cap_offsets[c + 1]]
        cap_record: list[int] = []  # record index of caption c
        image_records: list[int] = []  # records with >= 1 caption
        image_first: list[int] = []  # their first caption index (captions of a record are contiguous)
        for r, rec in enumerate(records):
            first = len(cap_record)
            for toks in rec.tokens:
                if not toks:
                    self.empty_captions += 1
                    continue
                if len(toks) > max_len:
                    self.truncated += 1
                    toks = toks[:max_len]
                flat.append(vocab.start_id)
                flat.extend(vocab.encode(toks))
                flat.append(vocab.end_id)
                cap_offsets.append(len(flat))
                cap_record.append(r)
            if len(cap_record) > first:
                image_records.append(r)
                image_first.append(first)
            else:
                self.skipped_images += 1
        self._flat = np.asarray(flat, dtype=np.int64)
        self._cap_offsets = np.asarray(cap_offsets, dtype=np.int64)
        self._cap_record = np.asarray(cap_record, dtype=np.int64)
        self._image_records = np.asarray(image_records, dtype=np.int64)
        self._image_first = np.asarray(image_first + [len(cap_record)], dtype=np.int64)
        # Only ids are kept (not the records with their text): less to copy into each worker.
        self._image_ids = np.asarray([rec.image_id for rec in records], dtype=np.int64)

    @property
    def num_captions(self) -> int:
        """Usable captions (after dropping empty ones)."""
        return len(self._cap_record)

    @property
    def num_images(self) -> int:
        """Images with at least one usable caption."""
        return len(self._image_records)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose captions ``policy="one"`` serves."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_captions if self.policy == "all" else self.num_images

    def caption_index(self, i: int) -> int:
        """Which caption (global caption number) item ``i`` serves in the current epoch."""
        if self.policy == "all":
            return i
        r = int(self._image_records[i])
        first, end = int(self._image_first[i]), int(self._image_first[i + 1])
        pick = int(stable_unit(self.seed, self.epoch, int(self._image_ids[r])) * (end - first))
        return first + pick

    def __getitem__(self, i: int) -> CaptionItem:
        if not -len(self) <= i < len(self):
            raise IndexError(f"CaptionDataset index {i} out of range for {len(self)} items")
        i = i % len(self)
        c = self.caption_index(i)
        r = int(self._cap_record[c])
        caption = torch.from_numpy(self._flat[self._cap_offsets[c] : self._cap_offsets[c + 1]].copy())
        image, error = _load_or_error(self.source, r)
        return CaptionItem(image=image, caption=caption, index=r, error=error)


def _stack_or_empty(images: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(images) if images else torch.zeros(0)


def collate_captions(items: Sequence[CaptionItem]) -> CaptionBatch:
    """Stack images, pad captions with 0 and build the mask; drop items whose image failed.

    If every item failed the batch is empty (B = 0) rather than an exception, so a training loop
    can just skip it.
    """
    kept = [it for it in items if it.image is not None]
    skipped = [it.error or f"item {it.index}: image missing" for it in items if it.image is None]
    lengths = torch.tensor([len(it.caption) for it in kept], dtype=torch.long)  # (B,)
    if kept:
        captions = torch.nn.utils.rnn.pad_sequence(
            [it.caption for it in kept], batch_first=True, padding_value=0
        )  # (B, T)
    else:
        captions = torch.zeros(0, 0, dtype=torch.long)
    mask = torch.arange(captions.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (B, T)
    return CaptionBatch(
        images=_stack_or_empty([it.image for it in kept]),
        captions=captions,
        lengths=lengths,
        mask=mask,
        index=torch.tensor([it.index for it in kept], dtype=torch.long),
        skipped=skipped,
    )


# ----------------------------------------------------------------------------- evaluation data


class EvalItem(NamedTuple):
    """One image to caption; references are ``records[index].captions``."""

    image: torch.Tensor | None
    index: int
    error: str | None = None


class EvalBatch(NamedTuple):
    images: torch.Tensor  # (B, ...)
    index: torch.Tensor  # (B,) int64 record indices
    skipped: list[str]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> EvalBatch:
        return self._replace(
            images=self.images.to(device, non_blocking=non_blocking),
            index=self.index.to(device, non_blocking=non_blocking),
        )


class EvalDataset(Dataset):
    """One item per image, captioned or not (evaluation, captioning a folder)."""

    def __init__(self, records: Sequence[ImageRecord], source: Any) -> None:
        _check_source(records, source)
        self.records = list(records)
        self.source = source

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> EvalItem:
        if not -len(self) <= i < len(self):
            raise IndexError(f"EvalDataset index {i} out of range for {len(self)} items")
        i = i % len(self)
        image, error = _load_or_error(self.source, i)
        return EvalItem(image=image, index=i, error=error)


def collate_eval(items: Sequence[EvalItem]) -> EvalBatch:
    """Stack the loaded images; failed ones are listed in ``skipped`` (B may be 0)."""
    kept = [it for it in items if it.image is not None]
    return EvalBatch(
        images=_stack_or_empty([it.image for it in kept]),
        index=torch.tensor([it.index for it in kept], dtype=torch.long),
        skipped=[it.error or f"item {it.index}: image missing" for it in items if it.image is None],
    )


def records_tokens(records: Iterable[ImageRecord]) -> Iterable[tuple[str, ...]]:
    """All token lists of ``records``, e.g. for ``Vocab.build(records_tokens(train))``."""
    for r in records:
        yield from r.tokens
