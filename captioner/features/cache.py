"""The feature cache: each image's (P, E) region grid, computed once, read from a memmap.

With a frozen encoder the CNN gives the same grid for an image every epoch, so re-running it
for every caption is wasted work (ResNet-101 on every caption is what keeps the popular
implementation at a few captions/s on a CPU). The grids go into one fp16 file, written through
a memmap and read row by row, so memory stays flat however large the dataset is.

A run that fine-tunes the last N encoder stages (model.finetune_blocks) caches what the frozen
stages before them give instead, and trains the N stages on it: their input is the same every
epoch, so only the stages that learn run at each step (`Encoder.from_frozen`).

A cache is named by the encoder (backbone, weights, feature layer, input size, grid) and the
list of image paths. Its sidecar json records each image's size and mtime; a cache whose
images changed is stale, and one whose file is truncated, unfinished or fails its row
checksums is corrupt. Both are rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from captioner.atomic import atomic_path, remove_leftover_temps
from captioner.config import ModelConfig
from captioner.data.annotations import ImageRecord
from captioner.data.datasets import EvalDataset, ImageSource, collate_eval
from captioner.features.encoder import Encoder, FrozenStages, default_encode_chunk, encode, encoder_dim
from captioner.features.inference import inference_encoder
from captioner.image.preprocess import preprocess_for
from captioner.image.loading import ImageLoadError

CACHE_VERSION = 1
CACHE_DIRNAME = ".captioner-cache"
_CHECK_ROWS = 8  # rows whose checksums are verified on every open


@dataclass(frozen=True)
class CacheKey:
    backbone: str
    weights: str  # "imagenet", "none", or a weight file with its size and mtime
    feature_layer: str
    image_size: int
    grid: int

    @classmethod
    def for_model(cls, config: ModelConfig) -> "CacheKey":
        weights = config.pretrained
        if weights not in ("imagenet", "none"):
            st = Path(weights).stat()
            weights = f"{Path(weights).resolve()}:{st.st_size}:{st.st_mtime_ns}"
        layer = config.feature_layer if config.backbone.startswith("efficientnet") else (
            "layer3" if config.feature_layer == "stride16" else "layer4")
        if config.finetune_blocks:  # the frozen stages' output, before the last N (trained) stages
            layer = f"{layer}:frozen-until-last-{config.finetune_blocks}"
        return cls(config.backbone, weights, layer, config.image_size, config.grid)


def _fingerprint(path: Path) -> list:
    try:
        st = path.stat()
        return [str(path), st.st_size, st.st_mtime_ns]
    except OSError:
        return [str(path), -1, -1]


class FeatureCache:
    """Indexable like the records: cache[i] -> (P, E) float32 tensor, or ImageLoadError. (For a
    fine-tuning run, (h * w, C): the output of the encoder's frozen stages, `FrozenStages`.)

    Rows are read with `pread` rather than through a memmap: pages of a memmap stay mapped
    into the process once touched, so its resident size grows with every image read
    (bench/results.md: cached-training RSS, 1k -> 8k images), while a read into a fresh buffer
    keeps it flat.
    """

    def __init__(self, data_path: Path, meta: dict) -> None:
        self.data_path = data_path
        self.meta = meta
        self.shape = (meta["num_images"], meta["regions"], meta["dim"])
        self.valid = np.asarray(meta["valid"], dtype=bool)
        self.errors: list[str] = meta["errors"]
        self._row_bytes = self.shape[1] * self.shape[2] * 2
        self._fd: int | None = None  # opened lazily, so DataLoader workers can pickle us

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        if not self.valid[i]:
            raise ImageLoadError(self.meta["paths"][i], "unreadable when the feature cache was built")
        if self._fd is None:
            self._fd = os.open(self.data_path, os.O_RDONLY)
        row = np.empty(self.shape[1:], dtype=np.float16)  # (P, E)
        if os.preadv(self._fd, [row], i * self._row_bytes) != self._row_bytes:
            raise ImageLoadError(self.meta["paths"][i], f"short read from feature cache {self.data_path}")
        return torch.from_numpy(row.astype(np.float32))  # (P, E)


def cache_paths(cache_dir: Path, key: CacheKey, records: Sequence[ImageRecord]) -> tuple[Path, Path]:
    ident = json.dumps({"v": CACHE_VERSION, "key": asdict(key), "paths": [str(r.path) for r in records]})
    name = f"{key.backbone}-{key.image_size}px-g{key.grid}-{hashlib.sha1(ident.encode()).hexdigest()[:16]}"
    return cache_dir / f"{name}.f16", cache_dir / f"{name}.json"


def _row_checksum(row: np.ndarray) -> float:
    return float(np.asarray(row, dtype=np.float64).sum())


def check_cache(data_path: Path, meta_path: Path, key: CacheKey, records: Sequence[ImageRecord]) -> str | None:
    """None when the cache can be used, else why it cannot ("missing", "stale: ...", "corrupt: ...")."""
    if not meta_path.is_file() or not data_path.is_file():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("version") != CACHE_VERSION or meta.get("key") != asdict(key):
            return "stale: built by another encoder or cache version"
        if not meta.get("complete"):
            return "corrupt: an unfinished build"
        n, p, e = meta["num_images"], meta["regions"], meta["dim"]
        if data_path.stat().st_size != n * p * e * 2:
            return f"corrupt: {data_path.name} has {data_path.stat().st_size} bytes, expected {n * p * e * 2}"
        if meta["fingerprints"] != [_fingerprint(r.path) for r in records]:
            return "stale: images changed since the cache was built"
        mm = np.memmap(data_path, dtype=np.float16, mode="r", shape=(n, p, e))
        rng = np.random.default_rng(0)
        rows = sorted({0, n - 1, *rng.integers(0, n, size=_CHECK_ROWS).tolist()})
        for i in rows:
            if meta["valid"][i] and not np.isclose(_row_checksum(mm[i]), meta["checksums"][i], rtol=1e-9, atol=1e-6):
                return f"corrupt: row {i} fails its checksum"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"corrupt: {type(err).__name__}: {err}"
    return None


class CacheRows(NamedTuple):
    index: np.ndarray  # (B,) positions in the records
    rows: np.ndarray  # (B, P, E) float16 region grids of those images ((B, h * w, C) frozen-stage rows)
    skipped: list[str]  # errors of images of this batch that could not be read


def write_cache(data_path: Path, meta_path: Path, key: CacheKey, records: Sequence[ImageRecord], *,
                regions: int, dim: int, batches: Iterable[CacheRows],
                progress: Callable[[int, int], None] | None = None) -> FeatureCache:
    """Write the grids of `batches` into a cache for `records` (atomically: data, then the
    sidecar json that marks it complete). The one writer of the format `check_cache` reads."""
    n = len(records)
    for path in (data_path, meta_path):
        remove_leftover_temps(path)  # a killed build's partial file can be gigabytes
    valid = np.zeros(n, dtype=bool)
    checksums = [0.0] * n
    errors: list[str] = []
    with atomic_path(data_path) as tmp:
        mm = np.memmap(tmp, dtype=np.float16, mode="w+", shape=(n, regions, dim))  # (N, P, E)
        done = 0
        for batch in batches:
            errors += batch.skipped
            if len(batch.index):
                mm[batch.index] = batch.rows
                valid[batch.index] = True
                for row, i in zip(batch.rows, batch.index.tolist()):
                    checksums[i] = _row_checksum(row)
            done += len(batch.index) + len(batch.skipped)
            if progress:
                progress(done, n)
        mm.flush()
        del mm
    meta = {"version": CACHE_VERSION, "key": asdict(key), "num_images": n, "regions": regions, "dim": dim,
            "paths": [str(r.path) for r in records], "fingerprints": [_fingerprint(r.path) for r in records],
            "valid": valid.tolist(), "checksums": checksums, "errors": errors, "complete": True}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta))
    return FeatureCache(data_path, meta)


def _encoded(loader: DataLoader, encoder: nn.Module, device: torch.device, chunk: int | None) -> Iterator[CacheRows]:
    """The grids of a forward-only encoder, batch by batch, `chunk` images per call."""
    for batch in loader:
        rows = np.zeros((0,), dtype=np.float16)
        if len(batch.index):
            with torch.inference_mode():
                grids = encode(encoder, batch.images.to(device), chunk=chunk)  # (B, P, E)
                rows = grids.float().cpu().numpy().astype(np.float16)
        yield CacheRows(batch.index.numpy(), rows, list(batch.skipped))


def build_cache(data_path: Path, meta_path: Path, key: CacheKey, records: Sequence[ImageRecord],
                encoder: Encoder, config: ModelConfig, *, batch_size: int = 32, num_workers: int = 0,
                device: torch.device = torch.device("cpu"),
                progress: Callable[[int, int], None] | None = None) -> FeatureCache:
    """Encode every image once into the cache.

    The global RNG states are left as they were (the DataLoader draws its base seed from torch's
    generator), so a training run that builds its cache continues exactly like one that finds it."""
    source = ImageSource.from_records(records, preprocess_for(config))
    loader = DataLoader(EvalDataset(records, source), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_eval)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        if config.finetune_blocks:  # the frozen stages' output, which the trained stages read
            fast = FrozenStages(encoder).to(device)
            with torch.inference_mode():
                probe = fast(torch.zeros(1, 3, config.image_size, config.image_size, device=device))
            regions, dim = probe.shape[1:]
        else:
            fast = inference_encoder(encoder, image_size=config.image_size, device=device)  # BatchNorms folded; OpenVINO or ONNX
            regions, dim = config.grid * config.grid, encoder_dim(config)
        chunk = default_encode_chunk(device, config.backbone, getattr(fast, "engine", "torch"))
        return write_cache(data_path, meta_path, key, records, regions=regions, dim=dim,
                           batches=_encoded(loader, fast, device, chunk), progress=progress)


def open_or_build(records: Sequence[ImageRecord], config: ModelConfig, encoder: Encoder, cache_dir: Path,
                  **build_kwargs) -> tuple[FeatureCache, str]:
    """The cache for these records; builds it when missing, stale or corrupt.

    Returns the cache and what happened: "hit", or the reason it was (re)built.
    """
    key = CacheKey.for_model(config)
    data_path, meta_path = cache_paths(Path(cache_dir), key, records)
    problem = check_cache(data_path, meta_path, key, records)
    if problem is not None:
        meta_path.unlink(missing_ok=True)  # an unfinished build must never look complete
        build_cache(data_path, meta_path, key, records, encoder, config, **build_kwargs)
    cache = FeatureCache(data_path, json.loads(meta_path.read_text()))
    return cache, "hit" if problem is None else problem
