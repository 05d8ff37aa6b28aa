"""`captioner evaluate` and `captioner score` end to end on generated scenes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from captioner.captioning import Caption, CaptionResult
from captioner.cli import main
from captioner.data.annotations import load_instances, load_records
from captioner.data.scene_spec import find_mentions
from captioner.data.scenes import generate_scenes
from captioner.evaluation import evaluate
from conftest import make_tiny_checkpoint

METRICS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}
GROUNDING = ("pointing_strict", "pointing_slack1", "attention_mass_in_box", "attention_entropy", "grounded_words",
             "hallucinated_words")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 20, seed=11, size=64)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", seed=4, end_bias=-5.0)


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _check_grounding(scores: dict, prefix: str = "") -> None:
    """The grounding keys are there and consistent: a strict hit is also a slack hit."""
    for key in GROUNDING:
        assert prefix + key in scores, key
    total = scores[prefix + "grounded_words"]
    assert total == int(total) and 0 <= scores[prefix + "hallucinated_words"] <= total
    strict, slack, mass = (scores[prefix + k] for k in GROUNDING[:3])
    if total:
        assert 0.0 <= strict <= slack <= 1.0 and 0.0 <= mass <= 1.0
    else:  # nothing grounded: nan (written as NaN in the JSON)
        assert strict != strict and slack != slack


def test_evaluate_writes_results_and_prints_metrics(scenes, checkpoint, tmp_path, capsys):
    results = tmp_path / "results.json"
    code = main(["evaluate", "--data", str(scenes / "dataset.json"), "--split", "test", "--checkpoint",
                 str(checkpoint), "--max-len", "6", "--results", str(results), "--no-java",
                 "--grounding", str(scenes / "instances.json"), "--device", "cpu"])
    assert code == 0
    captured = capsys.readouterr()
    scores = _last_json(captured.out)
    n_test = sum(im["split"] == "test" for im in json.loads((scenes / "dataset.json").read_text())["images"])
    assert scores["images"] == n_test and scores["tokenizer"] == "ptb-python"
    assert METRICS - {"METEOR"} <= set(scores) and "METEOR" in scores["unavailable"]
    for key in ("object_f1", "exact_set_accuracy"):
        assert key in scores
    # Scenes: shape words under the plain names, their colour words under color_*, one of each
    # per "<color> <shape>" phrase.
    assert "pointing_accuracy" not in scores
    _check_grounding(scores)
    _check_grounding(scores, "color_")
    assert scores["grounded_words"] == scores["color_grounded_words"]
    assert scores["hallucinated_words"] == scores["color_hallucinated_words"]
    assert 0.0 <= scores["object_f1"] <= 1.0 or scores["object_f1"] != scores["object_f1"]
    written = json.loads(results.read_text())
    assert len(written) == n_test and set(written[0]) == {"image_id", "caption"}
    assert "CIDEr-D" in captured.err  # the readable table
    # The results file scores the same through `captioner score`.
    code = main(["score", "--references", str(scenes / "dataset.json"), "--split", "test",
                 "--results", str(results), "--no-java", "--quiet"])
    assert code == 0
    again = _last_json(capsys.readouterr().out)
    for key in METRICS - {"METEOR"}:
        assert again[key] == pytest.approx(scores[key], abs=1e-12)


class _LookingCaptioner:
    """Stands in for a Captioner: says each image's first reference caption, with attention maps
    (16 x 16) that look where ``look(word kind, box, size)`` says, so the grounding figures are known."""

    GRID = 16

    def __init__(self, scenes: Path, look) -> None:
        self.look = look
        inst = load_instances(scenes / "instances.json")
        self.by_path = {r.path: (list(r.tokens[0]), inst.boxes[r.image_id], inst.sizes[r.image_id])
                        for r in load_records(scenes / "dataset.json")}

    def caption_iter(self, paths, **_):
        for i, path in enumerate(paths):
            tokens, boxes, (w, h) = self.by_path[path]
            alphas = np.full((len(tokens), self.GRID, self.GRID), 1.0 / self.GRID**2)  # (T, G, G)
            for m in find_mentions(tokens):
                [box] = [b for b in boxes if (b.category, b.color) == (m.shape, m.color)]
                for t, kind in ((m.color_index, "color"), (m.shape_index, "shape")):
                    x, y = self.look(kind, box, (w, h))
                    row, col = min(int(y * self.GRID / h), self.GRID - 1), min(int(x * self.GRID / w), self.GRID - 1)
                    alphas[t] = 0.0
                    alphas[t, row, col] = 1.0
            yield CaptionResult(i, Caption(" ".join(tokens), tokens, 0.0, alphas))


def _centre(kind, box, size):
    return box.x + box.w / 2, box.y + box.h / 2


def _colour_word_looks_at_the_far_corner(kind, box, size):
    if kind == "shape":
        return _centre(kind, box, size)
    w, h = size  # the canvas corner farthest from the object: never in or next to its box
    cx, cy = _centre(kind, box, size)
    return (0.0 if cx > w / 2 else w - 1.0), (0.0 if cy > h / 2 else h - 1.0)


def test_evaluate_scores_scene_colour_and_shape_words_against_the_named_object(scenes):
    n_objects = len(json.loads((scenes / "instances.json").read_text())["annotations"])
    # The cell holding a box's centre (4 px cells, boxes >= 9 px) has its centre inside the box.
    report = evaluate(_LookingCaptioner(scenes, _centre), scenes / "captions.json",
                      grounding=scenes / "instances.json", java=False)
    s = report.scores
    assert s["images"] == 20
    assert s["grounded_words"] == s["color_grounded_words"] == n_objects  # each caption names each object once
    assert s["hallucinated_words"] == s["color_hallucinated_words"] == 0
    for prefix in ("", "color_"):
        assert s[prefix + "pointing_strict"] == s[prefix + "pointing_slack1"] == 1.0
        assert s[prefix + "attention_mass_in_box"] == 1.0
    assert s["object_f1"] == 1.0
    # Colour words looking away: their scores fall to 0, the shape words' stay.
    s = evaluate(_LookingCaptioner(scenes, _colour_word_looks_at_the_far_corner), scenes / "captions.json",
                 grounding=scenes / "instances.json", java=False).scores
    assert s["pointing_strict"] == 1.0 and s["attention_mass_in_box"] == 1.0
    assert s["color_pointing_strict"] == s["color_pointing_slack1"] == s["color_attention_mass_in_box"] == 0.0
    assert s["color_grounded_words"] == n_objects


def test_evaluate_grounding_on_instances_without_colours_uses_the_coco_vocabulary(scenes, tmp_path):
    # The same boxes without the scenes' `color` fields read as a COCO-style file: words are looked
    # up in the COCO vocabulary, where no shape is a class (only "orange", the fruit, is, and no box
    # has that class); no colour-word or object scores.
    inst = json.loads((scenes / "instances.json").read_text())
    for ann in inst["annotations"]:
        del ann["color"], ann["size"]
    plain = tmp_path / "instances_plain.json"
    plain.write_text(json.dumps(inst))
    cap = _LookingCaptioner(scenes, _centre)
    s = evaluate(cap, scenes / "captions.json", grounding=plain, java=False).scores
    _check_grounding(s)
    oranges = sum(tokens.count("orange") for tokens, _, _ in cap.by_path.values())
    assert s["grounded_words"] == s["hallucinated_words"] == oranges
    assert not [k for k in s if k.startswith("color_")] and "object_f1" not in s


@pytest.mark.java
def test_score_with_java_and_toolkit_keys(scenes, tmp_path, capsys):
    refs = json.loads((scenes / "captions.json").read_text())
    first = {}
    for ann in refs["annotations"]:
        first.setdefault(ann["image_id"], ann["caption"])
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"image_id": i, "caption": c} for i, c in first.items()]))
    code = main(["score", "--references", str(scenes / "captions.json"), "--results", str(results)])
    assert code == 0
    out = capsys.readouterr()
    scores = _last_json(out.out)
    assert METRICS <= set(scores) and scores["tokenizer"] == "ptb-java"
    assert scores["BLEU-1"] > 0.5 and scores["METEOR"] > 0.3  # a reference scored against the others


def test_score_rejects_unknown_ids_and_bad_files(scenes, tmp_path, capsys):
    results = tmp_path / "r.json"
    results.write_text(json.dumps([{"image_id": 999999, "caption": "a red circle"}]))
    code = main(["score", "--references", str(scenes / "captions.json"), "--results", str(results), "--no-java"])
    err = capsys.readouterr().err
    assert code == 2 and "999999" in err and "Traceback" not in err
    results.write_text("[{")
    code = main(["score", "--references", str(scenes / "captions.json"), "--results", str(results), "--no-java"])
    assert code == 2 and "r.json" in capsys.readouterr().err
    code = main(["score", "--references", str(scenes / "captions.json"), "--results", str(tmp_path), "--no-java"])
    assert code == 2 and f"{tmp_path}: is a directory, not a JSON file" in capsys.readouterr().err


def test_evaluate_unknown_split_is_a_clear_error(scenes, checkpoint, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", str(scenes / "dataset.json"), "--split", "nope", "--checkpoint",
              str(checkpoint), "--no-java"])
    assert exit_info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    code = main(["evaluate", "--data", str(scenes / "dataset.json"), "--split", "restval", "--checkpoint",
                 str(checkpoint), "--no-java"])
    assert code == 2 and "no images in split 'restval'" in capsys.readouterr().err


def test_evaluate_refuses_a_results_directory_before_captioning(scenes, checkpoint, tmp_path, capsys):
    code = main(["evaluate", "--data", str(scenes / "dataset.json"), "--checkpoint", str(checkpoint),
                 "--results", str(tmp_path), "--no-java"])
    err = capsys.readouterr().err
    assert code == 2 and err == f"captioner: error: {tmp_path}: is a directory; --results takes a file name\n"
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", str(scenes / "dataset.json"), "--workers", "-1"])
    assert exit_info.value.code == 2 and "--workers must be at least 0" in capsys.readouterr().err


def test_evaluate_breaks_scene_scores_down_by_background_family(scenes):
    """`by_background`: object F1 and exact-set per background family, from the images' records;
    a captioner right on one family and silent on the others scores 1 and 0 there."""
    images = json.loads((scenes / "captions.json").read_text())["images"]
    family = {im["file_name"]: im["background"] for im in images}
    first = images[0]["background"]

    class RightOnOneFamily(_LookingCaptioner):
        def caption_iter(self, paths, **kw):
            for result in super().caption_iter(paths, **kw):
                if family[Path(paths[result.index]).name] != first:
                    tokens = ["a", "picture"]
                    result = CaptionResult(result.index, Caption("a picture", tokens, 0.0,
                                                                 np.full((2, self.GRID, self.GRID), 1 / self.GRID**2)))
                yield result

    s = evaluate(RightOnOneFamily(scenes, _centre), scenes / "captions.json", grounding=scenes / "instances.json",
                 java=False).scores
    groups = s["by_background"]
    assert set(groups) == set(family.values()) and sum(g["images"] for g in groups.values()) == 20
    assert groups[first]["object_f1"] == groups[first]["exact_set_accuracy"] == 1.0
    assert all(g["object_recall"] == 0.0 for name, g in groups.items() if name != first)
