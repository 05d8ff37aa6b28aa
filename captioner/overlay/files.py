"""Overlays on disk: the only module of :mod:`captioner.overlay` that writes files.

Rendering stays pure in :mod:`captioner.overlay.render` and :mod:`captioner.overlay.html`;
this module only encodes what they return and saves it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.overlay.html import render_html
from captioner.overlay.options import OverlayOptions, OverlaySizes, check_choice
from captioner.overlay.render import _as_rgb, _check_sequence, animate, panel_grid


#: What :func:`overlay_bytes` encodes: the panel grid, the animation, the interactive page.
KINDS = ("png", "gif", "html")


def encode_gif(frames: Sequence[Image.Image], duration_ms: int = 700, loop: int = 0) -> bytes:
    """Frames (e.g. from :func:`~captioner.overlay.render.animate`) as the bytes of an animated
    GIF; ``loop=0`` repeats forever."""
    if not frames:
        raise ValueError("need at least one frame to write a GIF")
    first, *rest = [_as_rgb(f) for f in frames]
    buf = io.BytesIO()
    first.save(buf, format="GIF", save_all=True, append_images=rest, duration=duration_ms, loop=loop)
    return buf.getvalue()


def save_gif(
    frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 700, loop: int = 0
) -> Path:
    """Write frames (e.g. from :func:`~captioner.overlay.render.animate`) as an animated GIF.

    ``loop=0`` repeats forever. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    data = encode_gif(frames, duration_ms=duration_ms, loop=loop)
    path = Path(path)
    path.write_bytes(data)
    return path


def overlay_bytes(
    kind: str,
    image: Image.Image,
    tokens: Sequence[str],
    alphas: np.ndarray,
    *,
    caption: str | None = None,
    options: OverlayOptions = OverlayOptions(),
    sizes: OverlaySizes = OverlaySizes(),
) -> bytes:
    """One overlay file's contents, exactly as :func:`write_overlays` writes it: ``kind`` "png"
    (the panel grid), "gif" (the animation) or "html" (the interactive page, UTF-8; ``caption``
    is its display text). The web server sends these bytes instead of writing them."""
    check_choice("kind", kind, KINDS)
    if kind == "png":
        grid = panel_grid(
            image,
            tokens,
            alphas,
            columns=sizes.columns,
            panel_size=sizes.panel_size,
            options=options,
        )
        buf = io.BytesIO()
        grid.save(buf, format="PNG")
        return buf.getvalue()
    if kind == "gif":
        frames = animate(image, tokens, alphas, size=sizes.gif_size, options=options)
        return encode_gif(frames, duration_ms=sizes.gif_duration_ms)
    page = render_html(
        image,
        tokens,
        alphas,
        caption=caption,
        max_side=sizes.html_max_side,
        options=options,
    )
    return page.encode("utf-8")


def write_overlays(
    out_dir: str | Path,
    stem: str,
    image: Image.Image,
    tokens: Sequence[str],
    alphas: np.ndarray,
    *,
    png: bool = True,
    gif: bool = False,
    html: bool = False,
    caption: str | None = None,
    options: OverlayOptions = OverlayOptions(),
    sizes: OverlaySizes = OverlaySizes(),
) -> dict[str, Path]:
    """Write ``stem.png`` (panel grid), ``stem.gif`` and/or ``stem.html`` into ``out_dir``.

    ``options`` (how each map is drawn) reaches all three the same way; ``sizes`` sets their
    pixel sizes. ``caption`` is the display text above the HTML page's words. Creates
    ``out_dir`` if needed and returns ``{"png" | "gif" | "html": path}`` for what it wrote.
    """
    _check_sequence(tokens, alphas)  # fail before creating anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for kind, wanted in zip(KINDS, (png, gif, html), strict=True):
        if wanted:
            data = overlay_bytes(kind, image, tokens, alphas, caption=caption, options=options, sizes=sizes)
            paths[kind] = out / f"{stem}.{kind}"
            paths[kind].write_bytes(data)
    return paths
