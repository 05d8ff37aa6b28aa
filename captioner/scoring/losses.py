"""Training losses as pure functions of tensors: masked cross-entropy and the attention penalty."""
from __future__ import annotations

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
