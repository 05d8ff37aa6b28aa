"""The synthetic scenes' vocabulary: which shapes, colours and sizes exist, and how a caption
names an object.

This is the contract between the generator (:mod:`captioner.data.scenes`), which draws and
captions scenes with these words, and the scores (:mod:`captioner.scoring`), which read them
back out of generated captions. Keeping it apart from the generator lets scoring depend on the
words without depending on the drawing code.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["COLORS", "SHAPES", "SIZES", "parse_mentions"]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
SIZES: tuple[str, ...] = ("small", "large")


def parse_mentions(tokens: Sequence[str]) -> list[tuple[str, str]]:
    """``(color, shape)`` pairs mentioned in ``tokens``, in order.

    A mention is a colour word followed by a shape word, optionally with one size word in
    between ("red small circle"); a size word before the colour ("small red circle") is simply
    skipped. Used for object-level precision/recall of generated captions.
    """
    toks = [t.lower() for t in tokens]
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        if toks[i] in COLORS:
            j = i + 1
            if j < len(toks) and toks[j] in SIZES:
                j += 1
            if j < len(toks) and toks[j] in SHAPES:
                found.append((toks[i], toks[j]))
                i = j + 1
                continue
        i += 1
    return found
