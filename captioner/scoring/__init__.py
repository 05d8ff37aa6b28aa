"""Losses and metrics: COCO caption metrics (with their PTB tokenizer), grounding and object mentions."""
