"""Image -> region features: a CNN backbone whose stride-16 or stride-32 map becomes a G x G grid.

Its preprocessing (`captioner.image.preprocess.preprocess_for`) travels with the backbone's
config, because each set of weights was trained with its own input scaling.
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from captioner.config import ConfigError, ModelConfig
from captioner.features.efficientnet_lite import FEATURE_LAYERS, EfficientNetLite0


def encoder_dim(config: ModelConfig) -> int:
    """E, the channel count of the region features."""
    if config.backbone == "efficientnet_lite0":
        return FEATURE_LAYERS[config.feature_layer][0]
    return 1024 if config.feature_layer == "stride16" else 2048


def weights_are_offline(config: ModelConfig) -> bool:
    """True when the backbone's pretrained weights can be rebuilt here without a download.

    Such a frozen encoder need not be stored in checkpoints, which keeps the embedded
    default model small.
    """
    return config.backbone == "efficientnet_lite0" and config.pretrained == "imagenet"


#: Images per CNN call on a CPU, by backbone, for eager PyTorch and ONNX Runtime: there a
#: depthwise CNN's time per image rises with the batch (bench/results.md: e2e.*.encoder_chunk*,
#: e2e.*.encoder_onnx_chunk*). On a GPU the whole batch goes at once.
CPU_ENCODE_CHUNK = {"efficientnet_lite0": 1, "resnet50": 4, "resnet101": 4, "resnet152": 4}
DEFAULT_CPU_ENCODE_CHUNK = 1
#: Where an engine batches differently: OpenVINO runs EfficientNet-Lite0 faster 4 images a call
#: than one (CNN alone 1.16x and 1.22x in two runs, e2e.default.encoder_openvino_chunk*; file to
#: caption, 32 scenes at beam 3, 1.09x, with the same tokens).
CPU_ENCODE_CHUNK_BY_ENGINE = {"openvino": {"efficientnet_lite0": 4}}


def default_encode_chunk(device: torch.device, backbone: str, engine: str = "torch") -> int | None:
    """Images per CNN call: measured per backbone and engine on a CPU; None (the whole batch) on a GPU."""
    if device.type != "cpu":
        return None
    return CPU_ENCODE_CHUNK_BY_ENGINE.get(engine, {}).get(backbone,
                                                          CPU_ENCODE_CHUNK.get(backbone, DEFAULT_CPU_ENCODE_CHUNK))


class ResNetTrunk(nn.Module):
    """A torchvision ResNet without its pooling and classifier.

    It keeps the ResNet's own module names, so its state_dict keys are torchvision's (less
    `fc.*`) and checkpoints with a stored ResNet encoder load as before.
    """

    def __init__(self, net: nn.Module, *, stride16: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3 = net.layer1, net.layer2, net.layer3
        self.layer4 = None if stride16 else net.layer4

    def layers(self) -> list[nn.Module]:
        return [m for m in (self.layer1, self.layer2, self.layer3, self.layer4) if m is not None]

    def stages(self) -> list[list[nn.Module]]:
        """The trainable units from input to output: stem, then layer1 .. layer4 (or layer3)."""
        return [[self.conv1, self.bn1]] + [[layer] for layer in self.layers()]

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(parent, conv name, BatchNorm name) for every BatchNorm that follows a conv directly."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "conv1", "bn1")]
        for layer in self.layers():
            for block in layer:
                pairs += [(block, f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(block, f"conv{i}")]
                if block.downsample is not None:
                    pairs.append((block.downsample, "0", "1"))
        return pairs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 2048, S/32, S/32) for ResNet-50/101/152; (B, 1024, S/16, S/16)
        when built without layer4 (feature layer "stride16")."""
        return self.forward_stages(x, 0, len(self.stages()))

    def forward_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run `stages()[start:stop]` on x, the output of the stage before `start` (the image
        when start is 0)."""
        for i, stage in enumerate(self.stages()[start:stop], start):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x)))) if i == 0 else stage[0](x)
        return x


def build_backbone(config: ModelConfig) -> nn.Module:
    """The backbone's architecture with freshly initialised weights (no file is read)."""
    if config.backbone == "efficientnet_lite0":
        return EfficientNetLite0().feature_extractor(layer=config.feature_layer)
    import torchvision

    net = getattr(torchvision.models, config.backbone)(weights=None)
    return ResNetTrunk(net, stride16=config.feature_layer == "stride16")


class Encoder(nn.Module):
    """(B, 3, S, S) normalised images -> (B, P, E) region features, P = G * G.

    Pure computation: the pretrained weights are loaded into it by
    `captioner.features.pretrained.load_pretrained` (or come from a checkpoint).
    """

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.grid = config.grid
        self.backbone_name = config.backbone
        self.engine = "torch"  # what runs it (captioner.features.inference has the others)
        self.backbone = build_backbone(config)
        self.stages = self.backbone.stages()
        # NHWC is faster for depthwise convs on a CPU (bench/results.md).
        self.backbone.to(memory_format=torch.channels_last)
        self.set_finetune(config.finetune_blocks)

    def set_finetune(self, num_blocks: int) -> None:
        """Freeze everything, then unfreeze the last `num_blocks` stages."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        if num_blocks > len(self.stages):
            raise ConfigError(f"model.finetune_blocks: {num_blocks} is more than the {len(self.stages)} stages of "
                              f"this encoder (stem included)")
        split = len(self.stages) - num_blocks
        self.first_trained = split  # index of the first trained stage (len(stages) when frozen)
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
        """(B, 3, S, S) -> (B, E, h, w), the backbone's stride-16 or stride-32 map."""
        return self.backbone.forward_features(images.contiguous(memory_format=torch.channels_last))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return to_regions(self.feature_map(images), self.grid)

    def frozen_map(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, h, w), the output of the frozen stages: what a fine-tuning
        run's feature cache holds (FrozenStages), so that training runs only the stages it trains."""
        return self.backbone.forward_stages(images.contiguous(memory_format=torch.channels_last), 0,
                                            self.first_trained)

    def from_frozen(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, h * w, C) cached `frozen_map` rows -> (B, P, E) regions, through the trained stages."""
        b, positions, channels = rows.shape
        side = math.isqrt(positions)
        if side * side != positions:
            raise ValueError(f"cached rows of {positions} positions are not a square map")
        # Rows are channels-last already: a view, (B, h, w, C) -> (B, C, h, w) in NHWC memory.
        fmap = rows.reshape(b, side, side, channels).permute(0, 3, 1, 2)
        return to_regions(self.backbone.forward_stages(fmap, self.first_trained, len(self.stages)), self.grid)


class FrozenStages(nn.Module):
    """(B, 3, S, S) -> (B, h * w, C): a fine-tuned encoder's frozen stages alone, forward only,
    for building the feature cache its training reads (BatchNorms folded, as `fuse_batchnorm`)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = fuse_batchnorm(encoder)
        self.engine = "torch"

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.frozen_map(images).flatten(2).transpose(1, 2)  # (B, h * w, C)


class TrainedStages(nn.Module):
    """An encoder seen from its feature cache of frozen-stage outputs: (B, h * w, C) rows -> (B, P, E)
    regions through the stages it trains. It shares the encoder's modules (and their mode)."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.encoder.from_frozen(rows)


def to_regions(fmap: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, E, h, w) feature map -> (B, P, E) regions, average-pooled to G x G if need be."""
    if fmap.shape[-2:] != (grid, grid):
        fmap = F.adaptive_avg_pool2d(fmap, grid)  # (B, E, G, G)
    return fmap.flatten(2).transpose(1, 2)  # (B, P, E)


def fuse_batchnorm(encoder: Encoder) -> Encoder:
    """An inference copy of a frozen encoder with each BatchNorm folded into the conv before it:
    one op instead of two per layer, the same function up to float rounding (eval statistics).
    The encoder itself is left as it is, so training never sees the folded copy."""
    fused = copy.deepcopy(encoder).eval()
    for parent, conv_name, bn_name in fused.backbone.conv_bn_pairs():
        conv, bn = getattr(parent, conv_name), getattr(parent, bn_name)
        folded = fuse_conv_bn_eval(conv, bn).to(memory_format=torch.channels_last)
        folded.requires_grad_(False)
        setattr(parent, conv_name, folded)
        setattr(parent, bn_name, nn.Identity())
    return fused


def encode(encoder: nn.Module, images: torch.Tensor, *, chunk: int | None = None) -> torch.Tensor:
    """(B, 3, S, S) -> (B, P, E), `chunk` images per CNN call (None: all at once)."""
    if chunk is None or chunk >= len(images):
        return encoder(images)
    return torch.cat([encoder(part) for part in images.split(chunk)])  # (B, P, E)
