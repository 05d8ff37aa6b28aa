"""Prototype fix, measured by the memory benchmark: read cache rows with pread, not a memmap.

`FeatureCache` maps the whole file; every row an epoch touches stays mapped, and file-backed
mapped pages count in the process's RSS, so peak RSS grows by the bytes read (N * P * E * 2).
Reading each row with `os.preadv` into a fresh buffer goes through the same page cache (the
kernel still caches the file) but maps nothing, so RSS stays at the model + batch size.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from captioner.features import FeatureCache
from captioner.image import ImageLoadError


class PreadFeatureCache(FeatureCache):
    """FeatureCache whose rows are read with one pread each instead of from a memmap."""

    def __init__(self, data_path, meta) -> None:
        super().__init__(data_path, meta)
        self._fd: int | None = None  # opened lazily, per process (DataLoader workers)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_fd": None}

    def __getitem__(self, i: int) -> torch.Tensor:
        if not self.valid[i]:
            raise ImageLoadError(self.meta["paths"][i], "unreadable when the feature cache was built")
        if self._fd is None:
            self._fd = os.open(self.data_path, os.O_RDONLY)
        _, p, e = self.shape
        row = np.empty((p, e), dtype=np.float16)
        if os.preadv(self._fd, [row], int(i) * row.nbytes) != row.nbytes:
            raise ImageLoadError(self.meta["paths"][i], f"short read from {self.data_path}")
        return torch.from_numpy(row.astype(np.float32))  # (P, E)
