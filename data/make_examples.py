"""Write the demo inputs in data/examples/ (run once; the outputs are committed).

    .venv/bin/python data/make_examples.py

`make demo` captions this folder. It holds four synthetic scenes the default model has never
seen (seed 20261121; the default model trains on seed 1 scenes, and every scene's pixels come
from its own (seed, index) generator) and one real photo from scikit-image, which is
off-domain on purpose: it shows what the model does with an image unlike its training data.

The scenes are chosen by object count (2, 1, 3, 3 objects), each on a different background
family, the last on a reserved one that training never uses, so the demo shows attention
moving between objects as well as a single-object scene. The script rewrites README.md too,
so the reference captions listed there always match the images, and objects.json, the true
objects that tests/test_default_model.py checks the default model's captions against. The
first three scenes and the photo are copied into captioner/assets/examples/ for the web demo.
Same inputs, same bytes: the PNGs are copied byte for byte from `generate_scenes`, which is
deterministic.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from PIL import Image

from captioner.data.scenes import generate_scenes

SEED = 20261121  # not a training seed
CANDIDATES = 40  # scenes generated to choose from
#: scene_1 .. scene_4: (object count, style); the notebook walks through scene_1.
SCENES = ((2, "flat"), (1, "stripes"), (3, "checks"), (3, "reserved"))
PHOTO_QUALITY = 90
OUT = Path(__file__).resolve().parent / "examples"
PACKAGE = Path(__file__).resolve().parent.parent / "captioner" / "assets" / "examples"
PACKAGED = ("scene_1.png", "scene_2.png", "scene_3.png", "photo_chelsea.jpg")


def pick_scene(instances: dict, count: int) -> int:
    """The first image id with ``count`` objects."""
    per_image = Counter(a["image_id"] for a in instances["annotations"])
    return next(im["id"] for im in instances["images"] if per_image[im["id"]] == count)


def objects_of(instances: dict, image_id: int) -> list[dict]:
    """The scene's objects left to right, as {size, color, shape, bbox}."""
    names = {c["id"]: c["name"] for c in instances["categories"]}
    anns = sorted((a for a in instances["annotations"] if a["image_id"] == image_id),
                  key=lambda a: a["bbox"][0] + a["bbox"][2] / 2)
    return [{"size": a["size"], "color": a["color"], "shape": names[a["category_id"]], "bbox": a["bbox"]}
            for a in anns]


def describe(objects: list[dict], captions: dict, image_id: int) -> tuple[str, str]:
    """(objects left to right, first reference caption) for the README."""
    listed = ", ".join(f"{o['size']} {o['color']} {o['shape']}" for o in objects)
    reference = next(c["caption"] for c in captions["annotations"] if c["image_id"] == image_id)
    return listed, reference


def write_photo(path: Path) -> None:
    """scikit-image's `chelsea` (a tabby cat, 451 x 300; CC0, by Stefan van der Walt), as a JPEG."""
    from skimage import data

    Image.fromarray(data.chelsea()).save(path, format="JPEG", quality=PHOTO_QUALITY)


def write_readme(path: Path, rows: list[tuple[str, str, str, str]]) -> None:
    table = "\n".join(f"| `{name}` | {style} | {objects} | {reference} |" for name, style, objects, reference in rows)
    path.write_text(f"""# Example inputs

The images `make demo` captions (`captioner caption data/examples --overlay-dir out --gif --html`).
They are written by `data/make_examples.py`; rerun it to rebuild them.

| File | Background | Objects (left to right) | A reference caption |
| --- | --- | --- | --- |
{table}
| `photo_chelsea.jpg` | | a real photo: Chelsea the cat, from `skimage.data.chelsea()` (CC0, photo by Stefan van der Walt) | none |

The `scene_*.png` files are synthetic scenes (256 x 256) from `captioner.data.scenes.generate_scenes`
with seed {SEED}, which no training run uses, so the default model has not seen them. They were
picked to have 2, 1, 3 and 3 objects on different background families; `scene_4.png` is drawn in
the reserved styles (`--style reserved`), which training never uses. `objects.json` lists each
scene's true objects; a test checks that the default model names exactly these.

The photo is **off-domain** for the default model: it was trained only on synthetic scenes of
coloured shapes, so it knows no words for cats or rooms and will describe the photo as shapes.
That is expected; it is here to show how attention behaves on an image unlike its training data.
""", encoding="utf-8")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    for k, (count, style) in enumerate(SCENES, start=1):
        with tempfile.TemporaryDirectory() as tmp:
            summary = generate_scenes(tmp, CANDIDATES, SEED, style=style)
            instances = json.loads(summary.instances_json.read_text())
            captions = json.loads(summary.captions_json.read_text())
            image_id = pick_scene(instances, count)
            image = next(im for im in instances["images"] if im["id"] == image_id)
            file_name, background = image["file_name"], image["background"]
            name = f"scene_{k}.png"
            shutil.copyfile(summary.images_dir / file_name, OUT / name)
            objects = objects_of(instances, image_id)
            truth[name] = {"style": style, "background": background, "objects": objects}
            label = f"{background} (reserved)" if style == "reserved" else background
            rows.append((name, label, *describe(objects, captions, image_id)))
    write_photo(OUT / "photo_chelsea.jpg")
    (OUT / "objects.json").write_text(json.dumps(truth, indent=1) + "\n", encoding="utf-8")
    write_readme(OUT / "README.md", rows)
    PACKAGE.mkdir(parents=True, exist_ok=True)
    for name in PACKAGED:  # the web demo's examples: copies, byte for byte
        shutil.copyfile(OUT / name, PACKAGE / name)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(rows)} scenes, a photo, objects.json and README.md to {OUT} ({total / 1024:.0f} KB); "
          f"copied {len(PACKAGED)} into {PACKAGE}")


if __name__ == "__main__":
    main()
