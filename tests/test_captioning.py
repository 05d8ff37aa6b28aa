"""The one captioning loop: folded BatchNorms, encoder chunks, workers and streaming change
nothing in the captions, and a folder streams through without being read whole."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.api import load_captioner
from captioner.captioning import Captioner
from captioner.checkpoint import load_model, new_model
from captioner.config import ModelConfig
from captioner.data.scenes import generate_scenes
from captioner.features.encoder import encode, fuse_batchnorm
from captioner.features import inference
from captioner.features.inference import engine_available, inference_encoder, resolve_engine

from conftest import make_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3, image_size=96, grid=3,
                                end_bias=-2.0)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 12, seed=5, size=96)
    return sorted((out / "images").glob("*.png"))


def _randomise_batchnorms(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that folding them has something to get wrong."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


@pytest.mark.parametrize("config", [ModelConfig(image_size=96, grid=3),
                                    ModelConfig(image_size=96, grid=3, feature_layer="head"),
                                    ModelConfig(backbone="resnet50", pretrained="none", image_size=64, grid=2)],
                         ids=["lite0-blocks", "lite0-head", "resnet50"])
def test_folded_batchnorms_compute_the_same_grid(config):
    model = new_model(config, vocab_size=8, load_weights=config.pretrained != "none").eval()
    if config.pretrained == "none":
        _randomise_batchnorms(model)
    fused = fuse_batchnorm(model.encoder)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules())  # the original is kept
    x = torch.randn(2, 3, config.image_size, config.image_size)
    with torch.inference_mode():
        want, got = model.encoder(x), fused(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_encoding_in_chunks_equals_one_call():
    model = new_model(ModelConfig(image_size=64, grid=2), vocab_size=8).eval()
    x = torch.randn(5, 3, 64, 64)
    with torch.inference_mode():
        whole = encode(model.encoder, x)
        for chunk in (1, 2, 4):
            assert torch.allclose(encode(model.encoder, x, chunk=chunk), whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("engine", ["torch", "onnx", "openvino"])
def test_the_inference_engines_do_not_change_the_captions(checkpoint, scenes, engine):
    _require(engine)
    cpu = torch.device("cpu")
    fast = Captioner(*load_model(checkpoint)[:3], cpu, engine=engine)
    plain = Captioner(*load_model(checkpoint)[:3], cpu, engine=None)  # the encoder as trained
    a, b = plain.caption(scenes, beam_size=3), fast.caption(scenes, beam_size=3)
    assert [c.tokens for c in a] == [c.tokens for c in b]
    assert np.allclose([c.score for c in a], [c.score for c in b], atol=1e-4)


def test_workers_and_batch_size_do_not_change_results(checkpoint, scenes):
    cap = load_captioner(checkpoint, device="cpu")
    inputs = [*scenes[:5], scenes[0].parent / "missing.png", *scenes[5:]]
    runs = [list(cap.caption_iter(inputs, beam_size=2, batch_size=b, num_workers=w)) for b, w in ((16, 0), (3, 0), (4, 1))]
    for run in runs:
        assert [r.index for r in run] == list(range(len(inputs)))  # input order, failures included
        assert run[5].caption is None and "missing.png" in str(run[5].error)
    for other in runs[1:]:
        assert [r.caption.tokens if r.caption else None for r in other] == \
               [r.caption.tokens if r.caption else None for r in runs[0]]


class _Recorded(Sequence):
    """A list of paths that records the highest index read."""

    def __init__(self, items: list[Path]) -> None:
        self.items, self.highest = items, -1

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        self.highest = max(self.highest, i)
        return self.items[i]


def test_results_stream_without_reading_every_image_first(checkpoint, scenes):
    cap = load_captioner(checkpoint, device="cpu")
    sources = _Recorded(scenes * 4)  # 48 inputs
    results = cap.caption_iter(sources, beam_size=1, max_len=3, batch_size=4)
    first = next(results)
    assert first.index == 0 and first.caption is not None
    assert sources.highest < 8  # one batch (and no more than one ahead) read so far
    assert sum(1 for _ in results) == len(sources) - 1


def _require(engine: str) -> None:
    """make test installs both exported engines; a bare install skips their tests, saying why."""
    if not engine_available(engine):
        pytest.skip(f"{engine} is not installed (pip install 'captioner[{engine}]')")


@pytest.mark.parametrize("engine", ["onnx", "openvino"])
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "resnet50"])
def test_the_exported_engines_compute_the_same_grid(engine, backbone):
    _require(engine)
    config = ModelConfig(backbone=backbone, pretrained="none", image_size=96, grid=3)
    model = new_model(config, vocab_size=8).eval()
    fast = inference_encoder(model.encoder, image_size=96, device=torch.device("cpu"), engine=engine)
    x = torch.randn(3, 3, 96, 96)
    with torch.inference_mode():
        want = model.encoder(x)
        got = torch.cat([fast(x[:1]), fast(x[1:])])  # the batch is dynamic
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_auto_runs_the_fastest_installed_engine_for_the_backbone(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(inference, "engine_available", lambda e: True)
    assert resolve_engine("auto", "efficientnet_lite0", cpu) == "openvino"
    assert resolve_engine("auto", "resnet101", cpu) == "onnx"
    assert resolve_engine("auto", "efficientnet_lite0", cuda) == "torch"
    monkeypatch.setattr(inference, "engine_available", lambda e: e == "onnx")
    assert resolve_engine("auto", "efficientnet_lite0", cpu) == "onnx"
    monkeypatch.setattr(inference, "engine_available", lambda e: False)
    assert resolve_engine("auto", "resnet50", cpu) == "torch"
    with pytest.raises(ValueError, match="'openvino' needs openvino"):
        resolve_engine("openvino", "resnet50", cpu)


def test_auto_builds_that_engine_and_falls_back_past_one_that_fails(monkeypatch):
    _require("openvino")
    _require("onnx")
    cpu = torch.device("cpu")
    lite = new_model(ModelConfig(image_size=64, grid=2), vocab_size=8).encoder
    resnet = new_model(ModelConfig(backbone="resnet50", pretrained="none", image_size=64, grid=2), vocab_size=8).encoder
    assert isinstance(inference_encoder(lite, image_size=64, device=cpu), inference.OpenVinoEncoder)
    assert isinstance(inference_encoder(resnet, image_size=64, device=cpu), inference.OnnxEncoder)

    def broken(*args, **kwargs):
        raise RuntimeError("the CPU plugin could not be loaded")

    monkeypatch.setitem(inference._EXPORTED, "openvino", type("Broken", (inference.OpenVinoEncoder,), {"__init__": broken}))
    assert isinstance(inference_encoder(lite, image_size=64, device=cpu), inference.OnnxEncoder)
    with pytest.raises(RuntimeError, match="could not be loaded"):  # asked for by name: the error stands
        inference_encoder(lite, image_size=64, device=cpu, engine="openvino")


def test_the_cli_offers_the_engines_there_are():
    from captioner.cli import ENGINE_CHOICES

    assert ENGINE_CHOICES == inference.ENGINES


def test_engine_choices_are_checked():
    model = new_model(ModelConfig(image_size=64, grid=2), vocab_size=8)
    with pytest.raises(ValueError, match="engine must be one of"):
        inference_encoder(model.encoder, image_size=64, device=torch.device("cpu"), engine="tensorrt")
    with pytest.raises(ValueError, match="CPU only"):
        inference_encoder(model.encoder, image_size=64, device=torch.device("cuda"), engine="onnx")
    with pytest.raises(ValueError, match="CPU only"):
        inference_encoder(model.encoder, image_size=64, device=torch.device("cuda"), engine="openvino")
