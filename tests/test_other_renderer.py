"""data/other_renderer.py: the second renderer of the scene spec that the model card scores."""
from __future__ import annotations

import colorsys
import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.data.annotations import load_instances, load_records
from captioner.data.scene_spec import COLORS, SHAPES, parse_mentions
from captioner.data.scenes import NOVEL_COMBOS
from captioner.words.vocab import tokenize
from conftest import load_data_script


def _renderer():
    return load_data_script("other_renderer")


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_another_seed_other_scenes(tmp_path):
    r = _renderer()
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        r.render(tmp_path / name, 4, seed, canvas=96)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_scenes_follow_the_spec_and_load_as_evaluate_reads_them(tmp_path):
    r = _renderer()
    r.render(tmp_path, 24, 0, canvas=128)
    records = load_records(tmp_path / "captions.json")
    instances = load_instances(tmp_path / "instances.json")
    assert len(records) == 24 and all(rec.path.is_file() and len(rec.captions) == 5 for rec in records)
    for rec in records:
        objects = instances.objects[rec.image_id]
        boxes = instances.boxes[rec.image_id]
        assert 1 <= len(objects) <= 3 and len(set(objects)) == len(objects)
        assert all(c in COLORS and s in SHAPES and (c, s) not in NOVEL_COMBOS for c, s in objects)
        for b in boxes:  # inside the canvas, and apart from every other box
            assert 0 <= b.x and 0 <= b.y and b.x + b.w <= 128 and b.y + b.h <= 128 and b.w > 4 and b.h > 4
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert a.x + a.w <= b.x or b.x + b.w <= a.x or a.y + a.h <= b.y or b.y + b.h <= a.y
        for caption in rec.captions:  # every caption names exactly the scene's objects
            assert sorted(parse_mentions(tokenize(caption))) == sorted(objects)


def test_fill_colours_are_each_names_centre_within_the_jitter(tmp_path):
    """A square's or a circle's centre pixel is its fill (blur moves a flat fill by nothing), and
    the names' centre colours keep the hue order the names stand for."""
    r = _renderer()
    r.render(tmp_path, 40, 1)
    inst = json.loads((tmp_path / "instances.json").read_text())
    files = {im["id"]: im["file_name"] for im in inst["images"]}
    seen = 0
    for ann in inst["annotations"]:
        if SHAPES[ann["category_id"] - 1] not in ("square", "circle"):
            continue
        x, y, w, h = ann["bbox"]
        rgb = np.asarray(Image.open(tmp_path / "images" / files[ann["image_id"]]).convert("RGB"))[y + h // 2, x + w // 2]
        centre = np.array(r.CENTRE_RGB[ann["color"]])
        assert np.abs(rgb.astype(int) - centre).max() <= r.JITTER + 1, (ann, rgb)
        seen += 1
    assert seen >= 10
    hues = {c: colorsys.rgb_to_hsv(*(v / 255 for v in r.CENTRE_RGB[c]))[0] * 360 for c in COLORS}
    assert hues["orange"] < hues["yellow"] < hues["green"] < hues["blue"] < hues["purple"]
