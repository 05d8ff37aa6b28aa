"""The training loop: `train(config, out_dir)`. It knows the data flow, not the model's insides.

Resume semantics: `last.pt` records the epoch, the global step and how many batches of the
current epoch are done. Each epoch's sample order is a permutation seeded by (seed, epoch), so
`--resume` continues at exactly the next batch of the interrupted epoch, with the RNG states of
the moment the checkpoint was written; finished epochs are never redone.

Distributed: under `torchrun`, each rank trains on its shard of every epoch's permutation with
DistributedDataParallel; rank 0 alone writes checkpoints and logs; validation captions are
decoded on all ranks and gathered on rank 0; every rank resumes from the same `last.pt`.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from captioner.api import resolve_device
from captioner.checkpoint import CheckpointError, load_checkpoint, model_state, remove_leftover_temps, save_checkpoint
from captioner.config import Config, ConfigError, config_from_dict
from captioner.data.datasets import (CaptionDataset, EvalDataset, ImageRecord, ImageSource, check_images,
                       collate_captions, collate_eval, detect_format, holdout_split, load_records,
                       records_tokens, select_split)
from captioner.image.preprocess import preprocess_for
from captioner.features.cache import CACHE_DIRNAME, FeatureCache, open_or_build
from captioner.scoring.losses import doubly_stochastic_penalty, masked_cross_entropy
from captioner.scoring.mentions import load_scene_objects, mention_scores
from captioner.model.caption_model import CaptionModel
from captioner.words.search import beam_search
from captioner.words.vocab import Vocab

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


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


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class EpochSampler(Sampler[int]):
    """This rank's share of a (seed, epoch)-seeded permutation, from batch `start_batch` on."""

    def __init__(self, n: int, *, seed: int, epoch: int, batch_size: int, start_batch: int = 0,
                 dist_info: Dist = Dist()) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g).tolist()
        per_rank = math.ceil(n / dist_info.world)
        perm += perm[: per_rank * dist_info.world - n]  # pad so every rank gets as many items
        self.indices = perm[dist_info.rank::dist_info.world][start_batch * batch_size:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def batches_per_epoch(n: int, batch_size: int, world: int) -> int:
    return math.ceil(math.ceil(n / world) / batch_size)


# ----------------------------------------------------------------------------- data
@dataclass
class Splits:
    train: list[ImageRecord]
    val: list[ImageRecord]
    note: str


def make_splits(config: Config) -> Splits:
    d = config.data
    if not d.data:
        raise ConfigError("data.data: no training data given (use --data FILE or set it in the config)")
    images = d.images or None
    fmt = detect_format(d.data)
    if fmt == "folder":
        raise ConfigError(f"{d.data}: a folder of images has no captions; give a COCO or Karpathy json")
    records = load_records(d.data, images)
    if not records:
        raise ConfigError(f"{d.data}: the annotation file lists no images")
    if d.val_data:
        val = load_records(d.val_data, d.val_images or None)
        train = select_split(records, "train") if fmt == "karpathy" else records
        note = f"validation: {len(val)} images from {d.val_data}"
    elif fmt == "karpathy" and select_split(records, "val"):
        train, val = select_split(records, "train"), select_split(records, "val")
        note = f"validation: the Karpathy 'val' split ({len(val)} images); training on train+restval"
    else:
        train, val = holdout_split(records, d.val_fraction, config.train.seed)
        note = (f"validation: no validation split in {d.data}, so {len(val)} of {len(records)} images "
                f"({d.val_fraction:.0%}, deterministic by seed {config.train.seed}) are held out")
    if d.max_val_images:
        val = val[: d.max_val_images]
    if not any(r.captions for r in train):
        raise ConfigError(f"{d.data}: none of the {len(train)} training images has a caption"
                          if train else f"{d.data}: no training images")
    check_images(train)
    check_images(val)
    return Splits(train, val, note)


# ----------------------------------------------------------------------------- feature cache
def build_feature_caches(config: Config, splits: Splits, encoder, device: torch.device, dist_info: Dist,
                         say: Log) -> list[tuple[FeatureCache, str]]:
    """Open (or build, on rank 0) the train and val caches next to the data file; each with
    what happened ("hit" or why it was built)."""
    cache_dir = Path(config.data.data).resolve().parent / CACHE_DIRNAME
    caches = []
    for name, recs in (("train", splits.train), ("val", splits.val)):
        if dist_info.main:
            bar = tqdm(total=len(recs), desc=f"caching {name} features", unit="img", disable=None, file=sys.stderr)
            try:
                cache, status = open_or_build(recs, config.model, encoder, cache_dir,
                                              batch_size=config.train.batch_size, device=device,
                                              num_workers=config.data.num_workers,
                                              progress=lambda done, n: bar.update(done - bar.n))
            except OSError as err:  # a read-only or full data folder
                raise ConfigError(f"{err.filename or cache_dir}: cannot write the feature cache ({err.strerror}); "
                                  f"make the data folder writable, or train from the images with "
                                  f"--set train.feature_cache=false") from None
            finally:
                bar.close()
            say(f"feature cache ({name}): {_outcome(status)}, {cache.data_path}")
            if cache.errors:
                say(f"warning: {len(cache.errors)} unreadable {name} images will be skipped, e.g. {cache.errors[0]}")
        if dist_info.world > 1:
            dist.barrier()
        if not dist_info.main:
            cache, status = open_or_build(recs, config.model, encoder, cache_dir, device=device)
        caches.append((cache, status))
    return caches


def cache_features(config: Config, log: Log = _stderr) -> list[tuple[str, str, Path]]:
    """`captioner cache-features`: build the caches `train` will use, without training."""
    if config.model.finetune_blocks:
        raise ConfigError("model.finetune_blocks > 0: a fine-tuned encoder trains on live images, not a cache")
    _, device = _dist_setup(config.train.device)
    splits = make_splits(config)
    log(splits.note)
    from captioner.features.encoder import Encoder
    encoder = Encoder(config=config.model).to(device)
    caches = build_feature_caches(config, splits, encoder, device, Dist(), log)
    return [(name, _outcome(status), cache.data_path) for name, (cache, status) in zip(("train", "val"), caches)]


def _outcome(status: str) -> str:
    """open_or_build's status -> "hit" or "built (why)"."""
    return "hit" if status == "hit" else f"built ({status})"


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def decode_split(model: CaptionModel, loader: DataLoader, vocab: Vocab, records: Sequence[ImageRecord], *,
                 from_features: bool, beam_size: int, max_len: int, device: torch.device) -> dict[int, str]:
    """Caption every image of a loader for real (beam search, no teacher forcing)."""
    was_training = model.training
    model.eval()
    out: dict[int, str] = {}
    for batch in loader:
        if not len(batch.index):
            continue
        x = batch.images.to(device)
        feats = x if from_features else model.encode(x)  # (B, P, E)
        hyps = beam_search(model.decoder, feats, start_id=vocab.start_id, end_id=vocab.end_id,
                           pad_id=vocab.pad_id, beam_size=beam_size, max_len=max_len)
        for i, (best,) in zip(batch.index.tolist(), hyps):
            out[records[i].image_id] = " ".join(vocab.decode(best.tokens))
    model.train(was_training)
    return out


def load_val_objects(config: Config) -> dict[int, list[tuple[str, str]]] | None:
    """data.instances -> image id -> its (color, shape) objects, or None when not set."""
    path = config.data.instances
    if not path:
        return None
    try:
        objects = load_scene_objects(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"data.instances: cannot read {path}: {err}") from None
    if objects is None:
        raise ConfigError(f"data.instances: {path} has no 'color' on its annotations (not a scenes instances file)")
    return objects


def validate(model, loader, vocab, records, config: Config, device, dist_info: Dist,
             from_features: bool, all_records: Sequence[ImageRecord],
             objects: dict[int, list[tuple[str, str]]] | None = None) -> dict[str, float] | None:
    """BLEU-4 and CIDEr-D of real decoding on the validation split (rank 0 gets the scores), and
    with `objects` (scenes) the object F1 and exact-set accuracy of the captions' mentions."""
    from captioner.scoring.metrics import score_captions

    t = config.train
    local = decode_split(model, loader, vocab, records, from_features=from_features,
                         beam_size=t.val_beam_size, max_len=t.val_max_len, device=device)
    if dist_info.world > 1:
        parts: list[Any] = [None] * dist_info.world
        dist.all_gather_object(parts, local)
        local = {k: v for part in parts for k, v in part.items()}
    if not dist_info.main:
        return None
    refs = {r.image_id: list(r.captions) for r in all_records if r.image_id in local}
    report = score_captions(refs, local, metrics=("BLEU-4", "CIDEr-D"))
    scores = {k: float(report.scores[k]) for k in ("BLEU-4", "CIDEr-D")} | {"val_images": len(local)}
    if objects is not None:
        m = mention_scores({i: c.split() for i, c in local.items()}, objects)
        scores |= {"object-F1": m.f1, "exact-set": m.exact_set_accuracy}
    return scores


# ----------------------------------------------------------------------------- helpers
def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np_state[1].astype(np.int64)), "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _dist_setup(device_name: str) -> tuple[Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    info = Dist(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else Dist()
    device = resolve_device(device_name, field="train.device")
    if device.type == "cuda" and info.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return info, device


class JsonlLog:
    def __init__(self, path: Path, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, **record: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


#: What `train` writes into last.pt beyond the model, and resuming needs.
_TRAINING_STATE = ("optimizer", "scheduler", "scaler", "epoch", "step", "train_state", "rng")


def check_resumable(ckpt: dict[str, Any], config: Config, vocab: Vocab, path: Path) -> None:
    """Refuse a checkpoint without training state, or whose model config, vocabulary or
    (stopped mid-epoch) batch size differs from this run's."""
    missing = [k for k in _TRAINING_STATE if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: cannot resume, it has no training state ({', '.join(missing)} missing); "
                              f"an exported model is not a training checkpoint")
    old = config_from_dict(ckpt["config"], str(path))
    if old.model != config.model:
        diffs = [f"{k}: {getattr(old.model, k)!r} -> {getattr(config.model, k)!r}"
                 for k in old.model.__dataclass_fields__ if getattr(old.model, k) != getattr(config.model, k)]
        raise CheckpointError(f"{path}: cannot resume, the model config differs ({'; '.join(diffs)})")
    if ckpt["vocab"] != vocab.to_list():
        raise CheckpointError(f"{path}: cannot resume, the vocabulary differs from this data's "
                              f"({len(ckpt['vocab'])} vs {len(vocab)} words); use the same data and min_word_freq")
    stopped_at = int(ckpt["train_state"]["batch_in_epoch"])
    if stopped_at and old.train.batch_size != config.train.batch_size:
        raise CheckpointError(f"{path}: cannot resume with train.batch_size {config.train.batch_size}: the run "
                              f"stopped after batch {stopped_at} of epoch {int(ckpt['epoch']) + 1} at batch size "
                              f"{old.train.batch_size}, so its place in the epoch would be lost; resume with "
                              f"--batch-size {old.train.batch_size}")


# ----------------------------------------------------------------------------- the loop
def train(config: Config, out_dir: str | Path, *, resume: bool = False, log: Log = _stderr) -> TrainSummary:
    """Train a captioner; write last.pt, best.pt and metrics.jsonl to `out_dir`."""
    t, d = config.train, config.data
    dist_info, device = _dist_setup(t.device)
    say: Log = log if dist_info.main else (lambda _m: None)
    if t.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp: fp16 needs a CUDA device; use bf16 on the CPU")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if dist_info.main:
        out.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out / "last.pt", out / "best.pt"
    if dist_info.main:
        for path in (last_path, best_path):
            remove_leftover_temps(path)  # from a run killed while writing it
    _seed_all(t.seed + dist_info.rank)

    splits = make_splits(config)
    say(splits.note)
    vocab = Vocab.build(records_tokens(splits.train), d.min_word_freq)
    say(f"data: {len(splits.train)} training images, vocabulary of {len(vocab)} words "
        f"(min frequency {d.min_word_freq})")

    ckpt = None
    if resume:
        if not last_path.is_file():
            raise CheckpointError(f"{last_path}: nothing to resume (no last.pt in {out})")
        ckpt = load_checkpoint(last_path)
        check_resumable(ckpt, config, vocab, last_path)

    val_objects = load_val_objects(config)
    model = CaptionModel(config=config.model, vocab_size=len(vocab), load_weights=True)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"], strict=False)
    model.to(device)
    frozen = config.model.finetune_blocks == 0
    use_cache = frozen and t.feature_cache
    # --- sources: cached grids (frozen encoder) or live images
    if use_cache:
        (train_src, _), (val_src, _) = build_feature_caches(config, splits, model.encoder, device, dist_info, say)
    else:
        pre = preprocess_for(config.model)
        train_src, val_src = ImageSource.from_records(splits.train, pre), ImageSource.from_records(splits.val, pre)
        say("training from live images" + ("" if frozen else f" (fine-tuning the last {config.model.finetune_blocks} encoder stages)"))
    dataset = CaptionDataset(splits.train, vocab, train_src, max_len=d.max_len, policy=d.caption_policy, seed=t.seed)
    if dataset.truncated:
        say(f"captions: {dataset.truncated} of {dataset.num_captions} longer than {d.max_len} tokens were truncated")

    trainable = model.decoder if use_cache else model
    ddp = None
    if dist_info.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        ddp = DistributedDataParallel(trainable, device_ids=[device.index] if device.type == "cuda" else None,
                                      find_unused_parameters=False)
    groups = [{"params": model.decoder_parameters(), "lr": t.decoder_lr, "name": "decoder"}]
    if model.encoder_parameters():
        groups.append({"params": model.encoder_parameters(), "lr": t.encoder_lr, "name": "encoder"})
    optimizer = torch.optim.Adam(groups, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=t.lr_decay_factor,
                                                           patience=t.lr_decay_patience)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype is not None)

    epoch, step, batch_in_epoch = 0, 0, 0
    best_score, best_epoch, bad_epochs = float("-inf"), 0, 0
    if ckpt is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        ts = ckpt["train_state"]
        batch_in_epoch, best_score = int(ts["batch_in_epoch"]), float(ts["best_score"])
        best_epoch, bad_epochs = int(ts["best_epoch"]), int(ts["bad_epochs"])
        _set_rng_state(ckpt["rng"])
        where = f"batch {batch_in_epoch} of epoch {epoch + 1}" if batch_in_epoch else f"the start of epoch {epoch + 1}"
        say(f"resumed from {last_path}: {epoch} epochs and {step} steps done; continuing at {where}")

    jlog = JsonlLog(out / "metrics.jsonl", dist_info.main)
    eval_loader = DataLoader(EvalDataset(splits.val[dist_info.rank::dist_info.world],
                                         _Subset(val_src, dist_info.rank, dist_info.world)),
                             batch_size=t.batch_size, num_workers=d.num_workers, collate_fn=collate_eval,
                             generator=torch.Generator().manual_seed(t.seed))
    val_records = splits.val[dist_info.rank::dist_info.world]

    def save(path: Path, **extra: Any) -> None:
        if dist_info.main:
            save_checkpoint(path, model=model, config=config, vocab=vocab, epoch=epoch, step=step,
                            optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            scaler=scaler.state_dict(), rng=_rng_state(),
                            train_state={"batch_in_epoch": batch_in_epoch, "best_score": best_score,
                                         "best_epoch": best_epoch, "bad_epochs": bad_epochs},
                            metric=t.metric, **extra)

    skipped: set[str] = set()
    stopped_early = False
    model.train()
    n_batches = batches_per_epoch(len(dataset), t.batch_size, dist_info.world)
    while epoch < t.epochs and not stopped_early:
        dataset.set_epoch(epoch)
        sampler = EpochSampler(len(dataset), seed=t.seed, epoch=epoch, batch_size=t.batch_size,
                               start_batch=batch_in_epoch, dist_info=dist_info)
        # Own generator: creating a DataLoader iterator otherwise draws from the global RNG,
        # and a resumed run (which creates it mid-epoch) would then see other dropout masks.
        loader = DataLoader(dataset, batch_size=t.batch_size, sampler=sampler, num_workers=d.num_workers,
                            collate_fn=collate_captions, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(t.seed + epoch))
        bar = tqdm(total=n_batches, initial=batch_in_epoch, desc=f"epoch {epoch + 1}/{t.epochs}",
                   disable=None if dist_info.main else True, file=sys.stderr, dynamic_ncols=True)
        window_t, window_caps = time.perf_counter(), 0
        for batch in loader:
            skipped.update(batch.skipped)  # one message per image, however many of its captions
            batch_in_epoch += 1
            if len(batch.index):
                batch = batch.to(device, non_blocking=True)
                targets, mask = batch.captions[:, 1:], batch.mask[:, 1:]  # (B, T)
                with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    net = ddp or trainable
                    pred = net(batch.images, batch.captions)
                    ce = masked_cross_entropy(pred.logits, targets, mask, t.label_smoothing)
                    att = doubly_stochastic_penalty(pred.alphas.float(), mask, t.alpha_c)
                    loss = ce + att
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if t.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], t.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                window_caps += len(batch.index)
            step += 1
            bar.update(1)
            if step % t.log_every == 0 and len(batch.index):
                rate = window_caps * dist_info.world / max(time.perf_counter() - window_t, 1e-9)
                bar.set_postfix(loss=f"{loss.item():.3f}", caps_s=f"{rate:.0f}")
                jlog.write(type="train", epoch=epoch + 1, step=step, loss=loss.item(), ce=ce.item(),
                           att=att.item(), lr=optimizer.param_groups[0]["lr"], captions_per_s=rate)
                window_t, window_caps = time.perf_counter(), 0
            if t.save_every and step % t.save_every == 0:
                save(last_path)
        bar.close()
        epoch += 1
        batch_in_epoch = 0
        scores = validate(model, eval_loader, vocab, val_records, config, device, dist_info, use_cache,
                          splits.val, val_objects)
        improved = False
        if dist_info.main:
            score = scores[t.metric]
            improved = score > best_score
            if improved:
                best_score, best_epoch, bad_epochs = score, epoch, 0
            else:
                bad_epochs += 1
            objects_part = f"object-F1 {scores['object-F1']:.4f}  " if "object-F1" in scores else ""
            say(f"epoch {epoch}: BLEU-4 {scores['BLEU-4']:.4f}  CIDEr-D {scores['CIDEr-D']:.4f}  {objects_part}"
                f"({t.metric} best {best_score:.4f} at epoch {best_epoch})")
        decision = [scores[t.metric] if scores else 0.0, float(improved), float(bad_epochs)]
        if dist_info.world > 1:
            tensor = torch.tensor(decision, dtype=torch.float64)
            dist.broadcast(tensor, src=0)
            decision = tensor.tolist()
        scheduler.step(decision[0])
        bad_epochs = int(decision[2])
        if decision[1]:
            save(best_path, best_score=best_score)
        stopped_early = bad_epochs >= t.patience
        save(last_path)
        # Logged after last.pt is written, so a killed run never logs an epoch twice.
        if scores:
            jlog.write(type="val", epoch=epoch, step=step, **scores, best=best_score, best_epoch=best_epoch)
        if stopped_early:
            say(f"early stopping: no {t.metric} improvement for {t.patience} epochs")
    if skipped:
        say(f"warning: {len(skipped)} unreadable images were skipped during training")
    if dist_info.world > 1:
        dist.barrier()
    return TrainSummary(out, epoch, step, best_score, best_epoch, stopped_early, len(skipped), ckpt is not None,
                        dist_info.main)


class _Subset:
    """Every `world`-th item of a source, starting at `rank` (this rank's validation shard)."""

    def __init__(self, source: Any, rank: int, world: int) -> None:
        self.source, self.rank, self.world = source, rank, world

    def __len__(self) -> int:
        return len(range(self.rank, len(self.source), self.world))

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.source[self.rank + i * self.world]
