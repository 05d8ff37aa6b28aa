"""Training throughput (captions/s) of the popular recipe's model, three ways:

(a) frozen encoder in the loop: every step runs ResNet-101 on the images (under no_grad), then
    trains the decoder;
(b) decoder from the feature cache: (P, E) rows come from a real FeatureCache (pread) through
    CaptionDataset + collate_captions + DataLoader, the training loop's own input path;
(c) fine-tuning layer4 (finetune_blocks=1) with its own encoder learning rate.

The three run round-robin (one warm-up round, then timed rounds), so a change of load on the
machine hits them alike; each figure is the median step. The step itself is the one in
`captioner/training.py`: autocast, masked cross-entropy + attention penalty, clip 5, Adam.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader

from captioner.data.datasets import CaptionBatch, CaptionDataset, collate_captions
from captioner.model.decoder import Decoder, DecoderOutput
from captioner.scoring.losses import doubly_stochastic_penalty, masked_cross_entropy
from captioner.model.caption_model import CaptionModel
from captioner.train.loop import EpochSampler

from common import Figure, interleaved, judged, log, median, repeat, run_child, timed, worker_cmd
from cached_data import recipe_data
from models import Sizes, recipe_config

Forward = Callable[[torch.Tensor, torch.Tensor], DecoderOutput]
PHASES = ("next batch", "forward + loss", "backward", "clip + Adam")  # profiler labels


def train_step(forward: Forward, images: torch.Tensor, captions: torch.Tensor, mask: torch.Tensor,
               optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter],
               amp_dtype: torch.dtype | None = None, grad_clip: float = 5.0) -> float:
    """One optimisation step, as `captioner.train.loop.train` does it. Returns the loss."""
    targets, tmask = captions[:, 1:], mask[:, 1:]  # (B, T)
    with record_function(PHASES[1]), torch.autocast("cpu", dtype=amp_dtype or torch.float32,
                                                    enabled=amp_dtype is not None):
        pred = forward(images, captions)
        ce = masked_cross_entropy(pred.logits, targets, tmask)
        att = doubly_stochastic_penalty(pred.alphas.float(), tmask, 1.0)
        loss = ce + att
    with record_function(PHASES[2]):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with record_function(PHASES[3]):
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
    return float(loss.detach())


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
    """(b): a decoder trained from a FeatureCache; `step()` fetches a batch and trains on it."""

    def __init__(self, decoder: Decoder, dataset: CaptionDataset, batch_size: int,
                 amp_dtype: torch.dtype | None = None, lr: float = 4e-4) -> None:
        self.decoder = decoder.train()
        self.params = [p for p in decoder.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.batches = cached_batches(dataset, batch_size)
        self.amp_dtype = amp_dtype

    def step(self) -> float:
        with record_function(PHASES[0]):
            batch = next(self.batches)
        return train_step(self.decoder, batch.images, batch.captions, batch.mask, self.optimizer,
                          self.params, self.amp_dtype)


def run(sizes: Sizes, work: Path) -> tuple[list[Figure], list[dict]]:
    """The (a)/(b)/(c) figures, bf16 against fp32 for (b), (b)'s peak RSS and the batch-size table."""
    B = sizes.batch
    vocab, dataset = recipe_data(sizes, work)
    V = len(vocab)
    fixed = collate_captions([dataset[i] for i in range(B)])  # (a) and (c) train on one caption batch
    images = torch.randn(B, 3, sizes.image_size, sizes.image_size)  # preprocessed pixels

    log("training: building models")
    torch.manual_seed(0)
    model_a = CaptionModel(config=recipe_config(sizes), vocab_size=V).train()
    opt_a = torch.optim.Adam(model_a.decoder_parameters(), lr=4e-4)

    def forward_a(x: torch.Tensor, caps: torch.Tensor) -> DecoderOutput:
        with torch.no_grad():
            feats = model_a.encode(x)  # (B, P, E)
        return model_a.decoder(feats, caps)

    model_c = CaptionModel(config=recipe_config(sizes, finetune_blocks=1), vocab_size=V).train()
    opt_c = torch.optim.Adam([{"params": model_c.decoder_parameters(), "lr": 4e-4},
                              {"params": model_c.encoder_parameters(), "lr": 1e-4}])
    params_c = model_c.decoder_parameters() + model_c.encoder_parameters()

    fp32 = CachedTrainer(copy.deepcopy(model_a.decoder), dataset, B)
    bf16 = CachedTrainer(copy.deepcopy(model_a.decoder), dataset, B, amp_dtype=torch.bfloat16)

    def cached(trainer: CachedTrainer) -> Callable[[], None]:
        def steps() -> None:
            for _ in range(sizes.cached_per_round):
                times[trainer].append(timed(trainer.step))
        return steps

    times: dict[CachedTrainer, list[float]] = {fp32: [], bf16: []}
    variants = {
        "a": lambda: train_step(forward_a, images, fixed.captions, fixed.mask, opt_a, model_a.decoder_parameters()),
        "b32": cached(fp32),
        "b16": cached(bf16),
        "c": lambda: train_step(model_c, images, fixed.captions, fixed.mask, opt_c, params_c),
    }
    log("training: warm-up round of (a), (b) fp32, (b) bf16, (c)")
    t_warm = timed(lambda: interleaved(variants, rounds=1, warmup=0))
    # (a) and (c) take tens of seconds a step here: as many timed rounds as the budget allows.
    n_rounds = max(min(sizes.train_rounds, int(sizes.train_budget_s // t_warm)), 2 if not sizes.quick else 1)
    log(f"training: warm-up round took {t_warm:.0f} s; {n_rounds} timed rounds")
    rounds = interleaved(variants, rounds=n_rounds, warmup=0)
    warm = sizes.cached_per_round  # the warm-up round's (b) steps
    t_a, t_c = median(rounds["a"]), median(rounds["c"])
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
        Figure("train.b_bf16_autocast", B / t_b16, "captions/s", note=f"{t_b16:.3f} s/step"),
        Figure("train.b_bf16_over_fp32", t_b / t_b16, "x", note="> 1 means bf16 autocast is faster"),
    ]
    del model_a, model_c, opt_a, opt_c

    # Peak RSS of (b), in a fresh process that builds what `train` builds (the whole
    # CaptionModel, encoder included) and trains from the cache.
    for amp in ("none", "bf16") if not sizes.quick else ("none",):
        res = run_child(worker_cmd("cached-train", "--model", "recipe", "--batch", str(B), "--steps", "3",
                                   "--amp", amp, "--work", str(work), *(["--quick"] if sizes.quick else [])))
        figs.append(Figure(f"train.b_peak_rss_{'fp32' if amp == 'none' else 'bf16'}", res.peak_rss_mb, "MB",
                           note=f"fresh process: CaptionModel (ResNet-101 included) + 3 cached steps"))

    # Step time against batch size, (b) fp32.
    rows = []
    for b in sizes.scale_batches:
        trainer = CachedTrainer(copy.deepcopy(fp32.decoder), dataset, b)
        t = median(repeat(trainer.step, repeats=sizes.scale_steps, warmup=1))
        rows.append({"table": "train_batch", "batch": b, "s_per_step": t, "ms_per_caption": 1000 * t / b})
        log(f"training: batch {b}: {t:.3f} s/step")
    return figs, rows
