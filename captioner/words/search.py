"""Decoding: greedy and beam search, batched over images and beams.

Both call `Decoder.step`. Beam search keeps K hypotheses per image in one (B*K) batch. A
hypothesis that emits <end> stays in its slot and is extended only by <pad> at zero cost, so
finished and live hypotheses compete for the K slots by score and no Python loop over images
or beams is needed. With K = 1 this is exactly greedy decoding.

Work that cannot change the result is skipped:
- the first step runs once per image, not K times (all K beams start from the same state);
- an image leaves the batch once its result is settled: all K hypotheses have ended, or, when
  ranking by raw log-probability (length_penalty 0), its n_best highest-scoring slots have
  ended and every live one scores strictly lower. Log-probabilities are <= 0, so extending a
  live hypothesis never raises its score, and the answer is the one running on would give.
So a batch costs the sum of its captions' lengths rather than its longest caption times the
batch size.

A hard-attention model is decoded deterministically: each step reads the argmax region
(`hard_decode="argmax"`, the default), and its hypothesis records that choice as a one-hot
map, or reads the expectation (`"expectation"`, as the authors' code does at test time), and
records alpha. Soft models ignore `hard_decode`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from captioner.model.decoder import Decoder
from captioner.model.hard_attention import decode_rule, region_map


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]  # word ids, without <start> and <end>
    score: float  # sum of log-probabilities of the words and <end>
    alphas: torch.Tensor  # (len(tokens), P): one attention map per word (hard attention: the region read)


class _Step(NamedTuple):
    origin: torch.Tensor  # (N,) the input row each of the step's N new beams extends
    tokens: torch.Tensor  # (N,) the word it appended
    alpha: torch.Tensor  # (rows in, P) the attention of each input row at this step
    kept: torch.Tensor | None = None  # new beams that stayed in the batch, if images left after it


def _backtrack(trail: list[_Step], slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Follow backpointers from beams `slots` (n,) of the last step: (n, T) words and (n, T, P)
    attention maps, first step first."""
    words, maps = [], []
    for i in range(len(trail) - 1, -1, -1):
        st = trail[i]
        parent = st.origin[slots]  # (n,) rows of this step's input
        words.append(st.tokens[slots])
        maps.append(st.alpha[parent])
        if i:
            prev = trail[i - 1]
            slots = parent if prev.kept is None else prev.kept[parent]
    return torch.stack(words[::-1], dim=1), torch.stack(maps[::-1], dim=1)  # (n, T), (n, T, P)


def _trim(tokens: torch.Tensor, alphas: torch.Tensor, score: float, end_id: int) -> Hypothesis:
    """tokens (T,) alphas (T, P) -> a hypothesis cut at its first <end>."""
    ids = tokens.tolist()
    n = ids.index(end_id) if end_id in ids else len(ids)
    return Hypothesis(ids[:n], score, alphas[:n].clone())


def _log_probs(logits: torch.Tensor, banned: tuple[int, ...]) -> torch.Tensor:
    """(N, V) logits -> log-probabilities, with the banned ids (<start>, <pad>, and <end> before
    min_len) at -inf; the other scores stay the model's own log-probabilities. In place on
    log_softmax's fresh output: at V = 10,000 each extra (N, V) pass costs as much as the
    attention."""
    logp = logits.float().log_softmax(dim=1)  # (N, V)
    logp[:, list(banned)] = float("-inf")
    return logp


@torch.no_grad()
def greedy_search(decoder: Decoder, features: torch.Tensor, *, start_id: int, end_id: int,
                  pad_id: int, max_len: int = 50, min_len: int = 1, hard_decode: str = "argmax") -> list[Hypothesis]:
    """features (B, P, E) -> one hypothesis per image, taking the argmax word at each step."""
    rule = decode_rule(hard_decode)
    B = features.size(0)
    keys = decoder.prepare(features)
    state = decoder.init_state(features)
    tokens = torch.full((B,), start_id, dtype=torch.long, device=features.device)
    finished = torch.zeros(B, dtype=torch.bool, device=features.device)
    scores = features.new_zeros(B, dtype=torch.float32)
    out_tokens, out_alphas = [], []
    for t in range(max_len):
        out = decoder.step(tokens, state, features, keys, sliced=True, rule=rule)
        banned = (start_id, pad_id, end_id) if t < min_len else (start_id, pad_id)
        logp = _log_probs(out.logits, banned)  # (B, V)
        best, tokens = logp.max(dim=1)  # (B,), (B,)
        scores += torch.where(finished, torch.zeros_like(best), best)
        finished = finished | (tokens == end_id)
        out_tokens.append(tokens)
        out_alphas.append(region_map(out.alpha, out.region).float())
        state = out.state
        if bool(finished.all()):
            break
    toks = torch.stack(out_tokens, dim=1).cpu()  # (B, T)
    alps = torch.stack(out_alphas, dim=1).cpu()  # (B, T, P)
    return [_trim(toks[b], alps[b], float(scores[b]), end_id) for b in range(B)]


@torch.no_grad()
def beam_search(decoder: Decoder, features: torch.Tensor, *, start_id: int, end_id: int,
                pad_id: int, beam_size: int = 3, max_len: int = 50, min_len: int = 1,
                length_penalty: float = 0.0, n_best: int = 1, settle_early: bool = True,
                leave_when: int = 8, hard_decode: str = "argmax") -> list[list[Hypothesis]]:
    """features (B, P, E) -> for each image, its n_best hypotheses, best first.

    <end> is not allowed before `min_len` words (default 1: a caption is never empty, which
    matters for off-domain images, where <end> can be the most likely first token).

    The final ranking divides each score by len**length_penalty (len counts <end>); 0 ranks
    by the raw log-probability, as the paper's implementation does.

    `hard_decode` ("argmax" or "expectation") is how a hard-attention model reads its context
    (see the module docstring).

    Two switches trade nothing in the result for speed (the tests turn them off to check it):
    `settle_early` lets an image stop once its n_best best slots have ended and outscore every
    live one (length_penalty 0 only); an image that has ended leaves the batch once ended
    images are at least 1/`leave_when` of it.
    """
    if leave_when < 1:
        raise ValueError(f"leave_when must be at least 1, got {leave_when}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be in 1..beam_size, got {n_best}")
    if max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    rule = decode_rule(hard_decode)
    B = features.size(0)
    K = beam_size
    device = features.device
    keys = decoder.prepare(features)
    state = decoder.init_state(features)  # (B, H) each
    # Every image's beams are rows b*R .. b*R+R-1 of one batch; they share the image's
    # features and keys (the attention groups them), so those are not copied R times. R = 1
    # for the first step, whose K beams would all be the same, and K after it (also from the
    # start when K exceeds the vocabulary, which one row's candidates could not fill).
    R = 1 if K <= decoder.L_o.out_features else K
    state = type(state)(*(s.repeat_interleave(R, dim=0) for s in state))  # (B*R, H) each
    tokens = torch.full((B * R,), start_id, dtype=torch.long, device=device)
    scores = torch.full((B, R), float("-inf"), device=device)
    scores[:, 0] = 0.0  # with R = K, identical beams: expand only the first
    finished = torch.zeros(B * R, dtype=torch.bool, device=device)
    lengths = torch.zeros(B * R, dtype=torch.long, device=device)
    # Backpointers instead of growing per-beam histories (copying those every step is
    # quadratic in the caption length): for each step, the row each new beam extends, its
    # word, the step's attention maps per extended row, and which rows survived the step.
    trail: list[_Step] = []
    settle_early = settle_early and length_penalty == 0.0
    # The images still being searched (indices into the input); an image whose result is
    # settled leaves the batch and later steps skip its rows.
    alive = torch.arange(B, device=device)
    done: list[tuple[torch.Tensor, ...] | None] = [None] * B  # per image: tokens, alphas, scores, lengths
    for t in range(max_len):
        Ba = alive.numel()
        out = decoder.step(tokens, state, features, keys, sliced=True, rule=rule)
        banned = (start_id, pad_id, end_id) if t < min_len else (start_id, pad_id)
        logp = _log_probs(out.logits, banned)  # (Ba*R, V)
        V = logp.size(1)
        # A finished hypothesis can only continue with <pad>, at no cost.
        if bool(finished.any()):
            done_row = torch.full_like(logp[0], float("-inf"))
            done_row[pad_id] = 0.0
            logp[finished] = done_row
        cand = logp.add_(scores.view(Ba * R, 1)).view(Ba, R * V)  # (Ba, R*V)
        scores, flat = cand.topk(K, dim=1)  # (Ba, K), best first
        base = (torch.arange(Ba, device=device) * R).unsqueeze(1)  # (Ba, 1) first row of each image
        origin = (base + flat // V).view(Ba * K)  # (Ba*K,) row each new beam extends
        tokens = (flat % V).view(Ba * K)  # (Ba*K,)
        R = K
        was_finished = finished[origin]
        lengths = lengths[origin] + (~was_finished).long()
        finished = was_finished | (tokens == end_id)
        trail.append(_Step(origin, tokens, region_map(out.alpha, out.region).float()))
        state = type(out.state)(*(s[origin] for s in out.state))
        ended = _settled(finished.view(Ba, K), scores, n_best, early=settle_early, last=t == max_len - 1)
        # Leaving copies the remaining images' features, so wait until an eighth of the batch
        # has ended; until then ended images idle along (on <pad> where their slots ended).
        if int(ended.sum()) * leave_when < Ba:
            continue
        _retire(done, trail, ended.nonzero().view(-1), alive, scores, lengths)
        keep = ~ended  # (Ba,)
        if not bool(keep.any()):
            break
        rows = keep.repeat_interleave(K)  # (Ba*K,)
        alive, features, keys, scores = alive[keep], features[keep], keys[keep], scores[keep]
        tokens, finished, lengths = tokens[rows], finished[rows], lengths[rows]
        trail[-1] = trail[-1]._replace(kept=rows.nonzero().view(-1))
        state = type(state)(*(s[rows] for s in state))
    return [_ranked(*image, n_best=n_best, length_penalty=length_penalty, end_id=end_id) for image in done]


def _retire(done: list, trail: list[_Step], leaving: torch.Tensor, alive: torch.Tensor, scores: torch.Tensor,
            lengths: torch.Tensor) -> None:
    """Store the final slots (tokens, maps, scores, lengths) of the images `leaving` (n,), indices
    into the batch's `alive` images, in `done` at their input positions."""
    K = scores.size(1)
    slots = (leaving.unsqueeze(1) * K + torch.arange(K, device=leaving.device)).view(-1)  # (n*K,)
    toks, alps = _backtrack(trail, slots)  # (n*K, T), (n*K, T, P)
    ids = alive.tolist()
    for i, j in enumerate(leaving.tolist()):
        rows = slice(i * K, (i + 1) * K)
        done[ids[j]] = (toks[rows], alps[rows], scores[j].clone(), lengths[j * K:(j + 1) * K].clone())


def _settled(ended_slots: torch.Tensor, scores: torch.Tensor, n_best: int, *, early: bool,
             last: bool) -> torch.Tensor:
    """(Ba, K) ended slots and their scores (best first) -> (Ba,) images whose result is final:
    every slot ended; or (`early`) the n_best best ended and outscore every live slot, which
    can only lose score; or the last step."""
    ended = ended_slots.all(dim=1)  # (Ba,)
    if early:
        best_live = scores.masked_fill(ended_slots, float("-inf")).amax(dim=1)  # (Ba,)
        ended |= ended_slots[:, :n_best].all(dim=1) & (scores[:, n_best - 1] > best_live)
    if last:
        ended[:] = True
    return ended


def _ranked(toks: torch.Tensor, alps: torch.Tensor, raw: torch.Tensor, lens: torch.Tensor, *, n_best: int,
            length_penalty: float, end_id: int) -> list[Hypothesis]:
    """One image's K final slots -> its n_best hypotheses, ranked by score / len**length_penalty."""
    ranked = raw / lens.clamp_min(1).float() ** length_penalty  # (K,)
    order = ranked.argsort(descending=True, stable=True)[:n_best].tolist()
    toks, alps, raw = toks.cpu(), alps.cpu(), raw.cpu()
    return [_trim(toks[k], alps[k], float(raw[k]), end_id) for k in order]
