"""The encoder as inference runs it: BatchNorms folded, and on a CPU, a faster engine when installed.

Captioning and the feature-cache build run a frozen encoder forward only, so they can use a
faster engine than training does. On a CPU, ONNX Runtime and OpenVINO run the same network,
exported from the folded encoder to ONNX, markedly faster than eager PyTorch; the grid they
compute equals PyTorch's to float rounding. Which is faster depends on the network, so "auto"
picks by backbone, from measurements (bench/results.md: e2e.*.encoder_onnx_over_torch,
e2e.*.encoder_openvino_over_onnx): OpenVINO for the depthwise EfficientNet-Lite (its CPU plugin
fuses the depthwise blocks; 1.5x ONNX Runtime on the 2-core CI machine), ONNX Runtime for the
ResNets (where the two were within noise of each other, 0.9-1.04x). Both are optional
dependencies (`pip install 'captioner[onnx]'`, `'captioner[openvino]'`); without them, or with
`engine="torch"`, the folded PyTorch encoder runs. Under "auto", an engine that is installed but
fails to build (a broken install, an unsupported CPU) gives way to the next one.
"""
from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import torch
from torch import nn

from captioner.features.encoder import Encoder, fuse_batchnorm, to_regions

ENGINES = ("auto", "torch", "onnx", "openvino")
#: The CPU engines "auto" tries, fastest first, by backbone family (measured on the 2-core CI
#: machine; bench/results.md, e2e.*.encoder_*).
CPU_ENGINE_ORDER = {"efficientnet_lite": ("openvino", "onnx"), "resnet": ("onnx", "openvino")}


def engine_available(engine: str) -> bool:
    """True when `engine`'s packages are installed ("torch" always is)."""
    return all(importlib.util.find_spec(m) is not None for m in _EXPORTED[engine].needs) if engine in _EXPORTED \
        else True


def cpu_engines(backbone: str) -> list[str]:
    """The engines "auto" tries for `backbone` on a CPU, in order: those installed, then "torch"."""
    family = next((f for f in CPU_ENGINE_ORDER if backbone.startswith(f)), "resnet")
    return [e for e in CPU_ENGINE_ORDER[family] if engine_available(e)] + ["torch"]


def cpu_engine(backbone: str) -> str:
    """The engine "auto" runs `backbone` with on a CPU: the fastest one installed."""
    return cpu_engines(backbone)[0]


def export_onnx(encoder: Encoder, image_size: int) -> bytes:
    """The encoder's unpooled CNN as an ONNX model with a dynamic batch, input "images" (B, 3, S, S)."""
    buf = io.BytesIO()
    example = torch.zeros(1, 3, image_size, image_size)
    with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python branches
        warnings.simplefilter("ignore")
        # The CNN alone: pooling its map to the grid stays in torch (`to_regions`), since
        # ONNX cannot export an adaptive pool once TF-"SAME" padding makes the sizes dynamic.
        torch.onnx.export(_FeatureMap(encoder.eval()), example, buf, input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return buf.getvalue()


class _ExportedEncoder(nn.Module):
    """(B, 3, S, S) -> (B, P, E) through an exported CNN on the CPU, for a fixed S."""

    engine = ""  # its name in ENGINES
    needs: tuple[str, ...] = ()  # the packages it imports
    install: str = ""  # what to install, for the error message

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.grid = encoder.grid
        self.frozen = True

    def run(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return to_regions(torch.from_numpy(self.run(x)), self.grid)  # (B, P, E); both engines return new arrays


class OnnxEncoder(_ExportedEncoder):
    """The CNN through an ONNX Runtime session."""

    engine = "onnx"
    needs = ("onnxruntime", "onnx")
    install = "onnxruntime and onnx: pip install 'captioner[onnx]'"

    def __init__(self, encoder: Encoder, image_size: int, *, threads: int | None = None) -> None:
        super().__init__(encoder)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: the CLI's stderr is for the user's messages
        self.session = ort.InferenceSession(export_onnx(encoder, image_size), options,
                                            providers=["CPUExecutionProvider"])

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"images": images})[0]


class OpenVinoEncoder(_ExportedEncoder):
    """The CNN compiled by OpenVINO's CPU plugin, in float32 (no lower-precision inference).
    It holds one inference request, so one thread at a time may call it (as captioning, the
    cache build and the server's single model thread do)."""

    engine = "openvino"
    needs = ("openvino", "onnx")
    install = "openvino and onnx: pip install 'captioner[openvino]'"

    def __init__(self, encoder: Encoder, image_size: int, *, threads: int | None = None) -> None:
        super().__init__(encoder)
        import openvino as ov

        core = ov.Core()
        network = core.read_model(export_onnx(encoder, image_size))
        self.compiled = core.compile_model(network, "CPU", {
            "INFERENCE_NUM_THREADS": threads or torch.get_num_threads(),
            "PERFORMANCE_HINT": "LATENCY",  # one request at a time; THROUGHPUT measured slower here
            "INFERENCE_PRECISION_HINT": "f32",  # else bf16 where the CPU has it: not the same grid
        })
        self.request = self.compiled.create_infer_request()

    def run(self, images: np.ndarray) -> np.ndarray:
        return self.request.infer({"images": images})[0]


class _FeatureMap(nn.Module):
    """The encoder's unpooled map, (B, 3, S, S) -> (B, E, h, w): what the exported engines run."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.feature_map(images)


_EXPORTED: dict[str, type[_ExportedEncoder]] = {"onnx": OnnxEncoder, "openvino": OpenVinoEncoder}


def resolve_engine(engine: str, backbone: str, device: torch.device) -> str:
    """"auto" -> the engine to try first: the fastest installed for `backbone` on a CPU, else "torch"."""
    return _candidates(engine, backbone, device)[0]


def _candidates(engine: str, backbone: str, device: torch.device) -> list[str]:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine in _EXPORTED and device.type != "cpu":
        raise ValueError(f"engine {engine!r} runs on the CPU only, not on {device}")
    if engine in _EXPORTED and not engine_available(engine):
        raise ValueError(f"engine {engine!r} needs {_EXPORTED[engine].install}")
    if engine == "auto":
        return cpu_engines(backbone) if device.type == "cpu" else ["torch"]
    return [engine]


def inference_encoder(encoder: Encoder, *, image_size: int, device: torch.device,
                      engine: str = "auto") -> nn.Module:
    """A forward-only copy of a frozen encoder: "onnx" (ONNX Runtime, CPU only), "openvino"
    (CPU only), "torch" (eager, BatchNorms folded), or "auto": the fastest of them installed for
    this backbone on a CPU (`cpu_engines`, falling back past one that fails to build), "torch"
    elsewhere."""
    fused = fuse_batchnorm(encoder)
    candidates = _candidates(engine, encoder.backbone_name, device)
    for chosen in candidates:
        if chosen not in _EXPORTED:
            break
        try:
            return _EXPORTED[chosen](fused, image_size)
        except (ImportError, OSError, RuntimeError):
            if engine != "auto":
                raise
    return fused.to(device)
