"""Soft attention over regions: (B, P, E) features and (B, H) hidden state -> (B, E) context.

The scoring functions are the family the attention literature describes. Every one produces
scores e (B, P) that a softmax over regions turns into alpha, so alpha sums to 1 per image:
  additive    e_i = w^T tanh(W_k a_i + W_q h)              Bahdanau; the paper's choice
  concat      e_i = w^T tanh(W [h; a_i])                   one matrix on the concatenation
  dot         e_i = (W_q h) . (W_k a_i)                    projected dot product
  scaled_dot  e_i = (W_q h) . (W_k a_i) / sqrt(d_k)        Vaswani et al.
  general     e_i = h^T W a_i                              Luong's bilinear form
  none        alpha_i = 1/P                                fixed mean pooling, the pre-attention
                                                           encoder-decoder baseline
Keys that depend only on the image are computed once per image by `project_keys`, not at
every step. For `concat` that is W's columns for a_i: W [h; a_i] + b = W_h h + (W_a a_i + b), the
same function with the same parameters (tests/test_attention.py checks it against the literal
concatenation), so concat costs what additive costs instead of a (P, H + E) product per step;
it differs from additive only in having one bias where additive has two. Hard attention (`captioner.model.hard_attention`) uses the same alpha as a
distribution to pick one region from (`Attention.weights`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from captioner.config import SCORERS

#: Elements per slice of the additive scorer's (B, K, P, A) sum when decoding (1 MB of fp32).
SLICE_ELEMENTS = 1 << 18


class AttentionOutput(NamedTuple):
    context: torch.Tensor  # (B, E) alpha-weighted sum of region features
    alpha: torch.Tensor  # (B, P) attention weights, summing to 1 over regions


class Attention(nn.Module):
    def __init__(self, *, scorer: str, encoder_dim: int, hidden_dim: int, attention_dim: int,
                 slice_elements: int = SLICE_ELEMENTS) -> None:
        """`slice_elements` bounds each slice of the additive sum when `sliced=True` (decoding)."""
        super().__init__()
        if slice_elements < 1:
            raise ValueError(f"slice_elements must be at least 1, got {slice_elements}")
        self.slice_elements = slice_elements
        if scorer not in SCORERS:
            raise ValueError(f"unknown scorer {scorer!r}; choose from {SCORERS}")
        self.scorer = scorer
        self.attention_dim = attention_dim
        self.hidden_dim = hidden_dim
        if scorer in ("additive", "dot", "scaled_dot"):
            self.key_proj = nn.Linear(encoder_dim, attention_dim)
            self.query_proj = nn.Linear(hidden_dim, attention_dim)
        if scorer == "additive":
            self.score = nn.Linear(attention_dim, 1)
        elif scorer == "concat":
            self.concat_proj = nn.Linear(hidden_dim + encoder_dim, attention_dim)
            self.score = nn.Linear(attention_dim, 1)
        elif scorer == "general":
            self.bilinear = nn.Linear(encoder_dim, hidden_dim, bias=False)

    def project_keys(self, features: torch.Tensor) -> torch.Tensor:
        """(B, P, E) -> the per-image part of the score, computed once per image.

        additive/dot/scaled_dot: (B, P, A) projected keys; concat: (B, P, A) = W_a a_i + b;
        general: (B, P, H) = W a_i; none: the features themselves.
        """
        if self.scorer in ("additive", "dot", "scaled_dot"):
            return self.key_proj(features)  # (B, P, A)
        if self.scorer == "concat":
            return nn.functional.linear(features, self.concat_proj.weight[:, self.hidden_dim:],
                                        self.concat_proj.bias)  # (B, P, A)
        if self.scorer == "general":
            return self.bilinear(features)  # (B, P, H)
        return features

    def scores(self, features: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor, *,
               sliced: bool = False) -> torch.Tensor:
        """Unnormalised scores e, (B, K, P), for K queries per image.

        hidden is (B*K, H): K = 1 in training; in beam search the K beams of an image share
        its features and keys instead of K copies of them (bench/results.md: not allocating
        and faulting in the copies is most of what batched beam search saves).
        `sliced=True` (decoding, without autograd) computes the additive and concat scores
        in cache-sized slices, in place; the other scorers ignore it.
        """
        B, P, E = features.shape
        K = hidden.size(0) // B
        if self.scorer in ("additive", "concat"):
            if self.scorer == "additive":
                query = self.query_proj(hidden)  # (B*K, A)
            else:  # W_h h: the hidden state's columns of W; keys hold W_a a_i + b
                query = nn.functional.linear(hidden, self.concat_proj.weight[:, :self.hidden_dim])  # (B*K, A)
            query = query.view(B, K, 1, -1)  # (B, K, 1, A)
            if sliced:
                return self._additive_in_slices(keys, query)
            return self.score(torch.tanh(keys.unsqueeze(1) + query)).squeeze(3)  # (B, K, P)
        if self.scorer in ("dot", "scaled_dot"):
            query = self.query_proj(hidden).view(B, K, -1)  # (B, K, A)
            e = torch.bmm(query, keys.transpose(1, 2))  # (B, K, P)
            return e / math.sqrt(self.attention_dim) if self.scorer == "scaled_dot" else e
        if self.scorer == "general":
            return torch.bmm(hidden.view(B, K, -1), keys.transpose(1, 2))  # (B, K, P)
        return features.new_zeros(B, K, P)  # none: uniform after softmax

    def _additive_in_slices(self, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """w^T tanh(k_i + q) without autograd, a few images at a time: keys (B, P, A), query
        (B, K, 1, A) -> (B, K, P).

        The (B, K, P, A) sum is the largest tensor of a decoding step (32 images at beam 5:
        32 MB at A = 256). Made whole, it is allocated, faulted in and streamed through memory
        three times per step; made in slices of about 1 MB, it stays in the core's cache and
        tanh runs in place (bench/results.md: decode.*.attention_slices_speedup).
        """
        if torch.is_grad_enabled() and (keys.requires_grad or query.requires_grad):
            raise RuntimeError("Attention: sliced=True computes in place and cannot be differentiated; "
                               "use it under torch.no_grad() or torch.inference_mode()")
        B, P, A = keys.shape
        K = query.size(1)
        step = min(B, max(1, self.slice_elements // (K * P * A)))
        w = self.score.weight.view(A, 1)  # (A, 1)
        out = keys.new_empty(B, K, P)
        # One buffer for every slice: it stays in cache, and no slice pays for a fresh allocation
        # and its page faults.
        buf = keys.new_empty(step, K, P, A)
        for i in range(0, B, step):
            b = min(step, B - i)
            part = torch.add(keys[i:i + b].unsqueeze(1), query[i:i + b], out=buf[:b])  # (b, K, P, A)
            part.tanh_()
            torch.mm(part.view(b * K * P, A), w, out=out[i:i + b].view(b * K * P, 1))  # (b*K*P, 1)
        return out.add_(self.score.bias)

    def weights(self, features: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor, *,
                sliced: bool = False) -> torch.Tensor:
        """alpha (B*K, P) alone, for hard attention (`captioner.model.hard_attention`), which
        reads one region instead of the alpha-weighted sum."""
        P = features.size(1)
        return self.scores(features, keys, hidden, sliced=sliced).softmax(dim=2).reshape(-1, P)  # (B*K, P)

    def forward(self, features: torch.Tensor, keys: torch.Tensor, hidden: torch.Tensor, *,
                sliced: bool = False) -> AttentionOutput:
        """features (B, P, E), keys from `project_keys`, hidden (B*K, H) -> (B*K, E), (B*K, P)."""
        B, P, E = features.shape
        alpha = self.scores(features, keys, hidden, sliced=sliced).softmax(dim=2)  # (B, K, P)
        context = torch.bmm(alpha, features)  # (B, K, E)
        return AttentionOutput(context.reshape(-1, E), alpha.reshape(-1, P))  # (B*K, E), (B*K, P)
