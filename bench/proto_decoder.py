"""Prototype fix, measured by the profiling benchmark: the deep output layer out of the loop.

In teacher forcing the logits never feed back into the recurrence, so
`L_o(dropout(E y + L_h h_t + L_z z_t))` can run once on all T steps, (B*T, D) x (D, V), instead
of T times on (B, D). Forward does the same arithmetic in fewer, larger matmuls; backward
computes the V x D weight gradient once instead of accumulating T of them.

Upstream this is a split of `Decoder.step` into `recur` (attention + LSTM) and `readout`
(deep output), with `step = readout(recur(...))`, so one implementation stays shared by
teacher forcing, greedy and beam search; here a subclass overrides `forward` only.
"""
from __future__ import annotations

import torch

from captioner.decoder import Decoder, DecoderOutput, DecoderState


class HoistedReadoutDecoder(Decoder):
    def forward(self, features: torch.Tensor, captions: torch.Tensor) -> DecoderOutput:
        keys = self.prepare(features)
        state = self.init_state(features)
        emb = self.embedding(captions[:, :-1])  # (B, T, D)
        hs, zs, alphas = [], [], []
        for t in range(emb.size(1)):
            context, alpha = self.attention(features, keys, state.h)  # (B, E), (B, P)
            beta = torch.sigmoid(self.f_beta(state.h))  # (B, 1)
            z = beta * context  # (B, E)
            h, c = self.lstm(torch.cat([emb[:, t], z], dim=1), (state.h, state.c))  # (B, H) each
            state = DecoderState(h, c)
            hs.append(h)
            zs.append(z)
            alphas.append(alpha)
        h_all, z_all = torch.stack(hs, dim=1), torch.stack(zs, dim=1)  # (B, T, H), (B, T, E)
        logits = self.L_o(self.dropout(emb + self.L_h(h_all) + self.L_z(z_all)))  # (B, T, V)
        return DecoderOutput(logits, torch.stack(alphas, dim=1))  # (B, T, V), (B, T, P)
