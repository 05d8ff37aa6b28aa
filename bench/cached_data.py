"""The cached training data of the benchmarks: records, vocabulary and a FeatureCache over them.

Parent and worker processes call the same functions with the same arguments and get the same
cache file (`random_cache` reuses a valid one), so a worker measures reading, never writing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from captioner.data.datasets import CaptionDataset
from captioner.features.cache import FeatureCache
from captioner.features.encoder import encoder_dim
from captioner.words.vocab import Vocab

from fake_cache import random_cache
from models import Sizes, default_config, default_vocab, numbered_vocab, random_records, recipe_config


def recipe_data(sizes: Sizes, work: Path) -> tuple[Vocab, CaptionDataset]:
    """V = sizes.vocab, and a CaptionDataset over a (N, P, 2048) fp16 cache, N = sizes.cache_images."""
    vocab = numbered_vocab(sizes.vocab)
    records = random_records(sizes.cache_images, vocab, sizes.words)
    cache = random_cache(work / "cache-recipe", records, recipe_config(sizes), dim=2048)
    return vocab, CaptionDataset(records, vocab, FeatureCache(cache.data_path, cache.meta), max_len=50)


def default_data(sizes: Sizes, n: int, work: Path) -> tuple[Vocab, CaptionDataset]:
    """The default model's shapes: the scenes vocabulary and a (n, P, E) fp16 cache."""
    vocab = default_vocab()
    records = random_records(n, vocab, sizes.memory_words)
    config = dataclasses.replace(default_config().model, grid=sizes.memory_grid)
    cache = random_cache(work / f"cache-default-{n}", records, config, dim=encoder_dim(config))
    return vocab, CaptionDataset(records, vocab, FeatureCache(cache.data_path, cache.meta), max_len=30)
