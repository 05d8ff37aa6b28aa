"""Write the demo inputs in data/examples/ (run once; the outputs are committed).

    .venv/bin/python data/make_examples.py

`make demo` captions this folder. It holds four synthetic scenes the default model has never
seen (seed 20261121; the default model trains on seed 1 scenes, and every scene's pixels come
from its own (seed, index) generator) and one real photo from scikit-image, which is
off-domain on purpose: it shows what the model does with an image unlike its training data.

The scenes are chosen by object count (2, 1, 3, 3 objects), so the demo shows attention
moving between objects as well as a single-object scene. The script rewrites README.md too,
so the reference captions listed there always match the images. Same inputs, same bytes:
the PNGs are copied byte for byte from `generate_scenes`, which is deterministic.
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
OBJECT_COUNTS = (2, 1, 3, 3)  # scene_1 .. scene_4; the notebook walks through scene_1
PHOTO_QUALITY = 90
OUT = Path(__file__).resolve().parent / "examples"


def pick_scenes(instances: dict, counts: tuple[int, ...]) -> list[int]:
    """Image ids, in order, with the wanted object counts; the first matching scene each time."""
    per_image = Counter(a["image_id"] for a in instances["annotations"])
    chosen: list[int] = []
    for want in counts:
        image_id = next(im["id"] for im in instances["images"]
                        if per_image[im["id"]] == want and im["id"] not in chosen)
        chosen.append(image_id)
    return chosen


def describe(instances: dict, captions: dict, image_id: int) -> tuple[str, str]:
    """(objects left to right, first reference caption) for the README."""
    objs = sorted((a for a in instances["annotations"] if a["image_id"] == image_id),
                  key=lambda a: a["bbox"][0] + a["bbox"][2] / 2)
    names = {c["id"]: c["name"] for c in instances["categories"]}
    objects = ", ".join(f"{a['size']} {a['color']} {names[a['category_id']]}" for a in objs)
    reference = next(c["caption"] for c in captions["annotations"] if c["image_id"] == image_id)
    return objects, reference


def write_photo(path: Path) -> None:
    """scikit-image's `chelsea` (a tabby cat, 451 x 300; CC0, by Stefan van der Walt), as a JPEG."""
    from skimage import data

    Image.fromarray(data.chelsea()).save(path, format="JPEG", quality=PHOTO_QUALITY)


def write_readme(path: Path, rows: list[tuple[str, str, str]]) -> None:
    table = "\n".join(f"| `{name}` | {objects} | {reference} |" for name, objects, reference in rows)
    path.write_text(f"""# Example inputs

The images `make demo` captions (`captioner caption data/examples --overlay-dir out --gif --html`).
They are written by `data/make_examples.py`; rerun it to rebuild them.

| File | Objects (left to right) | A reference caption |
| --- | --- | --- |
{table}
| `photo_chelsea.jpg` | a real photo: Chelsea the cat, from `skimage.data.chelsea()` (CC0, photo by Stefan van der Walt) | none |

The `scene_*.png` files are synthetic scenes (256 x 256) from `captioner.data.scenes.generate_scenes`
with seed {SEED}, which no training run uses, so the default model has not seen them. They were
picked to have 2, 1, 3 and 3 objects.

The photo is **off-domain** for the default model: it was trained only on synthetic scenes of
coloured shapes, so it knows no words for cats or rooms and will describe the photo as shapes.
That is expected; it is here to show how attention behaves on an image unlike its training data.
""", encoding="utf-8")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        summary = generate_scenes(tmp, CANDIDATES, SEED)
        instances = json.loads(summary.instances_json.read_text())
        captions = json.loads(summary.captions_json.read_text())
        files = {im["id"]: im["file_name"] for im in instances["images"]}
        rows = []
        for k, image_id in enumerate(pick_scenes(instances, OBJECT_COUNTS), start=1):
            name = f"scene_{k}.png"
            shutil.copyfile(Path(tmp) / files[image_id], OUT / name)
            rows.append((name, *describe(instances, captions, image_id)))
    write_photo(OUT / "photo_chelsea.jpg")
    write_readme(OUT / "README.md", rows)
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(rows)} scenes, a photo and README.md to {OUT} ({total / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
