"""Synthetic scenes: coloured shapes on pastel backgrounds, with captions and boxes.

A dataset small enough to train on a laptop in minutes and simple enough that every caption
can be checked: each caption names every object exactly once as ``[size] <color> <shape>``, so
object-level precision/recall (:func:`captioner.data.scene_spec.parse_mentions`) and
attention-vs-box checks are exact. The words themselves (:data:`~captioner.data.scene_spec.SHAPES`,
``COLORS``, ``SIZES``) live in :mod:`captioner.data.scene_spec`, shared with the scores.
``novel=True`` builds a test set of colour-shape combinations never seen in training
(:data:`NOVEL_COMBOS`), a probe for compositional generalisation.

The output is written in all three formats the rest of the package reads (COCO captions, COCO
instances, Karpathy) and is byte-identical for a given seed: every random choice comes from a
per-image ``numpy`` generator seeded with ``(seed, image index)``, PNGs are saved with fixed
parameters and no metadata, and JSON is written in a fixed key order.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from captioner.data.scene_spec import COLORS, SHAPES, SIZES
from captioner.words.vocab import tokenize

__all__ = [
    "BACKGROUND_RANGE",
    "COLOR_RGB",
    "NOVEL_COMBOS",
    "SIZE_RANGES",
    "SceneObject",
    "SceneSummary",
    "generate_scenes",
    "render_scene",
]

#: Colour-shape pairs held out of ordinary scenes; ``novel=True`` scenes each contain one.
NOVEL_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("blue", "cross"),
    ("green", "triangle"),
    ("yellow", "circle"),
)
#: Saturated base colours. Each has a channel <= 45 (before jitter) while every background
#: channel is >= 110, so objects always stand out; neighbours in hue (red/orange/yellow,
#: blue/purple) differ by >= 75 in some channel.
COLOR_RGB: Mapping[str, tuple[int, int, int]] = {
    "red": (215, 30, 30),
    "green": (30, 160, 50),
    "blue": (35, 70, 215),
    "yellow": (240, 210, 20),
    "purple": (135, 40, 175),
    "orange": (245, 130, 10),
}
COLOR_JITTER = 12  # max per-channel deviation from the base colour
#: Side of an object's (tight) bounding box, as a fraction of the canvas: longest side.
SIZE_RANGES: Mapping[str, tuple[float, float]] = {"small": (0.14, 0.22), "large": (0.30, 0.42)}
#: Every background pixel channel lies in this range.
BACKGROUND_RANGE: tuple[int, int] = (110, 240)
MAX_ROTATION_DEG = 12.0  # squares, triangles and crosses are tilted by up to this much
ROTATED_SHAPES = frozenset({"square", "triangle", "cross"})
CAPTIONS_PER_IMAGE = 5

_SUPERSAMPLE = 2  # draw at 2x and box-downsample: cheap anti-aliasing
_GAP = 3  # px between object boxes, so anti-aliased edges never touch
_MARGIN = 2  # px between an object box and the canvas edge
# Fixed save parameters (and no metadata) keep PNGs byte-identical. Level 1: twice as fast as
# the default 6 and only ~20% larger, since the background noise barely compresses anyway.
_PNG_PARAMS = {"format": "PNG", "compress_level": 1, "optimize": False}


@dataclass(frozen=True)
class SceneObject:
    """One drawn object. ``bbox`` is COCO ``[x, y, w, h]``, tight around the drawn pixels."""

    shape: str
    color: str
    size: str
    bbox: tuple[int, int, int, int]
    area: float  # drawn (anti-aliased) pixel area
    segmentation: tuple[float, ...]  # outline polygon x1, y1, x2, y2, ... in pixels
    rgb: tuple[int, int, int]  # the jittered fill colour actually used

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.bbox
        return (x + w / 2, y + h / 2)


@dataclass(frozen=True)
class SceneSummary:
    """What :func:`generate_scenes` wrote."""

    out: Path
    num_images: int
    split_counts: Mapping[str, int]
    images_dir: Path
    captions_json: Path  # COCO captions; file_name is relative to ``out`` ("images/...")
    instances_json: Path  # COCO instances (boxes, colour, size)
    dataset_json: Path  # Karpathy format with splits
    novel: bool
    seed: int


# ----------------------------------------------------------------------------- captions


def _phrase(obj: SceneObject, with_size: bool) -> str:
    words = ([obj.size] if with_size else []) + [obj.color, obj.shape]
    article = "an" if words[0][0] in "aeiou" else "a"
    return " ".join([article, *words])


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


_LIST_TEMPLATES = (
    "{}",
    "there is {}",
    "an image with {}",
    "a picture of {}",
    "{} on a plain background",
    "a scene with {}",
    "this image shows {}",
)
_ORDERED_TEMPLATES = ("{} from left to right",)  # only for >= 2 objects


def _captions(objects: Sequence[SceneObject], rng: np.random.Generator) -> list[str]:
    """Five captions; list templates name the objects left to right."""
    objs = sorted(objects, key=lambda o: o.center[0])

    def phrases(os_: Sequence[SceneObject]) -> list[str]:
        return [_phrase(o, bool(rng.random() < 0.5)) for o in os_]

    # Each template is a function of freshly drawn phrases, so size words vary per caption.
    list_templates = list(_LIST_TEMPLATES) + (list(_ORDERED_TEMPLATES) if len(objs) >= 2 else [])
    makers = [lambda t=t: t.format(_join(phrases(objs))) for t in list_templates]
    relations = []
    if len(objs) == 2:
        a, b = objs  # a is left of b by centre
        if a.bbox[0] + a.bbox[2] <= b.bbox[0]:
            relations += [
                lambda: "{} to the left of {}".format(*phrases([a, b])),
                lambda: "{} to the right of {}".format(*phrases([b, a])),
                lambda: "{} is to the left of {}".format(*phrases([a, b])),
            ]
        top, low = sorted(objs, key=lambda o: o.center[1])
        if top.bbox[1] + top.bbox[3] <= low.bbox[1]:
            relations += [
                lambda: "{} above {}".format(*phrases([top, low])),
                lambda: "{} below {}".format(*phrases([low, top])),
                lambda: "{} is above {}".format(*phrases([top, low])),
            ]
    n_rel = min(len(relations), 2)
    chosen = [relations[k] for k in rng.permutation(len(relations))[:n_rel]]
    chosen += [makers[k] for k in rng.permutation(len(makers))[: CAPTIONS_PER_IMAGE - n_rel]]
    order = rng.permutation(len(chosen))
    return [chosen[k]() for k in order]


# ----------------------------------------------------------------------------- drawing


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """(size, size, 3) uint8: a grey or pastel tint, sometimes a gradient, sometimes noise."""
    lo, hi = BACKGROUND_RANGE
    base = rng.uniform(150, 230)
    c0 = np.full(3, base) if rng.random() < 0.3 else base + rng.uniform(-35, 35, 3)
    img = np.broadcast_to(c0, (size, size, 3)).astype(np.float32)
    if rng.random() < 0.5:  # linear gradient in a random direction
        c1 = c0 + rng.uniform(-30, 30, 3)
        theta = rng.uniform(0, 2 * math.pi)
        ramp = np.arange(size, dtype=np.float32) / max(size - 1, 1)
        t = math.cos(theta) * ramp[None, :] + math.sin(theta) * ramp[:, None]
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = img + t[..., None] * (c1 - c0).astype(np.float32)
    if rng.random() < 0.5:  # mild sensor-like noise
        img = img + rng.normal(0, rng.uniform(1.0, 4.0), img.shape).astype(np.float32)
    return np.clip(np.rint(img), lo, hi).astype(np.uint8)


def _outline(shape: str, angle_deg: float) -> np.ndarray:
    """(N, 2) polygon in unit coordinates (y down), rotated; circles return a 64-gon."""
    if shape == "circle":
        a = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
    elif shape == "square":
        pts = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
    elif shape == "triangle":
        a = np.radians([-90, 30, 150])
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
    elif shape == "star":
        a = np.radians(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    elif shape == "cross":
        t = 0.34  # half thickness of the arms
        pts = np.array(
            [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t),
             (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t), (-t, -t)],
            dtype=float,
        )
    else:
        raise ValueError(f"unknown shape {shape!r}, expected one of {SHAPES}")
    th = math.radians(angle_deg)
    rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    return pts @ rot.T


def _draw(
    canvas: Image.Image,
    shape: str,
    color: str,
    size_name: str,
    rgb: tuple[int, int, int],
    cell: tuple[int, int, int],
    angle: float,
) -> SceneObject | None:
    """Draw ``shape`` filling the square ``cell = (x0, y0, side)``; return it with its tight box."""
    x0, y0, side = cell
    pad = 2
    pts = _outline(shape, angle)
    mn, mx = pts.min(axis=0), pts.max(axis=0)
    # Pixels x0 .. x0+side-1 are covered when the outline spans side-1 pixel units.
    extent = side - 1
    scale = extent / float((mx - mn).max())
    # Polygon in canvas pixels, its bounding box centred in the cell.
    centre = np.array([x0 + extent / 2, y0 + extent / 2])
    poly = (pts - (mn + mx) / 2) * scale + centre
    s = _SUPERSAMPLE
    ox, oy = x0 - pad, y0 - pad
    big = Image.new("L", ((side + 2 * pad) * s, (side + 2 * pad) * s), 0)
    local = (poly - np.array([ox, oy])) * s
    if shape == "circle":
        r = extent / 2 * s
        c = (centre[0] - ox) * s, (centre[1] - oy) * s
        ImageDraw.Draw(big).ellipse((c[0] - r, c[1] - r, c[0] + r, c[1] + r), fill=255)
    else:
        ImageDraw.Draw(big).polygon([tuple(p) for p in local.tolist()], fill=255)
    mask = big.reduce(s)
    box = mask.getbbox()
    if box is None:
        return None
    canvas.paste(rgb, (ox, oy, ox + mask.width, oy + mask.height), mask)
    l, t, r, b = box
    return SceneObject(
        shape=shape,
        color=color,
        size=size_name,
        bbox=(ox + l, oy + t, r - l, b - t),
        area=round(float(np.asarray(mask, dtype=np.float64).sum()) / 255.0, 2),
        segmentation=tuple(round(float(v), 2) for v in poly.reshape(-1)),
        rgb=rgb,
    )


def _place(
    rng: np.random.Generator, size: int, side: int, cells: Sequence[tuple[int, int, int]]
) -> tuple[int, int, int] | None:
    """A free square cell ``(x, y, side)`` at least ``_GAP`` px from ``cells``, or None."""
    hi = size - _MARGIN - side
    if hi < _MARGIN:
        return None
    for _ in range(60):
        x, y = (int(v) for v in rng.integers(_MARGIN, hi + 1, size=2))
        if all(
            x >= cx + cs + _GAP or cx >= x + side + _GAP or y >= cy + cs + _GAP or cy >= y + side + _GAP
            for cx, cy, cs in cells
        ):
            return (x, y, side)
    return None


def render_scene(
    rng: np.random.Generator, size: int = 256, novel: bool = False
) -> tuple[Image.Image, list[SceneObject]]:
    """One scene: an RGB image and its 1-3 objects (non-overlapping boxes, distinct colour-shape
    pairs). With ``novel`` the first object is a :data:`NOVEL_COMBOS` pair; otherwise no object is.
    """
    canvas = Image.fromarray(_background(rng, size))
    allowed = [(c, s) for c in COLORS for s in SHAPES if novel or (c, s) not in NOVEL_COMBOS]
    n = int(rng.integers(1, 4))
    combos: list[tuple[str, str]] = []
    if novel:
        combos.append(NOVEL_COMBOS[int(rng.integers(len(NOVEL_COMBOS)))])
    while len(combos) < n:
        pick = allowed[int(rng.integers(len(allowed)))]
        if pick not in combos:
            combos.append(pick)

    cells: list[tuple[int, int, int]] = []
    objects: list[SceneObject] = []
    for color, shape in combos:
        size_name = SIZES[int(rng.integers(len(SIZES)))]
        cell = None
        for attempt_size in (size_name, "small"):  # crowded canvas: fall back to small
            lo, hi = SIZE_RANGES[attempt_size]
            # The tight box comes out `side` or, rarely, `side + 1` pixels: stay 1 px inside.
            side = int(rng.integers(math.ceil(lo * size), math.floor(hi * size)))
            cell = _place(rng, size, side, cells)
            if cell is not None:
                size_name = attempt_size
                break
        if cell is None:
            continue  # no room: drop this object (never the first, which always fits)
        angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)) if shape in ROTATED_SHAPES else 0.0
        base = np.array(COLOR_RGB[color])
        rgb = tuple(int(v) for v in np.clip(base + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255))
        obj = _draw(canvas, shape, color, size_name, rgb, cell, angle)
        if obj is None:
            continue
        cells.append(cell)
        objects.append(obj)
    return canvas, objects


# ----------------------------------------------------------------------------- files


def _split_names(n: int, fractions: Sequence[float], novel: bool) -> list[str]:
    """Contiguous train/val/test blocks sized by largest remainder (a 0 fraction gets nothing)."""
    if novel:
        return ["test"] * n
    exact = [f * n for f in fractions]
    counts = [math.floor(e) for e in exact]
    by_remainder = sorted(range(3), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in by_remainder[: n - sum(counts)]:
        counts[k] += 1
    return ["train"] * counts[0] + ["val"] * counts[1] + ["test"] * counts[2]


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, separators=(",", ":"), ensure_ascii=True) + "\n", encoding="utf-8")


def _checked_args(num_images: int, seed: int, size: int, split_fractions: Sequence[float]) -> tuple[float, ...]:
    """Errors name the argument; returns the split fractions as floats."""
    if num_images < 1:
        raise ValueError(f"generate_scenes: num_images must be >= 1, got {num_images}")
    if seed < 0:
        raise ValueError(f"generate_scenes: seed must be >= 0, got {seed}")
    if size < 32:
        raise ValueError(f"generate_scenes: size must be >= 32 px, got {size}")
    fr = tuple(float(f) for f in split_fractions)
    if len(fr) != 3 or min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(
            f"generate_scenes: split_fractions must be 3 non-negative numbers summing to 1, got {split_fractions}"
        )
    return fr


def _instance(obj: SceneObject, image_id: int, ann_id: int) -> dict[str, Any]:
    """One object as a COCO instances annotation, with the scenes' `color` and `size` fields."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": SHAPES.index(obj.shape) + 1,
        "bbox": list(obj.bbox),
        "area": obj.area,
        "iscrowd": 0,
        "segmentation": [list(obj.segmentation)],
        "color": obj.color,
        "size": obj.size,
    }


def generate_scenes(
    out: str | os.PathLike,
    num_images: int,
    seed: int,
    *,
    size: int = 256,
    novel: bool = False,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> SceneSummary:
    """Write ``num_images`` scenes under ``out`` (see the module docstring for the layout).

    Files: ``images/scene_NNNNNN.png``, ``captions.json`` (COCO captions; ``file_name`` is
    ``images/scene_NNNNNN.png``, relative to ``out``, so ``load_records(out/"captions.json")``
    finds the images), ``instances.json`` (COCO instances with ``color``/``size`` per
    annotation) and ``dataset.json`` (Karpathy, with train/val/test splits by
    ``split_fractions``; all "test" when ``novel``). Same arguments, same bytes.
    """
    fr = _checked_args(num_images, seed, size, split_fractions)
    out = Path(out)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    splits = _split_names(num_images, fr, novel)

    licenses = [{"id": 1, "name": "CC0 1.0 (synthetic, generated by captioner.data.scenes)", "url": ""}]
    info = {
        "description": "captioner synthetic scenes",
        "version": "1.0",
        "seed": seed,
        "novel": novel,
        "size": size,
    }
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    coco_images, cap_anns, inst_anns, kp_images = [], [], [], []
    sentid = 0
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, int(novel)]))
        img, objects = render_scene(rng, size, novel)
        image_id = i + 1
        filename = f"scene_{i:06d}.png"
        img.save(images_dir / filename, **_PNG_PARAMS)
        coco_images.append(
            {"id": image_id, "file_name": f"images/{filename}", "width": size, "height": size, "license": 1}
        )
        inst_anns += [_instance(obj, image_id, len(inst_anns) + 1 + k) for k, obj in enumerate(objects)]
        sentences = []
        for caption in _captions(objects, rng):
            cap_anns.append({"id": sentid + 1, "image_id": image_id, "caption": caption})
            sentences.append({"raw": caption, "tokens": tokenize(caption), "imgid": i, "sentid": sentid})
            sentid += 1
        kp_images.append({
            "filepath": "images",
            "filename": filename,
            "imgid": i,
            "cocoid": image_id,
            "split": splits[i],
            "sentences": sentences,
            "sentids": [s["sentid"] for s in sentences],
        })

    summary = SceneSummary(
        out=out,
        num_images=num_images,
        split_counts={s: splits.count(s) for s in ("train", "val", "test")},
        images_dir=images_dir,
        captions_json=out / "captions.json",
        instances_json=out / "instances.json",
        dataset_json=out / "dataset.json",
        novel=novel,
        seed=seed,
    )
    header = {"info": info, "licenses": licenses, "images": coco_images}
    _write_json(summary.captions_json, {**header, "annotations": cap_anns})
    _write_json(summary.instances_json, {**header, "annotations": inst_anns, "categories": categories})
    _write_json(summary.dataset_json, {"dataset": "scenes", "images": kp_images})
    return summary
