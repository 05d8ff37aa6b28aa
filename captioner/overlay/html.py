"""The self-contained interactive page: hover or click a word to see where the model looked.

Pure like :mod:`captioner.overlay.render`: image and arrays in, one HTML string out. Writing it
to disk is :func:`captioner.overlay.files.write_overlays`'s job.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from captioner.overlay.options import OverlayOptions, check_positive
from captioner.overlay.render import _as_rgb, _blend, _check_sequence, _fit_size, _resized


def _data_uri(image: Image.Image, quality: int = 85) -> str:
    """Inline JPEG: photo-like overlays compress far better lossy than as PNG."""
    buf = io.BytesIO()
    _as_rgb(image).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


# The Content-Security-Policy makes "no external requests" a browser-enforced property, not
# just a habit of this template: only inline style/script and data: images may load.
_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; \
style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: {page_width}px;
  color: #222; background: #fff; }}
h1 {{ font-size: 1.3em; }}
#overlay {{ display: block; width: {width}px; max-width: 100%; height: auto;
  border: 1px solid #ccc; }}
#caption-text {{ font-size: 1.1em; font-style: italic; }}
#words {{ line-height: 2.2; }}
.word, #show-image {{ font: inherit; font-size: 1.05em; padding: 0.15em 0.45em;
  margin: 0 0.1em; border: 1px solid #bbb; border-radius: 4px; background: #f6f6f6;
  cursor: pointer; }}
.word:hover, .word:focus-visible {{ background: #ffe9a8; }}
.word.active {{ background: #c62828; border-color: #c62828; color: #fff; }}
#show-image {{ background: #fff; margin-left: 0.8em; font-style: italic; }}
.hint {{ color: #777; font-size: 0.85em; }}
</style>
</head>
<body>
<h1>{title}</h1>
<img id="overlay" src="{original}" data-original="{original}" width="{width}" \
height="{height}" alt="input image">
{caption_html}<p id="words">{buttons}
<button type="button" id="show-image">image</button></p>
<p class="hint">Hover over a word to preview where the model looked while writing it; click to
pin it (click again, press Esc or use &ldquo;image&rdquo; to go back); arrow keys step
through the words.</p>
<script>
(() => {{
  const overlay = document.getElementById("overlay");
  const original = overlay.dataset.original;
  const words = Array.from(document.querySelectorAll(".word"));
  let active = -1;
  function show(i) {{
    overlay.src = i < 0 ? original : words[i].dataset.src;
    overlay.alt = i < 0 ? "input image" : "attention for: " + words[i].textContent;
  }}
  function setActive(i) {{
    if (active >= 0) {{
      words[active].classList.remove("active");
      words[active].setAttribute("aria-pressed", "false");
    }}
    active = i;
    if (active >= 0) {{
      words[active].classList.add("active");
      words[active].setAttribute("aria-pressed", "true");
    }}
    show(active);
  }}
  words.forEach((w, i) => {{
    w.addEventListener("click", () => setActive(active === i ? -1 : i));
    w.addEventListener("mouseenter", () => show(i));
    w.addEventListener("mouseleave", () => show(active));
  }});
  document.getElementById("show-image").addEventListener("click", () => setActive(-1));
  document.addEventListener("keydown", (e) => {{
    if (e.key === "Escape") setActive(-1);
    else if (e.key === "ArrowRight") setActive(Math.min(active + 1, words.length - 1));
    else if (e.key === "ArrowLeft") setActive(Math.max(active - 1, 0));
  }});
}})();
</script>
</body>
</html>
"""


def render_html(
    image: Image.Image,
    tokens: Sequence[str],
    alphas: np.ndarray,
    *,
    caption: str | None = None,
    title: str = "Show, Attend and Tell: attention per word",
    max_side: int = 384,
    quality: int = 85,
    options: OverlayOptions = OverlayOptions(),
) -> str:
    """A self-contained interactive page: hover or click a word to see its attention.

    Every image is inlined as a base64 JPEG ``data:`` URI and the CSS/JS are inline, so the file
    works offline, can be mailed around, and makes no network requests (a CSP forbids them).
    Images are shrunk to ``max_side`` pixels because the page inlines one of them per word.

    Stable hooks: each word is ``<button class="word" data-index="i" data-src="...">``, the
    shown picture is ``<img id="overlay">`` (its ``data-original`` holds the plain image), the
    pinned word has class ``active``, and ``<button id="show-image">`` goes back to the image.

    Args:
        image: the captioned image.
        tokens: T generated words.
        alphas: (T, G, G) attention maps, one per word.
        caption: optional display text (e.g. detokenised with punctuation) shown above the
            clickable words; the words themselves always come from ``tokens``.
        title: page title and heading; escaped.
        max_side: longer side of the inlined images, in pixels.
        quality: JPEG quality of the inlined images.
        options: how each map is drawn, see :class:`~captioner.overlay.options.OverlayOptions`.
    """
    a = _check_sequence(tokens, alphas)
    check_positive("max_side", max_side)
    width, height = _fit_size(image.size, max_side)
    small = _resized(image, (width, height))
    original = _data_uri(small, quality=quality)
    buttons = []
    for t, token in enumerate(tokens):
        overlay = _blend(small, a[t], options)
        buttons.append(
            f'<button type="button" class="word" data-index="{t}" aria-pressed="false" '
            f'data-src="{_data_uri(overlay, quality=quality)}">{html.escape(token)}</button>'
        )
    caption_html = (
        f'<p id="caption-text">{html.escape(caption)}</p>\n' if caption is not None else ""
    )
    return _HTML_TEMPLATE.format(
        title=html.escape(title),
        page_width=max(width, 480) + 40,
        width=width,
        height=height,
        original=original,
        caption_html=caption_html,
        buttons="\n".join(buttons),
    )
