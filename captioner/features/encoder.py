"""Image -> region features: a CNN backbone whose stride-32 map becomes a G x G grid.

Its preprocessing (`captioner.image.preprocess.preprocess_for`) travels with the backbone's
config, because each set of weights was trained with its own input scaling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import ModelConfig
from captioner.features.efficientnet_lite import HEAD_CHANNELS, LAST_BLOCK_CHANNELS, EfficientNetLite0


def encoder_dim(config: ModelConfig) -> int:
    """E, the channel count of the region features."""
    if config.backbone == "efficientnet_lite0":
        return LAST_BLOCK_CHANNELS if config.feature_layer == "blocks" else HEAD_CHANNELS
    return 2048


def weights_are_offline(config: ModelConfig) -> bool:
    """True when the backbone's pretrained weights can be rebuilt here without a download.

    Such a frozen encoder need not be stored in checkpoints, which keeps the embedded
    default model small.
    """
    return config.backbone == "efficientnet_lite0" and config.pretrained == "imagenet"


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    It keeps the ResNet's own module names, so its state_dict keys are torchvision's (less
    `fc.*`) and checkpoints with a stored ResNet encoder load as before.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def stages(self) -> list[list[nn.Module]]:
        """The trainable units from input to output: stem, then layer1 .. layer4."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 2048, S/32, S/32) for ResNet-50/101/152."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def build_backbone(config: ModelConfig) -> nn.Module:
    """The backbone's architecture with freshly initialised weights (no file is read)."""
    if config.backbone == "efficientnet_lite0":
        return EfficientNetLite0().feature_extractor(head=config.feature_layer == "head")
    import torchvision

    return ResNetTrunk(getattr(torchvision.models, config.backbone)(weights=None))


class Encoder(nn.Module):
    """(B, 3, S, S) normalised images -> (B, P, E) region features, P = G * G.

    Pure computation: the pretrained weights are loaded into it by
    `captioner.features.pretrained.load_pretrained` (or come from a checkpoint).
    """

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.backbone = build_backbone(config)
        self.stages = self.backbone.stages()
        # NHWC is faster for depthwise convs on a CPU (bench/results.md).
        self.backbone.to(memory_format=torch.channels_last)
        self.set_finetune(config.finetune_blocks)

    def set_finetune(self, num_blocks: int) -> None:
        """Freeze everything, then unfreeze the last `num_blocks` stages."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        split = len(self.stages) - num_blocks
        for stage in self.stages[split:] if num_blocks else []:
            for module in stage:
                for p in module.parameters():
                    p.requires_grad_(True)
        self.frozen = num_blocks == 0
        self.frozen_modules = [m for stage in self.stages[:split] for m in stage]

    def train(self, mode: bool = True) -> "Encoder":
        # Frozen stages keep their BatchNorm statistics: they stay in eval mode, and a wholly
        # frozen encoder is always in eval mode.
        super().train(mode and not self.frozen)
        for module in self.frozen_modules:
            module.eval()
        return self

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, E, h, w), the backbone's stride-32 map."""
        return self.backbone.forward_features(images.contiguous(memory_format=torch.channels_last))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_map(images)  # (B, E, h, w)
        if fmap.shape[-2:] != (self.grid, self.grid):
            fmap = F.adaptive_avg_pool2d(fmap, self.grid)  # (B, E, G, G)
        return fmap.flatten(2).transpose(1, 2)  # (B, P, E)
