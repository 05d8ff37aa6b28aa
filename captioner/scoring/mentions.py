"""Object-level scores for the synthetic scenes: are the right "<color> <shape>" pairs named?

BLEU and CIDEr reward n-gram overlap, so "a red circle" against a blue circle still scores well.
For scenes we know every object, so we can count exactly: each mentioned pair is a true
positive if the image has an unmatched object of that colour and shape (multiset matching).
The true objects are ``Instances.objects`` from :func:`captioner.data.annotations.load_instances`.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from captioner.data.scene_spec import parse_mentions


@dataclass(frozen=True)
class MentionResult:
    true_pos: int = 0
    predicted: int = 0
    actual: int = 0
    exact: int = 0  # images whose mentioned pairs equal the true multiset
    images: int = 0

    @property
    def precision(self) -> float:
        return self.true_pos / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.true_pos / self.actual if self.actual else float("nan")

    @property
    def f1(self) -> float:
        total = self.predicted + self.actual
        return 2 * self.true_pos / total if total else float("nan")

    @property
    def exact_set_accuracy(self) -> float:
        return self.exact / self.images if self.images else float("nan")

    def __add__(self, other: "MentionResult") -> "MentionResult":
        return MentionResult(self.true_pos + other.true_pos, self.predicted + other.predicted,
                             self.actual + other.actual, self.exact + other.exact, self.images + other.images)

    def summary(self) -> dict[str, float]:
        return {"object_precision": self.precision, "object_recall": self.recall, "object_f1": self.f1,
                "exact_set_accuracy": self.exact_set_accuracy}


def score_mentions(tokens: Sequence[str], truth: Iterable[tuple[str, str]]) -> MentionResult:
    """One caption's mentions against one image's true (color, shape) objects."""
    predicted, actual = Counter(parse_mentions(tokens)), Counter(truth)
    tp = sum((predicted & actual).values())
    return MentionResult(tp, sum(predicted.values()), sum(actual.values()), int(predicted == actual), 1)


def merge(results: Iterable[MentionResult]) -> MentionResult:
    total = MentionResult()
    for r in results:
        total = total + r
    return total


def mention_scores(captions: Mapping[int, Sequence[str]], objects: Mapping[int, Sequence[tuple[str, str]]]) -> MentionResult:
    """Micro-averaged over all images that have both a caption and ground truth."""
    return merge(score_mentions(tokens, objects[i]) for i, tokens in captions.items() if i in objects)
