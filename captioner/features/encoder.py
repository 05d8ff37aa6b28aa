"""Image -> region features: a CNN backbone whose stride-32 map becomes a G x G grid.

Its preprocessing (`captioner.image.preprocess.preprocess_for`) travels with the backbone's
config, because each set of weights was trained with its own input scaling.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioner.config import ConfigError, ModelConfig
from captioner.features.efficientnet_lite import (HEAD_CHANNELS, LAST_BLOCK_CHANNELS, LITE0_STAGES,
                                                  EfficientNetLite0, lite0_weights_path)


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


class Encoder(nn.Module):
    """(B, 3, S, S) normalised images -> (B, P, E) region features, P = G * G."""

    def __init__(self, *, config: ModelConfig, load_weights: bool = True) -> None:
        super().__init__()
        self.grid = config.grid
        self.feature_layer = config.feature_layer
        if config.backbone == "efficientnet_lite0":
            net = EfficientNetLite0()
            del net._fc  # classification layer: not part of the feature extractor
            if config.feature_layer == "blocks":
                del net._conv_head, net._bn1
            if load_weights and config.pretrained == "imagenet":
                state = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
                net.load_state_dict({k: v for k, v in state.items() if k in net.state_dict()})
            # Trainable units from input to output: stem + 7 stages (+ head).
            stages, start = [[net._conv_stem, net._bn0]], 0
            for repeats, *_ in LITE0_STAGES:
                stages.append(list(net._blocks[start:start + repeats]))
                start += repeats
            if config.feature_layer == "head":
                stages.append([net._conv_head, net._bn1])
            self.backbone = net
        else:
            import torchvision

            builder = getattr(torchvision.models, config.backbone)
            weights = None
            if load_weights and config.pretrained == "imagenet":
                weights = "IMAGENET1K_V1"  # downloaded by torchvision: the user asked for it
            try:
                net = builder(weights=weights)
            except OSError as err:  # urllib's URLError included: no network
                raise ConfigError(
                    f"model.pretrained = 'imagenet': torchvision could not download the {config.backbone} "
                    f"ImageNet weights ({getattr(err, 'reason', err)}); offline, put the file torchvision names "
                    f"in its cache (~/.cache/torch/hub/checkpoints), or set model.pretrained to a local "
                    f"state_dict file or 'none'") from None
            del net.fc, net.avgpool
            stages = [[net.conv1, net.bn1], [net.layer1], [net.layer2], [net.layer3], [net.layer4]]
            self.backbone = net
        if load_weights and config.pretrained not in ("imagenet", "none"):
            state = torch.load(config.pretrained, map_location="cpu", weights_only=True)
            own = self.backbone.state_dict()
            self.backbone.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)
        self.stages = stages
        # NHWC is about 1.4x faster for depthwise convs on CPU (measured at 448 px).
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
        net = self.backbone
        images = images.contiguous(memory_format=torch.channels_last)
        if isinstance(net, EfficientNetLite0):
            x = net.forward_blocks(images)
            if self.feature_layer == "head":
                x = F.relu6(net._bn1(net._conv_head(x)))
            return x
        x = net.maxpool(net.relu(net.bn1(net.conv1(images))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.feature_map(images)  # (B, E, h, w)
        if fmap.shape[-2:] != (self.grid, self.grid):
            fmap = F.adaptive_avg_pool2d(fmap, self.grid)  # (B, E, G, G)
        return fmap.flatten(2).transpose(1, 2)  # (B, P, E)
