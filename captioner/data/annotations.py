"""The one reader of the caption datasets' JSON files.

Four file formats, each read and checked here only:

- COCO captions (``captions_*.json``: ``images`` + ``annotations[].caption``) and Karpathy
  split files (``dataset_{coco,flickr8k,flickr30k}.json``: ``images[].sentences`` with
  train/val/test/restval splits) become the same :class:`ImageRecord` list
  (:func:`load_records`), or, for scoring, reference captions by image id
  (:func:`load_references`). A plain image folder is read too, as records without captions.
- COCO instances (``instances_*.json``: boxes per image) become :class:`Instances`, with the
  (colour, shape) objects as well when the file comes from the synthetic scenes.
- COCO results (``[{image_id, caption}]``, what a captioning system submits) become candidate
  captions by image id (:func:`load_results`).

Everything is checked field by field before it is used, and every problem is an
:class:`AnnotationError` whose message starts with the file and names the field
(``images[3].sentences[0].raw``) and the reason, so a bad file gives one line that says what to
fix, never a ``KeyError`` from deep inside training or scoring. Training, evaluation and the
scores all read through here, so a file is accepted or rejected the same way everywhere.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.data.splits import KARPATHY_SPLITS, select_split
from captioner.image.loading import list_images
from captioner.words.vocab import tokenize

__all__ = [
    "AnnotationError",
    "Box",
    "ImageRecord",
    "Instances",
    "detect_format",
    "load_instances",
    "load_records",
    "load_references",
    "load_results",
]


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


@dataclass(frozen=True)
class Box:
    """One ground-truth object: COCO ``[x, y, w, h]`` in image pixels, origin at the top left."""

    category: str
    x: float
    y: float
    w: float
    h: float
    color: str | None = None  # the synthetic scenes' `color` field, where the file has one


@dataclass(frozen=True)
class Instances:
    """What a COCO instances file says about each image, read once for every score that needs it.

    ``boxes`` and ``sizes`` list every image of the file (an image may have no box); sizes are
    ``(width, height)``, the frame the boxes are in. ``objects`` holds each image's
    ``(color, shape)`` pairs when every annotation carries a ``color`` (the synthetic scenes,
    where the category name is the shape), and is None otherwise (e.g. real COCO), since
    object-level scores only make sense when the colours are known.
    """

    boxes: dict[int, list[Box]]
    sizes: dict[int, tuple[int, int]]
    objects: dict[int, list[tuple[str, str]]] | None = None


# ----------------------------------------------------------------------------- JSON and fields


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: is a directory, not a JSON file") from None
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_positive_int(x: Any) -> bool:
    return _is_int(x) and x > 0


def _is_name(x: Any) -> bool:
    return isinstance(x, str) and bool(x)


def _is_str(x: Any) -> bool:
    return isinstance(x, str)


Field = tuple[str, Callable[[Any], bool], str]  # (key, predicate, what the value must be)


def _require(entry: Any, where: str, fields: Sequence[Field]) -> None:
    """Check ``entry`` is an object with each ``(key, predicate, description)`` field."""
    if not isinstance(entry, dict):
        raise AnnotationError(f"{where} must be an object, got {type(entry).__name__}")
    for key, ok, want in fields:
        if key not in entry:
            raise AnnotationError(f"{where}.{key} missing")
        if not ok(entry[key]):
            raise AnnotationError(f"{where}.{key} must be {want}, got {entry[key]!r:.80}")


def _unique_ids(entries: list, path: Path, name: str, fields: Sequence[Field]) -> set[int]:
    """Validate ``entries`` (``images`` or ``categories``) and return their distinct ``id``s."""
    ids: set[int] = set()
    for i, entry in enumerate(entries):
        _require(entry, f"{path}: {name}[{i}]", fields)
        if entry["id"] in ids:
            raise AnnotationError(f"{path}: {name}[{i}].id {entry['id']} is a duplicate")
        ids.add(entry["id"])
    return ids


def _check_refers(ann: dict, where: str, key: str, known: set[int], what: str) -> None:
    if ann[key] not in known:
        raise AnnotationError(f"{where}.{key} {ann[key]} refers to an unknown {what}")


# ----------------------------------------------------------------------------- captions


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
        f"{path}: unrecognised annotation format: neither a COCO captions file "
        "('images' + 'annotations') nor a Karpathy split file ('images[].sentences')"
    )


def detect_format(path: str | os.PathLike) -> str:
    """``"coco"``, ``"karpathy"`` or ``"folder"`` (a directory of images); else AnnotationError."""
    p = Path(path)
    if p.is_dir():
        return "folder"
    return _format_of(_read_json(p), p)


def load_records(data: str | os.PathLike, images: str | os.PathLike | None = None) -> list[ImageRecord]:
    """Read ``data`` (annotation JSON or an image folder) into records.

    ``images`` is the directory that image paths in the JSON are relative to. It defaults to the
    directory holding the JSON file; for a COCO file whose first image is not found there but is
    in an ``images/`` folder beside it (the layout ``captioner scenes`` writes, with ``file_name``
    relative to the image folder as COCO has it), to that folder. Scene datasets written before
    v0.2 have ``file_name`` "images/...", relative to the file's directory, and still load.
    It is not used for folders. COCO records get split
    ``"train"`` (the file does not say; the caller decides) and are sorted by image id; Karpathy
    records keep the file's order and splits; folder records get split ``"test"``, image ids
    0..N-1 and no captions. Only annotations are read: use
    :func:`captioner.data.datasets.check_images` to check the image files.
    """
    p = Path(data)
    if p.is_dir():
        return [ImageRecord(image_id=i, path=f, split="test") for i, f in enumerate(list_images(p))]
    obj = _read_json(p)
    fmt = _format_of(obj, p)
    root = Path(images) if images is not None else p.parent
    if fmt == "coco":
        if images is None:
            root = _coco_default_root(obj, p.parent)
        return _coco_records(obj, p, root)
    return _karpathy_records(obj, p, root)


_COCO_IMAGE_FIELDS: tuple[Field, ...] = (
    ("id", _is_int, "an integer"),
    ("file_name", _is_name, "a non-empty string"),
)
_COCO_CAPTION_FIELDS: tuple[Field, ...] = (
    ("image_id", _is_int, "an integer"),
    ("caption", _is_str, "a string"),
)


def _coco_default_root(obj: dict, folder: Path) -> Path:
    """``folder``, or ``folder/images`` when the first image is only found there."""
    first = next((im.get("file_name") for im in obj["images"] if isinstance(im, dict)), None)
    if isinstance(first, str) and first and not (folder / first).exists() and (folder / "images" / first).is_file():
        return folder / "images"
    return folder


def _coco_records(obj: dict, path: Path, root: Path) -> list[ImageRecord]:
    ids = _unique_ids(obj["images"], path, "images", _COCO_IMAGE_FIELDS)
    by_image: dict[int, list[str]] = {}
    for j, ann in enumerate(obj["annotations"]):
        where = f"{path}: annotations[{j}]"
        _require(ann, where, _COCO_CAPTION_FIELDS)
        if "id" in ann and not _is_int(ann["id"]):  # unused here, but a bad one means a bad file
            raise AnnotationError(f"{where}.id must be an integer, got {ann['id']!r:.80}")
        _check_refers(ann, where, "image_id", ids, "image")
        by_image.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    records = []
    for im in sorted(obj["images"], key=lambda im: im["id"]):
        captions = tuple(by_image.get(im["id"], ()))
        records.append(
            ImageRecord(
                image_id=im["id"],
                path=root / im["file_name"],
                split="train",
                captions=captions,
                tokens=tuple(tuple(tokenize(c)) for c in captions),
            )
        )
    return records


_KARPATHY_IMAGE_FIELDS: tuple[Field, ...] = (
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
            raise AnnotationError(f"{where}.filepath must be a string, got {filepath!r:.80}")
        # cocoid first: results files and instances files of COCO use COCO's ids.
        key = "cocoid" if "cocoid" in im else "imgid"
        if key not in im:
            raise AnnotationError(f"{where}.imgid missing (and no cocoid)")
        image_id = im[key]
        if not _is_int(image_id):
            raise AnnotationError(f"{where}.{key} must be an integer, got {image_id!r:.80}")
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
                raise AnnotationError(f"{sw}.raw must be a string, got {raw!r:.80}")
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


def load_references(path: str | os.PathLike, split: str | None = None) -> dict[int, list[str]]:
    """Reference captions by image id, for scoring a results file against.

    The same records training and ``captioner evaluate`` use, so the ids agree with theirs:
    Karpathy files key by ``cocoid`` when present (results files use COCO ids), else
    ``imgid``. ``split`` selects a Karpathy split (``"train"`` means train + restval); a COCO
    captions file has no splits, so it must be None there. Images without any caption are
    left out, as evaluation leaves them out: no candidate could be scored against them.
    """
    p = Path(path)
    obj = _read_json(p)
    if _format_of(obj, p) == "coco":
        if split is not None:
            raise AnnotationError(f"{p}: split={split!r} given, but a COCO captions file has no split field")
        records = _coco_records(obj, p, p.parent)
    else:
        records = _karpathy_records(obj, p, p.parent)
        if split is not None:
            chosen = select_split(records, split) if split in KARPATHY_SPLITS else []
            if not chosen:
                present = sorted({r.split for r in records})
                raise AnnotationError(f"{p}: no image has split {split!r}; splits present: {present}")
            records = chosen
    return {r.image_id: list(r.captions) for r in records if r.captions}


# ----------------------------------------------------------------------------- instances


def _is_bbox(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 4
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
        and v[2] >= 0
        and v[3] >= 0
    )


_INSTANCE_IMAGE_FIELDS: tuple[Field, ...] = (
    ("id", _is_int, "an integer"),
    ("width", _is_positive_int, "a positive integer"),
    ("height", _is_positive_int, "a positive integer"),
)
_CATEGORY_FIELDS: tuple[Field, ...] = (
    ("id", _is_int, "an integer"),
    ("name", _is_name, "a non-empty string"),
)
_INSTANCE_FIELDS: tuple[Field, ...] = (
    ("image_id", _is_int, "an integer"),
    ("category_id", _is_int, "an integer"),
    ("bbox", _is_bbox, "4 numbers [x, y, w, h] with w, h >= 0"),
)


def load_instances(path: str | os.PathLike) -> Instances:
    """Boxes, image sizes and (for the scenes) objects from a COCO instances file.

    Crowd annotations are kept: a crowd box still marks where its class is. Optional fields
    (``id``, ``area``, ``segmentation``, ...) are not needed and not checked, except
    ``color``, which must be a non-empty string where present.
    """
    p = Path(path)
    data = _read_json(p)
    if not isinstance(data, dict):
        raise AnnotationError(f"{p}: expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            anns = data.get("annotations")
            captions = isinstance(anns, list) and anns and isinstance(anns[0], dict) and "caption" in anns[0]
            hint = "; this looks like a COCO captions file, not instances" if captions else ""
            raise AnnotationError(
                f"{p}: {key} missing or not a list (a COCO instances file has 'images', "
                f"'annotations' and 'categories'){hint}"
            )
    image_ids = _unique_ids(data["images"], p, "images", _INSTANCE_IMAGE_FIELDS)
    category_ids = _unique_ids(data["categories"], p, "categories", _CATEGORY_FIELDS)
    for j, ann in enumerate(data["annotations"]):
        where = f"{p}: annotations[{j}]"
        _require(ann, where, _INSTANCE_FIELDS)
        _check_refers(ann, where, "image_id", image_ids, "image")
        _check_refers(ann, where, "category_id", category_ids, "category")
        if "color" in ann and not _is_name(ann["color"]):
            raise AnnotationError(f"{where}.color must be a non-empty string, got {ann['color']!r:.80}")

    names = {cat["id"]: cat["name"] for cat in data["categories"]}
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    boxes: dict[int, list[Box]] = {image_id: [] for image_id in sizes}
    for ann in data["annotations"]:
        boxes[ann["image_id"]].append(Box(names[ann["category_id"]], *(float(v) for v in ann["bbox"]),
                                          color=ann.get("color")))
    anns = data["annotations"]
    objects = None
    if anns and all("color" in ann for ann in anns):
        objects = {image_id: [] for image_id in sizes}
        for ann in anns:
            objects[ann["image_id"]].append((ann["color"], names[ann["category_id"]]))
    return Instances(boxes=boxes, sizes=sizes, objects=objects)


# ----------------------------------------------------------------------------- results


_RESULT_FIELDS: tuple[Field, ...] = (
    ("image_id", _is_int, "an integer"),
    ("caption", _is_str, "a string"),
)


def load_results(path: str | os.PathLike) -> dict[int, str]:
    """Candidates from a COCO results file ``[{"image_id": int, "caption": str}, ...]``.

    Duplicate image ids are an error rather than last-one-wins: the official server rejects
    them too, and a silent choice would change the score.
    """
    p = Path(path)
    data = _read_json(p)
    if not isinstance(data, list):
        raise AnnotationError(
            f"{p}: a results file is a JSON list of {{image_id, caption}}, got {type(data).__name__}"
        )
    out: dict[int, str] = {}
    dups: list[int] = []
    for i, entry in enumerate(data):
        _require(entry, f"{p}: [{i}]", _RESULT_FIELDS)
        if entry["image_id"] in out:
            dups.append(entry["image_id"])
        out[entry["image_id"]] = entry["caption"]
    if dups:
        shown = sorted(set(dups))
        examples = ", ".join(map(str, shown[:5])) + (", ..." if len(shown) > 5 else "")
        raise AnnotationError(f"{p}: {len(dups)} duplicate image_id entries (e.g. {examples})")
    return out
