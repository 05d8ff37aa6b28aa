"""The one reader of caption, Karpathy, instances and results files: what it returns, and that a
bad file gives an AnnotationError naming the file, the field and the reason."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from captioner.data.annotations import (
    AnnotationError,
    Box,
    Instances,
    detect_format,
    load_instances,
    load_records,
    load_references,
    load_results,
)
from captioner.data.scenes import generate_scenes
from captioner.data.splits import select_split
from captioner.scoring.grounding import COCO_SYNONYMS, pointing_game

FIXTURES = Path(__file__).parent / "fixtures"
REFS_JSON = FIXTURES / "captions_refs.json"  # 6 COCO images, 3-5 references each
RESULTS_JSON = FIXTURES / "captions_results.json"  # one imperfect candidate per image


def _write(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def _image(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value, value, value)).save(path)
    return path


# ----------------------------------------------------------------------------- caption records


def _coco(tmp_path: Path) -> Path:
    images = [{"id": 7, "file_name": "b.png"}, {"id": 3, "file_name": "a.png"}, {"id": 9, "file_name": "c.png"}]
    anns = [
        {"id": 1, "image_id": 7, "caption": "A dog runs."},
        {"id": 2, "image_id": 3, "caption": "A cat sits on a mat"},
        {"id": 3, "image_id": 7, "caption": "The dog is running, fast!"},
    ]
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"info": {}, "images": images, "annotations": anns}))
    return path


def _karpathy(tmp_path: Path, images: list[dict] | None = None) -> Path:
    if images is None:
        images = [
            {"filepath": "train2014", "filename": "x.jpg", "split": "train", "cocoid": 11, "imgid": 0,
             "sentences": [{"raw": "A Red ball.", "tokens": ["A", "Red", "ball"]}]},
            {"filepath": "val2014", "filename": "y.jpg", "split": "restval", "cocoid": 12, "imgid": 1,
             "sentences": [{"raw": "a blue ball", "tokens": ["a", "blue", "ball"]}]},
            {"filename": "z.jpg", "split": "val", "imgid": 2, "sentences": [{"raw": "Two balls!"}]},
            {"filename": "w.jpg", "split": "test", "imgid": 3, "sentences": []},
        ]
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"dataset": "toy", "images": images}))
    return path


def test_coco_records(tmp_path):
    path = _coco(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        assert len(COCO(str(path)).getAnnIds()) == 3  # the fixture is real COCO
    assert detect_format(path) == "coco"
    recs = load_records(path)
    assert [r.image_id for r in recs] == [3, 7, 9]  # sorted by id
    assert recs[0].path == tmp_path / "a.png" and {r.split for r in recs} == {"train"}
    assert recs[1].captions == ("A dog runs.", "The dog is running, fast!")
    assert recs[1].tokens == (("a", "dog", "runs"), ("the", "dog", "is", "running", "fast"))
    assert recs[2].captions == () and recs[2].tokens == ()
    assert load_records(path, images=tmp_path / "imgs")[0].path == tmp_path / "imgs" / "a.png"


def test_coco_images_default_to_an_images_folder_only_when_found_there(tmp_path):
    # The check looks at the file's first image, b.png (records come sorted by id: a, b, c).
    path = _coco(tmp_path)
    _image(tmp_path / "images" / "b.png", 1)
    assert [r.path for r in load_records(path)] == [tmp_path / "images" / n for n in ("a.png", "b.png", "c.png")]
    # An explicit folder wins, and an image beside the file takes precedence over images/.
    assert load_records(path, images=tmp_path)[1].path == tmp_path / "b.png"
    _image(tmp_path / "b.png", 2)
    assert load_records(path)[1].path == tmp_path / "b.png"
    # Found nowhere: the file's own folder, as before (loading reads no pixels).
    (tmp_path / "b.png").unlink()
    (tmp_path / "images" / "b.png").unlink()
    assert load_records(path)[1].path == tmp_path / "b.png"
    # Karpathy files are not affected: filepath/filename stay relative to the file's folder.
    _image(tmp_path / "images" / "x.jpg", 3)
    kp = _karpathy(tmp_path, [{"filename": "x.jpg", "split": "test", "imgid": 0, "sentences": []}])
    assert load_records(kp)[0].path == tmp_path / "x.jpg"


def test_karpathy_records(tmp_path):
    path = _karpathy(tmp_path)
    assert detect_format(path) == "karpathy"
    recs = load_records(path, images="/data/coco")
    assert [r.image_id for r in recs] == [11, 12, 2, 3]  # cocoid when present, else imgid
    assert recs[0].path == Path("/data/coco/train2014/x.jpg")
    assert recs[2].path == Path("/data/coco/z.jpg")
    assert recs[0].tokens == (("a", "red", "ball"),)  # given tokens, lower-cased
    assert recs[2].tokens == (("two", "balls"),)  # no tokens given: tokenised from raw
    assert [r.split for r in recs] == ["train", "restval", "val", "test"]
    assert [r.image_id for r in select_split(recs, "train")] == [11, 12]  # train + restval
    assert [r.image_id for r in select_split(recs, "val")] == [2]
    with pytest.raises(ValueError, match="unknown split"):
        select_split(recs, "TRAIN")


def test_folder_records(tmp_path):
    _image(tmp_path / "pics" / "b.jpg", 1)
    _image(tmp_path / "pics" / "a.png", 2)
    (tmp_path / "pics" / "readme.txt").write_text("hi")
    assert detect_format(tmp_path / "pics") == "folder"
    recs = load_records(tmp_path / "pics")
    assert [(r.image_id, r.path.name, r.split, r.captions) for r in recs] == [(0, "a.png", "test", ()), (1, "b.jpg", "test", ())]


def _error(tmp_path: Path, obj_or_text, name: str = "ann.json") -> str:
    path = tmp_path / name
    path.write_text(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text))
    with pytest.raises(AnnotationError) as info:
        load_records(path)
    msg = str(info.value)
    assert msg.startswith(str(path) + ": ")
    return msg[len(str(path)) + 2 :]


def test_annotation_errors_name_file_and_field(tmp_path):
    assert _error(tmp_path, '{"images": [\n  {"id": 1,}\n]}').startswith("malformed JSON at line 2 column")
    assert "top level" in _error(tmp_path, "[1, 2]")
    assert "unrecognised annotation format" in _error(tmp_path, {"foo": 1})

    ok = {"filename": "a.jpg", "split": "train", "imgid": 0, "sentences": [{"raw": "x"}]}
    imgs = [dict(ok, imgid=i) for i in range(3)] + [{"filename": "d.jpg", "split": "train", "imgid": 3}]
    assert _error(tmp_path, {"images": imgs}) == "images[3].sentences missing"
    assert _error(tmp_path, {"images": [dict(ok, split="dev")]}).startswith("images[0].split must be one of")
    assert _error(tmp_path, {"images": [dict(ok, imgid="0")]}).startswith("images[0].imgid must be an integer")
    assert _error(tmp_path, {"images": [ok, ok]}).startswith("images[1].imgid 0 duplicates")
    assert _error(tmp_path, {"images": [dict(ok, sentences=[{"raw": 5}])]}).startswith("images[0].sentences[0].raw must be a string")

    coco = {"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 1, "caption": "x"}]}
    bad_ref = json.loads(json.dumps(coco))
    bad_ref["annotations"].append({"id": 2, "image_id": 5, "caption": "y"})
    assert _error(tmp_path, bad_ref) == "annotations[1].image_id 5 refers to an unknown image"
    no_cap = json.loads(json.dumps(coco))
    no_cap["annotations"].append({"id": 2, "image_id": 1})
    assert _error(tmp_path, no_cap) == "annotations[1].caption missing"
    no_name = json.loads(json.dumps(coco))
    del no_name["images"][0]["file_name"]
    assert _error(tmp_path, no_name) == "images[0].file_name missing"
    instances = {"images": coco["images"], "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}
    assert "instances" in _error(tmp_path, instances)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_records(tmp_path / "nope.json")


# ----------------------------------------------------------------------------- references


def test_load_coco_references_and_results():
    refs, cands = load_references(REFS_JSON), load_results(RESULTS_JSON)
    assert sorted(refs) == sorted(cands) == [42, 73, 139, 285, 632, 724]
    assert [len(refs[i]) for i in sorted(refs)] == [4, 4, 5, 3, 4, 4]
    assert refs[724][2] == 'A street sign that says "STOP" near some trees.'
    assert cands[285] == "a black bear laying in the grass near a tree"


def test_load_karpathy_split(tmp_path):
    def image(i, split, cocoid=True):
        entry = {"imgid": i, "split": split, "filename": f"{i}.jpg",
                 "sentences": [{"raw": f"caption {i} a", "tokens": []},
                               {"raw": f"caption {i} b", "tokens": []}]}
        if cocoid:
            entry["cocoid"] = 1000 + i
        return entry

    coco_like = _write(tmp_path, "dataset_coco.json", {"images": [
        image(0, "train"), image(1, "restval"), image(2, "val"), image(3, "test")]})
    assert sorted(load_references(coco_like, split="train")) == [1000, 1001]
    assert load_references(coco_like, split="val") == {1002: ["caption 2 a", "caption 2 b"]}
    assert sorted(load_references(coco_like)) == [1000, 1001, 1002, 1003]
    with pytest.raises(AnnotationError, match=r"split 'dev'.*\['restval', 'test', 'train', 'val'\]"):
        load_references(coco_like, split="dev")

    flickr_like = _write(tmp_path, "dataset_flickr8k.json", {"images": [
        image(5, "test", cocoid=False), image(6, "train", cocoid=False)]})
    assert list(load_references(flickr_like, split="test")) == [5]  # imgid without cocoid


def test_coco_and_karpathy_references_agree_with_the_files(tmp_path):
    """The references are what the files say, whichever format holds them: COCO's annotations
    grouped by image id in file order, and the same captions as a Karpathy file keyed by cocoid
    (not imgid), where "train" also takes the restval images."""
    coco = json.loads(REFS_JSON.read_text())
    expected: dict[int, list[str]] = {}
    for ann in coco["annotations"]:
        expected.setdefault(ann["image_id"], []).append(ann["caption"])
    assert load_references(REFS_JSON) == expected

    splits = ["train", "restval", "val", "test", "train", "restval"]
    images = [{"filename": im["file_name"], "imgid": k, "cocoid": im["id"], "split": splits[k],
               "sentences": [{"raw": c, "tokens": c.lower().split()} for c in expected[im["id"]]]}
              for k, im in enumerate(coco["images"])]
    karpathy = _write(tmp_path, "dataset_coco.json", {"images": images})
    assert load_references(karpathy) == expected
    train_ids = [im["cocoid"] for im in images if im["split"] in ("train", "restval")]
    assert load_references(karpathy, split="train") == {i: expected[i] for i in train_ids}
    with pytest.raises(AnnotationError, match="COCO captions file has no split"):
        load_references(REFS_JSON, split="test")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{not json", "malformed JSON"),
        ([1, 2], "JSON object"),
        ({"info": {}}, "neither a COCO captions file"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": 1, "caption": 5}]},
         r"annotations\[0\]\.caption must be a string"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"image_id": "1", "caption": "x"}]},
         r"annotations\[0\]\.image_id must be an integer"),
        ({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"caption": "x"}]},
         r"annotations\[0\]\.image_id missing"),
        ({"images": [{"cocoid": 1, "filename": "a.jpg", "split": "test", "sentences": [{"raw": "a"}]},
                     {"cocoid": 2, "filename": "b.jpg", "split": "test"}]},
         r"images\[1\]\.sentences missing"),
        ({"images": [{"cocoid": 1, "filename": "a.jpg", "split": "test", "sentences": [{}]}]},
         r"images\[0\]\.sentences\[0\]\.raw missing"),
        ({"images": [{"cocoid": 1, "filename": "a.jpg", "split": "test", "sentences": []},
                     {"cocoid": 1, "filename": "b.jpg", "split": "test", "sentences": []}]},
         r"images\[1\]\.cocoid 1 duplicates images\[0\]"),
    ],
)
def test_malformed_reference_files_name_file_and_field(tmp_path, data, message):
    path = _write(tmp_path, "refs.json", data)
    with pytest.raises(AnnotationError, match=message) as info:
        load_references(path)
    assert str(path) in str(info.value)


def test_a_directory_is_not_a_references_file(tmp_path):
    with pytest.raises(AnnotationError, match=f"{tmp_path}: is a directory, not a JSON file"):
        load_references(tmp_path)


# ----------------------------------------------------------------------------- results


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json: file not found"):
        load_results(tmp_path / "nope.json")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"image_id": 1, "caption": "x"}, "JSON list"),
        ([{"image_id": 1, "caption": "x"}, {"image_id": 2}], r"\[1\]\.caption missing"),
        ([{"image_id": 1.5, "caption": "x"}], r"\[0\]\.image_id must be an integer"),
        ([{"image_id": 3, "caption": "x"}, {"image_id": 9, "caption": "y"},
          {"image_id": 3, "caption": "z"}], r"1 duplicate image_id entries \(e\.g\. 3\)"),
    ],
)
def test_malformed_results_files_name_file_and_field(tmp_path, data, message):
    path = _write(tmp_path, "results.json", data)
    with pytest.raises(AnnotationError, match=message) as info:
        load_results(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- instances


def _instances() -> dict:
    return {
        "images": [
            {"id": 7, "width": 640, "height": 480, "file_name": "a.jpg"},
            {"id": 9, "width": 320, "height": 240, "file_name": "b.jpg"},
        ],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 18, "bbox": [10, 20, 30.5, 40], "iscrowd": 0,
             "area": 1220.0},
            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [100, 50, 60, 200], "iscrowd": 1,
             "area": 12000.0},
        ],
    }


def test_load_instances(tmp_path, capsys):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_instances()))
    instances = load_instances(path)
    boxes, sizes = instances.boxes, instances.sizes
    assert sizes == {7: (640, 480), 9: (320, 240)}
    assert boxes[7] == [Box("dog", 10.0, 20.0, 30.5, 40.0), Box("person", 100.0, 50.0, 60.0, 200.0)]
    assert boxes[9] == []
    assert [b.color for b in boxes[7]] == [None, None]  # no `color` field: no colour
    assert instances.objects is None  # no colours: not the synthetic scenes
    assert capsys.readouterr().out == ""  # nothing printed (pycocotools would print progress)
    # End to end: the loaded boxes feed the metric. On a 7x7 grid over 640x480 a cell is
    # 91.4 x 68.6 px. The dog box (x 10..40.5, y 20..60) overlaps only cell (0, 0) and misses its
    # centre (45.7, 34.3): looking there is a slack hit but can never be a strict one. The
    # person box (x 100..160, y 50..250) holds the centres of cells (1..3, 1).
    def game(word: str, r: int, c: int, slack: int = 0):
        peak = np.zeros((1, 7, 7))
        peak[0, r, c] = 1.0
        return pointing_game([word], peak, boxes[7], sizes[7], COCO_SYNONYMS, slack=slack)

    dog = game("dog", 0, 0)
    assert (dog.hits, dog.slack_hits, dog.total, dog.mass_sum) == (0, 1, 1, 0.0)
    assert (game("dog", 1, 0).hits, game("dog", 1, 0).slack_hits) == (0, 0)
    assert game("dog", 1, 0, slack=1).slack_hits == 1
    for r in (1, 2, 3):
        man = game("man", r, 1)
        assert (man.hits, man.slack_hits, man.mass_sum) == (1, 1, 1.0)
    top = game("man", 0, 1)  # the person box overlaps row 0 without holding its centre (34.3)
    assert (top.hits, top.slack_hits, top.mass_sum) == (0, 1, 0.0)


def _break(data: dict, where: str) -> dict:
    if where == "bbox":
        data["annotations"][1]["bbox"] = [1, 2, 3]
    elif where == "category":
        data["annotations"][0]["category_id"] = 99
    elif where == "image":
        data["annotations"][1]["image_id"] = 8
    elif where == "width":
        del data["images"][1]["width"]
    elif where == "categories":
        del data["categories"]
    elif where == "name":
        data["categories"][0]["name"] = 3
    # The checks load_scene_objects used to skip: they now run on every instances file.
    elif where == "no category_id":
        del data["annotations"][1]["category_id"]
    elif where == "bbox not a list":
        data["annotations"][0]["bbox"] = "10 20 30 40"
    elif where == "negative height":
        data["annotations"][0]["bbox"] = [10, 20, 30, -4]
    elif where == "color":
        data["annotations"][0]["color"] = 7
    elif where == "duplicate image":
        data["images"][1]["id"] = 7
    elif where == "annotation not an object":
        data["annotations"][1] = [7, 1]
    return data


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("bbox", r"annotations\[1\]\.bbox must be 4 numbers"),
        ("category", r"annotations\[0\]\.category_id 99 refers to an unknown category"),
        ("image", r"annotations\[1\]\.image_id 8 refers to an unknown image"),
        ("width", r"images\[1\]\.width missing"),
        ("categories", "'categories'"),
        ("name", r"categories\[0\]\.name"),
        ("no category_id", r"annotations\[1\]\.category_id missing"),
        ("bbox not a list", r"annotations\[0\]\.bbox must be 4 numbers \[x, y, w, h\].*got '10 20 30 40'"),
        ("negative height", r"annotations\[0\]\.bbox must be 4 numbers \[x, y, w, h\] with w, h >= 0"),
        ("color", r"annotations\[0\]\.color must be a non-empty string, got 7"),
        ("duplicate image", r"images\[1\]\.id 7 is a duplicate"),
        ("annotation not an object", r"annotations\[1\] must be an object, got list"),
    ],
)
def test_malformed_instances_name_file_and_field(tmp_path, where, message):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_break(_instances(), where)))
    with pytest.raises(AnnotationError, match=message) as info:
        load_instances(path)
    assert str(path) in str(info.value)


def test_unreadable_instances_files(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(AnnotationError, match="bad.json: malformed JSON"):
        load_instances(bad)
    with pytest.raises(FileNotFoundError, match="missing.json: file not found"):
        load_instances(tmp_path / "missing.json")
    listing = tmp_path / "list.json"
    listing.write_text("[]")
    with pytest.raises(AnnotationError, match="list.json: expected a JSON object"):
        load_instances(listing)
    with pytest.raises(AnnotationError, match="looks like a COCO captions file"):
        load_instances(REFS_JSON)


def test_scene_instances_carry_objects_only_when_every_annotation_has_a_colour(tmp_path):
    data = _instances()
    for ann, color in zip(data["annotations"], ("red", "blue")):
        ann["color"] = color
    path = _write(tmp_path, "scenes.json", data)
    scenes = load_instances(path)
    assert scenes.objects == {7: [("red", "dog"), ("blue", "person")], 9: []}
    assert scenes.boxes[7] == [Box("dog", 10.0, 20.0, 30.5, 40.0, color="red"),
                               Box("person", 100.0, 50.0, 60.0, 200.0, color="blue")]
    del data["annotations"][1]["color"]
    mixed = load_instances(_write(tmp_path, "mixed.json", data))
    assert mixed.objects is None
    assert [b.color for b in mixed.boxes[7]] == ["red", None]  # each box keeps what its annotation says
    data["annotations"] = []
    empty = load_instances(_write(tmp_path, "empty.json", data))
    assert empty == Instances(boxes={7: [], 9: []}, sizes={7: (640, 480), 9: (320, 240)}, objects=None)


def test_generated_scenes_read_back_as_their_objects(tmp_path):
    summary = generate_scenes(tmp_path, 6, seed=3, size=48)
    raw = json.loads(summary.instances_json.read_text())
    shapes = {c["id"]: c["name"] for c in raw["categories"]}
    instances = load_instances(summary.instances_json)
    assert sorted(instances.objects) == sorted(instances.boxes) == [im["id"] for im in raw["images"]]
    for image_id, objects in instances.objects.items():
        anns = [a for a in raw["annotations"] if a["image_id"] == image_id]
        assert objects == [(a["color"], shapes[a["category_id"]]) for a in anns]
        assert [(b.category, [b.x, b.y, b.w, b.h], b.color) for b in instances.boxes[image_id]] == [
            (shapes[a["category_id"]], a["bbox"], a["color"]) for a in anns]
        assert instances.sizes[image_id] == (48, 48)
