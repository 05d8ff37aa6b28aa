"""Caption annotations in, padded batches out.

Three on-disk layouts are understood, all turned into the same :class:`ImageRecord` list:

- ``coco``: the official ``captions_*.json`` (``images`` + ``annotations[].caption``), read
  through ``pycocotools``;
- ``karpathy``: Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` with the standard
  train/val/test/restval splits and pre-tokenised sentences;
- ``folder``: a plain directory of images without captions (captioning new photos).

Records say *what* to train on; pixels come from a separate ``source`` indexed like the records
(an :class:`ImageSource` that decodes files, or a feature cache), so the same datasets serve
end-to-end training and training on precomputed encoder features. A file that fails to load
never crashes a DataLoader worker: the item comes back with ``image=None`` and the collate
function drops it and reports it in ``skipped``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from captioner.image.loading import ImageLoadError, list_images, load_image
from captioner.words.vocab import Vocab, tokenize

__all__ = [
    "AnnotationError",
    "CaptionBatch",
    "CaptionDataset",
    "CaptionItem",
    "EvalBatch",
    "EvalDataset",
    "EvalItem",
    "ImageRecord",
    "ImageSource",
    "KARPATHY_SPLITS",
    "check_images",
    "collate_captions",
    "collate_eval",
    "detect_format",
    "holdout_split",
    "load_records",
    "records_tokens",
    "select_split",
]

#: Split names used by Karpathy's files; "restval" is the part of COCO val2014 used for training.
KARPATHY_SPLITS: tuple[str, ...] = ("train", "val", "test", "restval")


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file, field and reason."""


@dataclass(frozen=True)
class ImageRecord:
    """One image and its reference captions.

    ``captions`` keeps the raw text (for the evaluation references and for display);
    ``tokens`` holds the matching lower-cased token lists used to build the vocabulary and
    train, one per caption.
    """

    image_id: int
    path: Path
    split: str
    captions: tuple[str, ...] = ()
    tokens: tuple[tuple[str, ...], ...] = ()


# ----------------------------------------------------------------------------- reading files


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a directory, expected a JSON annotation file") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _format_of(obj: Any, path: Path) -> str:
    if not isinstance(obj, dict):
        raise AnnotationError(f"{path}: expected a JSON object at the top level, got {type(obj).__name__}")
    if "annotations" in obj:
        anns, images = obj["annotations"], obj.get("images")
        if not isinstance(images, list):
            raise AnnotationError(
                f"{path}: images missing or not a list (COCO format has 'images' and 'annotations')"
            )
        if not isinstance(anns, list):
            raise AnnotationError(f"{path}: annotations must be a list, got {type(anns).__name__}")
        first = anns[0] if anns else {}
        if anns and not (isinstance(first, dict) and "caption" in first):
            instances = isinstance(first, dict) and "bbox" in first
            hint = " (this looks like a COCO instances file, not captions)" if instances else ""
            raise AnnotationError(f"{path}: annotations[0].caption missing{hint}")
        return "coco"
    images = obj.get("images")
    if isinstance(images, list) and images and isinstance(images[0], dict) and "sentences" in images[0]:
        return "karpathy"
    if isinstance(images, list) and images:
        raise AnnotationError(
            f"{path}: images[0].sentences missing and no 'annotations' "
            "(neither Karpathy nor COCO captions format)"
        )
    raise AnnotationError(
        f"{path}: unrecognised annotation format: expected COCO captions "
        "('images' + 'annotations') or Karpathy ('images[].sentences')"
    )


def detect_format(path: str | os.PathLike) -> str:
    """``"coco"``, ``"karpathy"`` or ``"folder"`` (a directory of images); else AnnotationError."""
    p = Path(path)
    if p.is_dir():
        return "folder"
    return _format_of(_read_json(p), p)


def load_records(data: str | os.PathLike, images: str | os.PathLike | None = None) -> list[ImageRecord]:
    """Read ``data`` (annotation JSON or an image folder) into records.

    ``images`` is the directory that image paths in the JSON are relative to; it defaults to the
    directory holding the JSON file and is not used for folders. COCO records get split
    ``"train"`` (the file does not say; the caller decides) and are sorted by image id; Karpathy
    records keep the file's order and splits; folder records get split ``"test"``, image ids
    0..N-1 and no captions. Only annotations are read: use :func:`check_images` to check files.
    """
    p = Path(data)
    if p.is_dir():
        return [ImageRecord(image_id=i, path=f, split="test") for i, f in enumerate(list_images(p))]
    obj = _read_json(p)
    fmt = _format_of(obj, p)
    root = Path(images) if images is not None else p.parent
    if fmt == "coco":
        return _coco_records(obj, p, root)
    return _karpathy_records(obj, p, root)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_name(x: Any) -> bool:
    return isinstance(x, str) and bool(x)


def _require(entry: Any, where: str, fields: Sequence[tuple[str, Callable[[Any], bool], str]]) -> None:
    """Check ``entry`` is an object with each ``(key, predicate, description)`` field."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where} must be an object, got {type(entry).__name__}")
    for key, ok, want in fields:
        if key not in entry:
            raise AnnotationError(f"{where}.{key} missing")
        if not ok(entry[key]):
            raise AnnotationError(f"{where}.{key} must be {want}, got {entry[key]!r}")


_COCO_IMAGE_FIELDS = (("id", _is_int, "an integer"), ("file_name", _is_name, "a non-empty string"))
_COCO_CAPTION_FIELDS = (
    ("id", _is_int, "an integer"),
    ("image_id", _is_int, "an integer"),
    ("caption", lambda v: isinstance(v, str), "a string"),
)


def _coco_records(obj: dict, path: Path, root: Path) -> list[ImageRecord]:
    # Validate before pycocotools sees the data: its own failures are bare KeyErrors.
    ids: set[int] = set()
    for i, im in enumerate(obj["images"]):
        _require(im, f"{path}: images[{i}]", _COCO_IMAGE_FIELDS)
        if im["id"] in ids:
            raise AnnotationError(f"{path}: images[{i}].id {im['id']} is a duplicate")
        ids.add(im["id"])
    for j, ann in enumerate(obj["annotations"]):
        _require(ann, f"{path}: annotations[{j}]", _COCO_CAPTION_FIELDS)
        if ann["image_id"] not in ids:
            raise AnnotationError(f"{path}: annotations[{j}].image_id {ann['image_id']} refers to an unknown image")

    from pycocotools.coco import COCO  # deferred: only COCO files need it

    coco = COCO()
    coco.dataset = obj
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    records = []
    for image_id in sorted(coco.imgs):
        im = coco.imgs[image_id]
        captions = tuple(a["caption"].strip() for a in coco.imgToAnns.get(image_id, []))
        records.append(
            ImageRecord(
                image_id=image_id,
                path=root / im["file_name"],
                split="train",
                captions=captions,
                tokens=tuple(tuple(tokenize(c)) for c in captions),
            )
        )
    return records


_KARPATHY_IMAGE_FIELDS = (
    ("filename", _is_name, "a non-empty string"),
    ("split", lambda v: v in KARPATHY_SPLITS, f"one of {list(KARPATHY_SPLITS)}"),
    ("sentences", lambda v: isinstance(v, list), "a list"),
)


def _karpathy_records(obj: dict, path: Path, root: Path) -> list[ImageRecord]:
    records = []
    seen: dict[int, int] = {}
    for i, im in enumerate(obj["images"]):
        where = f"{path}: images[{i}]"
        _require(im, where, _KARPATHY_IMAGE_FIELDS)
        filepath = im.get("filepath", "")  # only in dataset_coco.json
        if not isinstance(filepath, str):
            raise AnnotationError(f"{where}.filepath must be a string, got {filepath!r}")
        key = "cocoid" if "cocoid" in im else "imgid"
        if key not in im:
            raise AnnotationError(f"{where}.imgid missing (and no cocoid)")
        image_id = im[key]
        if not _is_int(image_id):
            raise AnnotationError(f"{where}.{key} must be an integer, got {image_id!r}")
        if image_id in seen:
            raise AnnotationError(f"{where}.{key} {image_id} duplicates images[{seen[image_id]}]")
        seen[image_id] = i
        captions, tokens = [], []
        for k, s in enumerate(im["sentences"]):
            sw = f"{where}.sentences[{k}]"
            if not isinstance(s, dict):
                raise AnnotationError(f"{sw} must be an object, got {type(s).__name__}")
            raw, toks = s.get("raw"), s.get("tokens")
            if raw is None and toks is None:
                raise AnnotationError(f"{sw}.raw missing (and no tokens)")
            if raw is not None and not isinstance(raw, str):
                raise AnnotationError(f"{sw}.raw must be a string, got {raw!r}")
            if toks is not None and not (isinstance(toks, list) and all(isinstance(t, str) for t in toks)):
                raise AnnotationError(f"{sw}.tokens must be a list of strings")
            if toks is None:
                toks = tokenize(raw)
            else:
                toks = [t.lower() for t in toks if t.strip()]
            captions.append(raw.strip() if raw is not None else " ".join(toks))
            tokens.append(tuple(toks))
        records.append(
            ImageRecord(
                image_id=image_id,
                path=root / filepath / im["filename"],
                split=im["split"],
                captions=tuple(captions),
                tokens=tuple(tokens),
            )
        )
    return records


# ----------------------------------------------------------------------------- splits and checks


def select_split(records: Sequence[ImageRecord], split: str) -> list[ImageRecord]:
    """Records of one split; ``"train"`` includes ``"restval"`` as in the literature."""
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"select_split: unknown split {split!r}, expected one of {list(KARPATHY_SPLITS)}")
    wanted = {"train", "restval"} if split == "train" else {split}
    return [r for r in records if r.split in wanted]


def _stable_unit(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``parts`` (same on every machine/run)."""
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def holdout_split(
    records: Sequence[ImageRecord], fraction: float = 0.05, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split records into ``(train, val)`` when a dataset has no validation split (e.g. COCO json).

    An image's side depends only on ``(seed, image_id)`` ranks, not on the records' order, so
    the split is reproducible. Val gets ``round(fraction * N)`` images but at least one, and
    train keeps at least one when N >= 2. Both lists keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_split: fraction must be in (0, 1), got {fraction}")
    n = len(records)
    if n == 0:
        raise ValueError("holdout_split: no records to split")
    n_val = max(1, round(fraction * n))
    if n >= 2:
        n_val = min(n_val, n - 1)
    order = sorted(range(n), key=lambda i: (_stable_unit(seed, records[i].image_id), i))
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val


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
        pick = int(_stable_unit(self.seed, self.epoch, int(self._image_ids[r])) * (end - first))
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
