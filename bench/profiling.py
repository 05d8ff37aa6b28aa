"""torch.profiler on the two hot paths.

- the cached-decoder training step, (b), at the recipe's size: what `captioner train` spends
  nearly all its time on once the cache exists;
- batched beam search, K=5, the product's captioning path after the CNN.
(The fix an earlier profile led to, the output layer out of the time loop, is now in
`Decoder.forward`; its measured effect is in the README's Performance section.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.profiler import ProfilerActivity, profile

from common import Figure, log
from cached_data import recipe_data
from decode_speed import decode, recipe_decoder, recipe_features
from models import Sizes, without_end
from train_speed import PHASES, CachedTrainer


def profiled(fn: Callable[[], object], top: int = 12) -> tuple[list[dict], dict[str, float], float]:
    """Top ops by self CPU time, the CPU time of each `record_function` phase, total seconds."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    ops = sorted((e for e in events if e.key.startswith("aten::")), key=lambda e: -e.self_cpu_time_total)
    rows = [{"op": e.key, "self_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / 1e6 / total,
             "calls": e.count} for e in ops[:top]]
    phases = {e.key: e.cpu_time_total / 1e6 for e in events if e.key in PHASES}
    return rows, phases, total


def run(sizes: Sizes, work: Path) -> tuple[list[Figure], dict]:
    _, dataset = recipe_data(sizes, work)
    B = sizes.batch
    base = CachedTrainer(recipe_decoder(sizes), dataset, B)
    base.step()  # warm-up
    log("profiling: cached training step")
    train_ops, train_phases, train_total = profiled(base.step)

    rdec = without_end(recipe_decoder(sizes), end_id=2)
    feats = recipe_features(sizes, sizes.decode_images)
    decode(rdec, feats[:2], 5, 2)
    log("profiling: batched beam search K=5")
    beam_ops, _, beam_total = profiled(lambda: decode(rdec, feats, 5, sizes.decode_max_len))

    figs = [
        Figure("profile.train_step_profiled", train_total, "s", note="CPU time of one (b) step under the profiler"),
        Figure("profile.beam5_profiled", beam_total, "s", note=f"CPU time of one batched K=5 search, {feats.size(0)} images"),
    ]
    return figs, {"train_ops": train_ops, "train_phases": train_phases, "beam_ops": beam_ops}
