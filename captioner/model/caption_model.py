"""The captioning model: Encoder (image -> regions) + Decoder (regions -> words)."""
from __future__ import annotations

import torch
from torch import nn

from captioner.config import ModelConfig
from captioner.features.encoder import Encoder, TrainedStages, encoder_dim
from captioner.model.decoder import Decoder, DecoderOutput
from captioner.model.hard_attention import RegionRule


class CaptionModel(nn.Module):
    def __init__(self, *, config: ModelConfig, vocab_size: int) -> None:
        """Freshly initialised weights; `captioner.checkpoint.new_model` adds the pretrained
        encoder's, and `captioner.checkpoint.load_model` a checkpoint's."""
        super().__init__()
        self.config = config
        self.encoder = Encoder(config=config)
        self.decoder = Decoder(vocab_size=vocab_size, encoder_dim=encoder_dim(config),
                               embed_dim=config.embed_dim, attention_dim=config.attention_dim,
                               hidden_dim=config.hidden_dim, dropout=config.dropout,
                               scorer=config.scorer, attention=config.attention)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, P, E)."""
        return self.encoder(images)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, *, rule: RegionRule | None = None,
                regions: torch.Tensor | None = None) -> DecoderOutput:
        """Teacher-forced logits (B, T, V) and alphas (B, T, P) for captions (B, T+1); a hard
        model reads the regions `rule` picks, or the given `regions` (see `Decoder.forward`)."""
        return self.decoder(self.encode(images), captions, rule=rule, regions=regions)

    def decoder_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.decoder.parameters() if p.requires_grad]

    def encoder_parameters(self) -> list[nn.Parameter]:
        """The trainable (fine-tuned) encoder parameters; empty when frozen."""
        return [p for p in self.encoder.parameters() if p.requires_grad]


class FromFrozenStages(nn.Module):
    """A fine-tuning model as its training sees it from the feature cache of its frozen stages:
    (B, h * w, C) cached rows -> the trained encoder stages -> regions -> the decoder. It holds
    the model's own encoder and decoder, so a step on it trains the model, and it decodes like a
    CaptionModel (`encoder`, `decoder`) for validation."""

    def __init__(self, model: CaptionModel) -> None:
        super().__init__()
        self.config = model.config
        self.encoder = TrainedStages(model.encoder)
        self.decoder = model.decoder

    def forward(self, rows: torch.Tensor, captions: torch.Tensor, *, rule: RegionRule | None = None,
                regions: torch.Tensor | None = None) -> DecoderOutput:
        return self.decoder(self.encoder(rows), captions, rule=rule, regions=regions)
