"""A real `captioner.features.cache.FeatureCache` filled with random rows, without running a CNN.

The data file and its sidecar json are written in exactly the format `build_cache` writes
(same names, meta keys and row checksums), and `check_cache` must accept the result, so the
benchmarks read features through the package's own cache class.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from captioner.config import ModelConfig
from captioner.data.datasets import ImageRecord
from captioner.features.cache import (CACHE_VERSION, CacheKey, FeatureCache, _fingerprint, _row_checksum,
                                cache_paths, check_cache)

_BLOCK = 256  # distinct random rows; larger caches repeat them (the content does not matter)


def write_cache(cache_dir: Path, records: Sequence[ImageRecord], config: ModelConfig, dim: int,
                seed: int = 0) -> FeatureCache:
    """A (len(records), grid*grid, dim) fp16 cache for `records`, checked by `check_cache`."""
    key = CacheKey.for_model(config)
    data_path, meta_path = cache_paths(cache_dir, key, records)
    n, p = len(records), config.grid * config.grid
    if check_cache(data_path, meta_path, key, records) is None:
        return FeatureCache(data_path, json.loads(meta_path.read_text()))
    cache_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Post-ReLU-like features: non-negative, about the scale a CNN's last stage gives.
    block = np.abs(rng.standard_normal((min(_BLOCK, n), p, dim), dtype=np.float32)).astype(np.float16)
    sums = [_row_checksum(row) for row in block]
    mm = np.memmap(data_path, dtype=np.float16, mode="w+", shape=(n, p, dim))
    for start in range(0, n, len(block)):
        stop = min(n, start + len(block))
        mm[start:stop] = block[: stop - start]
    mm.flush()
    del mm
    meta = {"version": CACHE_VERSION, "key": asdict(key), "num_images": n, "regions": p, "dim": dim,
            "paths": [str(r.path) for r in records], "fingerprints": [_fingerprint(r.path) for r in records],
            "valid": [True] * n, "checksums": [sums[i % len(block)] for i in range(n)], "errors": [],
            "complete": True}
    meta_path.write_text(json.dumps(meta))
    problem = check_cache(data_path, meta_path, key, records)
    if problem is not None:
        raise RuntimeError(f"the benchmark's cache is not in the package's format: {problem}")
    return FeatureCache(data_path, meta)
