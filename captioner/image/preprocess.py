"""PIL image -> normalised tensor, as each backbone's weights expect.

Preprocessing travels with the backbone, because each set of weights was trained with its own
input scaling; these constants are defined here and nowhere else. The whole image is resized
to a square, never centre-cropped, so the grid covers the full image and attention maps
overlay it one to one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from captioner.config import ModelConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x*255 - 127) / 128, i.e. mean 127/255 and std 128/255.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class Preprocess:
    """PIL RGB image -> (3, size, size) float tensor, normalised for one backbone."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB").resize((self.size, self.size), Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # (3, S, S) uint8, a strided view
        # (v / 255 - mean) / std as one scale and shift, on a contiguous float copy: the same
        # arithmetic broadcast over the strided (S, S, 3) view was the slow part of preprocessing
        # (bench/results.md: e2e.default.preprocess).
        x = pixels.to(torch.float32, memory_format=torch.contiguous_format)  # (3, S, S)
        scale = torch.tensor([1.0 / (255.0 * s) for s in self.std]).view(3, 1, 1)
        shift = torch.tensor([m / s for m, s in zip(self.mean, self.std)]).view(3, 1, 1)
        return x.mul_(scale).sub_(shift)


def preprocess_for(config: ModelConfig) -> Preprocess:
    if config.backbone.startswith("efficientnet_lite"):
        return Preprocess(config.image_size, LITE_MEAN, LITE_STD)
    return Preprocess(config.image_size, IMAGENET_MEAN, IMAGENET_STD)
