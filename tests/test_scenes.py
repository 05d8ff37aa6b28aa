"""The synthetic scenes generator: determinism, formats, and that captions match the pixels."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioner.data.annotations import load_records
from captioner.data.scene_spec import COLORS, SHAPES, SIZES, parse_mentions
from captioner.data.scenes import BACKGROUND_RANGE, COLOR_RGB, NOVEL_COMBOS, SIZE_RANGES, generate_scenes
from captioner.data.splits import select_split

SIZE = 96  # small canvases keep the tests fast; the layout rules are relative to the size


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    return generate_scenes(out, 40, seed=7, size=SIZE)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _coco(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _objects(summary) -> dict[int, list[dict]]:
    coco = _coco(summary.instances_json)
    cats = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return {i: [dict(a, shape=cats[a["category_id"]]) for a in coco.loadAnns(coco.getAnnIds(imgIds=[i]))] for i in coco.getImgIds()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = generate_scenes(tmp_path / "a", 6, seed=1, size=64)
    generate_scenes(tmp_path / "b", 6, seed=1, size=64)
    generate_scenes(tmp_path / "c", 6, seed=2, size=64)
    fa, fb, fc = _files(tmp_path / "a"), _files(tmp_path / "b"), _files(tmp_path / "c")
    assert len(fa) == 6 + 3 and fa == fb
    assert fa.keys() == fc.keys()
    assert fa["dataset.json"] != fc["dataset.json"]
    assert sum(fa[k] != fc[k] for k in fa if k.endswith(".png")) == 6
    assert a.split_counts == {"train": 5, "val": 1, "test": 0}


def test_formats_load_everywhere(scenes):
    caps = _coco(scenes.captions_json)
    assert len(caps.getImgIds()) == 40 and len(caps.getAnnIds()) == 5 * 40
    inst = json.loads(scenes.instances_json.read_text())
    assert [c["name"] for c in inst["categories"]] == list(SHAPES)
    assert {c["supercategory"] for c in inst["categories"]} == {"shape"}
    for ann in inst["annotations"]:
        assert ann["iscrowd"] == 0 and ann["color"] in COLORS and ann["size"] in SIZES and ann["area"] > 0

    coco_recs = load_records(scenes.captions_json)
    kp_recs = load_records(scenes.dataset_json)
    assert [r.image_id for r in coco_recs] == [r.image_id for r in kp_recs] == list(range(1, 41))
    assert [r.path for r in coco_recs] == [r.path for r in kp_recs]
    assert all(r.path.is_file() and r.path.parent == scenes.images_dir for r in kp_recs)
    assert [r.captions for r in coco_recs] == [r.captions for r in kp_recs]
    assert all(len(r.captions) == 5 for r in kp_recs)
    counts = Counter(r.split for r in kp_recs)
    assert dict(counts) == {k: v for k, v in scenes.split_counts.items() if v} == {"train": 32, "val": 4, "test": 4}
    assert len(select_split(kp_recs, "train")) == 32
    img = Image.open(kp_recs[0].path)
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"


def test_every_caption_names_every_object_once(scenes):
    objects = _objects(scenes)
    recs = load_records(scenes.dataset_json)
    relation_checks = 0
    for r in recs:
        objs = objects[r.image_id]
        assert 1 <= len(objs) <= 3
        truth = Counter((o["color"], o["shape"]) for o in objs)
        assert max(truth.values()) == 1  # colour-shape pairs are distinct within an image
        centre = {(o["color"], o["shape"]): (o["bbox"][0] + o["bbox"][2] / 2, o["bbox"][1] + o["bbox"][3] / 2) for o in objs}
        for raw, toks in zip(r.captions, r.tokens):
            mentions = parse_mentions(toks)
            assert Counter(mentions) == truth, raw
            for color, shape in mentions:  # a stated size must be the true size
                o = next(o for o in objs if (o["color"], o["shape"]) == (color, shape))
                other = {"small": "large", "large": "small"}[o["size"]]
                assert f"{other} {color} {shape}" not in raw, raw
            relational = any(w in raw for w in (" above ", " below ", " left of ", " right of "))
            if relational:
                (x0, y0), (x1, y1) = centre[mentions[0]], centre[mentions[1]]
                rel = {"left": x0 < x1, "right": x0 > x1, "above": y0 < y1, "below": y0 > y1}
                assert len(mentions) == 2, raw
                word = next(w for w in ("left", "right", "above", "below") if w in toks)
                assert rel[word], raw
                relation_checks += 1
            else:  # a list: objects named left to right
                xs = [centre[m][0] for m in mentions]
                assert xs == sorted(xs), raw
    assert relation_checks > 0


def test_caption_language(scenes):
    words = Counter(t for r in load_records(scenes.dataset_json) for toks in r.tokens for t in toks)
    allowed = set(COLORS) | set(SHAPES) | set(SIZES) | set(
        "a an and there is image with picture of on plain background scene this shows from left to right the above below".split()
    )
    assert set(words) <= allowed  # no plurals, no counting words
    raws = [c for r in load_records(scenes.dataset_json) for c in r.captions]
    for raw in raws:
        toks = raw.replace(",", "").split()
        for art, nxt in zip(toks, toks[1:]):
            if art in ("a", "an"):
                assert (art == "an") == (nxt[0] in "aeiou"), raw
    assert len({c for r in load_records(scenes.dataset_json) for c in r.captions}) > 100  # varied


def test_boxes_sizes_and_colours_match_pixels(scenes):
    lo, hi = BACKGROUND_RANGE
    palette = np.array([COLOR_RGB[c] for c in COLORS], dtype=float)
    recs = {r.image_id: r for r in load_records(scenes.dataset_json)}
    for image_id, objs in _objects(scenes).items():
        px = np.asarray(Image.open(recs[image_id].path), dtype=int)
        background = np.ones(px.shape[:2], bool)
        for k, o in enumerate(objs):
            x, y, w, h = o["bbox"]
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
            lo_f, hi_f = SIZE_RANGES[o["size"]]
            assert lo_f * SIZE <= max(w, h) <= hi_f * SIZE, o
            for p in objs[k + 1 :]:
                px_, py_, pw, ph = p["bbox"]
                assert x + w <= px_ or px_ + pw <= x or y + h <= py_ or py_ + ph <= y, (o, p)
            crop = px[y : y + h, x : x + w].reshape(-1, 3)
            fill = crop[crop.min(axis=1) < 80]  # object pixels: backgrounds have every channel >= 110
            assert len(fill) > 0.2 * w * h
            nearest = COLORS[int(np.argmin(((palette - np.median(fill, axis=0)) ** 2).sum(axis=1)))]
            assert nearest == o["color"], o
            background[y : y + h, x : x + w] = False
        assert px[background].min() >= lo and px[background].max() <= hi


def test_novel_combos(tmp_path, scenes):
    assert len(NOVEL_COMBOS) >= 3 and all(c in COLORS and s in SHAPES for c, s in NOVEL_COMBOS)
    seen = {(o["color"], o["shape"]) for objs in _objects(scenes).values() for o in objs}
    assert not seen & set(NOVEL_COMBOS)
    novel = generate_scenes(tmp_path / "novel", 12, seed=7, size=64, novel=True)
    assert novel.split_counts == {"train": 0, "val": 0, "test": 12}
    for objs in _objects(novel).values():
        assert {(o["color"], o["shape"]) for o in objs} & set(NOVEL_COMBOS)
    assert {r.split for r in load_records(novel.dataset_json)} == {"test"}


def test_parse_mentions():
    toks = "a small red circle and a blue large star near red the circle square".split()
    assert parse_mentions(toks) == [("red", "circle"), ("blue", "star")]
    assert parse_mentions(["An", "Orange", "Cross"]) == [("orange", "cross")]
    assert parse_mentions([]) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="split_fractions"):
        generate_scenes(tmp_path, 2, seed=0, split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="num_images"):
        generate_scenes(tmp_path, 0, seed=0)


def test_cli_bad_arguments_are_one_line_exit_2(tmp_path, capsys):
    from captioner.cli import main

    assert main(["scenes", "--out", str(tmp_path / "s"), "--num-images", "2", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and "seed" in err and "Traceback" not in err
