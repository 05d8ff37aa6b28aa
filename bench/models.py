"""The models and data the benchmarks run on, at full size or the tiny `--quick` size.

- the popular recipe's model: ResNet-101 (random weights) at 448 px, 14 x 14 grid, 512/512/512,
  vocabulary 10,000;
- the embedded default model (`captioner.DEFAULT_CHECKPOINT`), with its 39-word vocabulary;
- random captions of a fixed number of words (random ids are what the issue allows).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from captioner.config import Config, ModelConfig, load_config
from captioner.data.annotations import ImageRecord
from captioner.words.vocab import SPECIALS, Vocab

from common import REPO


@dataclass(frozen=True)
class Sizes:
    """Everything that differs between the full suite and `--quick`."""

    quick: bool
    image_size: int = 448
    grid: int = 14
    vocab: int = 10_000
    batch: int = 32
    words: int = 20  # caption words; +<start>/<end> gives words + 1 decoder steps
    train_rounds: int = 3  # timed rounds of (a)/(c), after one warm-up round ...
    train_budget_s: float = 400  # ... fewer (not below 2) when a round would overrun this
    cached_per_round: int = 3  # (b) steps per round (it is ~10x faster than (a))
    cache_images: int = 256
    decode_images: int = 32
    decode_max_len: int = 20
    beams: tuple[int, ...] = (1, 3, 5)
    decode_repeats: int = 3
    cold_repeats: int = 3
    memory_images: tuple[int, ...] = (1000, 2000, 4000, 8000)
    memory_grid: int = 14  # (196, E) rows, like the default model
    memory_words: int = 10  # the scenes' captions are ~10 words
    memory_batch: int = 64  # the default model's training batch (configs/scenes.toml)
    scale_lengths: tuple[int, ...] = (10, 20, 40)
    scale_beams: tuple[int, ...] = (1, 3, 5, 8)
    scale_batches: tuple[int, ...] = (8, 16, 32, 64)
    scale_steps: int = 2
    profile_rounds: int = 3
    e2e_images: int = 32  # file -> caption, the default model
    e2e_resnet_images: int = 8  # the ResNet-101 recipe (about a second per image per pass)
    e2e_max_len: int = 50  # the recipe's caption length (its <end> is disabled)
    e2e_folder_images: int = 256  # `captioner caption DIR`
    e2e_cache_images: int = 64  # feature-cache build
    e2e_rounds: int = 2
    e2e_resnet_rounds: int = 3  # with one round, a swing in the machine's load decided the bound ratio

    @classmethod
    def full(cls) -> "Sizes":
        return cls(quick=False)

    @classmethod
    def tiny(cls) -> "Sizes":
        return cls(quick=True, image_size=64, grid=2, vocab=200, batch=4, words=5, train_rounds=1,
                   cached_per_round=1, cache_images=16, decode_images=3, decode_max_len=4,
                   decode_repeats=1, cold_repeats=1, memory_images=(64, 128), memory_grid=2,
                   memory_words=5, memory_batch=8, scale_lengths=(2, 4), scale_beams=(1, 2),
                   scale_batches=(2, 4), scale_steps=1, profile_rounds=1, e2e_images=3, e2e_resnet_images=2,
                   e2e_max_len=4, e2e_folder_images=4, e2e_cache_images=3, e2e_rounds=1, e2e_resnet_rounds=1)


def recipe_config(sizes: Sizes, finetune_blocks: int = 0) -> ModelConfig:
    """The popular recipe: ResNet-101, random weights, 512/512/512, dropout 0.5."""
    return ModelConfig(backbone="resnet101", pretrained="none", image_size=sizes.image_size,
                       grid=sizes.grid, finetune_blocks=finetune_blocks, embed_dim=512,
                       attention_dim=512, hidden_dim=512, dropout=0.5)


def numbered_vocab(size: int) -> Vocab:
    """SPECIALS + w4 .. w{size-1}: a vocabulary of exactly `size` ids."""
    return Vocab([*SPECIALS, *(f"w{i}" for i in range(len(SPECIALS), size))])


def random_records(n: int, vocab: Vocab, words: int, seed: int = 0) -> list[ImageRecord]:
    """n records, one caption of `words` random (non-special) words each; the paths do not exist."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIALS), len(vocab), size=(n, words))
    names = vocab.to_list()
    records = []
    for i in range(n):
        toks = tuple(names[j] for j in ids[i])
        records.append(ImageRecord(image_id=i, path=Path(f"/nonexistent/bench/img_{i:06d}.png"),
                                   split="train", captions=(" ".join(toks),), tokens=(toks,)))
    return records


def default_config() -> Config:
    return load_config(REPO / "configs" / "scenes.toml")


@dataclass(frozen=True)
class DefaultModel:
    """The checkpoint the CLI and API load, and how to label figures measured on it."""

    checkpoint: Path
    label: str = "default model"


def default_model(work: Path, sizes: Sizes) -> DefaultModel:
    """captioner/assets/default.pt, the model `captioner caption` uses without --checkpoint.

    `work` and `sizes` are unused: every section, at full size and `--quick`, measures the
    shipped model itself.
    """
    import captioner

    if not captioner.DEFAULT_CHECKPOINT.is_file():
        raise FileNotFoundError(f"{captioner.DEFAULT_CHECKPOINT}: the default model is missing from "
                                "this install (it ships in the package; `make default-model` rebuilds it)")
    return DefaultModel(captioner.DEFAULT_CHECKPOINT)


def default_vocab() -> Vocab:
    """The default model's vocabulary, read from its checkpoint (V = 39)."""
    import captioner
    from captioner.checkpoint import load_checkpoint

    return Vocab(load_checkpoint(captioner.DEFAULT_CHECKPOINT)["vocab"])


def without_end(decoder: torch.nn.Module, end_id: int) -> torch.nn.Module:
    """A copy of a decoder that never emits <end>, so every caption runs to max_len."""
    import copy

    dec = copy.deepcopy(decoder)
    with torch.no_grad():
        dec.L_o.bias[end_id] = -1e4
    return dec

