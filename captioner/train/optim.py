"""What an optimisation step changes: Adam over named parameter groups, the plateau scheduler,
the GradScaler and the autocast dtype, built from `TrainConfig` in one place."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from captioner.config import TrainConfig
from captioner.model.caption_model import CaptionModel

ParamGroup = dict[str, Any]  # torch.optim's {"params": [...], "lr": ..., "name": ...}

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Optimization:
    """The module a step trains and the state that updates it.

    `net` maps (images (B, ...), captions (B, T+1)) to a DecoderOutput: the whole model, or its
    decoder alone when `images` are cached region features (B, P, E); under torchrun, wrapped in
    DistributedDataParallel. The objects are mutable torch state; the record itself is not.
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast

    @property
    def params(self) -> list[nn.Parameter]:
        """Every parameter the optimizer updates (and the step clips together)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]


def param_groups(model: CaptionModel, config: TrainConfig) -> list[ParamGroup]:
    """The decoder at decoder_lr and, when fine-tuning, the trainable encoder stages at encoder_lr."""
    groups = [{"params": model.decoder_parameters(), "lr": config.decoder_lr, "name": "decoder"}]
    if model.encoder_parameters():
        groups.append({"params": model.encoder_parameters(), "lr": config.encoder_lr, "name": "encoder"})
    return groups


def make_optimization(net: nn.Module, groups: list[ParamGroup], config: TrainConfig,
                      device: torch.device) -> Optimization:
    """Adam over `groups`, ReduceLROnPlateau on the (maximised) validation metric, and a
    GradScaler that is active only for CUDA autocast (it is a pass-through otherwise)."""
    optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.lr_decay_factor,
                                                           patience=config.lr_decay_patience)
    amp_dtype = _AMP_DTYPES.get(config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype is not None)
    return Optimization(net, optimizer, scheduler, scaler, amp_dtype)
