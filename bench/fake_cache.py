"""A real `captioner.features.cache.FeatureCache` filled with random rows, without running a CNN.

The rows go through the package's own writer (`write_cache`, which `build_cache` uses too), and
`check_cache` must accept the result, so the benchmarks read features through the package's own
cache class and format.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from captioner.config import ModelConfig
from captioner.data.annotations import ImageRecord
from captioner.features.cache import CacheKey, CacheRows, FeatureCache, cache_paths, check_cache, write_cache

_BLOCK = 256  # distinct random rows; larger caches repeat them (the content does not matter)


def random_cache(cache_dir: Path, records: Sequence[ImageRecord], config: ModelConfig, dim: int,
                seed: int = 0) -> FeatureCache:
    """A (len(records), grid*grid, dim) fp16 cache for `records`, checked by `check_cache`."""
    key = CacheKey.for_model(config)
    data_path, meta_path = cache_paths(cache_dir, key, records)
    n, p = len(records), config.grid * config.grid
    if check_cache(data_path, meta_path, key, records) is None:
        return FeatureCache(data_path, json.loads(meta_path.read_text()))
    rng = np.random.default_rng(seed)
    # Post-ReLU-like features: non-negative, about the scale a CNN's last stage gives.
    block = np.abs(rng.standard_normal((min(_BLOCK, n), p, dim), dtype=np.float32)).astype(np.float16)
    batches = (CacheRows(np.arange(start, min(n, start + len(block))), block[: min(n, start + len(block)) - start], [])
               for start in range(0, n, len(block)))
    cache = write_cache(data_path, meta_path, key, records, regions=p, dim=dim, batches=batches)
    problem = check_cache(data_path, meta_path, key, records)
    if problem is not None:
        raise RuntimeError(f"the benchmark's cache does not pass the package's check: {problem}")
    return cache
