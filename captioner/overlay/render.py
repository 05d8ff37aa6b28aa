"""Attention overlays as pictures: upsample a map, blend it in, lay out panels and GIF frames.

This is the last stage of the data flow (image -> features -> attention -> words -> overlay),
and it is pure: arrays and a PIL image in, PIL images out. Nothing touches pyplot's global
state, so rendering works headless and can be tested byte for byte. The HTML page is in
:mod:`captioner.overlay.html`; everything that writes files is in :mod:`captioner.overlay.files`.

How the maps are drawn (mode, style, colormap, opacity) is one checked
:class:`~captioner.overlay.options.OverlayOptions` passed as ``options=``.

Shared inputs:

- ``image``: ``PIL.Image.Image`` of any size and aspect ratio. The encoder sees the *whole*
  image resized (never centre-cropped), so a G x G attention map covers the full image one to
  one: cell (r, c) is the pixel rectangle
  ``[c*W/G, (c+1)*W/G) x [r*H/G, (r+1)*H/G)``.
- ``tokens``: the generated words, one per decoding step (T of them).
- ``alphas``: ``np.ndarray`` of shape (T, G, G), one attention map per token, each summing to 1
  (the softmax over the P = G*G regions, reshaped).

Public functions validate their inputs once at the boundary and then call the unchecked
``_``-prefixed workers, which :mod:`captioner.overlay.html` shares.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from captioner.overlay.options import MODES, OverlayOptions, check_choice, check_positive

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_HIGHLIGHT = (200, 30, 30)
_CUBIC_A = -0.5  # Keys' bicubic kernel; the same coefficient PIL and OpenCV use.


# --------------------------------------------------------------------------- input checks


def _check_map(alpha: np.ndarray) -> np.ndarray:
    """Validate one attention map and return it as float64 (G, G)."""
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise ValueError(
            f"an attention map must have shape (G, G); got shape {a.shape}. "
            "If it is flattened to P = G*G regions, reshape it to (G, G) first."
        )
    if not np.all(np.isfinite(a)):
        raise ValueError("attention map contains NaN or infinite values")
    if np.any(a < 0):
        raise ValueError(
            "attention map has negative values; pass softmax weights (alphas), not raw scores"
        )
    return a


def _check_sequence(tokens: Sequence[str], alphas: np.ndarray) -> np.ndarray:
    """Validate (tokens, alphas) and return alphas as float64 (T, G, G).

    Mismatched lengths are the usual symptom of passing the map for ``<end>`` without its token
    (or the reverse), so the message says so rather than silently truncating.
    """
    if isinstance(tokens, str):
        raise ValueError("tokens must be a sequence of words, not a single string")
    a = np.asarray(alphas, dtype=np.float64)
    if a.ndim != 3 or a.shape[1] != a.shape[2] or a.shape[1] == 0:
        raise ValueError(
            f"alphas must have shape (T, G, G), one G x G map per token; got shape {a.shape}. "
            "If the maps are flattened to P = G*G regions, reshape them to (T, G, G) first."
        )
    if a.shape[0] == 0:
        raise ValueError("alphas is empty: need at least one token and one attention map")
    if len(tokens) != a.shape[0]:
        raise ValueError(
            f"got {len(tokens)} tokens but {a.shape[0]} attention maps; pass exactly one map "
            "per token (e.g. drop the map for <end> or keep its token too)"
        )
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise ValueError(f"tokens[{i}] is {type(token).__name__}, expected str")
    for t in range(a.shape[0]):
        _check_map(a[t])
    return a


def _as_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


# --------------------------------------------------------------------------- upsampling


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel; its weights sum to 1 at every offset."""
    x = np.abs(x)
    a = _CUBIC_A
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _cubic_matrix(n_out: int, g: int) -> np.ndarray:
    """(n_out, g) bicubic interpolation matrix with exact cell geometry.

    Output pixel i has its centre at i + 0.5, which is grid coordinate
    u = (i + 0.5) * g / n_out - 0.5 in units where cell k's centre sits at k. Aligning centres
    this way (rather than corners) is what keeps the upsampled peak inside its cell; edges are
    clamped, i.e. the border cells extend outwards.
    """
    u = (np.arange(n_out, dtype=np.float64) + 0.5) * g / n_out - 0.5  # (n_out,)
    base = np.floor(u).astype(np.int64) - 1
    rows = np.arange(n_out)
    m = np.zeros((n_out, g), dtype=np.float64)
    for j in range(4):
        k = base + j
        np.add.at(m, (rows, np.clip(k, 0, g - 1)), _cubic(u - k))
    return m


def _nearest_index(n_out: int, g: int) -> np.ndarray:
    """Cell index of each output pixel: pixel i is in cell c iff c*n/g <= i < (c+1)*n/g."""
    return (np.arange(n_out, dtype=np.int64) * g) // n_out


def _upsample(a: np.ndarray, width: int, height: int, mode: str) -> np.ndarray:
    """:func:`upsample` on an already checked float64 (G, G) map."""
    g = a.shape[0]
    if mode == "nearest":
        up = a[_nearest_index(height, g)][:, _nearest_index(width, g)]  # (H, W)
    else:
        up = _cubic_matrix(height, g) @ a @ _cubic_matrix(width, g).T  # (H, W)
        up = np.clip(up, 0.0, None)
    peak = up.max()
    if peak > 0:
        up = up / peak
    return np.clip(up, 0.0, 1.0).astype(np.float32)


def upsample(alpha: np.ndarray, size: tuple[int, int], mode: str = "smooth") -> np.ndarray:
    """Upsample one (G, G) attention map to an image's pixel grid, scaled to [0, 1].

    Args:
        alpha: (G, G) non-negative attention weights.
        size: (width, height) of the target image, PIL's order.
        mode: one of :data:`~captioner.overlay.options.MODES`, as in
            :attr:`OverlayOptions.mode <captioner.overlay.options.OverlayOptions.mode>`. A bare
            string rather than options because this returns an array, not a picture.

    Returns:
        (height, width) float32 in [0, 1].

    The map is divided by its maximum because raw alphas are tiny (1/P on average, 1/196 for a
    14 x 14 grid) and would be invisible on an absolute scale; per-map scaling shows *where* the
    model looked, not how peaked it was (a uniform map therefore shows as fully lit). An
    all-zero map stays zero. Bicubic overshoot below zero is clipped.
    """
    check_choice("mode", mode, MODES)
    a = _check_map(alpha)
    width, height = int(size[0]), int(size[1])
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be a positive (width, height), got {size}")
    return _upsample(a, width, height, mode)


# --------------------------------------------------------------------------- blending


@functools.lru_cache(maxsize=16)
def _colormap_lut(cmap: str) -> np.ndarray:
    """(256, 3) float32 RGB lookup table; a table keeps memory flat on large images."""
    lut = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0  # (256, 3)
    return lut.astype(np.float32)


def _blend(image: Image.Image, a: np.ndarray, options: OverlayOptions) -> Image.Image:
    """:func:`blend` on an already checked float64 (G, G) map."""
    rgb = _as_rgb(image)
    heat = _upsample(a, rgb.width, rgb.height, options.mode)  # (H, W)
    base = np.asarray(rgb, dtype=np.float32)  # (H, W, 3)
    opacity = options.opacity
    if options.style == "heat":
        colour = _colormap_lut(options.cmap)[np.rint(heat * 255.0).astype(np.uint8)]  # (H, W, 3)
        out = base * (1.0 - opacity) + colour * opacity
    else:
        out = base * (1.0 - opacity * (1.0 - heat))[:, :, None]
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), mode="RGB")


def blend(
    image: Image.Image, alpha: np.ndarray, *, options: OverlayOptions = OverlayOptions()
) -> Image.Image:
    """Draw one attention map over the image it was computed on.

    Args:
        image: any size and PIL mode; the (G, G) map is stretched over the whole of it.
        alpha: (G, G) attention weights for one word.
        options: mode, style, colormap and opacity, see
            :class:`~captioner.overlay.options.OverlayOptions`.

    Returns:
        RGB image of the same size as ``image``.
    """
    return _blend(image, _check_map(alpha), options)


# --------------------------------------------------------------------------- text helpers


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font: always available offline, so output never depends on the host."""
    return ImageFont.load_default(size=size)


def _fit_text(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> str:
    """Shorten ``text`` with an ellipsis until it fits ``width`` pixels."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _fit_size(size: tuple[int, int], box: int) -> tuple[int, int]:
    """Scale (w, h) so the longer side is ``box``, keeping the aspect ratio."""
    w, h = size
    scale = box / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    rgb = _as_rgb(image)
    return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------- panel grid


class PanelLayout(NamedTuple):
    """Geometry of :func:`panel_grid`, exposed so callers and tests can locate each panel."""

    columns: int  # panels per row actually used
    rows: int
    panel_width: int  # image part of a panel
    panel_height: int
    label_height: int  # text strip under each panel
    pad: int  # gap around and between panels
    font_size: int
    width: int  # whole grid
    height: int

    def box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of panel ``index``'s image, label strip excluded."""
        r, c = divmod(index, self.columns)
        left = self.pad + c * (self.panel_width + self.pad)
        top = self.pad + r * (self.panel_height + self.label_height + self.pad)
        return left, top, left + self.panel_width, top + self.panel_height

    def label_box(self, index: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of the text strip under panel ``index``."""
        left, _, right, bottom = self.box(index)
        return left, bottom, right, bottom + self.label_height


def panel_layout(
    image_size: tuple[int, int], n_panels: int, *, columns: int = 5, panel_size: int = 224
) -> PanelLayout:
    """Layout for ``n_panels`` panels of an image of ``image_size`` (w, h).

    Panels keep the image's aspect ratio with the longer side equal to ``panel_size``, so the
    attention cells are not distorted on screen.
    """
    check_positive("columns", columns)
    check_positive("panel_size", panel_size)
    if n_panels < 1:
        raise ValueError(f"need at least one panel, got {n_panels}")
    pw, ph = _fit_size(image_size, panel_size)
    font_size = max(10, round(panel_size * 0.075))
    label_height = font_size + 2 * max(2, font_size // 3)
    pad = max(4, panel_size // 32)
    cols = min(columns, n_panels)
    rows = math.ceil(n_panels / cols)
    return PanelLayout(
        columns=cols,
        rows=rows,
        panel_width=pw,
        panel_height=ph,
        label_height=label_height,
        pad=pad,
        font_size=font_size,
        width=pad + cols * (pw + pad),
        height=pad + rows * (ph + label_height + pad),
    )


def panel_grid(
    image: Image.Image,
    tokens: Sequence[str],
    alphas: np.ndarray,
    *,
    columns: int = 5,
    panel_size: int = 224,
    include_original: bool = True,
    options: OverlayOptions = OverlayOptions(),
) -> Image.Image:
    """The paper's figure: the original image, then one overlay per word, labelled below.

    Args:
        image: the captioned image.
        tokens: T generated words.
        alphas: (T, G, G) attention maps, one per word.
        columns: panels per row before wrapping.
        panel_size: longer side of each panel in pixels.
        include_original: put the unmodified image first (with an empty label).
        options: how each map is drawn, see :class:`~captioner.overlay.options.OverlayOptions`.

    Returns:
        RGB image of size ``panel_layout(...)`` ``(width, height)``; white background.
    """
    a = _check_sequence(tokens, alphas)
    labels = ([""] if include_original else []) + list(tokens)
    layout = panel_layout(image.size, len(labels), columns=columns, panel_size=panel_size)
    small = _resized(image, (layout.panel_width, layout.panel_height))
    panels = ([small] if include_original else []) + [
        _blend(small, a[t], options) for t in range(a.shape[0])
    ]
    grid = Image.new("RGB", (layout.width, layout.height), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _font(layout.font_size)
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        left, top, right, _ = layout.box(i)
        grid.paste(panel, (left, top))
        if label:
            _, strip_top, _, strip_bottom = layout.label_box(i)
            text = _fit_text(label, font, layout.panel_width)
            draw.text(
                ((left + right) / 2, (strip_top + strip_bottom) / 2),
                text,
                fill=_TEXT,
                font=font,
                anchor="mm",
            )
    return grid


# --------------------------------------------------------------------------- animation


def _wrap_positions(
    tokens: Sequence[str],
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    width: int,
) -> list[tuple[int, int]]:
    """(x, line) of each word when the full caption is wrapped to ``width`` pixels.

    Laying out the *full* caption once means words never jump between frames as it grows.
    """
    space = font.getlength(" ") * 1.5  # the default font's space is narrow at small sizes
    positions: list[tuple[int, int]] = []
    x, line = 0.0, 0
    for token in tokens:
        w = font.getlength(token)
        if x > 0 and x + w > width:
            x, line = 0.0, line + 1
        positions.append((round(x), line))
        x += w + space
    return positions


def animate(
    image: Image.Image,
    tokens: Sequence[str],
    alphas: np.ndarray,
    *,
    size: int = 320,
    options: OverlayOptions = OverlayOptions(),
) -> list[Image.Image]:
    """One frame per word: that word's overlay, with the caption so far written underneath.

    Args:
        size: longer side of the image part of each frame, in pixels.
        options: how each map is drawn, see :class:`~captioner.overlay.options.OverlayOptions`.

    Returns:
        T RGB frames of identical size (the caption strip is tall enough for the full caption),
        the current word highlighted in red. Write them with
        :func:`captioner.overlay.files.save_gif`.
    """
    a = _check_sequence(tokens, alphas)
    check_positive("size", size)
    fw, fh = _fit_size(image.size, size)
    small = _resized(image, (fw, fh))
    font_size = max(10, round(size * 0.05))
    font = _font(font_size)
    pad = max(4, font_size // 2)
    line_height = round(font_size * 1.3)
    positions = _wrap_positions(tokens, font, max(1, fw - 2 * pad))
    n_lines = positions[-1][1] + 1
    strip = 2 * pad + n_lines * line_height
    frames = []
    for t in range(a.shape[0]):
        frame = Image.new("RGB", (fw, fh + strip), _BACKGROUND)
        frame.paste(_blend(small, a[t], options))
        draw = ImageDraw.Draw(frame)
        for i in range(t + 1):
            x, line = positions[i]
            draw.text(
                (pad + x, fh + pad + line * line_height),
                tokens[i],
                fill=_HIGHLIGHT if i == t else _TEXT,
                font=font,
            )
        frames.append(frame)
    return frames
