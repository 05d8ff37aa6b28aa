"""What an optimisation step changes: Adam over named parameter groups, the plateau scheduler,
the GradScaler and the autocast dtype, built from `TrainConfig` in one place; for hard
attention also the REINFORCE baseline and the generator its regions are sampled from."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from captioner.config import TrainConfig
from captioner.model.caption_model import CaptionModel
from captioner.model.hard_attention import RegionSampler

ParamGroup = dict[str, Any]  # torch.optim's {"params": [...], "lr": ..., "name": ...}

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Added to the run's seed for the region sampler's generator, so that it does not replay the
#: global generator's stream (which dropout draws from) when both are seeded alike.
SAMPLING_SEED_OFFSET = 0x68617264  # "hard"


@dataclass(frozen=True)
class HardAttentionState:
    """What a hard-attention step changes besides the weights: the baseline b and the
    generator the regions are sampled from. Both go into last.pt (`state_dict`), so a resumed
    run samples what the uninterrupted one would have, against the same baseline."""

    baseline: torch.Tensor  # () float32 on the training device: the moving average of the reward
    generator: torch.Generator  # on the training device

    @classmethod
    def seeded(cls, seed: int, device: torch.device) -> HardAttentionState:
        """b_0 = 0, as capgen.py starts its baseline_time."""
        state = cls(torch.zeros((), device=device), torch.Generator(device=device))
        state.reseed(seed)
        return state

    def sampler(self, batch_size: int, expectation_p: float) -> RegionSampler:
        """The rule one batch is trained with (see `RegionSampler.draw`)."""
        return RegionSampler.draw(self.generator, batch_size, expectation_p)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors only, so a checkpoint holding it loads with `weights_only=True`."""
        return {"baseline": self.baseline.detach().cpu().clone(), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> bool:
        """The baseline and the generator's state. False when the state is another device type's
        (a CPU generator's cannot go into a CUDA one, nor back): the baseline is loaded, and the
        generator is left for the caller to reseed (`reseed`)."""
        self.baseline.copy_(state["baseline"])
        saved, own = state["generator"], self.generator.get_state()
        if saved.numel() != own.numel():  # a CPU Mersenne Twister (5056 bytes) against a CUDA Philox (16)
            return False
        self.generator.set_state(saved)  # anything else wrong with the state is an error
        return True

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed + SAMPLING_SEED_OFFSET)


@dataclass(frozen=True)
class Optimization:
    """The module a step trains and the state that updates it.

    `net` maps (images (B, ...), captions (B, T+1)) to a DecoderOutput: the whole model, its
    decoder alone when `images` are cached region features (B, P, E), or its FromFrozenStages view
    when they are cached rows of the frozen encoder stages (B, h * w, C); under torchrun, wrapped in
    DistributedDataParallel. The objects are mutable torch state; the record itself is not.
    """

    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: no autocast
    hard: HardAttentionState | None = None  # a hard-attention model's; None for soft attention

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
                      device: torch.device, *, hard_attention: bool = False, rank: int = 0) -> Optimization:
    """Adam over `groups`, ReduceLROnPlateau on the (maximised) validation metric, and a
    GradScaler that is active only for CUDA autocast (it is a pass-through otherwise).

    `hard_attention`: `net` is a hard-attention model; its sampler is seeded from
    config.seed + `rank`, so that each rank of a distributed run samples its own regions."""
    optimizer = torch.optim.Adam(groups, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=config.lr_decay_factor,
                                                           patience=config.lr_decay_patience)
    amp_dtype = _AMP_DTYPES.get(config.amp)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype is not None)
    hard = HardAttentionState.seeded(config.seed + rank, device) if hard_attention else None
    return Optimization(net, optimizer, scheduler, scaler, amp_dtype, hard)
