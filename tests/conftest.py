"""Shared fixtures: tiny models and generated data, so every test runs offline on a CPU.

Markers (registered in pyproject.toml): `slow` is everything `make test-fast` leaves out. A test
marked `java` (METEOR, the PTB tokenizer) or `browser` (headless Chromium) is slow too; this file
adds the mark. Such a test skips when its tool is missing, unless CAPTIONER_REQUIRE_JAVA or
CAPTIONER_REQUIRE_BROWSER is set (CI sets both): there it fails, because a quietly skipped check
would hide a broken feature.
"""
from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

CHROMIUM = Path(os.environ.get("CAPTIONER_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- tools the slow tier needs


def unavailable(require_var: str, reason: str, how_to_install: str) -> NoReturn:
    """Skip the test, or fail it when the environment variable `require_var` is set (CI)."""
    if os.environ.get(require_var, "") not in ("", "0"):
        pytest.fail(f"{reason}, and {require_var} is set: {how_to_install}", pytrace=False)
    pytest.skip(f"{reason}; {how_to_install} to run this test")


@functools.cache
def _java_runs() -> bool:
    from captioner.scoring.ptb import java_available

    return java_available()


@pytest.hookimpl(tryfirst=True)  # before the `-m` selection reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("java") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures are set up
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("java") and not _java_runs():
        unavailable("CAPTIONER_REQUIRE_JAVA", "no working `java` on PATH",
                    "install a JRE with `make java` (Debian's default-jre-headless)")
    if item.get_closest_marker("browser"):
        if not CHROMIUM.exists():
            unavailable("CAPTIONER_REQUIRE_BROWSER", f"no Chromium at {CHROMIUM}",
                        "install it with `make browser` (Debian's chromium)")
        if importlib.util.find_spec("playwright") is None:
            unavailable("CAPTIONER_REQUIRE_BROWSER", "the playwright Python package is not installed",
                        "install the dev extra with `pip install -e '.[dev]'`")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """The Chromium executable; tests that use it are marked `browser`, which checks it exists."""
    return CHROMIUM


# ----------------------------------------------------------------------------- tiny models


def tiny_decoder(scorer: str = "additive", vocab_size: int = 12, encoder_dim: int = 8, dropout: float = 0.0,
                 attention: str = "soft"):
    from captioner.model.decoder import Decoder

    return Decoder(vocab_size=vocab_size, encoder_dim=encoder_dim, embed_dim=6, attention_dim=5,
                   hidden_dim=7, dropout=dropout, scorer=scorer, attention=attention)


def load_data_script(name: str):
    """A script of the repository's data/ folder (not a package) as a module, e.g. "model_card"."""
    path = Path(__file__).resolve().parent.parent / "data" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scene_words() -> tuple[str, ...]:
    """The words a generated scene's objects are named with: what the tiny checkpoints say."""
    from captioner.data.scene_spec import COLORS, SHAPES, SIZES

    return ("a", "and", *SIZES, *COLORS, *SHAPES)


def make_tiny_checkpoint(path: Path, *, seed: int, image_size: int = 64, grid: int = 2,
                         end_bias: float = -20.0, words: Sequence[str] | None = None,
                         attention: str = "soft") -> Path:
    """An untrained, seeded checkpoint of a scenes-vocabulary model; about 100 KB on disk.

    Dimensions are 8, and the encoder is EfficientNet-Lite0 with its offline ImageNet weights:
    a randomly initialised one's features collapse to ~1e-9 after its BatchNorms, so every image
    would get the same caption and uniform attention. A frozen offline encoder is not stored.
    `end_bias` is written into the <end> logit's bias: untrained, the model may otherwise end
    at once, and an empty caption has no attention maps to check or draw (-20 means captions
    always run to max_len). The seed is set in a forked RNG, so the caller's stream is untouched.
    """
    from captioner.checkpoint import save_checkpoint
    from captioner.config import Config, ModelConfig
    from captioner.model.caption_model import CaptionModel
    from captioner.words.vocab import SPECIALS, Vocab

    # The stride-32 map ("blocks"): at these tiny sizes its cells differ more from scene to scene
    # than the stride-16 map's, so the tiny model's captions depend on the image.
    cfg = Config(model=ModelConfig(image_size=image_size, grid=grid, pretrained="imagenet", feature_layer="blocks",
                                   embed_dim=8, attention_dim=8, hidden_dim=8, attention=attention))
    vocab = Vocab([*SPECIALS, *(scene_words() if words is None else words)])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CaptionModel(config=cfg.model, vocab_size=len(vocab))
    with torch.no_grad():
        model.decoder.L_o.bias[vocab.end_id] = end_bias
    return save_checkpoint(path, model=model, config=cfg, vocab=vocab, epoch=0, step=0)
