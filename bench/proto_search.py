"""Prototype fix, measured by the decoding benchmark: beams attend to their image's features
without copying them K times.

`beam_search` repeats features (B, P, E) and keys (B, P, A) K times, so every step the context
is a matrix-vector product per beam over a (B*K, P, E) tensor (257 MB at B=32, K=5, E=2048)
and the K copies of an image's keys are read K times. Here the K beams of an image are a
(B, K, ...) group: query (B, K, 1, A) + keys (B, 1, P, A), and context = alpha (B, K, P) bmm
features (B, P, E), one matrix-matrix product per image. The arithmetic is the same.

Upstream this is a change in `Attention.forward` (accept hidden (B*K, H) with features
(B, P, E) and group by K = hidden.size(0) // features.size(0); the scorers other than
"additive" group the same way) and two deleted `repeat_interleave` lines in `beam_search`;
`Decoder.step` stays the one step. The copy of `beam_search` below differs from
`captioner/search.py` only in those two lines and in calling `_step`.
"""
from __future__ import annotations

import torch

from captioner.decoder import Decoder, DecoderState, StepOutput
from captioner.search import Hypothesis, _never_generate, _trim


def _attend(decoder: Decoder, features: torch.Tensor, keys: torch.Tensor,
            hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """features (B, P, E), keys (B, P, A), hidden (B*K, H) -> context (B*K, E), alpha (B*K, P)."""
    att = decoder.attention
    if att.scorer != "additive":
        raise NotImplementedError("the prototype covers the additive scorer (both benchmarked models)")
    B, P, E = features.shape
    K = hidden.size(0) // B
    query = att.query_proj(hidden).view(B, K, 1, -1)  # (B, K, 1, A)
    e = att.score(torch.tanh(keys.unsqueeze(1) + query)).squeeze(3)  # (B, K, P)
    alpha = e.softmax(dim=2)  # (B, K, P)
    context = torch.bmm(alpha, features)  # (B, K, E)
    return context.view(B * K, E), alpha.view(B * K, P)


def _step(decoder: Decoder, tokens: torch.Tensor, state: DecoderState, features: torch.Tensor,
          keys: torch.Tensor) -> StepOutput:
    """`Decoder.step` with the grouped attention above."""
    emb = decoder.embedding(tokens)  # (B*K, D)
    context, alpha = _attend(decoder, features, keys, state.h)  # (B*K, E), (B*K, P)
    beta = torch.sigmoid(decoder.f_beta(state.h))  # (B*K, 1)
    z = beta * context  # (B*K, E)
    h, c = decoder.lstm(torch.cat([emb, z], dim=1), (state.h, state.c))  # (B*K, H) each
    logits = decoder.L_o(decoder.dropout(emb + decoder.L_h(h) + decoder.L_z(z)))  # (B*K, V)
    return StepOutput(logits, DecoderState(h, c), alpha, beta)


@torch.no_grad()
def beam_search_shared(decoder: Decoder, features: torch.Tensor, *, start_id: int, end_id: int,
                       pad_id: int, beam_size: int = 3, max_len: int = 50, length_penalty: float = 0.0,
                       n_best: int = 1) -> list[list[Hypothesis]]:
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in 1..beam_size, got {n_best}")
    B, P, _ = features.shape
    K = beam_size
    device = features.device
    keys = decoder.prepare(features)  # (B, P, A): not repeated
    state = decoder.init_state(features)
    state = type(state)(*(s.repeat_interleave(K, dim=0) for s in state))  # (B*K, H) each
    tokens = torch.full((B * K,), start_id, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * K, dtype=torch.long, device=device)
    hist_tokens = torch.empty(B * K, 0, dtype=torch.long, device=device)
    hist_alphas = torch.empty(B * K, 0, P, device=device)
    base = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    for _ in range(max_len):
        out = _step(decoder, tokens, state, features, keys)
        logp = _never_generate(out.logits.float().log_softmax(dim=1), start_id, pad_id)  # (B*K, V)
        V = logp.size(1)
        done_row = torch.full_like(logp[0], float("-inf"))
        done_row[pad_id] = 0.0
        logp = torch.where(finished.unsqueeze(1), done_row, logp)
        cand = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        scores, flat = cand.topk(K, dim=1)  # (B, K)
        origin = (base + flat // V).view(B * K)  # (B*K,)
        tokens = (flat % V).view(B * K)
        was_finished = finished[origin]
        lengths = lengths[origin] + (~was_finished).long()
        finished = was_finished | (tokens == end_id)
        hist_tokens = torch.cat([hist_tokens[origin], tokens.unsqueeze(1)], dim=1)  # (B*K, t)
        step_alpha = out.alpha.float()[origin].unsqueeze(1)  # (B*K, 1, P)
        hist_alphas = torch.cat([hist_alphas[origin], step_alpha], dim=1)  # (B*K, t, P)
        state = type(out.state)(*(s[origin] for s in out.state))
        if bool(finished.all()):
            break
    ranked = scores / lengths.view(B, K).clamp_min(1).float() ** length_penalty  # (B, K)
    order = ranked.argsort(dim=1, descending=True, stable=True)[:, :n_best]  # (B, n_best)
    toks, alps, raw = hist_tokens.cpu(), hist_alphas.cpu(), scores.cpu()
    results = []
    for b, row in enumerate(order.cpu().tolist()):
        results.append([_trim(toks[b * K + k], alps[b * K + k], float(raw[b, k]), end_id) for k in row])
    return results
