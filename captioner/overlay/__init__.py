"""Attention overlays: render each word's map on the image, as PNG, GIF and HTML."""
