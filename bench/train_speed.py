"""Training throughput (captions/s) of the popular recipe's model, three ways:

(a) frozen encoder in the loop: every step runs ResNet-101 on the images (its weights are
    frozen, so no graph is built for it), then trains the decoder;
(b) decoder from the feature cache: (P, E) rows come from a real FeatureCache (pread) through
    CaptionDataset + collate_captions + DataLoader, the training loop's own input path;
(c) fine-tuning layer4 (finetune_blocks=1) with its own encoder learning rate;
(d) the same fine-tuning from the feature cache of the frozen stages' output (layer3's map):
    each step runs layer4 and the decoder only, as `train` does with finetune_blocks and the cache.

The four run round-robin (one warm-up round, then timed rounds), so a change of load on the
machine hits them alike; each figure is the median step. The step is the library's own,
`captioner.train.loop.train_step` (autocast, masked cross-entropy + attention penalty,
GradScaler, clipping, Adam), with the recipe's settings from configs/coco_resnet101.toml.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader

from captioner.checkpoint import new_model
from captioner.config import TrainConfig, load_config
from captioner.data.datasets import CaptionBatch, CaptionDataset, collate_captions
from captioner.model.caption_model import FromFrozenStages
from captioner.model.decoder import Decoder
from captioner.train.distributed import EpochSampler
from captioner.train.loop import STEP_PHASES, train_step
from captioner.train.optim import make_optimization, param_groups

from common import REPO, Figure, interleaved, judged, log, median, repeat, run_child, timed, worker_cmd
from cached_data import recipe_data
from models import Sizes, recipe_config

PHASES = ("next batch", *STEP_PHASES)  # profiler labels: fetching a batch, then the step's own
CPU = torch.device("cpu")


def recipe_train(amp: str = "none") -> TrainConfig:
    """The popular recipe's optimisation settings (lr 4e-4 / 1e-4, clip 5, alpha_c 1)."""
    return dataclasses.replace(load_config(REPO / "configs" / "coco_resnet101.toml").train, amp=amp)


def cached_batches(dataset: CaptionDataset, batch_size: int, seed: int = 0) -> Iterator[CaptionBatch]:
    """Endless batches, epoch after epoch, built exactly as the training loop builds them."""
    epoch = 0
    while True:
        dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), seed=seed, epoch=epoch, batch_size=batch_size)
        yield from DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0,
                              collate_fn=collate_captions,
                              generator=torch.Generator().manual_seed(seed + epoch))
        epoch += 1


class CachedTrainer:
    """(b): a decoder trained from a FeatureCache; `step()` fetches a batch and trains on it.

    `amp` is train.amp: "none" or "bf16" (the CPU's autocast)."""

    def __init__(self, decoder: Decoder, dataset: CaptionDataset, batch_size: int, amp: str = "none") -> None:
        self.decoder = decoder.train()
        self.config = recipe_train(amp)
        groups = [{"params": [p for p in decoder.parameters() if p.requires_grad],
                   "lr": self.config.decoder_lr, "name": "decoder"}]
        self.opt = make_optimization(decoder, groups, self.config, CPU)
        self.batches = cached_batches(dataset, batch_size)

    def step(self) -> float:
        with record_function(PHASES[0]):
            batch = next(self.batches)
        return float(train_step(self.opt, batch, config=self.config).loss)


def run(sizes: Sizes, work: Path) -> tuple[list[Figure], list[dict]]:
    """The (a)/(b)/(c)/(d) figures, bf16 against fp32 for (b), (b)'s peak RSS and the batch-size table."""
    B = sizes.batch
    vocab, dataset = recipe_data(sizes, work)
    V = len(vocab)
    fixed = collate_captions([dataset[i] for i in range(B)])  # (a) and (c) train on one caption batch
    pixels = fixed._replace(images=torch.randn(B, 3, sizes.image_size, sizes.image_size))  # preprocessed

    log("training: building models")
    train_cfg = recipe_train()
    torch.manual_seed(0)
    # (a) trains the whole model, as `train` does from live images: the frozen encoder has no
    # trainable parameters, so it runs without building a graph.
    model_a = new_model(recipe_config(sizes), V).train()
    opt_a = make_optimization(model_a, param_groups(model_a, train_cfg), train_cfg, CPU)
    model_c = new_model(recipe_config(sizes, finetune_blocks=1), V).train()
    opt_c = make_optimization(model_c, param_groups(model_c, train_cfg), train_cfg, CPU)
    model_d = copy.deepcopy(model_c)
    opt_d = make_optimization(FromFrozenStages(model_d), param_groups(model_d, train_cfg), train_cfg, CPU)
    with torch.no_grad():  # what the cache would hold for these images: (B, h * w, C)
        frozen_rows = fixed._replace(images=model_d.encoder.frozen_map(pixels.images).flatten(2).transpose(1, 2)
                                     .contiguous())

    fp32 = CachedTrainer(copy.deepcopy(model_a.decoder), dataset, B)
    bf16 = CachedTrainer(copy.deepcopy(model_a.decoder), dataset, B, amp="bf16")

    def cached(trainer: CachedTrainer) -> Callable[[], None]:
        def steps() -> None:
            for _ in range(sizes.cached_per_round):
                times[trainer].append(timed(trainer.step))
        return steps

    times: dict[CachedTrainer, list[float]] = {fp32: [], bf16: []}
    variants = {
        "a": lambda: train_step(opt_a, pixels, config=train_cfg),
        "b32": cached(fp32),
        "b16": cached(bf16),
        "c": lambda: train_step(opt_c, pixels, config=train_cfg),
        "d": lambda: train_step(opt_d, frozen_rows, config=train_cfg),
    }
    log("training: warm-up round of (a), (b) fp32, (b) bf16, (c), (d)")
    t_warm = timed(lambda: interleaved(variants, rounds=1, warmup=0))
    # (a) and (c) take tens of seconds a step here: as many timed rounds as the budget allows.
    n_rounds = max(min(sizes.train_rounds, int(sizes.train_budget_s // t_warm)), 2 if not sizes.quick else 1)
    log(f"training: warm-up round took {t_warm:.0f} s; {n_rounds} timed rounds")
    rounds = interleaved(variants, rounds=n_rounds, warmup=0)
    warm = sizes.cached_per_round  # the warm-up round's (b) steps
    t_a, t_c, t_d = median(rounds["a"]), median(rounds["c"]), median(rounds["d"])
    t_b, t_b16 = median(times[fp32][warm:]), median(times[bf16][warm:])
    steps_note = (f"batch {B}, {sizes.words}-word captions ({sizes.words + 1} decoder steps), V={V}, "
                  f"{sizes.image_size} px, median of {n_rounds} steps")
    figs = [
        Figure("train.a_frozen_encoder_in_loop", B / t_a, "captions/s", note=steps_note + f"; {t_a:.2f} s/step"),
        Figure("train.b_cached_features", B / t_b, "captions/s",
               note=f"FeatureCache (pread) + CaptionDataset + DataLoader; median of "
                    f"{len(times[fp32]) - warm} steps; {t_b:.3f} s/step"),
        Figure("train.c_finetune_layer4", B / t_c, "captions/s", note=f"{t_c:.2f} s/step"),
        judged("train.b_over_a", t_a / t_b, "x", ">=", 10, "ratio of median step times, same run"),
        Figure("train.c_over_a", t_a / t_c, "x", note="fine-tuning layer4 relative to (a)"),
        Figure("train.d_finetune_layer4_from_frozen_cache", B / t_d, "captions/s",
               note=f"{t_d:.2f} s/step; rows in memory, so the cache's reads (1.6 MB an image here) are not in it"),
        Figure("train.d_over_c", t_c / t_d, "x", note="fine-tuning layer4: from the cache of layer3's output "
                                                     "over from the images, same run"),
        Figure("train.b_bf16_autocast", B / t_b16, "captions/s", note=f"{t_b16:.3f} s/step"),
        Figure("train.b_bf16_over_fp32", t_b / t_b16, "x", note="> 1 means bf16 autocast is faster"),
    ]
    del model_a, model_c, model_d, opt_a, opt_c, opt_d, frozen_rows

    # Peak RSS of (b), in a fresh process that builds what `train` builds (the whole
    # CaptionModel, encoder included) and trains from the cache.
    for amp in ("none", "bf16") if not sizes.quick else ("none",):
        res = run_child(worker_cmd("cached-train", "--model", "recipe", "--batch", str(B), "--steps", "3",
                                   "--amp", amp, "--work", str(work), *(["--quick"] if sizes.quick else [])))
        figs.append(Figure(f"train.b_peak_rss_{'fp32' if amp == 'none' else 'bf16'}", res.peak_rss_mb, "MB",
                           note="fresh process: CaptionModel (ResNet-101 included) + 3 cached steps"))

    # Step time against batch size, (b) fp32.
    rows = []
    for b in sizes.scale_batches:
        trainer = CachedTrainer(copy.deepcopy(fp32.decoder), dataset, b)
        t = median(repeat(trainer.step, repeats=sizes.scale_steps, warmup=1))
        rows.append({"table": "train_batch", "batch": b, "s_per_step": t, "ms_per_caption": 1000 * t / b})
        log(f"training: batch {b}: {t:.3f} s/step")
    return figs, rows
