"""Stochastic "hard" attention (Xu et al. 2015, section 4.1): each word reads one region.

Soft attention reads the expectation sum_i alpha_ti a_i. Hard attention treats alpha_t as a
Multinoulli distribution over the P regions and reads the annotation vector a_{s_t} of one
region s_t. Training samples s_t ~ Multinoulli(alpha_t) (`RegionSampler`); the gradient of
that choice is REINFORCE's (`captioner.scoring.losses.hard_attention_terms`). Decoding must
be deterministic, so it reads the argmax region (`argmax_focus`, the default) or, as the
authors' arctic-captions code does at test time (`sampling=False, argmax=False`), the
expectation (`expected_focus`), which is soft attention's context.

A `Focus` is where each of N rows (B images times K beams) reads. Its `expected` rows read
the expectation instead of their region: training does this for a random half of the images
(the paper's trick, after Ba et al. 2014). In a decoder's outputs the two are one (N,) index
tensor, with `EXPECTED` where the expectation was read.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

#: The region index a decoder output records for a step that read the expected context.
EXPECTED = -1


class Focus(NamedTuple):
    region: torch.Tensor  # (N,) long: the region each row reads
    expected: torch.Tensor | None = None  # (N,) bool: rows that read the expectation instead; None: none

    def regions(self) -> torch.Tensor:
        """(N,) long: `region`, with EXPECTED in the rows that read the expectation."""
        return self.region if self.expected is None else self.region.masked_fill(self.expected, EXPECTED)

    @classmethod
    def of(cls, regions: torch.Tensor) -> Focus:
        """The inverse of `regions()`: (N,) long region indices, EXPECTED allowed."""
        return cls(regions.clamp_min(0), regions == EXPECTED)


#: alpha (N, P) -> where each row reads. Called once per step, after alpha is known.
RegionRule = Callable[[torch.Tensor], Focus]


def argmax_focus(alpha: torch.Tensor) -> Focus:
    """The most likely region: the deterministic choice for decoding a hard model."""
    return Focus(alpha.argmax(dim=1))  # (N,)


def expected_focus(alpha: torch.Tensor) -> Focus:
    """The expectation everywhere: a hard model decoded as the soft one it approximates."""
    N = alpha.size(0)
    return Focus(alpha.new_zeros(N, dtype=torch.long), alpha.new_ones(N, dtype=torch.bool))


def fixed_focus(regions: torch.Tensor) -> RegionRule:
    """Read given regions (N,) (EXPECTED allowed) whatever alpha is: teacher forcing with a
    fixed sample, so that a sampled path can be replayed or enumerated."""
    focus = Focus.of(regions)
    return lambda alpha: focus


#: Decoding rules for a hard model, by the name SearchOptions.hard_decode takes.
DECODE_RULES: dict[str, RegionRule] = {"argmax": argmax_focus, "expectation": expected_focus}


def decode_rule(name: str) -> RegionRule:
    if name not in DECODE_RULES:
        raise ValueError(f"hard_decode must be one of {tuple(DECODE_RULES)}, got {name!r}")
    return DECODE_RULES[name]


class RegionSampler:
    """Training's rule: s_t ~ Multinoulli(alpha_t), drawn from `generator`.

    A generator of its own (not the global one that dropout uses) makes a run's samples a
    function of its seed alone, and its state can be saved and restored for an exact resume.
    The images in `expected` (B,) read the expected context for their whole caption instead;
    their rows are sampled all the same, so the generator advances by the same amount
    whichever images they are.
    """

    def __init__(self, generator: torch.Generator, expected: torch.Tensor) -> None:
        self.generator = generator
        self.expected = expected

    @classmethod
    def draw(cls, generator: torch.Generator, batch_size: int, expectation_p: float) -> RegionSampler:
        """A sampler for one batch: each image reads the expectation with probability
        `expectation_p` (drawn here, per image, from the same generator)."""
        u = torch.rand(batch_size, generator=generator, device=generator.device)  # (B,)
        return cls(generator, u < expectation_p)

    def __call__(self, alpha: torch.Tensor) -> Focus:
        # The sample's probability is not differentiated through: REINFORCE gives its gradient.
        region = torch.multinomial(alpha.detach().float(), 1, generator=self.generator)  # (N, 1)
        return Focus(region.squeeze(1), self.expected)


def read_context(features: torch.Tensor, alpha: torch.Tensor, focus: Focus) -> torch.Tensor:
    """features (B, P, E), alpha (N, P) with N = B*K rows (K per image) -> context (N, E).

    A row reads a_{s}, its region's annotation vector, which passes no gradient to alpha (the
    REINFORCE term does that); an `expected` row reads sum_i alpha_i a_i, which does.
    """
    B, P, E = features.shape
    N = alpha.size(0)
    image = torch.arange(N, device=features.device) // (N // B)  # (N,) the image of each row
    hard = features[image, focus.region]  # (N, E)
    if focus.expected is None:
        return hard
    soft = torch.bmm(alpha.view(B, N // B, P), features).view(N, E)  # (N, E)
    return torch.where(focus.expected.unsqueeze(1), soft, hard)


def region_map(alpha: torch.Tensor, region: torch.Tensor | None) -> torch.Tensor:
    """The (N, P) map each row's word was read from, for overlays and grounding: the one-hot
    of its region, or alpha where it read the expectation (and everywhere for soft attention,
    `region` None)."""
    if region is None:
        return alpha
    one_hot = F.one_hot(region.clamp_min(0), alpha.size(1)).to(alpha.dtype)  # (N, P)
    return torch.where((region >= 0).unsqueeze(1), one_hot, alpha)
