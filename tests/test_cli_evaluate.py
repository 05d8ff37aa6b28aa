"""`captioner evaluate` and `captioner score` end to end on generated scenes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from captioner.cli import main
from captioner.data.scenes import generate_scenes
from conftest import make_tiny_checkpoint

METRICS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"}


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
    for key in ("pointing_accuracy", "attention_mass_in_box", "object_f1", "exact_set_accuracy"):
        assert key in scores
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
