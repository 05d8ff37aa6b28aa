"""Attention LSTM decoder (Xu et al. 2015, section 3.1.2).

Per step t, from the previous word y_{t-1} and state (h_{t-1}, c_{t-1}):
  alpha_t, ctx_t = attention(a, h_{t-1})
  beta_t         = sigmoid(f_beta(h_{t-1}))          gating scalar (paper 4.2.1)
  z_t            = beta_t * ctx_t
  h_t, c_t       = LSTM([E y_{t-1}; z_t], (h_{t-1}, c_{t-1}))
  logits_t       = L_o(dropout(E y_{t-1} + L_h h_t + L_z z_t))   deep output layer (eq. 7)
h_0 and c_0 come from MLPs on the mean annotation vector. `step` = `readout(recur(...))` is
the one implementation of this; teacher forcing (`forward`), greedy decoding and beam search
all use it.

With `attention="hard"` (paper section 4.1), ctx_t is the annotation vector of one region
s_t, which a `RegionRule` picks once alpha_t is known (`captioner.model.hard_attention`):
sampled in training, the argmax (or the expectation) when decoding, or given, to replay a
sample. The outputs then carry the regions read; `region_map` turns them into maps.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from captioner.config import ATTENTIONS
from captioner.model.attention import Attention
from captioner.model.hard_attention import RegionRule, argmax_focus, fixed_focus, read_context


class DecoderState(NamedTuple):
    h: torch.Tensor  # (B, H)
    c: torch.Tensor  # (B, H)


class StepOutput(NamedTuple):
    logits: torch.Tensor  # (B, V)
    state: DecoderState
    alpha: torch.Tensor  # (B, P)
    beta: torch.Tensor  # (B, 1)
    region: torch.Tensor | None = None  # hard attention: (B,) the region read, EXPECTED for the expectation


class Recurrence(NamedTuple):
    state: DecoderState
    z: torch.Tensor  # (B, E) gated context
    alpha: torch.Tensor  # (B, P)
    beta: torch.Tensor  # (B, 1)
    region: torch.Tensor | None = None  # hard attention: (B,), as in StepOutput


class DecoderOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, V) predictions for captions[:, 1:]
    alphas: torch.Tensor  # (B, T, P) the distributions, for hard attention too
    regions: torch.Tensor | None = None  # hard attention: (B, T) the regions read, EXPECTED where the expectation


class Decoder(nn.Module):
    def __init__(self, *, vocab_size: int, encoder_dim: int, embed_dim: int, attention_dim: int,
                 hidden_dim: int, dropout: float, scorer: str, attention: str = "soft") -> None:
        """`attention` is "soft" or "hard"; both have the same parameters."""
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"unknown attention {attention!r}; choose from {ATTENTIONS}")
        self.hard = attention == "hard"
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.attention = Attention(scorer=scorer, encoder_dim=encoder_dim, hidden_dim=hidden_dim,
                                   attention_dim=attention_dim)
        self.init_h = nn.Linear(encoder_dim, hidden_dim)
        self.init_c = nn.Linear(encoder_dim, hidden_dim)
        self.f_beta = nn.Linear(hidden_dim, 1)
        self.lstm = nn.LSTMCell(embed_dim + encoder_dim, hidden_dim)
        self.L_h = nn.Linear(hidden_dim, embed_dim)
        self.L_z = nn.Linear(encoder_dim, embed_dim)
        self.L_o = nn.Linear(embed_dim, vocab_size)
        self.dropout = nn.Dropout(dropout)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def init_state(self, features: torch.Tensor) -> DecoderState:
        """(B, P, E) -> h_0, c_0 from the mean annotation vector."""
        mean = features.mean(dim=1)  # (B, E)
        return DecoderState(torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)))

    def prepare(self, features: torch.Tensor) -> torch.Tensor:
        """Per-image attention keys, computed once for all steps."""
        return self.attention.project_keys(features)

    def recur(self, emb: torch.Tensor, state: DecoderState, features: torch.Tensor,
              keys: torch.Tensor, *, sliced: bool = False, rule: RegionRule | None = None) -> Recurrence:
        """Attention, gate and LSTM for one step; emb (B, D) is the previous word's embedding.

        `sliced=True` is for decoding without autograd (see `Attention.scores`). `rule` picks
        the region a hard model reads (default: the argmax); soft attention ignores it."""
        region = None
        if self.hard:
            alpha = self.attention.weights(features, keys, state.h, sliced=sliced)  # (B, P)
            focus = (rule or argmax_focus)(alpha)
            context, region = read_context(features, alpha, focus), focus.regions()  # (B, E), (B,)
        else:
            context, alpha = self.attention(features, keys, state.h, sliced=sliced)  # (B, E), (B, P)
        beta = torch.sigmoid(self.f_beta(state.h))  # (B, 1)
        z = beta * context  # (B, E) the gate applies to the region read as to the expectation
        h, c = self.lstm(torch.cat([emb, z], dim=1), (state.h, state.c))  # (B, H) each
        return Recurrence(DecoderState(h, c), z, alpha, beta, region)

    def readout(self, emb: torch.Tensor, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Deep output layer: (..., D), (..., H), (..., E) -> logits (..., V)."""
        return self.L_o(self.dropout(emb + self.L_h(h) + self.L_z(z)))

    def step(self, tokens: torch.Tensor, state: DecoderState, features: torch.Tensor,
             keys: torch.Tensor, *, sliced: bool = False, rule: RegionRule | None = None) -> StepOutput:
        """One word: tokens (B,) previous words -> logits (B, V) for the next word."""
        emb = self.embedding(tokens)  # (B, D)
        r = self.recur(emb, state, features, keys, sliced=sliced, rule=rule)
        return StepOutput(self.readout(emb, r.state.h, r.z), r.state, r.alpha, r.beta, r.region)

    def forward(self, features: torch.Tensor, captions: torch.Tensor, *, rule: RegionRule | None = None,
                regions: torch.Tensor | None = None) -> DecoderOutput:
        """Teacher forcing. captions (B, T+1) = <start> w_1 ... <end> <pad>...; no sorting.

        Hard attention reads the regions `rule` picks at each step (training passes a
        `RegionSampler`; default the argmax), or the given `regions` (B, T), EXPECTED allowed.

        Padded positions are computed too and masked out by the loss: sorting the batch by
        length to save that work is what made the tutorial code return a `sort_ind`. This is
        `step` unrolled, except that the readout, whose logits never feed back under teacher
        forcing, runs once on all T steps: one (B*T, D) x (D, V) matmul instead of T small
        ones (bench/results.md has the training-step figure).
        """
        if rule is not None and regions is not None:
            raise ValueError("give a rule or fixed regions, not both")
        keys = self.prepare(features)
        state = self.init_state(features)
        emb = self.embedding(captions[:, :-1])  # (B, T, D)
        hs, zs, alphas, read = [], [], [], []
        for t in range(emb.size(1)):
            r = self.recur(emb[:, t], state, features, keys,
                           rule=fixed_focus(regions[:, t]) if regions is not None else rule)
            state = r.state
            hs.append(state.h)
            zs.append(r.z)
            alphas.append(r.alpha)
            read.append(r.region)
        logits = self.readout(emb, torch.stack(hs, dim=1), torch.stack(zs, dim=1))  # (B, T, V)
        chosen = torch.stack(read, dim=1) if self.hard else None  # (B, T)
        return DecoderOutput(logits, torch.stack(alphas, dim=1), chosen)  # (B, T, V), (B, T, P)
