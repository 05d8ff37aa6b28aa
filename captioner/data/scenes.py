"""Synthetic scenes: coloured shapes on varied backgrounds, with captions and boxes.

A dataset small enough to train on a laptop in minutes and simple enough that every caption
can be checked: each caption names every object exactly once as ``[size] <color> <shape>``, so
object-level precision/recall (:func:`captioner.data.scene_spec.parse_mentions`) and
attention-vs-box checks are exact. The words themselves (:data:`~captioner.data.scene_spec.SHAPES`,
``COLORS``, ``SIZES``) live in :mod:`captioner.data.scene_spec`, shared with the scores.
``novel=True`` builds a test set of colour-shape combinations never seen in training
(:data:`NOVEL_COMBOS`), a probe for compositional generalisation.

Appearance is randomised within documented ranges, so that a model learns the shapes and
colours rather than one renderer's look: background families (flat, gradient, noise, stripes,
checks, soft blobs, irregular patches of independent tints; grey or tinted, light or mid-tone),
object colours jittered around each named hue (:data:`HSV_RANGES`, kept far enough apart that
names stay unambiguous), shape proportions (:data:`PROPORTIONS`), rotation, continuous sizes
within the small and large bands, shading and rims, 2-4x anti-aliasing, then blur, noise and
JPEG compression (:data:`DEGRADE_P`). Three background families (``RESERVED_BACKGROUNDS``) never appear in
``style="train"`` scenes; ``style="reserved"`` draws only them, for figures on a look that
training never saw.

The output is written in all three formats the rest of the package reads (COCO captions, COCO
instances, Karpathy) and is byte-identical for a given seed: every random choice comes from a
per-image ``numpy`` generator seeded with ``(seed, image index)``, PNGs are saved with fixed
parameters and no metadata, and JSON is written in a fixed key order.
"""

from __future__ import annotations

import colorsys
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from captioner.data.scene_spec import BACKGROUNDS, COLORS, RESERVED_BACKGROUNDS, SCENE_STYLES, SHAPES, SIZES
from captioner.words.vocab import tokenize

__all__ = [
    "BACKGROUND_RANGE",
    "COLOR_RGB",
    "HSV_RANGES",
    "NOVEL_COMBOS",
    "SIZE_RANGES",
    "SceneObject",
    "SceneSummary",
    "generate_scenes",
    "pick_background",
    "render_scene",
]

#: Colour-shape pairs held out of ordinary scenes; ``novel=True`` scenes each contain one.
NOVEL_COMBOS: tuple[tuple[str, str], ...] = (
    ("red", "star"),
    ("blue", "cross"),
    ("green", "triangle"),
    ("yellow", "circle"),
)
#: Each colour name's range in HSV: hue in degrees (red wraps through 0), saturation, value.
#: The hue bands leave gaps of >= 8 degrees between neighbours (orange/yellow is the closest),
#: so a name is never ambiguous, and they hold both this generator's old palette and the usual
#: named colours (e.g. web orange 39, yellow 60, green 120, blue 240, purple 300 degrees).
#: Saturation >= 0.7 gives every object's fill a channel <= 77 (about 82 where shaded) while
#: every background channel is drawn >= 110, so objects always stand out; blur, noise and JPEG
#: then move pixels by a few levels (tests/test_scenes.py measures how far). Rounding to 8 bits
#: can put a fill a fraction of a degree or 0.002 of saturation outside its range.
HSV_RANGES: Mapping[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "red": ((-10, 8), (0.7, 1.0), (0.65, 0.95)),
    "orange": ((24, 40), (0.8, 1.0), (0.88, 1.0)),
    "yellow": ((48, 62), (0.8, 1.0), (0.85, 1.0)),
    "green": ((105, 145), (0.7, 1.0), (0.45, 0.8)),
    "blue": ((215, 242), (0.7, 1.0), (0.7, 1.0)),
    "purple": ((272, 302), (0.7, 1.0), (0.5, 0.8)),
}
#: The centre of each range, as RGB: the colour a name stands for.
COLOR_RGB: Mapping[str, tuple[int, int, int]] = {
    name: tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(
        (sum(h) / 2 % 360) / 360, sum(s_) / 2, sum(v) / 2))
    for name, (h, s_, v) in HSV_RANGES.items()
}
#: Side of an object's (tight) bounding box, as a fraction of the canvas: longest side.
SIZE_RANGES: Mapping[str, tuple[float, float]] = {"small": (0.14, 0.22), "large": (0.30, 0.42)}
#: Every background pixel channel lies in this range (before blur, noise and JPEG).
BACKGROUND_RANGE: tuple[int, int] = (110, 240)
TINT = 30  # max per-channel tint of a background's base colour away from grey
MAX_ROTATION_DEG = 25.0  # squares, triangles, stars and crosses are tilted by up to this much
ROTATED_SHAPES = frozenset({"square", "triangle", "star", "cross"})
#: Ranges of the shapes' proportions: star inner / outer radius, cross arm half width / half
#: length, and the triangle's apex height (1 = equilateral).
PROPORTIONS: Mapping[str, tuple[float, float]] = {
    "star_inner": (0.38, 0.55), "cross_arm": (0.24, 0.40), "triangle_apex": (0.85, 1.15),
}
SHADED_P, SHADE_MAX = 0.3, 0.07  # chance of a linear brightness ramp over an object, its +-gain
OUTLINED_P = 0.15  # chance of a darker rim
#: Chances of each camera-like loss, applied to the whole image after drawing.
DEGRADE_P: Mapping[str, float] = {"blur": 0.5, "noise": 0.4, "jpeg": 0.35}
MAX_BLUR, MAX_NOISE, JPEG_QUALITY = 1.2, 5.0, (35, 91)  # Gaussian radius px, noise std, quality range
CAPTIONS_PER_IMAGE = 5

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
    captions_json: Path  # COCO captions; file_name is relative to ``images_dir`` (COCO convention)
    instances_json: Path  # COCO instances (boxes, colour, size)
    dataset_json: Path  # Karpathy format with splits
    novel: bool
    seed: int
    style: str


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
    "{} in the picture",
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


# ----------------------------------------------------------------------------- appearance


def _tone(rng: np.random.Generator) -> np.ndarray:
    """A background base colour: light or mid-tone, grey or tinted (every channel in range)."""
    base = rng.uniform(170, 232) if rng.random() < 0.6 else rng.uniform(118, 170)
    tint = np.zeros(3) if rng.random() < 0.35 else rng.uniform(-TINT, TINT, 3)
    return base + tint


def _second(rng: np.random.Generator, c0: np.ndarray) -> np.ndarray:
    """A pattern's other colour: a brightness step, sometimes with its own tint."""
    step = rng.uniform(14, 45) * (1 if rng.random() < 0.5 else -1)
    return c0 + step + (rng.uniform(-15, 15, 3) if rng.random() < 0.5 else 0)


def _coords(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(size, size) x and y pixel coordinates in a frame rotated by a random angle."""
    th = rng.uniform(0, math.pi)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    return x * math.cos(th) + y * math.sin(th), -x * math.sin(th) + y * math.cos(th)


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) smooth random field in [0, 1]: a cells x cells grid of noise, upsampled."""
    small = Image.fromarray((rng.random((cells, cells)) * 255).astype(np.uint8))
    return np.asarray(small.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0


def _mix(c0: np.ndarray, c1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(size, size, 3): c0 where t = 0, c1 where t = 1."""
    return c0 + t[..., None].astype(np.float32) * (c1 - c0).astype(np.float32)


def _pattern(kind: str, rng: np.random.Generator, size: int, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """The background family `kind` (see BACKGROUNDS) as a float (size, size, 3) image."""
    if kind == "flat":
        return np.broadcast_to(c0.astype(np.float32), (size, size, 3)).copy()
    if kind == "gradient":
        u, _ = _coords(size, rng)
        return _mix(c0, c1, (u - u.min()) / max(float(u.max() - u.min()), 1e-6))
    if kind == "noise":  # fine sensor-like grain over a coarse mottle
        t = _smooth_field(rng, size, int(rng.integers(3, 9)))
        grain = rng.normal(0, rng.uniform(4, 11), (size, size, 3)).astype(np.float32)
        return _mix(c0, c1, t) + grain
    if kind == "stripes":
        u, _ = _coords(size, rng)
        period = rng.uniform(8, 40)
        wave = np.sin(2 * math.pi * u / period)
        t = (wave > 0).astype(np.float32) if rng.random() < 0.5 else (wave + 1) / 2
        return _mix(c0, c1, t)
    if kind == "checks":
        u, v = _coords(size, rng) if rng.random() < 0.4 else np.mgrid[0:size, 0:size][::-1].astype(np.float32)
        cell = rng.uniform(10, 44)
        return _mix(c0, c1, ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32))
    if kind == "blobs":  # soft Gaussian blobs of the second colour
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        t = np.zeros((size, size), np.float32)
        for _ in range(int(rng.integers(4, 12))):
            cx, cy = rng.uniform(0, size, 2)
            r = rng.uniform(0.06, 0.25) * size
            t = np.maximum(t, np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
        return _mix(c0, c1, t)
    if kind == "patches":  # irregular (Voronoi) cells of independent tints
        n = int(rng.integers(8, 80))
        seeds = rng.uniform(0, size, (n, 2)).astype(np.float32)
        tones = np.stack([_tone(rng) for _ in range(n)]).astype(np.float32)
        y, x = np.mgrid[0:size, 0:size].astype(np.float32)
        d2 = (x[..., None] - seeds[:, 0]) ** 2 + (y[..., None] - seeds[:, 1]) ** 2
        return tones[d2.argmin(axis=-1)]
    # Reserved for evaluation: training never draws these.
    if kind == "waves":  # interference of two rotated sinusoids
        u, v = _coords(size, rng)
        p1, p2 = rng.uniform(12, 48, 2)
        t = (np.sin(2 * math.pi * u / p1 + 2.0 * np.sin(2 * math.pi * v / p2)) + 1) / 2
        return _mix(c0, c1, t)
    if kind == "dots":  # a lattice of small discs
        u, v = _coords(size, rng)
        spacing = rng.uniform(12, 28)
        radius = rng.uniform(0.15, 0.32) * spacing
        du, dv = (u % spacing) - spacing / 2, (v % spacing) - spacing / 2
        return _mix(c0, c1, (du * du + dv * dv < radius * radius).astype(np.float32))
    if kind == "mosaic":  # tiles of independent tints
        cells = int(rng.integers(4, 10))
        tiles = np.stack([_tone(rng) for _ in range(cells * cells)]).reshape(cells, cells, 3)
        idx = (np.arange(size) * cells) // size
        return tiles[idx][:, idx].astype(np.float32)
    raise ValueError(f"unknown background {kind!r}, expected one of {BACKGROUNDS}")


def _background(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """(size, size, 3) uint8 background of family `kind`; every channel in BACKGROUND_RANGE."""
    c0 = _tone(rng)
    img = _pattern(kind, rng, size, c0, _second(rng, c0))
    lo, hi = BACKGROUND_RANGE
    return np.clip(np.rint(img), lo, hi).astype(np.uint8)


def _outline(shape: str, angle_deg: float, rng: np.random.Generator) -> np.ndarray:
    """(N, 2) polygon in unit coordinates (y down), rotated, with randomised proportions
    (PROPORTIONS); circles return a 64-gon."""
    if shape == "circle":
        a = np.linspace(0, 2 * math.pi, 64, endpoint=False)
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
    elif shape == "square":
        pts = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=float)
    elif shape == "triangle":
        a = np.radians([-90, 30, 150])
        pts = np.stack([np.cos(a), np.sin(a)], axis=1)
        pts[0, 1] *= rng.uniform(*PROPORTIONS["triangle_apex"])  # taller or flatter
    elif shape == "star":
        a = np.radians(-90 + 36 * np.arange(10))
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(*PROPORTIONS["star_inner"]))
        pts = np.stack([r * np.cos(a), r * np.sin(a)], axis=1)
    elif shape == "cross":
        t = rng.uniform(*PROPORTIONS["cross_arm"])  # half thickness of the arms
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


def _object_colour(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    """A fill colour drawn uniformly from the name's HSV_RANGES."""
    hue, sat, val = (rng.uniform(*r) for r in HSV_RANGES[color])
    return tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(hue % 360 / 360, sat, val))


def _fill(rng: np.random.Generator, rgb: tuple[int, int, int], wh: tuple[int, int]) -> Image.Image:
    """The object's paint: flat, or (SHADED_P) shaded by a gentle linear ramp."""
    if rng.random() >= SHADED_P:
        return Image.new("RGB", wh, rgb)
    w, h = wh
    th = rng.uniform(0, 2 * math.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    t = x * math.cos(th) + y * math.sin(th)
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6) * 2 - 1  # -1 .. 1 across the object
    gain = 1 + rng.uniform(0.03, SHADE_MAX) * t
    return Image.fromarray(np.clip(np.rint(np.array(rgb) * gain[..., None]), 0, 255).astype(np.uint8))


def _draw(
    canvas: Image.Image,
    rng: np.random.Generator,
    shape: str,
    color: str,
    size_name: str,
    cell: tuple[int, int, int],
    supersample: int,
) -> SceneObject | None:
    """Draw ``shape`` filling the square ``cell = (x0, y0, side)``; return it with its tight box."""
    x0, y0, side = cell
    pad = 2
    angle = float(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG)) if shape in ROTATED_SHAPES else 0.0
    pts = _outline(shape, angle, rng)
    mn, mx = pts.min(axis=0), pts.max(axis=0)
    # Pixels x0 .. x0+side-1 are covered when the outline spans side-1 pixel units.
    extent = side - 1
    scale = extent / float((mx - mn).max())
    # Polygon in canvas pixels, its bounding box centred in the cell.
    centre = np.array([x0 + extent / 2, y0 + extent / 2])
    poly = (pts - (mn + mx) / 2) * scale + centre
    s = supersample
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
    rgb = _object_colour(rng, color)
    where = (ox, oy, ox + mask.width, oy + mask.height)
    canvas.paste(_fill(rng, rgb, mask.size), where, mask)
    if rng.random() < OUTLINED_P:  # a darker rim of the same hue
        rim = ImageChops.subtract(mask, mask.filter(ImageFilter.MinFilter(3)))
        canvas.paste(tuple(int(v * 0.6) for v in rgb), where, rim)
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


def _degrade(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Camera-like losses, each with its own chance: blur, sensor noise, JPEG compression."""
    if rng.random() < DEGRADE_P["blur"]:
        img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, MAX_BLUR))))
    if rng.random() < DEGRADE_P["noise"]:
        px = np.asarray(img, dtype=np.float32)
        px = px + rng.normal(0, rng.uniform(1.0, MAX_NOISE), px.shape).astype(np.float32)
        img = Image.fromarray(np.clip(np.rint(px), 0, 255).astype(np.uint8))
    if rng.random() < DEGRADE_P["jpeg"]:
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=int(rng.integers(*JPEG_QUALITY)))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


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


def _combos(rng: np.random.Generator, novel: bool) -> list[tuple[str, str]]:
    """1-3 distinct colour-shape pairs; with ``novel`` the first is a NOVEL_COMBOS pair."""
    allowed = [(c, s) for c in COLORS for s in SHAPES if novel or (c, s) not in NOVEL_COMBOS]
    n = int(rng.integers(1, 4))
    combos: list[tuple[str, str]] = []
    if novel:
        combos.append(NOVEL_COMBOS[int(rng.integers(len(NOVEL_COMBOS)))])
    while len(combos) < n:
        pick = allowed[int(rng.integers(len(allowed)))]
        if pick not in combos:
            combos.append(pick)
    return combos


def pick_background(rng: np.random.Generator, style: str = "train") -> str:
    """A background family of ``style`` (a key of ``SCENE_STYLES``), uniformly."""
    families = SCENE_STYLES.get(style)
    if families is None:
        raise ValueError(f"unknown style {style!r}, expected one of {sorted(SCENE_STYLES)}")
    return families[int(rng.integers(len(families)))]


def render_scene(
    rng: np.random.Generator, size: int = 256, novel: bool = False, style: str = "train",
    *, background: str | None = None,
) -> tuple[Image.Image, list[SceneObject]]:
    """One scene: an RGB image and its 1-3 objects (non-overlapping boxes, distinct colour-shape
    pairs). With ``novel`` the first object is a :data:`NOVEL_COMBOS` pair; otherwise no object is.
    The background family is ``background``, or one drawn from ``style`` (``SCENE_STYLES``) by
    :func:`pick_background` with the same ``rng``.
    """
    kind = background if background is not None else pick_background(rng, style)
    canvas = Image.fromarray(_background(rng, size, kind))
    supersample = int(rng.integers(2, 5))  # anti-aliasing: 2x to 4x
    cells: list[tuple[int, int, int]] = []
    objects: list[SceneObject] = []
    for color, shape in _combos(rng, novel):
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
        obj = _draw(canvas, rng, shape, color, size_name, cell, supersample)
        if obj is None:
            continue
        cells.append(cell)
        objects.append(obj)
    return _degrade(canvas, rng), objects


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
    style: str = "train",
) -> SceneSummary:
    """Write ``num_images`` scenes under ``out`` (see the module docstring for the layout).

    Files: ``images/scene_NNNNNN.png``, ``captions.json`` (COCO captions; ``file_name`` is
    ``scene_NNNNNN.png``, relative to the image folder as in COCO; ``load_records`` finds the
    ``images/`` folder beside the file), ``instances.json`` (COCO instances with
    ``color``/``size`` per annotation) and ``dataset.json`` (Karpathy: ``filepath`` "images",
    with train/val/test splits by ``split_fractions``; all "test" when ``novel``). ``style``:
    a key of ``SCENE_STYLES``. Same arguments, same bytes.
    """
    fr = _checked_args(num_images, seed, size, split_fractions)
    if style not in SCENE_STYLES:
        raise ValueError(f"generate_scenes: style {style!r} is not one of {sorted(SCENE_STYLES)}")
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
        "style": style,
    }
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    coco_images, cap_anns, inst_anns, kp_images = [], [], [], []
    sentid = 0
    for i in range(num_images):
        # The style enters the seed, so styles differ in their objects as well as their look.
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, int(novel), *style.encode()]))
        background = pick_background(rng, style)
        img, objects = render_scene(rng, size, novel, background=background)
        image_id = i + 1
        filename = f"scene_{i:06d}.png"
        img.save(images_dir / filename, **_PNG_PARAMS)
        coco_images.append(
            {"id": image_id, "file_name": filename, "width": size, "height": size, "license": 1,
             "background": background}
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
        style=style,
    )
    header = {"info": info, "licenses": licenses, "images": coco_images}
    _write_json(summary.captions_json, {**header, "annotations": cap_anns})
    _write_json(summary.instances_json, {**header, "annotations": inst_anns, "categories": categories})
    _write_json(summary.dataset_json, {"dataset": "scenes", "images": kp_images})
    return summary
