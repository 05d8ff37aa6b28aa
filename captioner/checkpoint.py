"""Checkpoints as plain dicts: written atomically, loaded with `weights_only=True`.

Keys: `model` (state_dict), `config` (Config as nested dicts), `vocab` (list of str),
`epoch` (completed epochs), `step`, `encoder_in_state` and optional training state
(`optimizer`, `scheduler`, `scaler`, `rng`, `best_score`, ...). A frozen EfficientNet-Lite0
encoder with its offline ImageNet weights is left out of `model`, since the installed
package rebuilds it exactly; everything else is stored.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, NamedTuple

import torch

from captioner.atomic import atomic_path
from captioner.config import Config, ModelConfig, config_from_dict
from captioner.features.encoder import weights_are_offline
from captioner.features.pretrained import load_pretrained
from captioner.model.caption_model import CaptionModel
from captioner.words.vocab import Vocab

REQUIRED_KEYS = ("model", "config", "vocab", "epoch", "step")


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not fit; the message names the file."""


class LoadedModel(NamedTuple):
    model: CaptionModel
    vocab: Vocab
    config: Config
    checkpoint: dict[str, Any]


def model_state(model: CaptionModel, config: Config) -> tuple[dict[str, torch.Tensor], bool]:
    """The state_dict to store, and whether it includes the encoder."""
    state = model.state_dict()
    keep_encoder = not (weights_are_offline(config.model) and config.model.finetune_blocks == 0)
    if not keep_encoder:
        state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
    return state, keep_encoder


def save_checkpoint(path: str | Path, *, model: CaptionModel, config: Config, vocab: Vocab,
                    epoch: int, step: int, half: bool = False, **extra: Any) -> Path:
    """Write atomically: a temp file in the same directory, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never a torn one.
    `half=True` stores floating-point weights as fp16 (for shipping; they load back as fp32).
    """
    path = Path(path)
    state, with_encoder = model_state(model, config)
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    ckpt = {"model": {k: v.detach().cpu() for k, v in state.items()}, "config": config.to_dict(),
            "vocab": vocab.to_list(), "epoch": int(epoch), "step": int(step),
            "encoder_in_state": with_encoder, **extra}
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory; give a file name, such as {path / 'model.pt'}")
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint dict safely (`weights_only=True`) and check its keys."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or foreign file
        if isinstance(err, pickle.UnpicklingError):
            reason = "not a checkpoint file, or it holds Python objects that a safe weights_only load refuses"
        else:
            reason = (str(err).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        missing = [k for k in REQUIRED_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
        raise CheckpointError(f"{path}: not a captioner checkpoint (missing keys: {', '.join(missing)})")
    return ckpt


def new_model(config: ModelConfig, vocab_size: int, *, load_weights: bool = True) -> CaptionModel:
    """A fresh model for training: the encoder with the weights `config.pretrained` names
    (`load_weights=False`: leave them random, since a checkpoint will supply them)."""
    model = CaptionModel(config=config, vocab_size=vocab_size)
    if load_weights:
        load_pretrained(model.encoder, config)
    return model


def build_model(ckpt: dict[str, Any], source: str = "checkpoint") -> LoadedModel:
    """Rebuild model, vocab and config from a checkpoint dict alone."""
    shapes = {"config": (dict, "a table of settings"), "vocab": (list, "a list of words"),
              "model": (dict, "a state_dict of tensors")}
    for key, (kind, what) in shapes.items():
        if not isinstance(ckpt[key], kind):
            raise CheckpointError(f"{source}: '{key}' is a {type(ckpt[key]).__name__}, expected {what}")
    if not all(isinstance(w, str) for w in ckpt["vocab"]):
        raise CheckpointError(f"{source}: 'vocab' holds non-string entries, expected a list of words")
    if not all(isinstance(v, torch.Tensor) for v in ckpt["model"].values()):
        raise CheckpointError(f"{source}: 'model' holds non-tensor values, expected a state_dict of tensors")
    try:
        config = config_from_dict(ckpt["config"], source)
        vocab = Vocab(ckpt["vocab"])
    except ValueError as err:
        raise CheckpointError(f"{source}: {err}") from None
    with_encoder = bool(ckpt.get("encoder_in_state", True))
    model = new_model(config.model, len(vocab), load_weights=not with_encoder)
    try:
        result = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as err:  # size mismatches
        first = str(err).strip().splitlines()[1:2]
        raise CheckpointError(f"{source}: weights do not fit the model config ({' '.join(first).strip()})") from None
    missing = [k for k in result.missing_keys if with_encoder or not k.startswith("encoder.")]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"{source}: weights do not fit the model config "
                              f"(missing {missing[:3]}, unexpected {result.unexpected_keys[:3]})")
    return LoadedModel(model, vocab, config, ckpt)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> LoadedModel:
    """One loader for everyone: the CLI, the API, evaluation and resume."""
    return build_model(load_checkpoint(path, map_location), str(path))


def export_checkpoint(src: str | Path, dst: str | Path, *, half: bool = False) -> Path:
    """A release copy of a training checkpoint: weights, config and vocab, no optimiser state."""
    loaded = load_model(src)
    info = {k: loaded.checkpoint[k] for k in ("best_score", "metric") if k in loaded.checkpoint}
    return save_checkpoint(dst, model=loaded.model, config=loaded.config, vocab=loaded.vocab,
                           epoch=loaded.checkpoint["epoch"], step=loaded.checkpoint["step"], half=half, **info)
