"""torch.profiler on the two hot paths, and the measured effect of the prototype fix.

- the cached-decoder training step, (b), at the recipe's size: what `captioner train` spends
  nearly all its time on once the cache exists;
- batched beam search, K=5, the product's captioning path after the CNN.
The fix (proto_decoder.py: the output layer out of the time loop) is timed against the
current decoder round-robin in this run, with identical weights and batches.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from captioner.datasets import collate_captions

from common import Figure, interleaved, log, median
from cached_data import recipe_data
from decode_speed import decode, recipe_decoder, recipe_features
from models import Sizes, without_end
from proto_decoder import HoistedReadoutDecoder
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
    vocab, dataset = recipe_data(sizes, work)
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

    # The fix: same weights, same batch order (both trainers start their own epoch-0 loader).
    fixed = HoistedReadoutDecoder(vocab_size=len(vocab), encoder_dim=2048, embed_dim=512, attention_dim=512,
                                  hidden_dim=512, dropout=0.5, scorer="additive")
    current = recipe_decoder(sizes)
    fixed.load_state_dict(current.state_dict())
    batch = collate_captions([dataset[i] for i in range(B)])
    with torch.no_grad():
        a, b = current.eval()(batch.images, batch.captions), fixed.eval()(batch.images, batch.captions)
    diff = max((a.logits - b.logits).abs().max().item(), (a.alphas - b.alphas).abs().max().item())
    t_cur, t_fix = CachedTrainer(current, dataset, B), CachedTrainer(fixed, dataset, B)
    log(f"profiling: current vs hoisted readout, {sizes.profile_rounds} rounds")
    times = interleaved({"current": t_cur.step, "fixed": t_fix.step}, rounds=sizes.profile_rounds, warmup=1)
    speedup = median(times["current"]) / median(times["fixed"])
    figs = [
        Figure("profile.train_step_profiled", train_total, "s", note="CPU time of one (b) step under the profiler"),
        Figure("profile.beam5_profiled", beam_total, "s", note=f"CPU time of one batched K=5 search, {feats.size(0)} images"),
        Figure("profile.fix_hoisted_readout_speedup", speedup, "x",
               note=f"(b) step, current / fixed median of {sizes.profile_rounds}; eval-mode outputs differ by "
                    f"at most {diff:.1e}; {median(times['current']):.3f} -> {median(times['fixed']):.3f} s/step"),
    ]
    return figs, {"train_ops": train_ops, "train_phases": train_phases, "beam_ops": beam_ops,
                  "fix_max_abs_diff": diff}
