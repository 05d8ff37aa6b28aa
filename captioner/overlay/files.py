"""Overlays on disk: the only module of :mod:`captioner.overlay` that writes files.

Rendering stays pure in :mod:`captioner.overlay.render` and :mod:`captioner.overlay.html`;
this module only encodes what they return and saves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from captioner.overlay.html import render_html
from captioner.overlay.options import OverlayOptions, OverlaySizes
from captioner.overlay.render import _as_rgb, _check_sequence, animate, panel_grid


def save_gif(
    frames: Sequence[Image.Image], path: str | Path, duration_ms: int = 700, loop: int = 0
) -> Path:
    """Write frames (e.g. from :func:`~captioner.overlay.render.animate`) as an animated GIF.

    ``loop=0`` repeats forever. Returns ``path`` as a :class:`~pathlib.Path`.
    """
    if not frames:
        raise ValueError("need at least one frame to write a GIF")
    path = Path(path)
    first, *rest = [_as_rgb(f) for f in frames]
    first.save(
        path,
        format="GIF",
        save_all=True,
        append_images=rest,
        duration=duration_ms,
        loop=loop,
    )
    return path


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
    if png:
        grid = panel_grid(
            image,
            tokens,
            alphas,
            columns=sizes.columns,
            panel_size=sizes.panel_size,
            options=options,
        )
        paths["png"] = out / f"{stem}.png"
        grid.save(paths["png"], format="PNG")
    if gif:
        frames = animate(image, tokens, alphas, size=sizes.gif_size, options=options)
        paths["gif"] = save_gif(frames, out / f"{stem}.gif", duration_ms=sizes.gif_duration_ms)
    if html:
        page = render_html(
            image,
            tokens,
            alphas,
            caption=caption,
            max_side=sizes.html_max_side,
            options=options,
        )
        paths["html"] = out / f"{stem}.html"
        paths["html"].write_text(page, encoding="utf-8")
    return paths
