"""A second renderer of the scene spec, written apart from `captioner scenes`: a stand-in for the
independent renderers that the default model's targets name and that we do not have.

    .venv/bin/python data/other_renderer.py --out datasets/scenes-other --num-images 200 --seed 11

It shares only the spec's words with the generator (`captioner.data.scene_spec`: 1-3
non-overlapping circles, squares, triangles, stars and crosses in six colours, small or large,
and the held-out colour-shape pairs) and draws them its own way, after the description of the
renderer that broke captioner 0.1's model: its own shape proportions (a 5-point star with inner
radius 0.5, crosses with arms of 0.3 of their length), rotations within +-12 degrees, each
colour's own centre RGB jittered by up to 15 per channel, flat light or mid-tone backgrounds,
grey or tinted, 4x supersampled edges (scikit-image's rasterisers, not PIL's) and a slight
Gaussian blur (scikit-image's too). It writes what `captioner evaluate --grounding` reads: `images/`,
`captions.json` (COCO captions, `file_name` relative to `images/`) and `instances.json` (COCO
instances with `color` and `size`). Its captions use templates of its own, so BLEU, METEOR and
CIDEr on it say little; object F1, exact-set and the pointing game are what it is for.

We wrote it, so it is not independent of us: it tests robustness to a different drawing of the
same spec, not to someone else's reading of it. Same arguments and the same numpy and
scikit-image versions, same bytes. Captions name the objects left to right by their boxes' left
edges.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.draw import disk, polygon
from skimage.filters import gaussian

from captioner.data.scene_spec import COLORS, SHAPES
from captioner.data.scenes import NOVEL_COMBOS

#: Each name's centre colour in this renderer (sRGB), jittered by JITTER per channel.
CENTRE_RGB = {"red": (210, 35, 35), "orange": (240, 135, 25), "yellow": (240, 215, 30),
              "green": (40, 165, 65), "blue": (35, 75, 215), "purple": (135, 50, 185)}
JITTER = 15
#: Longest side of an object's box, as a fraction of the canvas.
SIZE_BANDS = {"small": (0.15, 0.21), "large": (0.31, 0.40)}
MAX_TILT_DEG = 12.0
STAR_INNER, CROSS_ARM = 0.5, 0.3
LIGHT, MID = (190, 235), (120, 170)  # background grey levels
TINT = 20
BLUR_SIGMA = (0.3, 0.8)
SUPERSAMPLE = 4
GAP, MARGIN = 4, 3  # px between boxes, and from the canvas edge
PLACEMENT_TRIES = 10_000  # at 256 px three objects fit apart within a few dozen tries
MIN_CANVAS = 64


def outline(shape: str) -> np.ndarray:
    """The shape's outline in unit coordinates, (N, 2) as (x, y); the circle is drawn as a disk."""
    if shape == "square":
        return np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], float)
    if shape == "triangle":
        angles = np.radians([-90, 30, 150])
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "star":
        angles = np.radians(-90 + 36 * np.arange(10))
        radii = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    if shape == "cross":
        a = CROSS_ARM
        return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a),
                         (-1, a), (-1, -a), (-a, -a)], float)
    raise ValueError(f"no outline for {shape!r}")


def coverage(shape: str, cx: float, cy: float, side: float, tilt_deg: float, canvas: int) -> np.ndarray:
    """(canvas, canvas) in [0, 1]: how much of each pixel the object covers (4x4 samples a pixel)."""
    s = SUPERSAMPLE
    hi = np.zeros((canvas * s, canvas * s), np.float32)
    if shape == "circle":
        rr, cc = disk((cy * s, cx * s), side / 2 * s, shape=hi.shape)
    else:
        pts = outline(shape)
        t = math.radians(tilt_deg)
        rot = pts @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
        rot *= side / (rot.max(0) - rot.min(0)).max()  # longest side of its box = side
        rot += np.array([cx, cy]) - (rot.max(0) + rot.min(0)) / 2  # the box centred on (cx, cy)
        rr, cc = polygon(rot[:, 1] * s, rot[:, 0] * s, shape=hi.shape)
    hi[rr, cc] = 1.0
    return hi.reshape(canvas, s, canvas, s).mean(axis=(1, 3))


def scene(rng: np.random.Generator, canvas: int, any_pairs: bool) -> tuple[np.ndarray, list[dict]]:
    """One image (H, W, 3) uint8 and its objects: dicts of shape, color, size, bbox (COCO, tight
    around every pixel the object touches, as `captioner scenes` draws them) and area. The
    objects' colour-shape pairs are distinct, as the spec has them."""
    level = rng.uniform(*(LIGHT if rng.random() < 0.5 else MID))
    tint = rng.uniform(-TINT, TINT, 3) if rng.random() < 0.5 else np.zeros(3)
    img = np.broadcast_to(np.clip(level + tint, 0, 255), (canvas, canvas, 3)).astype(np.float32)
    n = int(rng.integers(1, 4))
    objs: list[tuple] = []
    for _ in range(PLACEMENT_TRIES):  # draw the objects' words and boxes until they fit apart
        objs, boxes = [], []
        for _ in range(n):
            while True:
                shape, color = SHAPES[rng.integers(len(SHAPES))], COLORS[rng.integers(len(COLORS))]
                if (any_pairs or (color, shape) not in NOVEL_COMBOS) and (shape, color) not in {o[:2] for o in objs}:
                    break
            size = ("small", "large")[rng.integers(2)]
            side = rng.uniform(*SIZE_BANDS[size]) * canvas
            lo, hi = MARGIN + side / 2, canvas - MARGIN - side / 2
            cx, cy = rng.uniform(lo, hi), rng.uniform(lo, hi)
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            if any(box[0] < b[2] + GAP and b[0] < box[2] + GAP and box[1] < b[3] + GAP and b[1] < box[3] + GAP
                   for b in boxes):
                break
            boxes.append(box)
            objs.append((shape, color, size, cx, cy, side))
        if len(objs) == n:
            break
    else:
        raise RuntimeError(f"could not place {n} objects apart on a {canvas} px canvas in {PLACEMENT_TRIES} tries")
    out = []
    for shape, color, size, cx, cy, side in objs:
        tilt = 0.0 if shape == "circle" else rng.uniform(-MAX_TILT_DEG, MAX_TILT_DEG)
        a = coverage(shape, cx, cy, side, tilt, canvas)[..., None]  # (H, W, 1)
        rgb = np.clip(np.array(CENTRE_RGB[color]) + rng.integers(-JITTER, JITTER + 1, 3), 0, 255)
        img = img * (1 - a) + rgb * a
        ys, xs = np.nonzero(a[..., 0] > 0)
        out.append({"shape": shape, "color": color, "size": size,
                    "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
                    "area": float(a.sum())})
    sigma = rng.uniform(*BLUR_SIGMA)
    img = gaussian(img, sigma=sigma, channel_axis=-1, preserve_range=True)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), out


def captions(objects: list[dict], rng: np.random.Generator) -> list[str]:
    """Five captions naming every object once, left to right, in templates of this renderer's own."""
    ordered = sorted(objects, key=lambda o: o["bbox"][0])
    out = []
    for k in range(5):
        names = [f"{o['size'] + ' ' if k % 2 else ''}{o['color']} {o['shape']}" for o in ordered]
        named = [("an " if x[0] in "aeiou" else "a ") + x for x in names]
        listed = named[0] if len(named) == 1 else ", ".join(named[:-1]) + f" and {named[-1]}"
        out.append(("there is {}", "a picture of {}", "{} on a plain background", "we see {}",
                    "{}")[(k + int(rng.integers(5))) % 5].format(listed))
    return out


def render(out: Path, num_images: int, seed: int, *, canvas: int = 256, any_pairs: bool = False) -> None:
    """Write `num_images` scenes under `out`: images/other_NNNNNN.png, captions.json and
    instances.json. Each image's random choices come from its own (seed, index) generator."""
    if canvas < MIN_CANVAS:
        raise ValueError(f"other_renderer: --size must be >= {MIN_CANVAS} px, got {canvas}")
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    info = {"description": "captioner scene spec, drawn by data/other_renderer.py", "seed": seed,
            "size": canvas, "any_pairs": any_pairs}
    images, cap_anns, inst_anns = [], [], []
    for i in range(num_images):
        rng = np.random.default_rng(np.random.SeedSequence([seed, i, 0x07E4]))
        pixels, objects = scene(rng, canvas, any_pairs)
        name = f"other_{i:06d}.png"
        Image.fromarray(pixels).save(images_dir / name, format="PNG", compress_level=1)
        images.append({"id": i + 1, "file_name": name, "width": canvas, "height": canvas,
                       "background": "other renderer"})
        for o in objects:
            inst_anns.append({"id": len(inst_anns) + 1, "image_id": i + 1, "category_id": SHAPES.index(o["shape"]) + 1,
                              "bbox": o["bbox"], "area": o["area"], "iscrowd": 0, "color": o["color"],
                              "size": o["size"]})
        for text in captions(objects, rng):
            cap_anns.append({"id": len(cap_anns) + 1, "image_id": i + 1, "caption": text})
    categories = [{"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)]
    header = {"info": info, "images": images}
    (out / "captions.json").write_text(json.dumps({**header, "annotations": cap_anns}, indent=1) + "\n")
    (out / "instances.json").write_text(json.dumps({**header, "annotations": inst_anns, "categories": categories},
                                                   indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--num-images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--any-pairs", action="store_true", help="also the colour-shape pairs training never sees")
    args = parser.parse_args(argv)
    render(args.out, args.num_images, args.seed, canvas=args.size, any_pairs=args.any_pairs)
    print(f"{args.num_images} scenes in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
