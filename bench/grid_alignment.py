"""Where does each grid cell of the frozen encoder look? A probe of the grid's alignment to pixels.

    .venv/bin/python bench/grid_alignment.py

The overlay and the pointing game both place cell (r, c) of a G x G grid at pixels
[c*W/G, (c+1)*W/G) x [r*H/G, (r+1)*H/G), centre included. That is only right if the cell's
features come from there: TF-"SAME" padding pads strided convs at the bottom/right, which could
shift every cell's receptive field down and right. This measures it: a small bright square is
moved across a grey image a few pixels at a time, and for each position the cell whose features
change most is recorded. Per cell, the mean probe position that wins it, minus the cell's
nominal centre, is the offset; its spread over cells says how well the map localises at all.
Printed as one JSON object per feature layer; the README's model card quotes them.
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import torch

from captioner.config import ModelConfig
from captioner.features.encoder import Encoder
from captioner.features.pretrained import load_pretrained

PROBE_FRACTION = 1 / 28  # side of the bright square, as a fraction of the image (8 px at 224)


def probe(config: ModelConfig) -> dict:
    encoder = load_pretrained(Encoder(config=config), config).eval()
    size, stride = config.image_size, config.feature_stride
    side, step = round(size * PROBE_FRACTION), max(1, size // 75)
    base = torch.zeros(1, 3, size, size)  # grey: 127 in the Lite0 input scaling
    winners: dict[int, list[int]] = defaultdict(list)
    with torch.inference_mode():
        reference = encoder.feature_map(base)  # (1, E, h, w)
        for x in range(side, size - side, step):
            image = base.clone()
            image[..., size // 2 - side // 2:size // 2 + side // 2, x - side // 2:x + side // 2] = 0.9
            change = (encoder.feature_map(image) - reference).pow(2).sum(1)[0].sum(0)  # (w,)
            winners[int(change.argmax())].append(x)
    offsets = [float(np.mean(xs)) - (cell + 0.5) * stride for cell, xs in sorted(winners.items())]
    return {"feature_layer": config.feature_layer, "image_size": size, "stride_px": stride, "probe_px": side,
            "cells_won": len(winners), "mean_offset_px": round(float(np.mean(offsets)), 2),
            "offset_spread_px": round(float(np.std(offsets)), 2)}


def main() -> None:
    torch.manual_seed(0)
    for layer, size in (("blocks", 448), ("stride16", 224)):
        print(json.dumps(probe(ModelConfig(feature_layer=layer, image_size=size, grid=14))))


if __name__ == "__main__":
    main()
