"""`bench/run.py --quick` runs end to end and prints well-formed figures.

No timing is asserted: the quick sizes are a smoke test of the benchmark code, and this
machine's speed is not the code's. The timeout only guards against a hang.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXPECTED = {
    "train.a_frozen_encoder_in_loop", "train.b_cached_features", "train.c_finetune_layer4",
    "train.d_finetune_layer4_from_frozen_cache", "train.d_over_c",
    "train.b_over_a", "train.b_bf16_autocast", "train.b_bf16_over_fp32",
    "train.b_peak_rss_fp32",
    *(f"decode.{m}.beam{k}.{kind}" for m in ("default", "resnet101") for k in (1, 3, 5)
      for kind in ("batched", "one_by_one", "batched_over_one_by_one")),
    "startup.cold_start_caption", "startup.phase.import_torch",
    "memory.caption_peak_rss", "memory.cached_train_growth", "profile.beam5_profiled",
    "decode.resnet101.beam5.fresh_process.batched_over_one_by_one", "bench.total_time",
    *(f"decode.{m}.beam5.decoder_steps_bound" for m in ("default", "resnet101")),
    *(f"serve.{run}.{fig}" for run in ("batched", "max_batch_1")
      for fig in ("throughput", "p50_latency", "p95_latency", "peak_rss", "mean_batch", "failures")),
    "serve.batching_gain", "serve.decoder_share", "serve.gain_bound", "serve.gain_predicted",
    "serve.model_call_gain",
    *(f"e2e.{m}.{fig}" for m in ("default", "resnet101")
      for fig in ("encoder_bound", "encoder_bound_same_rounds",
                  *(f"beam{k}.{kind}" for k in (1, 3, 5)
                    for kind in ("batched", "one_by_one", "batched_over_one_by_one", "batched_over_encoder_bound")))),
    "e2e.default.preprocess", "e2e.cli_folder", "e2e.cache_build",
}
JUDGED = {"train.b_over_a", "decode.default.beam5.batched_over_one_by_one",
          "decode.resnet101.beam5.batched_over_one_by_one", "startup.cold_start_caption",
          "memory.caption_peak_rss", "memory.cached_train_growth", "serve.batching_gain",
          "serve.batched.failures", "serve.max_batch_1.failures",
          *(f"e2e.{m}.beam3.batched_over_encoder_bound" for m in ("default", "resnet101"))}


@pytest.mark.slow
def test_quick_bench_runs_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.md"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(out),
                           "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    figures = {}
    for line in proc.stdout.splitlines():
        fig = json.loads(line)  # every stdout line is one JSON figure
        assert set(fig) == {"name", "value", "unit", "target", "pass", "note"}, fig
        assert isinstance(fig["value"], (int, float)) and math.isfinite(fig["value"]), fig
        assert fig["unit"] and isinstance(fig["note"], str)
        assert (fig["target"] is None) == (fig["pass"] is None), fig
        figures[fig["name"]] = fig
    assert EXPECTED <= set(figures), sorted(EXPECTED - set(figures))
    assert all(figures[name]["target"] for name in JUDGED)
    assert sum(n.startswith("memory.cached_train_") and n.endswith("_images") for n in figures) >= 2
    assert any(n.startswith("scale.decode.") for n in figures) and any(n.startswith("scale.train.") for n in figures)

    text = out.read_text()
    assert text.startswith("# Benchmarks") and "Machine: " in text and "QUICK MODE" in text
    assert "| Figure | Value | Unit | Target | Pass | Notes |" in text
    assert "## Scaling" in text and "| train.b_over_a |" in text
    assert "## Web server under load" in text
    # Wrong answers are bugs, not noise: even --quick's tiny load must be answered correctly.
    assert figures["serve.batched.failures"]["value"] == 0 == figures["serve.max_batch_1.failures"]["value"]
