"""Annotations, datasets and the synthetic scenes generator."""
