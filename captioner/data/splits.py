"""Which images train, which validate, which test.

Karpathy's files carry a split per image; COCO captions files and image folders do not, so
training carves a validation set out of them with :func:`holdout_split`. Both depend only on
the records, never on their order or on global random state, so every run and every process
agrees on the split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations.py imports KARPATHY_SPLITS from here
    from captioner.data.annotations import ImageRecord

__all__ = ["KARPATHY_SPLITS", "holdout_split", "select_split", "stable_unit"]

#: Split names used by Karpathy's files; "restval" is the part of COCO val2014 used for training.
KARPATHY_SPLITS: tuple[str, ...] = ("train", "val", "test", "restval")


def select_split(records: Sequence[ImageRecord], split: str) -> list[ImageRecord]:
    """Records of one split; ``"train"`` includes ``"restval"`` as in the literature."""
    if split not in KARPATHY_SPLITS:
        raise ValueError(f"select_split: unknown split {split!r}, expected one of {list(KARPATHY_SPLITS)}")
    wanted = {"train", "restval"} if split == "train" else {split}
    return [r for r in records if r.split in wanted]


def stable_unit(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from ``parts`` (same on every machine/run).

    A hash rather than a seeded generator: the value for one image does not depend on which
    other images exist, nor on the order they are visited in.
    """
    h = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2**64


def holdout_split(
    records: Sequence[ImageRecord], fraction: float = 0.05, seed: int = 0
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Split records into ``(train, val)`` when a dataset has no validation split (e.g. COCO json).

    An image's side depends only on ``(seed, image_id)`` ranks, not on the records' order, so
    the split is reproducible. Val gets ``round(fraction * N)`` images but at least one, and
    train keeps at least one when N >= 2. Both lists keep the input order.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"holdout_split: fraction must be in (0, 1), got {fraction}")
    n = len(records)
    if n == 0:
        raise ValueError("holdout_split: no records to split")
    n_val = max(1, round(fraction * n))
    if n >= 2:
        n_val = min(n_val, n - 1)
    order = sorted(range(n), key=lambda i: (stable_unit(seed, records[i].image_id), i))
    val_idx = set(order[:n_val])
    train = [r for i, r in enumerate(records) if i not in val_idx]
    val = [r for i, r in enumerate(records) if i in val_idx]
    return train, val
