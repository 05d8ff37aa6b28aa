"""Which torch device to run on: one place that turns "auto", "cpu" or "cuda:1" into a device."""
from __future__ import annotations

import torch

from captioner.config import ConfigError


def resolve_device(device: str | torch.device | None, field: str = "--device") -> torch.device:
    """None or "auto": CUDA when available, else CPU. Errors name `field`, where the value came from."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"{field} {device!r}: not a device (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"{field} {device!r}: no such CUDA device on this machine")
    return dev
