"""The encoder as inference runs it: BatchNorms folded, and on a CPU, ONNX Runtime when installed.

Captioning and the feature-cache build run a frozen encoder forward only, so they can use a
faster engine than training does. On a CPU, ONNX Runtime runs the same network, exported from
the folded encoder, markedly faster than eager PyTorch (bench/results.md:
e2e.*.encoder_onnx_over_torch); the grid it computes equals PyTorch's to float rounding. It is an
optional dependency (`pip install 'captioner[onnx]'`); without it, or with `engine="torch"`,
the folded PyTorch encoder runs.
"""
from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from captioner.features.encoder import Encoder, fuse_batchnorm, to_regions

ENGINES = ("auto", "torch", "onnx")


def onnx_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class OnnxEncoder(nn.Module):
    """(B, 3, S, S) -> (B, P, E) through an ONNX Runtime session on the CPU, for a fixed S."""

    def __init__(self, encoder: Encoder, image_size: int, *, threads: int | None = None) -> None:
        super().__init__()
        import onnxruntime as ort

        buf = io.BytesIO()
        example = torch.zeros(1, 3, image_size, image_size)
        with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python branches
            warnings.simplefilter("ignore")
            # The CNN alone: pooling its map to the grid stays in torch (`to_regions`), since
            # ONNX cannot export an adaptive pool once TF-"SAME" padding makes the sizes dynamic.
            torch.onnx.export(_FeatureMap(encoder.eval()), example, buf, input_names=["images"],
                              output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                              opset_version=17, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: the CLI's stderr is for the user's messages
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])
        self.grid = encoder.grid
        self.frozen = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return to_regions(torch.from_numpy(self.session.run(None, {"images": x})[0]), self.grid)  # (B, P, E)


class _FeatureMap(nn.Module):
    """The encoder's unpooled map, (B, 3, S, S) -> (B, E, h, w): what ONNX Runtime runs."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.feature_map(images)


def inference_encoder(encoder: Encoder, *, image_size: int, device: torch.device,
                      engine: str = "auto") -> nn.Module:
    """A forward-only copy of a frozen encoder: "onnx" (ONNX Runtime, CPU only), "torch" (eager,
    BatchNorms folded), or "auto": ONNX Runtime on a CPU when it is installed, else "torch"."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "onnx" and device.type != "cpu":
        raise ValueError(f"engine 'onnx' runs on the CPU only, not on {device}")
    if engine == "onnx" and not onnx_available():
        raise ValueError("engine 'onnx' needs onnxruntime and onnx: pip install 'captioner[onnx]'")
    fused = fuse_batchnorm(encoder)
    if engine == "onnx" or (engine == "auto" and device.type == "cpu" and onnx_available()):
        return OnnxEncoder(fused, image_size)
    return fused.to(device)
