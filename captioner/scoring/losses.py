"""Training losses as pure functions of tensors: masked cross-entropy, the attention penalty,
and hard attention's REINFORCE and entropy terms with their moving-average baseline."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


def masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor,
                         label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy over real tokens.

    logits (B, T, V), targets (B, T), mask (B, T) bool: True where targets are words or <end>.
    """
    B, T, V = logits.shape
    per_token = F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T),
                                reduction="none", label_smoothing=label_smoothing)  # (B*T,)
    m = mask.reshape(B * T).to(per_token.dtype)
    return (per_token * m).sum() / m.sum().clamp_min(1.0)


def doubly_stochastic_penalty(alphas: torch.Tensor, mask: torch.Tensor, lam: float) -> torch.Tensor:
    """lambda * sum_i (1 - sum_t alpha_ti)^2, averaged over regions and images.

    Encourages the model to look at every region at some point of the caption (paper eq. 14).
    alphas (B, T, P), mask (B, T). Steps on padding are excluded from the sum over t. The
    average over the P regions (rather than the plain sum) is what popular implementations
    use, so lambda = 1 means the same here as there.
    """
    if lam == 0.0:
        return alphas.new_zeros(())
    coverage = (alphas * mask.unsqueeze(2).to(alphas.dtype)).sum(dim=1)  # (B, P)
    return lam * ((1.0 - coverage) ** 2).mean()


# ----------------------------------------------------------------------------- hard attention
#: Below this, an alpha's log is clamped: an underflowed weight would give log 0 = -inf.
_TINY = 1e-12


class HardAttentionTerms(NamedTuple):
    surrogate: torch.Tensor  # () add to the loss: value -lambda_e * entropy, gradient eq. 12's other terms
    reward: torch.Tensor  # (B,) R_n: caption n's log-likelihood per word under the regions it read
    sampled: torch.Tensor  # (B,) bool: captions that read sampled regions (not the expectation)
    entropy: torch.Tensor  # () mean entropy of alpha_t over real steps, in nats


def caption_log_likelihood(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) log p(y_n | s_n, a) / len_n: the mean log-probability of each caption's words and
    <end> (no label smoothing). Per word, as capgen.py's reward (masked_cost.mean(0)) is, so
    that lambda_r means the same for short and long captions.

    logits (B, T, V), targets (B, T), mask (B, T) bool.
    """
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.reshape(B * T, V).float(), targets.reshape(B * T), reduction="none")  # (B*T,)
    m = mask.to(nll.dtype)
    return -(nll.view(B, T) * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B,)


def hard_attention_terms(alphas: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor, reward: torch.Tensor,
                         baseline: torch.Tensor, *, reinforce_weight: float,
                         entropy_weight: float) -> HardAttentionTerms:
    """The REINFORCE and entropy terms of the paper's learning rule (eq. 12) for hard attention.

    alphas (B, T, P) the distributions, regions (B, T) the regions read (EXPECTED where the
    expectation was), mask (B, T) real steps, reward (B,) from `caption_log_likelihood`,
    baseline () the moving average b. The likelihood term of eq. 12 is the cross-entropy of
    the captions given the regions read, which the caller computes; this adds

        -lambda_r (1/B) sum_n (R_n - b) sum_t m_nt log alpha_nt(s_nt)  -  lambda_e (1/N) sum_{n,t} m_nt H(alpha_nt)

    with B the captions, N = sum m the words, and R_n, b held constant. R_n is the caption's
    per-word log-likelihood, so the score-function term of the per-word cross-entropy's
    gradient is (R_n - b) times the sum (not the mean) of the caption's log alpha(s): with
    lambda_r = 1 and lambda_e = 0 the whole gradient is an unbiased estimate of the gradient of
    E_s[cross-entropy] (tested, by enumerating every region path). Steps that read the
    expectation sampled nothing, so have no REINFORCE term (their gradient flows through the
    soft context); the entropy bonus applies to every step. As in eq. 12, every term is a mean
    over the batch (capgen.py adds its REINFORCE and entropy gradients summed over the batch
    to a batch-mean likelihood, so its effective weights grow with the batch size).

    The REINFORCE part enters as x - x.detach(): its gradient is the score-function term, its
    value is 0, so the returned loss still reads as cross-entropy + penalty - entropy bonus.
    """
    m = mask.to(alphas.dtype)  # (B, T)
    n = m.sum().clamp_min(1.0)
    read = (regions >= 0) & mask  # (B, T) steps that sampled a region
    picked = alphas.gather(2, regions.clamp_min(0).unsqueeze(2)).squeeze(2)  # (B, T) alpha_t(s_t)
    log_p = picked.clamp_min(_TINY).log()  # (B, T) log p(s_t | s_<t, a)
    advantage = (reward - baseline).detach()  # (B,)
    captions = mask.any(dim=1).sum().clamp_min(1).to(log_p.dtype)
    score = reinforce_weight * (advantage.unsqueeze(1) * log_p * read.to(log_p.dtype)).sum() / captions
    entropy = -(alphas * alphas.clamp_min(_TINY).log()).sum(dim=2)  # (B, T)
    mean_entropy = (entropy * m).sum() / n
    surrogate = -(score - score.detach()) - entropy_weight * mean_entropy
    return HardAttentionTerms(surrogate, reward.detach(), read.any(dim=1), mean_entropy.detach())


def updated_baseline(baseline: torch.Tensor, reward: torch.Tensor, sampled: torch.Tensor,
                     decay: float) -> torch.Tensor:
    """b_k = decay * b_{k-1} + (1 - decay) * mean R over the captions that sampled their regions
    (paper 4.1: b_k = 0.9 b_{k-1} + 0.1 log p(y | s_k, a)). A batch where every image read
    the expectation leaves b as it was. Tensors in and out: no GPU sync per step."""
    count = sampled.sum()
    mean = (reward * sampled.to(reward.dtype)).sum() / count.clamp_min(1).to(reward.dtype)
    return torch.where(count > 0, decay * baseline + (1.0 - decay) * mean, baseline)
