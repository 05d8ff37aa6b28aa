"""The synthetic scenes' vocabulary: which shapes, colours and sizes exist, and how a caption
names an object.

This is the contract between the generator (:mod:`captioner.data.scenes`), which draws and
captions scenes with these words, and the scores (:mod:`captioner.scoring`), which read them
back out of generated captions. Keeping it apart from the generator lets scoring depend on the
words without depending on the drawing code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

__all__ = ["BACKGROUNDS", "COLORS", "RESERVED_BACKGROUNDS", "SCENE_STYLES", "SHAPES", "SIZES",
           "TRAIN_BACKGROUNDS", "Mention", "find_mentions", "parse_mentions"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")

#: Background families (drawn by :mod:`captioner.data.scenes`). Training scenes use the first
#: seven; the reserved ones are for evaluation only (``--style reserved``), so that a model card
#: can report figures on a look that training never saw.
TRAIN_BACKGROUNDS: tuple[str, ...] = ("flat", "gradient", "noise", "stripes", "checks", "blobs",
                                       "patches")
RESERVED_BACKGROUNDS: tuple[str, ...] = ("waves", "dots", "mosaic")
BACKGROUNDS: tuple[str, ...] = TRAIN_BACKGROUNDS + RESERVED_BACKGROUNDS
#: ``--style``: a mixture of families, or one family by name.
SCENE_STYLES: dict[str, tuple[str, ...]] = {
    "train": TRAIN_BACKGROUNDS, "reserved": RESERVED_BACKGROUNDS, **{k: (k,) for k in BACKGROUNDS},
}


class Mention(NamedTuple):
    """One "<color> [size] <shape>" phrase: its words and their token positions."""

    color: str
    shape: str
    color_index: int
    shape_index: int


def find_mentions(tokens: Sequence[str]) -> list[Mention]:
    """Every "<color> [size] <shape>" phrase in ``tokens``, in order, with token positions.

    A mention is a colour word followed by a shape word, optionally with one size word in
    between ("red small circle"); a size word before the colour ("small red circle") is simply
    skipped.
    """
    toks = [t.lower() for t in tokens]
    found: list[Mention] = []
    i = 0
    while i < len(toks):
        if toks[i] in COLORS:
            j = i + 1
            if j < len(toks) and toks[j] in SIZES:
                j += 1
            if j < len(toks) and toks[j] in SHAPES:
                found.append(Mention(toks[i], toks[j], i, j))
                i = j + 1
                continue
        i += 1
    return found


def parse_mentions(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``(color, shape)`` pairs mentioned in ``tokens``, in order (see :func:`find_mentions`).
    Used for object-level precision/recall of generated captions."""
    return [(m.color, m.shape) for m in find_mentions(tokens)]
