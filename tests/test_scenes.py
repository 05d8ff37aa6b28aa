"""The synthetic scenes generator: determinism, formats, and that captions match the pixels."""

from __future__ import annotations

import colorsys
import contextlib
import io
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
from pycocotools.coco import COCO

from captioner.data import scenes as scenes_module
from captioner.data.annotations import load_records
from captioner.data.scene_spec import (
    BACKGROUNDS,
    COLORS,
    RESERVED_BACKGROUNDS,
    SCENE_STYLES,
    SHAPES,
    SIZES,
    TRAIN_BACKGROUNDS,
    Mention,
    find_mentions,
    parse_mentions,
)
from captioner.data.scenes import (
    BACKGROUND_RANGE,
    COLOR_RGB,
    HSV_RANGES,
    MAX_ROTATION_DEG,
    NOVEL_COMBOS,
    PROPORTIONS,
    SIZE_RANGES,
    SceneObject,
    generate_scenes,
    render_scene,
)
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


def _band_distance(hue: float, band: tuple[float, float]) -> float:
    """Degrees from ``hue`` to the hue band [lo, hi] around the colour circle (0 inside)."""
    lo, hi = band
    return min(0.0 if lo <= h <= hi else min(abs(h - lo), abs(h - hi)) for h in (hue - 360, hue, hue + 360))


def _hsv(rgb) -> tuple[float, float, float]:
    """(hue in degrees, saturation, value) of an RGB triple in 0..255."""
    h, s_, v = colorsys.rgb_to_hsv(*(float(c) / 255 for c in rgb))
    return h * 360, s_, v


def _hue_name(rgb) -> tuple[str, float]:
    """The colour name whose HSV_RANGES hue band is nearest to ``rgb``'s hue, and how far off it is."""
    hue = _hsv(rgb)[0]
    far = {name: _band_distance(hue, ranges[0]) for name, ranges in HSV_RANGES.items()}
    name = min(far, key=far.get)
    return name, far[name]


def _render(n: int, size: int = SIZE, style: str = "train", seed: int = 0) -> list[SceneObject]:
    """The objects of ``n`` scenes drawn with seeded generators."""
    return [o for i in range(n) for o in render_scene(np.random.default_rng([seed, i]), size, style=style)[1]]


def _interior(segmentation, size: int) -> np.ndarray:
    """(size, size) mask of the pixels at least 2 px inside an outline polygon (1 px for thin
    shapes): pure fill, away from the anti-aliased edge, the rim and blur from the background."""
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).polygon(list(zip(segmentation[::2], segmentation[1::2])), fill=255)
    inner = np.asarray(mask.filter(ImageFilter.MinFilter(5))) > 0
    return inner if inner.sum() >= 5 else np.asarray(mask.filter(ImageFilter.MinFilter(3))) > 0


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


@pytest.fixture(scope="module")
def styled(tmp_path_factory) -> dict:
    """Two 48 px scenes per style, seed 5: (summary, files)."""
    root = tmp_path_factory.mktemp("styles")
    out = {}
    for style in SCENE_STYLES:
        summary = generate_scenes(root / style, 2, seed=5, size=48, style=style)
        out[style] = (summary, _files(root / style))
    return out


def test_every_style_generates_the_same_bytes_for_the_same_seed(tmp_path, styled):
    for style, (summary, files) in styled.items():
        again = generate_scenes(tmp_path / style, 2, seed=5, size=48, style=style)
        assert _files(tmp_path / style) == files, style
        assert summary.style == again.style == style
        assert json.loads(files["captions.json"])["info"]["style"] == style
        assert all(Image.open(summary.images_dir / f"scene_{i:06d}.png").size == (48, 48) for i in range(2))
    generate_scenes(tmp_path / "default", 2, seed=5, size=48)
    assert _files(tmp_path / "default") == styled["train"][1]  # the default style is "train"


def test_styles_differ(styled):
    pngs = [files[k] for _, files in styled.values() for k in sorted(files) if k.endswith(".png")]
    assert len(pngs) == 2 * len(SCENE_STYLES) and len(set(pngs)) == len(pngs)
    # The style enters the per-image seed, so the objects and captions differ too, not only the look.
    assert len({files["dataset.json"] for _, files in styled.values()}) == len(SCENE_STYLES)


def test_style_names():
    assert set(TRAIN_BACKGROUNDS).isdisjoint(RESERVED_BACKGROUNDS)
    assert BACKGROUNDS == TRAIN_BACKGROUNDS + RESERVED_BACKGROUNDS
    assert SCENE_STYLES["train"] == TRAIN_BACKGROUNDS and SCENE_STYLES["reserved"] == RESERVED_BACKGROUNDS
    assert set(SCENE_STYLES) == {"train", "reserved", *BACKGROUNDS}
    assert all(SCENE_STYLES[k] == (k,) for k in BACKGROUNDS)


@pytest.fixture
def drawn_families(monkeypatch) -> list[str]:
    """The background family of every scene drawn while the test runs (a spy on ``_pattern``)."""
    kinds: list[str] = []
    draw = scenes_module._pattern

    def spy(kind, *args, **kwargs):
        kinds.append(kind)
        return draw(kind, *args, **kwargs)

    monkeypatch.setattr(scenes_module, "_pattern", spy)
    return kinds


@pytest.mark.parametrize("style", sorted(SCENE_STYLES))
def test_a_style_draws_only_its_background_families(style, drawn_families):
    n = 60 if len(SCENE_STYLES[style]) > 1 else 6
    for i in range(n):
        render_scene(np.random.default_rng([3, i]), 40, style=style)
    assert len(drawn_families) == n  # one background per scene
    assert set(drawn_families) == set(SCENE_STYLES[style])  # only its families, and all of them


def test_generate_scenes_keeps_training_and_reserved_families_apart(tmp_path, drawn_families):
    generate_scenes(tmp_path / "train", 24, seed=2, size=32)  # default style: train
    train = set(drawn_families)
    drawn_families.clear()
    generate_scenes(tmp_path / "reserved", 12, seed=2, size=32, style="reserved")
    reserved = set(drawn_families)
    assert train <= set(TRAIN_BACKGROUNDS) and len(train) >= 4
    assert reserved <= set(RESERVED_BACKGROUNDS) and len(reserved) >= 2


@pytest.mark.parametrize("kind", BACKGROUNDS)
def test_every_background_family_stays_in_background_range(kind):
    lo, hi = BACKGROUND_RANGE
    for seed in range(12):
        bg = scenes_module._background(np.random.default_rng(seed), 64, kind)
        assert bg.shape == (64, 64, 3) and bg.dtype == np.uint8
        assert lo <= bg.min() and bg.max() <= hi, (kind, seed)
        colours = len(np.unique(bg.reshape(-1, 3), axis=0))
        assert colours == 1 if kind == "flat" else colours > 1, (kind, seed)


def test_patches_are_irregular_cells_of_independent_tints():
    # Piecewise constant (the cells' tones), many tones (one per cell), and not a grid: unlike
    # the reserved mosaic, a row crosses cell borders at columns that differ from row to row.
    for seed in range(6):
        bg = scenes_module._background(np.random.default_rng(seed), 128, "patches").astype(int)
        tones = np.unique(bg.reshape(-1, 3), axis=0)
        assert 8 <= len(tones) <= 80, seed
        same_as_right = (bg[:, 1:] == bg[:, :-1]).all(axis=-1)
        assert same_as_right.mean() > 0.85, seed
        borders = [frozenset(np.flatnonzero(~row)) for row in same_as_right]
        assert len(set(borders)) > 16, seed  # a tile grid would repeat a handful of border sets


def test_unknown_background_family_is_named():
    with pytest.raises(ValueError, match="unknown background 'nope'"):
        scenes_module._background(np.random.default_rng(0), 32, "nope")


def test_bad_style_is_a_value_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="style 'nope'.*reserved.*train"):
        generate_scenes(tmp_path / "s", 2, seed=0, style="nope")
    assert not (tmp_path / "s").exists()  # refused before anything is written
    with pytest.raises(ValueError, match="style 'Train'"):
        render_scene(np.random.default_rng(0), 32, style="Train")


def test_cli_style(tmp_path, capsys):
    from captioner.cli import main

    with pytest.raises(SystemExit) as info:
        main(["scenes", "--out", str(tmp_path / "s"), "--num-images", "2", "--style", "nope"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    [line] = [ln for ln in err.splitlines() if "error" in ln]
    assert "--style" in line and "'nope'" in line and "'reserved'" in line and "'train'" in line
    assert not (tmp_path / "s").exists()
    assert main(["scenes", "--out", str(tmp_path / "r"), "--num-images", "2", "--size", "32",
                 "--style", "reserved"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["style"] == "reserved" and printed["num_images"] == 2
    assert json.loads((tmp_path / "r" / "captions.json").read_text())["info"]["style"] == "reserved"


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
    # COCO convention: file_name is relative to the image folder; load_records finds images/.
    names = [f"scene_{i:06d}.png" for i in range(40)]
    for path in (scenes.captions_json, scenes.instances_json):
        assert [im["file_name"] for im in json.loads(path.read_text())["images"]] == names
    assert [r.path for r in coco_recs] == [scenes.images_dir / n for n in names]
    assert load_records(scenes.captions_json, images=scenes.images_dir) == coco_recs
    assert [r.path for r in coco_recs] == [r.path for r in kp_recs]
    assert all(r.path.is_file() and r.path.parent == scenes.images_dir for r in kp_recs)
    assert [r.captions for r in coco_recs] == [r.captions for r in kp_recs]
    assert all(len(r.captions) == 5 for r in kp_recs)
    counts = Counter(r.split for r in kp_recs)
    assert dict(counts) == {k: v for k, v in scenes.split_counts.items() if v} == {"train": 32, "val": 4, "test": 4}
    assert len(select_split(kp_recs, "train")) == 32
    img = Image.open(kp_recs[0].path)
    assert img.size == (SIZE, SIZE) and img.mode == "RGB"


def test_datasets_with_old_image_paths_still_load(tmp_path):
    # Scene datasets written before v0.2 had file_name "images/scene_NNNNNN.png", relative to the
    # captions file's folder.
    summary = generate_scenes(tmp_path, 3, seed=1, size=32)
    new = load_records(summary.captions_json)
    data = json.loads(summary.captions_json.read_text())
    for im in data["images"]:
        im["file_name"] = "images/" + im["file_name"]
    summary.captions_json.write_text(json.dumps(data))
    old = load_records(summary.captions_json)
    assert [r.path for r in old] == [r.path for r in new] == sorted(summary.images_dir.glob("scene_*.png"))
    assert all(r.path.is_file() for r in old) and [r.captions for r in old] == [r.captions for r in new]


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
            for m in find_mentions(toks):  # the positions point at the words
                assert (toks[m.color_index], toks[m.shape_index]) == (m.color, m.shape), raw
                assert all(t in SIZES for t in toks[m.color_index + 1 : m.shape_index]), raw
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
        "a an and there is image with picture of in scene this shows from left to right the above below".split()
    )
    assert set(words) <= allowed  # no plurals, no counting words
    # The old "... on a plain background" template described a look that scenes no longer have.
    assert not {"on", "plain", "background"} & set(words)
    assert words["in"] > 0
    raws = [c for r in load_records(scenes.dataset_json) for c in r.captions]
    for raw in raws:
        toks = raw.replace(",", "").split()
        for art, nxt in zip(toks, toks[1:]):
            if art in ("a", "an"):
                assert (art == "an") == (nxt[0] in "aeiou"), raw
    assert len({c for r in load_records(scenes.dataset_json) for c in r.captions}) > 100  # varied


def test_boxes_sizes_and_colours_match_pixels(scenes):
    recs = {r.image_id: r for r in load_records(scenes.dataset_json)}
    for image_id, objs in _objects(scenes).items():
        img = Image.open(recs[image_id].path)
        px = np.asarray(img, dtype=int)
        saturation = np.asarray(img.convert("HSV"), dtype=float)[..., 1] / 255
        near_object = np.zeros(px.shape[:2], bool)
        for k, o in enumerate(objs):
            x, y, w, h = o["bbox"]
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
            lo_f, hi_f = SIZE_RANGES[o["size"]]
            assert lo_f * SIZE <= max(w, h) <= hi_f * SIZE, o
            for p in objs[k + 1 :]:
                px_, py_, pw, ph = p["bbox"]
                assert x + w <= px_ or px_ + pw <= x or y + h <= py_ or py_ + ph <= y, (o, p)
            # The box is tight around the outline: its pixels span the polygon, to within 1 px.
            outline = np.array(o["segmentation"][0]).reshape(-1, 2)
            assert np.abs(outline.min(axis=0) - (x, y)).max() <= 1.05, o
            assert np.abs(outline.max(axis=0) + 1 - (x + w, y + h)).max() <= 1.05, o
            # The fill, away from edges, has the named hue: blur, noise, JPEG and shading move it
            # by a few degrees at most, less than half the gap between neighbouring bands.
            inner = _interior(o["segmentation"][0], SIZE)
            assert inner.sum() >= 5, o
            name, off = _hue_name(np.median(px[inner], axis=0))
            assert name == o["color"], (o, off)
            near_object[max(y - 2, 0) : y + h + 2, max(x - 2, 0) : x + w + 2] = True
        # Background pixels (3 px or more outside every box: blur spreads objects 1-2 px) leave
        # BACKGROUND_RANGE only a little under blur, noise and JPEG, and never look like an object:
        # objects have a channel <= 82 and saturation >= 0.7, backgrounds stay greyish.
        far = ~near_object
        assert px[far].min() >= 70, image_id
        assert saturation[far].max() < 0.65, image_id


def test_fill_colours_lie_in_their_hsv_ranges():
    by_colour: dict[str, set] = {}
    for o in _render(60):
        hue, sat, val = _hsv(o.rgb)
        (h_lo, h_hi), (s_lo, s_hi), (v_lo, v_hi) = HSV_RANGES[o.color]
        assert _band_distance(hue, (h_lo, h_hi)) < 1.0, o  # 8-bit rounding moves the hue a little
        assert s_lo - 0.01 <= sat <= s_hi + 0.01 and v_lo - 0.01 <= val <= v_hi + 0.01, o
        by_colour.setdefault(o.color, set()).add(o.rgb)
    assert set(by_colour) == set(COLORS)
    assert all(len(rgbs) > 3 for rgbs in by_colour.values())  # jittered, not one RGB per name


def test_named_colours_are_their_ranges_centres_and_the_bands_are_apart():
    for name, ((h_lo, h_hi), (s_lo, s_hi), (v_lo, v_hi)) in HSV_RANGES.items():
        hue, sat, val = _hsv(COLOR_RGB[name])
        assert _band_distance(hue, ((h_lo + h_hi) / 2 - 1, (h_lo + h_hi) / 2 + 1)) == 0.0, name
        assert sat == pytest.approx((s_lo + s_hi) / 2, abs=0.01) and val == pytest.approx((v_lo + v_hi) / 2, abs=0.01)
        assert _hue_name(COLOR_RGB[name]) == (name, 0.0)
        assert s_lo >= 0.7  # every object has a dark channel, unlike any background
    bands = sorted((lo % 360, hi % 360) if lo >= 0 else (lo + 360, hi + 360) for (lo, hi), _, _ in HSV_RANGES.values())
    gaps = [b[0] - a[1] for a, b in zip(bands, bands[1:])] + [bands[0][0] + 360 - bands[-1][1]]
    assert min(gaps) >= 8


def _turn(v) -> float:
    """Angle of a 2-vector in degrees, in the image's y-down frame."""
    return math.degrees(math.atan2(v[1], v[0]))


def test_shape_proportions_and_rotation_vary():
    objs = _render(150, size=64)
    pts = {s: [np.array(o.segmentation).reshape(-1, 2) for o in objs if o.shape == s] for s in SHAPES}
    assert all(len(p) >= 8 for p in pts.values()), {s: len(p) for s, p in pts.items()}

    def check(values, lo, hi, tol, spread):
        values = np.array(values)
        assert values.min() >= lo - tol and values.max() <= hi + tol, (values.min(), values.max())
        assert values.max() - values.min() > spread * (hi - lo), values

    # Stars: 10 points, outer and inner alternating; the outer ones' centroid is the centre.
    ratios, angles = [], []
    for p in pts["star"]:
        c = p[0::2].mean(axis=0)
        ratios.append(np.linalg.norm(p[1::2] - c, axis=1).mean() / np.linalg.norm(p[0::2] - c, axis=1).mean())
        angles.append(_turn(p[0] - c) + 90)  # the first tip points up when not rotated
    check(ratios, *PROPORTIONS["star_inner"], 0.01, 0.5)
    check(angles, -MAX_ROTATION_DEG, MAX_ROTATION_DEG, 0.5, 0.5)
    # Crosses: arm half width / half length from the first three points (-t, -1), (t, -1), (t, -t).
    arms = [np.linalg.norm(p[1] - p[0]) / np.linalg.norm(p[7] - p[0]) for p in pts["cross"]]
    check(arms, *PROPORTIONS["cross_arm"], 0.01, 0.5)
    check([_turn(p[1] - p[0]) for p in pts["cross"]], -MAX_ROTATION_DEG, MAX_ROTATION_DEG, 0.5, 0.5)
    # Triangles: apex (0, -k) over a base from (-0.87, 0.5) to (0.87, 0.5); k = 1 is equilateral.
    apex = []
    for p in pts["triangle"]:
        base = p[1] - p[2]
        unit = np.linalg.norm(base) / math.sqrt(3)
        side = p[0] - p[2]
        height = abs(base[0] * side[1] - base[1] * side[0]) / np.linalg.norm(base)  # apex to base line
        apex.append(height / unit - 0.5)
    check(apex, *PROPORTIONS["triangle_apex"], 0.01, 0.5)
    check([_turn(p[1] - p[2]) for p in pts["triangle"]], -MAX_ROTATION_DEG, MAX_ROTATION_DEG, 0.5, 0.5)
    # Squares stay square, tilted; circles are not tilted (a 64-gon starting at angle 0).
    for p in pts["square"]:
        sides = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)
        assert sides.max() - sides.min() < 0.05 * sides.mean()
    check([_turn(p[1] - p[0]) for p in pts["square"]], -MAX_ROTATION_DEG, MAX_ROTATION_DEG, 0.5, 0.5)
    assert all(abs(_turn(p[0] - p.mean(axis=0))) < 0.5 for p in pts["circle"])


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


def test_find_mentions_gives_the_words_positions():
    toks = "a small red circle and a blue large star near red the circle square".split()
    found = find_mentions(toks)
    assert found == [Mention("red", "circle", 2, 3), Mention("blue", "star", 6, 8)]
    assert [(m.color, m.shape) for m in found] == parse_mentions(toks)
    assert find_mentions("Red Small Circle red red cross".split()) == [Mention("red", "circle", 0, 2),
                                                                        Mention("red", "cross", 4, 5)]
    assert find_mentions("red small large circle".split()) == []  # one size word at most


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
