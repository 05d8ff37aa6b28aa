"""Shared fixtures: tiny models and generated data, so every test runs offline on a CPU."""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_decoder(scorer: str = "additive", vocab_size: int = 12, encoder_dim: int = 8, dropout: float = 0.0):
    from captioner.model.decoder import Decoder

    return Decoder(vocab_size=vocab_size, encoder_dim=encoder_dim, embed_dim=6, attention_dim=5,
                   hidden_dim=7, dropout=dropout, scorer=scorer)
