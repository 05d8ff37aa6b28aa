"""The Python API: `load_captioner()` returns a ready model with its preprocessing.

    from captioner import load_captioner
    cap = load_captioner()                 # the embedded default model
    [c] = cap.caption(["photo.jpg"])
    c.text, c.tokens, c.score, c.alphas    # alphas: (len(tokens), G, G), each map sums to 1

This module is the facade; the work is done in `captioner.captioning` (the one captioning loop)
and `captioner.checkpoint` (the one loader). Nothing in the library imports it.
"""
from __future__ import annotations

from pathlib import Path

import torch

from captioner.captioning import Caption, Captioner, CaptionResult, SearchOptions
from captioner.checkpoint import CheckpointError, load_model
from captioner.device import resolve_device

__all__ = ["DEFAULT_CHECKPOINT", "Caption", "CaptionResult", "Captioner", "SearchOptions", "load_captioner"]

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent / "assets" / "default.pt"


def load_captioner(checkpoint: str | Path | None = None, device: str | torch.device | None = None, *,
                   engine: str = "torch") -> Captioner:
    """Load a checkpoint (None: the embedded default model) onto `device` (None: auto).

    `engine` runs the encoder: "torch" (BatchNorms folded), or on a CPU "onnx" (ONNX Runtime,
    `pip install 'captioner[onnx]'`) or "openvino" (`pip install 'captioner[openvino]'`), faster
    per image but with about 1.5 s of set-up, so worth it for folders, not for one image;
    "auto" is the fastest of them installed for the backbone (`features.inference.cpu_engine`).
    """
    path = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    if checkpoint is None and not path.is_file():
        raise CheckpointError(f"{path}: the embedded default model is missing from this install")
    dev = resolve_device(device)
    loaded = load_model(path, map_location="cpu")
    info = {k: v for k, v in loaded.checkpoint.items() if k in ("epoch", "step", "best_score", "metric")}
    return Captioner(loaded.model, loaded.vocab, loaded.config, dev, checkpoint_info=info, engine=engine)
