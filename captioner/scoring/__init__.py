"""Losses and metrics: COCO caption metrics, grounding and object mentions."""
