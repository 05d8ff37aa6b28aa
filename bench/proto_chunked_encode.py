"""Prototype fix, measured by the memory benchmark: run the CNN on a few images at a time.

`Captioner.caption_tensors` encodes its whole batch (the CLI's --batch-size, 16 by default) in
one CNN call. At 448 px, EfficientNet-Lite0's early expanded maps are ~20 MB per image each,
so the activations, not the weights, set the peak RSS, and it grows with the batch. The
region grids that beam search needs are small ((P, E) = 196 x 320 floats, 250 KB per image),
so encoding in chunks of CHUNK images and decoding the whole batch at once keeps the batched
beam search and bounds the CNN's memory. This runner patches `CaptionModel.encode` that way
and runs the real CLI: `python bench/proto_chunked_encode.py CHUNK caption DIR ...`.
"""
from __future__ import annotations

import sys

import torch


def install(chunk: int) -> None:
    from captioner.model import CaptionModel

    encode = CaptionModel.encode

    def chunked(self: CaptionModel, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([encode(self, part) for part in images.split(chunk)])  # (B, P, E)

    CaptionModel.encode = chunked


if __name__ == "__main__":
    install(int(sys.argv.pop(1)))
    from captioner.cli import main

    sys.exit(main())
