"""The training loop: `train(config, out_dir)` is `train_one_epoch` and `evaluate` in turn,
and `train_step` is the one optimisation step (the benchmarks time this same function).

It knows the data flow, not the model's insides. What last.pt holds and how a run resumes
are in `captioner.train.resume`; under `torchrun` (`captioner.train.distributed`) each rank
trains on its shard of every epoch's permutation with DistributedDataParallel, rank 0 alone
writes checkpoints and logs, validation captions are decoded on all ranks and gathered on
rank 0, and every rank resumes from the same last.pt.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from torch.profiler import record_function
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioner.captioning import SearchOptions, caption_batches
from captioner.atomic import remove_leftover_temps
from captioner.checkpoint import new_model
from captioner.config import Config, ConfigError, TrainConfig
from captioner.data.annotations import ImageRecord
from captioner.data.datasets import (CaptionBatch, CaptionDataset, EvalDataset, collate_captions, collate_eval,
                                     records_tokens)
from captioner.model.caption_model import CaptionModel, FromFrozenStages
from captioner.model.decoder import DecoderOutput
from captioner.scoring.losses import (HardAttentionTerms, caption_log_likelihood, doubly_stochastic_penalty,
                                      hard_attention_terms, masked_cross_entropy, updated_baseline)
from captioner.scoring.mentions import mention_scores
from captioner.train.data import (Log, Objects, Sources, Splits, load_val_objects, make_sources, make_splits,
                                  stderr_log)
from captioner.train.distributed import (Dist, EpochSampler, Shard, barrier, batches_per_epoch, broadcast_floats,
                                         gather_dicts, gather_objects, leave, setup_distributed, shard, wrap_ddp)
from captioner.train.optim import Optimization, make_optimization, param_groups
from captioner.train.resume import (TrainState, load_resumable, rank_state, restore, resumed_model,
                                    save_training_checkpoint, seed_all)
from captioner.words.vocab import Vocab

#: `record_function` labels of train_step's phases (bench/profiling.py reports their times).
STEP_PHASES = ("forward + loss", "backward", "clip + Adam")


@dataclass(frozen=True)
class TrainSummary:
    out_dir: Path
    epochs_completed: int
    steps: int
    best_score: float
    best_epoch: int
    stopped_early: bool
    skipped_images: int
    resumed: bool
    main: bool = True  # this process is rank 0 (under torchrun, the one that writes and reports)


class JsonlLog:
    """metrics.jsonl: one JSON object per line, written by rank 0 only."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


@dataclass(frozen=True)
class Run:
    """What stays the same for a whole run (the model's weights change, not which model it is)."""

    config: Config
    model: CaptionModel
    vocab: Vocab
    out: Path
    device: torch.device
    dist: Dist
    metrics: JsonlLog
    say: Log
    step_model: torch.nn.Module  # what steps and validation run: `model`, or its FromFrozenStages view

    @property
    def last_path(self) -> Path:
        return self.out / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.out / "best.pt"


# ----------------------------------------------------------------------------- the step
class StepLoss(NamedTuple):
    """The step's loss and its terms, detached scalars (reading them syncs a GPU)."""

    loss: torch.Tensor
    ce: torch.Tensor
    att: torch.Tensor
    hard: HardAttentionLog | None = None  # hard attention's terms; None for soft attention


class HardAttentionLog(NamedTuple):
    """What a hard-attention step logs, detached scalars."""

    reward: torch.Tensor  # mean per-word log-likelihood of the captions that sampled regions
    baseline: torch.Tensor  # b after this step
    entropy: torch.Tensor  # mean entropy of alpha_t, nats


def train_step(opt: Optimization, batch: CaptionBatch, *, config: TrainConfig) -> StepLoss:
    """One optimisation step on a batch that is on the model's device.

    Autocast to `opt.amp_dtype`, masked cross-entropy (with config.label_smoothing) plus the
    doubly stochastic attention penalty (config.alpha_c), backward through the GradScaler,
    gradient clipping at config.grad_clip (0: none), then the optimizer step. A hard-attention
    model (`opt.hard`) reads regions sampled for this batch and adds the REINFORCE and entropy
    terms (`hard_attention_terms`); its baseline moves after the step.
    """
    targets, mask = batch.captions[:, 1:], batch.mask[:, 1:]  # (B, T)
    rule = opt.hard.sampler(len(batch.captions), config.hard_expectation_p) if opt.hard is not None else None
    with record_function(STEP_PHASES[0]), torch.autocast(batch.captions.device.type,
                                                         dtype=opt.amp_dtype or torch.float32,
                                                         enabled=opt.amp_dtype is not None):
        pred = opt.net(batch.images, batch.captions, rule=rule)  # logits (B, T, V), alphas (B, T, P)
        ce = masked_cross_entropy(pred.logits, targets, mask, config.label_smoothing)
        att = doubly_stochastic_penalty(pred.alphas.float(), mask, config.alpha_c)
        loss = ce + att
        terms = _hard_terms(opt, pred, targets, mask, config) if rule is not None else None
        if terms is not None:
            loss = loss + terms.surrogate
    with record_function(STEP_PHASES[1]):
        opt.optimizer.zero_grad(set_to_none=True)
        opt.scaler.scale(loss).backward()
    with record_function(STEP_PHASES[2]):
        if config.grad_clip > 0:
            opt.scaler.unscale_(opt.optimizer)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(opt.params, config.grad_clip)
        opt.scaler.step(opt.optimizer)
        opt.scaler.update()
    if terms is None:
        return StepLoss(loss.detach(), ce.detach(), att.detach())
    return StepLoss(loss.detach(), ce.detach(), att.detach(), _move_baseline(opt, terms, config))


def _hard_terms(opt: Optimization, pred: DecoderOutput, targets: torch.Tensor, mask: torch.Tensor,
                config: TrainConfig) -> HardAttentionTerms:
    """REINFORCE against the baseline before this step (b_{k-1}), and the entropy bonus."""
    with torch.no_grad():
        reward = caption_log_likelihood(pred.logits, targets, mask)  # (B,)
    return hard_attention_terms(pred.alphas.float(), pred.regions, mask, reward, opt.hard.baseline,
                                reinforce_weight=config.hard_reinforce_weight,
                                entropy_weight=config.hard_entropy_weight)


def _move_baseline(opt: Optimization, terms: HardAttentionTerms, config: TrainConfig) -> HardAttentionLog:
    """b_k from b_{k-1} and this batch's rewards, in place (it is part of `opt`'s state)."""
    opt.hard.baseline.copy_(updated_baseline(opt.hard.baseline, terms.reward, terms.sampled,
                                             config.hard_baseline_decay))
    sampled = terms.sampled.to(terms.reward.dtype)
    reward = (terms.reward * sampled).sum() / sampled.sum().clamp_min(1.0)
    return HardAttentionLog(reward, opt.hard.baseline.clone(), terms.entropy)


# ----------------------------------------------------------------------------- one epoch
class Trained(NamedTuple):
    state: TrainState
    skipped: frozenset[str]  # errors of the unreadable images left out of the batches


def train_one_epoch(run: Run, opt: Optimization, state: TrainState, dataset: CaptionDataset) -> Trained:
    """Epoch `state.epoch + 1`, from batch `state.batch_in_epoch` on (0 unless resumed mid-epoch),
    writing last.pt every train.save_every steps. Returns the state with the epoch completed."""
    t = run.config.train
    dataset.set_epoch(state.epoch)
    sampler = EpochSampler(len(dataset), seed=t.seed, epoch=state.epoch, batch_size=t.batch_size,
                           start_batch=state.batch_in_epoch, dist_info=run.dist)
    # Own generator: creating a DataLoader iterator otherwise draws from the global RNG,
    # and a resumed run (which creates it mid-epoch) would then see other dropout masks.
    loader = DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=run.config.data.num_workers,
                        collate_fn=collate_captions, pin_memory=run.device.type == "cuda",
                        generator=torch.Generator().manual_seed(t.seed + state.epoch))
    bar = tqdm(total=batches_per_epoch(len(dataset), t.batch_size, run.dist.world), initial=state.batch_in_epoch,
               desc=f"epoch {state.epoch + 1}/{t.epochs}", disable=None if run.dist.main else True,
               file=sys.stderr, dynamic_ncols=True)
    skipped: set[str] = set()
    window_t, window_caps = time.perf_counter(), 0
    for batch in loader:
        skipped.update(batch.skipped)  # one message per image, however many of its captions
        losses = None
        if len(batch.index):
            losses = train_step(opt, batch.to(run.device, non_blocking=True), config=t)
            window_caps += len(batch.index)
        state = replace(state, step=state.step + 1, batch_in_epoch=state.batch_in_epoch + 1)
        bar.update(1)
        if losses is not None and state.step % t.log_every == 0:
            rate = window_caps * run.dist.world / max(time.perf_counter() - window_t, 1e-9)
            bar.set_postfix(loss=f"{losses.loss.item():.3f}", caps_s=f"{rate:.0f}")
            hard = {} if losses.hard is None else {k: v.item() for k, v in losses.hard._asdict().items()}
            run.metrics.write(type="train", epoch=state.epoch + 1, step=state.step, loss=losses.loss.item(),
                              ce=losses.ce.item(), att=losses.att.item(), lr=opt.optimizer.param_groups[0]["lr"],
                              captions_per_s=rate, **hard)
            window_t, window_caps = time.perf_counter(), 0
        if t.save_every and state.step % t.save_every == 0:
            _save(run, opt, state, run.last_path)
    bar.close()
    return Trained(replace(state, epoch=state.epoch + 1, batch_in_epoch=0), frozenset(skipped))


def _save(run: Run, opt: Optimization, state: TrainState, path: Path, **extra: Any) -> None:
    """Rank 0 writes `path`, with every rank's RNG and sampler state (a collective under torchrun:
    every rank calls it)."""
    ranks = gather_objects(rank_state(opt), run.dist) if run.dist.world > 1 else None
    if run.dist.main:
        save_training_checkpoint(path, model=run.model, config=run.config, vocab=run.vocab, opt=opt, state=state,
                                 rank_states=ranks, **extra)


# ----------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValSet:
    """This rank's share of the validation split, and what its captions are scored against."""

    loader: DataLoader  # collate_eval batches of this rank's shard
    records: Sequence[ImageRecord]  # the shard's records, indexed like the loader's items
    references: dict[int, list[str]]  # image id -> reference captions, for the whole split
    objects: Objects | None  # scenes: image id -> (color, shape) objects, for object_f1
    from_features: bool  # the loader yields cached region features (not images, nor frozen-stage rows)


def make_val_set(config: Config, records: Sequence[ImageRecord], source: Any, *, from_features: bool,
                 objects: Objects | None, dist_info: Dist = Dist()) -> ValSet:
    mine = shard(records, dist_info)
    loader = DataLoader(EvalDataset(mine, Shard(source, dist_info)), batch_size=config.train.batch_size,
                        num_workers=config.data.num_workers, collate_fn=collate_eval,
                        generator=torch.Generator().manual_seed(config.train.seed))
    return ValSet(loader, mine, {r.image_id: list(r.captions) for r in records}, objects, from_features)


def decode_split(model: CaptionModel, loader: DataLoader, vocab: Vocab, records: Sequence[ImageRecord], *,
                 options: SearchOptions, device: torch.device, from_features: bool) -> dict[int, str]:
    """Caption every image of a loader for real (beam search, no teacher forcing): image id -> text."""
    out: dict[int, str] = {}
    for done in caption_batches(model, vocab, loader, options=options, device=device,
                                from_features=from_features):
        for i, caption in zip(done.index, done.captions):
            out[records[i].image_id] = caption.text
    return out


def evaluate(*, model: CaptionModel, val: ValSet, vocab: Vocab, options: SearchOptions, device: torch.device,
             dist_info: Dist = Dist()) -> dict[str, float] | None:
    """BLEU-4 and CIDEr-D of real decoding on the validation split and, with `val.objects`
    (scenes), the object_f1 and exact_set_accuracy of the captions' "<color> <shape>" mentions.

    Every rank decodes its shard; rank 0 gets the scores of them all, the others None.
    """
    from captioner.scoring.coco_metrics import score_captions

    local = decode_split(model, val.loader, vocab, val.records, options=options, device=device,
                         from_features=val.from_features)
    captions = gather_dicts(local, dist_info)
    if not dist_info.main:
        return None
    refs = {i: val.references[i] for i in captions}
    report = score_captions(refs, captions, metrics=("BLEU-4", "CIDEr-D"))
    scores = {k: float(report.scores[k]) for k in ("BLEU-4", "CIDEr-D")} | {"val_images": len(captions)}
    if val.objects is not None:
        m = mention_scores({i: c.split() for i, c in captions.items()}, val.objects)
        scores |= {"object_f1": m.f1, "exact_set_accuracy": m.exact_set_accuracy}
    return scores


def _after_validation(run: Run, opt: Optimization, state: TrainState, scores: dict[str, float] | None) -> TrainState:
    """Rank 0 keeps the best score, every rank gets its decision; the lr plateau steps; best.pt
    (when improved) and last.pt are written, then the epoch is logged."""
    t = run.config.train
    improved = False
    if run.dist.main:
        score = scores[t.metric]
        improved = score > state.best_score
        state = (replace(state, best_score=score, best_epoch=state.epoch, bad_epochs=0) if improved
                 else replace(state, bad_epochs=state.bad_epochs + 1))
        run.say(_epoch_line(state, scores, t.metric))
    metric, better, bad_epochs = broadcast_floats([scores[t.metric] if scores else 0.0, float(improved),
                                                   float(state.bad_epochs)], run.dist)
    opt.scheduler.step(metric)
    state = replace(state, bad_epochs=int(bad_epochs))
    if better:
        _save(run, opt, state, run.best_path, best_score=state.best_score)
    _save(run, opt, state, run.last_path)
    # Logged after last.pt is written, so a killed run never logs an epoch twice.
    if scores:
        run.metrics.write(type="val", epoch=state.epoch, step=state.step, **scores, best=state.best_score,
                          best_epoch=state.best_epoch)
    if state.bad_epochs >= t.patience:
        run.say(f"early stopping: no {t.metric} improvement for {t.patience} epochs")
    return state


def _epoch_line(state: TrainState, scores: dict[str, float], metric: str) -> str:
    objects = "".join(f"{k} {scores[k]:.4f}  " for k in ("object_f1", "exact_set_accuracy") if k in scores)
    return (f"epoch {state.epoch}: BLEU-4 {scores['BLEU-4']:.4f}  CIDEr-D {scores['CIDEr-D']:.4f}  {objects}"
            f"({metric} best {state.best_score:.4f} at epoch {state.best_epoch})")


# ----------------------------------------------------------------------------- the run
def train(config: Config, out_dir: str | Path, *, resume: bool = False, log: Log = stderr_log) -> TrainSummary:
    """Train a captioner; write last.pt, best.pt and metrics.jsonl to `out_dir`."""
    t = config.train
    placement = setup_distributed(t.device)
    dist_info, device = placement.dist, placement.device
    say: Log = log if dist_info.main else _quiet
    if t.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on the CPU")
    out = _output_dir(Path(out_dir), dist_info)
    seed_all(t.seed + dist_info.rank)

    splits = make_splits(config)
    say(splits.note)
    vocab = Vocab.build(records_tokens(splits.train), config.data.min_word_freq)
    say(f"data: {len(splits.train)} training images, vocabulary of {len(vocab)} words "
        f"(min frequency {config.data.min_word_freq})")
    ckpt = load_resumable(out / "last.pt", config, vocab) if resume else None
    objects = load_val_objects(config)
    model = (resumed_model(ckpt, str(out / "last.pt")) if ckpt is not None
             else new_model(config.model, len(vocab), load_weights=True))
    model.to(device)
    sources = make_sources(config, splits, model.encoder, device, dist_info, say)
    dataset = _caption_dataset(config, splits, vocab, sources, say)
    # From a cache of the frozen stages' outputs, the model as training sees it runs only the
    # stages it trains; `model` itself (the one saved) is the same modules.
    step_model = FromFrozenStages(model) if sources.from_frozen else model
    net = wrap_ddp(model.decoder if sources.from_features else step_model, device, dist_info)
    opt = make_optimization(net, param_groups(model, t), t, device, hard_attention=config.model.attention == "hard",
                            rank=dist_info.rank)
    state = TrainState()
    if ckpt is not None:
        state = restore(ckpt, opt, rank=dist_info.rank, world=dist_info.world, say=say)  # last: RNG states continue
        where = (f"batch {state.batch_in_epoch} of epoch {state.epoch + 1}" if state.batch_in_epoch
                 else f"the start of epoch {state.epoch + 1}")
        say(f"resumed from {out / 'last.pt'}: {state.epoch} epochs and {state.step} steps done; continuing at {where}")

    run = Run(config, model, vocab, out, device, dist_info, JsonlLog(out / "metrics.jsonl", dist_info.main), say,
              step_model)
    val = make_val_set(config, splits.val, sources.val, from_features=sources.from_features, objects=objects,
                       dist_info=dist_info)
    state, skipped = _fit(run, opt, state, dataset, val)
    if skipped:
        say(f"warning: {len(skipped)} unreadable images were skipped during training")
    barrier(dist_info)
    leave(placement)
    return TrainSummary(out_dir=out, epochs_completed=state.epoch, steps=state.step, best_score=state.best_score,
                        best_epoch=state.best_epoch, stopped_early=state.bad_epochs >= t.patience,
                        skipped_images=len(skipped), resumed=ckpt is not None, main=dist_info.main)


def _fit(run: Run, opt: Optimization, state: TrainState, dataset: CaptionDataset, val: ValSet) -> Trained:
    """Epochs until train.epochs are done or train.patience epochs bring no improvement."""
    t = run.config.train
    options = SearchOptions(beam_size=t.val_beam_size, max_len=t.val_max_len, hard_decode=t.val_hard_decode)
    skipped: frozenset[str] = frozenset()
    run.step_model.train()
    while state.epoch < t.epochs and state.bad_epochs < t.patience:
        state, new = train_one_epoch(run, opt, state, dataset)
        skipped |= new
        scores = evaluate(model=run.step_model, val=val, vocab=run.vocab, options=options, device=run.device,
                          dist_info=run.dist)
        state = _after_validation(run, opt, state, scores)
    return Trained(state, skipped)


def _quiet(_message: str) -> None:
    pass


def _output_dir(out: Path, dist_info: Dist) -> Path:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
        for name in ("last.pt", "best.pt"):
            remove_leftover_temps(out / name)  # from a run killed while writing it
    return out


def _caption_dataset(config: Config, splits: Splits, vocab: Vocab, sources: Sources, say: Log) -> CaptionDataset:
    d = config.data
    dataset = CaptionDataset(splits.train, vocab, sources.train, max_len=d.max_len, policy=d.caption_policy,
                             seed=config.train.seed)
    if dataset.truncated:
        say(f"captions: {dataset.truncated} of {dataset.num_captions} longer than {d.max_len} tokens were truncated")
    return dataset
