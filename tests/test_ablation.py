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


def _run(tmp_path: Path, *rows: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "ablation.py"), "--out", str(tmp_path / "out"),
           "--data", str(tmp_path / "data"), *TINY, "--rows", *rows]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.slow  # trains four tiny models with the real encoder
def test_ablation_trains_evaluates_writes_the_table_and_resumes(tmp_path):
    done = _run(tmp_path, "soft additive", "hard additive")
    assert done.returncode == 0, done.stderr
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| soft additive |" in table and "| hard additive |" in table and "2 seeds (0, 1)" in table
    assert "| none (mean-pooled) |" not in table  # only the rows asked for
    results = sorted((tmp_path / "out").glob("*/seed*/result.json"))
    assert len(results) == 4
    hard = json.loads((tmp_path / "out" / "hard-additive" / "seed1" / "result.json").read_text())
    assert hard["overrides"] == ["model.scorer=additive", "model.attention=hard"] and hard["seed"] == 1
    for key in ("heldout.object_f1", "heldout.pointing_strict", "reserved.object_f1", "novel.object_f1",
                "heldout.images_per_s", "train_seconds"):
        assert key in hard, key
    ckpt = tmp_path / "out" / "hard-additive" / "seed1" / "best.pt"
    import torch

    assert torch.load(ckpt, weights_only=True)["config"]["model"]["attention"] == "hard"
    stamp = ckpt.stat().st_mtime_ns
    again = _run(tmp_path, "soft additive", "hard additive")  # finished runs are reused
    assert again.returncode == 0, again.stderr
    assert ckpt.stat().st_mtime_ns == stamp
    assert (tmp_path / "out" / "table.md").read_text() == table


def test_unknown_rows_are_a_usage_error(tmp_path):
    done = _run(tmp_path, "soft additive", "bogus")
    assert done.returncode == 2 and "unknown rows ['bogus']" in done.stderr and "Traceback" not in done.stderr
