"""`bench/ablation.py` (`make ablation`) end to end on a tiny budget: it trains, evaluates, writes
the table, and a second call reuses the finished runs instead of training again."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ["--train-scenes", "10", "--test-scenes", "3", "--epochs", "1", "--val-images", "1", "--seeds", "0", "1"]


def _run(tmp_path: Path, *rows: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "ablation.py"), "--out", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *TINY, *extra, "--rows", *rows]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow  # trains four tiny models with the real encoder
def test_ablation_trains_evaluates_writes_the_table_and_resumes(tmp_path):
    rows = ("soft additive", "hard additive", "hard additive, expectation decoding")
    done = _run(tmp_path, *rows)
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| soft additive |" in table and "| hard additive |" in table and "2 seeds (0, 1)" in table
    assert "| hard additive, expectation decoding |" in table and "'train' style" in table
    assert "| none (mean-pooled) |" not in table  # only the rows asked for
    from PIL import Image

    with Image.open(tmp_path / "out" / "soft_vs_hard.png") as figure:  # a strip per trained model
        assert figure.format == "PNG" and figure.height > 2 * 128
    results = sorted((tmp_path / "out").glob("*/seed*/result.json"))
    assert len(results) == 4
    hard = json.loads((tmp_path / "out" / "hard-additive" / "seed1" / "result.json").read_text())
    assert hard["overrides"] == ["model.scorer=additive", "model.attention=hard"] and hard["seed"] == 1
    assert hard["hard_decode"] == "argmax"
    # The expectation row scores the same trained models (no second training run) with the other rule.
    assert not (tmp_path / "out" / "hard-additive-expectation-decoding").exists()
    expectation = json.loads((tmp_path / "out" / "hard-additive" / "seed1" / "result-expectation.json").read_text())
    assert expectation["hard_decode"] == "expectation" and expectation["train_seconds"] == hard["train_seconds"]
    for key in ("heldout.object_f1", "heldout.pointing_strict", "reserved.object_f1", "novel.object_f1",
                "heldout.images_per_s", "train_seconds"):
        assert key in hard, key
    ckpt = tmp_path / "out" / "hard-additive" / "seed1" / "best.pt"
    import torch

    assert torch.load(ckpt, weights_only=True)["config"]["model"]["attention"] == "hard"
    stamp = ckpt.stat().st_mtime_ns
    again = _run(tmp_path, *rows)  # finished runs are reused
    assert again.returncode == 0, again.stderr
    assert ckpt.stat().st_mtime_ns == stamp
    assert (tmp_path / "out" / "table.md").read_text() == table
    # Asking for fewer rows keeps the rows finished before in the table (it used to drop them).
    fewer = _run(tmp_path, "soft additive")
    assert fewer.returncode == 0, fewer.stderr
    assert (tmp_path / "out" / "table.md").read_text() == table
    # Other settings in the same --out: refused, not mixed into a table captioned with them.
    other = _run(tmp_path, "soft additive", extra=("--set", "train.decoder_lr=0.002"))
    assert other.returncode == 2 and "was made with other settings" in other.stderr
    assert "Traceback" not in other.stderr


def test_unknown_rows_are_a_usage_error(tmp_path):
    done = _run(tmp_path, "soft additive", "bogus")
    assert done.returncode == 2 and "unknown rows ['bogus']" in done.stderr and "Traceback" not in done.stderr


def _ablation_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation", REPO / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_default_encoder_is_the_shipped_models_backbone_extracted_once(tmp_path):
    import torch

    from captioner.api import DEFAULT_CHECKPOINT
    from captioner.config import ModelConfig
    from captioner.features.encoder import Encoder
    from captioner.features.pretrained import load_pretrained

    ablation = _ablation_module()
    assert ablation.encoder_weights(tmp_path, "imagenet") == "imagenet"
    path = Path(ablation.encoder_weights(tmp_path, "default"))
    assert path.parent == tmp_path and path.name.startswith("default-encoder-")
    stamp = path.stat().st_mtime_ns
    assert ablation.encoder_weights(tmp_path, "default") == str(path) and path.stat().st_mtime_ns == stamp
    shipped = torch.load(DEFAULT_CHECKPOINT, weights_only=True)["model"]
    backbone = {k.removeprefix("encoder.backbone."): v for k, v in shipped.items() if k.startswith("encoder.backbone.")}
    extracted = torch.load(path, weights_only=True)
    assert extracted.keys() == backbone.keys() and len(backbone) > 100
    for key, value in backbone.items():
        assert torch.equal(extracted[key], value.float() if value.is_floating_point() else value), key
    # The study's recipe loads it into the frozen encoder, whose every key it gives (strict load).
    budget = ablation.Budget(pretrained=str(path))
    data = {"train": tmp_path / "train"}
    config = ablation.recipe(data, budget, seed=0)
    assert config.model.pretrained == str(path) and config.model.finetune_blocks == 0
    encoder = load_pretrained(Encoder(config=config.model), config.model)
    assert torch.equal(encoder.backbone.state_dict()["_conv_stem.weight"], extracted["_conv_stem.weight"])
    assert ablation.settings(budget, ())["encoder_weights"] == path.name
    assert ablation.settings(ablation.Budget(encoder="imagenet"), ())["encoder"] == "imagenet"
    assert ModelConfig().pretrained == "imagenet"  # the library default is untouched
