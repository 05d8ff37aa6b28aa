"""How overlays look and how big the written files are: checked once, when they are built.

:class:`OverlayOptions` is the one object every renderer takes, so a choice made on the command
line reaches the PNG, the GIF and the HTML page alike. Because it validates in
``__post_init__`` and is frozen, a renderer never sees a bad value and never re-checks one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

MODES = ("smooth", "nearest")  # upsampling: bicubic blobs, or the exact G x G cells
STYLES = ("heat", "spotlight")  # colour layer mixed in, or unattended pixels darkened


def check_choice(name: str, value: object, allowed: Sequence[str]) -> None:
    """Raise ValueError naming ``name`` and ``allowed`` unless ``value`` is one of them."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}")


def check_positive(name: str, value: object) -> None:
    """Raise ValueError unless ``value`` is an int >= 1 (pixel sizes, counts)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class OverlayOptions:
    """How each word's attention map is drawn over the image; shared by every renderer.

    Attributes:
        mode: one of :data:`MODES`. "smooth" upsamples bicubically (the soft blobs of the
            paper's figures); "nearest" draws blocky cells, exactly what the model attends over.
        style: one of :data:`STYLES`. "heat" mixes a colormapped heat map into the image at a
            uniform ``opacity`` (readable at a glance); "spotlight" darkens the image where
            attention is low, as in the paper, so the attended content itself stays visible.
        cmap: a name in ``matplotlib.colormaps``; used by the heat style only.
        opacity: in [0, 1]. Heat: weight of the colour layer; spotlight: how dark fully
            unattended pixels become. 0 leaves the image untouched in both styles.
    """

    mode: str = "smooth"
    style: str = "heat"
    cmap: str = "jet"
    opacity: float = 0.55

    def __post_init__(self) -> None:
        check_choice("OverlayOptions.mode", self.mode, MODES)
        check_choice("OverlayOptions.style", self.style, STYLES)
        import matplotlib  # only when options are made: `captioner --help` need not load it

        if not isinstance(self.cmap, str) or self.cmap not in matplotlib.colormaps:
            raise ValueError(
                "OverlayOptions.cmap must name a matplotlib colormap (one of "
                f"matplotlib.colormaps, e.g. 'jet', 'viridis', 'gray'), got {self.cmap!r}"
            )
        if (
            isinstance(self.opacity, bool)
            or not isinstance(self.opacity, Real)
            or not math.isfinite(self.opacity)
            or not 0.0 <= self.opacity <= 1.0
        ):
            raise ValueError(
                f"OverlayOptions.opacity must be a number in [0, 1], got {self.opacity!r}"
            )
        # A plain float, so equal options compare and hash equal whatever number type came in.
        object.__setattr__(self, "opacity", float(self.opacity))


@dataclass(frozen=True)
class OverlaySizes:
    """Pixel sizes of the files :func:`captioner.overlay.files.write_overlays` writes.

    Attributes:
        columns: panels per row of the PNG grid before it wraps.
        panel_size: longer side of each PNG panel.
        gif_size: longer side of the image part of each GIF frame.
        gif_duration_ms: how long each GIF frame shows.
        html_max_side: longer side of the images inlined in the HTML page.
    """

    columns: int = 5
    panel_size: int = 224
    gif_size: int = 320
    gif_duration_ms: int = 700
    html_max_side: int = 384

    def __post_init__(self) -> None:
        for name in ("columns", "panel_size", "gif_size", "gif_duration_ms", "html_max_side"):
            check_positive(f"OverlaySizes.{name}", getattr(self, name))
