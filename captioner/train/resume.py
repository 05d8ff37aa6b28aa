"""What `last.pt` and `best.pt` hold beyond the model, and how a run continues from `last.pt`.

`last.pt` records the epoch, the global step and how many batches of the current epoch are
done. Each epoch's sample order is a permutation seeded by (seed, epoch), so `--resume`
continues at exactly the next batch of the interrupted epoch, with the RNG states of the moment
the checkpoint was written; finished epochs are never redone. A hard-attention run also
stores its REINFORCE baseline and its region sampler's generator (`hard_attention`). Under
torchrun every rank has its own RNG streams, baseline and sampler: `rank_states` holds each
rank's (the top-level `rng` and `hard_attention` are rank 0's), and a rank resumes from its own,
so a distributed run resumes exactly as well, at the same world size (at another, see
`restore`). A hard run's sampler saved on a GPU is reseeded when resumed on a CPU, and back. The
weights go through the one checkpoint loader (`captioner.checkpoint.build_model`), as for
every other reader.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from captioner.checkpoint import CheckpointError, build_model, load_checkpoint, save_checkpoint
from captioner.config import Config, config_from_dict
from captioner.model.caption_model import CaptionModel
from captioner.train.optim import Optimization
from captioner.words.vocab import Vocab

#: What `train` writes into last.pt beyond the model, and resuming needs.
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "epoch", "step", "train_state", "rng")


@dataclass(frozen=True)
class TrainState:
    """Where a run is: counters and the early-stopping record. `epoch` is epochs completed."""

    epoch: int = 0
    step: int = 0
    batch_in_epoch: int = 0  # batches of epoch `epoch + 1` done
    best_score: float = float("-inf")
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs in a row without improvement

    def train_state(self) -> dict[str, float | int]:
        """The checkpoint's `train_state` entry (epoch and step are top-level keys)."""
        return {k: v for k, v in asdict(self).items() if k not in ("epoch", "step")}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainState:
        ts = ckpt["train_state"]
        return cls(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]), batch_in_epoch=int(ts["batch_in_epoch"]),
                   best_score=float(ts["best_score"]), best_epoch=int(ts["best_epoch"]),
                   bad_epochs=int(ts["bad_epochs"]))


# ----------------------------------------------------------------------------- RNG
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Python's, NumPy's and torch's (CPU and CUDA) generator states, as tensors and plain values
    (so the checkpoint loads with `weights_only=True`)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "python": list(py_state), "python_version": py_version,
             "python_gauss": py_gauss, "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
             "numpy_pos": int(np_state[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- save
def rank_state(opt: Optimization) -> dict[str, Any]:
    """This process's share of the state `restore` needs: its RNG states and, for hard attention,
    its baseline and sampler (each rank of a distributed run has its own)."""
    state: dict[str, Any] = {"rng": rng_state()}
    if opt.hard is not None:
        state["hard_attention"] = opt.hard.state_dict()
    return state


def save_training_checkpoint(path: Path, *, model: CaptionModel, config: Config, vocab: Vocab,
                             opt: Optimization, state: TrainState, rank_states: list[dict[str, Any]] | None = None,
                             **extra: Any) -> Path:
    """last.pt or best.pt: the model checkpoint plus everything `restore` needs, and the
    current RNG states (so call it at the moment the run should continue from). `rank_states`:
    every rank's `rank_state`, in rank order, under torchrun (None for one process)."""
    if rank_states is not None:
        extra = {"rank_states": rank_states, **extra}
    return save_checkpoint(path, model=model, config=config, vocab=vocab, epoch=state.epoch, step=state.step,
                           optimizer=opt.optimizer.state_dict(), scheduler=opt.scheduler.state_dict(),
                           scaler=opt.scaler.state_dict(), train_state=state.train_state(),
                           metric=config.train.metric, **rank_state(opt), **extra)


# ----------------------------------------------------------------------------- resume
def load_resumable(path: Path, config: Config, vocab: Vocab) -> dict[str, Any]:
    """`path` (an output folder's last.pt) read and checked by `check_resumable`."""
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no last.pt in {path.parent})")
    ckpt = load_checkpoint(path)
    check_resumable(ckpt, config, vocab, path)
    return ckpt


def check_resumable(ckpt: dict[str, Any], config: Config, vocab: Vocab, path: Path) -> None:
    """Refuse a checkpoint without training state, or whose model config, vocabulary or
    (stopped mid-epoch) batch size differs from this run's."""
    missing = [k for k in TRAINING_STATE if k not in ckpt]
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


def resumed_model(ckpt: dict[str, Any], source: str) -> CaptionModel:
    """The checkpoint's model, through the one loader (strict: every stored weight must fit)."""
    return build_model(ckpt, source).model


def restore(ckpt: dict[str, Any], opt: Optimization, *, rank: int = 0, world: int = 1,
            say: Callable[[str], None] | None = None) -> TrainState:
    """Load optimizer, scheduler, scaler and RNG states (and a hard-attention run's baseline and
    sampler) from `ckpt`; the run's position in it.

    Rank `rank` takes its own RNG and sampler states from `rank_states`. Where the checkpoint
    has none for it (a run resumed on more processes than wrote it), it takes rank 0's with
    torch's generator and the sampler reseeded from (seed, rank, step), so that no two ranks draw
    the same stream; such a resume, like any at another world size (which reshards the data), is
    not bit-exact. A hard-attention sampler saved on another device type (CPU and CUDA
    generators differ) is reseeded the same way, and the run continues with its baseline. Both
    are said through `say`.

    Call it last, after everything that draws random numbers while a run is set up (the
    model's initialisation), so the run continues with the checkpoint's RNG states.
    """
    say = say or (lambda message: None)
    opt.optimizer.load_state_dict(ckpt["optimizer"])
    opt.scheduler.load_state_dict(ckpt["scheduler"])
    opt.scaler.load_state_dict(ckpt["scaler"])
    saved = ckpt.get("rank_states")
    ranks = saved if isinstance(saved, list) and saved else [ckpt]  # one process: its own, at the top level
    if len(ranks) != world:
        held = f"{len(ranks)} rank{'s' if len(ranks) != 1 else ''}'" if saved else "one process's"
        say(f"resuming on {world} process{'es' if world != 1 else ''} from a checkpoint with {held} RNG states: "
            f"the data is resharded and ranks without a saved state get streams of their own, so the run does "
            f"not continue bit-exactly")
    mine = ranks[rank] if rank < len(ranks) else ranks[0]
    own_seed = _rank_seed(ckpt, rank)
    fresh = rank >= len(ranks)
    if opt.hard is not None:
        if "hard_attention" not in mine:
            raise CheckpointError("cannot resume hard attention: the checkpoint has no baseline or sampler "
                                  "state (hard_attention)")
        fits = opt.hard.load_state_dict(mine["hard_attention"])
        if not fits:
            say(f"hard attention: the sampler's state was saved on another device type than "
                f"{opt.hard.generator.device.type}, so regions are now drawn from a generator seeded by "
                f"(seed, rank, step); the baseline carries over and the run continues, not bit-exactly")
        if not fits or fresh:
            opt.hard.reseed(own_seed)
    set_rng_state(mine["rng"])
    if fresh:
        seed_all(own_seed)
    return TrainState.from_checkpoint(ckpt)


def _rank_seed(ckpt: dict[str, Any], rank: int) -> int:
    """A seed of its own for `rank` at this checkpoint's step, from the run's seed."""
    seed = int(ckpt["config"].get("train", {}).get("seed", 0))
    return int(np.random.SeedSequence([seed, rank, int(ckpt["step"])]).generate_state(1)[0])
