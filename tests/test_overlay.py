"""Attention overlays: geometry, layout, determinism and input checks (no browser needed)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

from captioner.overlay.files import save_gif, write_overlays
from captioner.overlay.html import render_html
from captioner.overlay.options import MODES, STYLES, OverlayOptions, OverlaySizes
from captioner.overlay.render import animate, blend, panel_grid, panel_layout, upsample

G = 14
W, H = 300, 200  # non-square, and neither side a multiple of G: the hard case for geometry


def _image(width: int = W, height: int = H) -> Image.Image:
    """A textured, deterministic RGB image (gradients, so crops are distinguishable)."""
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), (xx ^ yy) & 255])
    return Image.fromarray(rgb.transpose(1, 2, 0).astype(np.uint8), mode="RGB")


def _one_hot(r: int, c: int, g: int = G) -> np.ndarray:
    a = np.zeros((g, g))
    a[r, c] = 1.0
    return a


def _peaked(r: int, c: int, g: int = G, seed: int = 0) -> np.ndarray:
    """A softmax-like map peaked at (r, c) with a little noise, summing to 1."""
    rows, cols = np.mgrid[0:g, 0:g]
    logits = -((rows - r) ** 2 + (cols - c) ** 2) / 4.0
    logits += np.random.default_rng(seed).normal(scale=0.05, size=(g, g))
    a = np.exp(logits - logits.max())
    return a / a.sum()


def _alphas(t: int, g: int = G) -> np.ndarray:
    cells = [(2, 3), (10, 11), (7, 0), (0, 13), (13, 5), (5, 5), (9, 2), (1, 8)]
    return np.stack([_peaked(*cells[i % len(cells)], g=g, seed=i) for i in range(t)])


def _cell_rect(r: int, c: int, width: int = W, height: int = H, g: int = G):
    """Pixel ranges (x0, x1, y0, y1), half-open, of cell (r, c): x in [c*W/G, (c+1)*W/G)."""
    x0, x1 = np.ceil(c * width / g), np.ceil((c + 1) * width / g)
    y0, y1 = np.ceil(r * height / g), np.ceil((r + 1) * height / g)
    return int(x0), int(x1), int(y0), int(y1)


def _inside(yx: tuple[int, int], r: int, c: int, width: int = W, height: int = H) -> bool:
    x0, x1, y0, y1 = _cell_rect(r, c, width, height)
    y, x = yx
    return x0 <= x < x1 and y0 <= y < y1


TOKENS = ["a", "dog", "runs", "on", "the", "green", "grass"]


# --------------------------------------------------------------------------- upsample


@pytest.mark.parametrize("mode", ["smooth", "nearest"])
def test_upsample_shape_dtype_and_range(mode: str) -> None:
    up = upsample(_peaked(4, 9), (W, H), mode)
    assert up.shape == (H, W)
    assert up.dtype == np.float32
    assert up.min() >= 0.0
    assert up.max() == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["smooth", "nearest"])
@pytest.mark.parametrize("cell", [(0, 0), (13, 13), (0, 13), (3, 9), (7, 2), (12, 6)])
@pytest.mark.parametrize("kind", ["one_hot", "peaked"])
def test_peak_lands_inside_its_cell(mode: str, cell: tuple[int, int], kind: str) -> None:
    alpha = _one_hot(*cell) if kind == "one_hot" else _peaked(*cell)
    up = upsample(alpha, (W, H), mode)
    peak = np.unravel_index(np.argmax(up), up.shape)
    assert _inside(peak, *cell), f"peak at (y, x)={peak} is outside cell {cell} {_cell_rect(*cell)}"


def test_nearest_is_blocky_with_exact_cell_rectangles() -> None:
    alpha = np.random.default_rng(1).random((G, G)) + 0.01
    up = upsample(alpha, (W, H), "nearest")
    expected = alpha / alpha.max()
    for r in range(G):
        for c in range(G):
            x0, x1, y0, y1 = _cell_rect(r, c)
            block = up[y0:y1, x0:x1]
            assert block.size > 0
            np.testing.assert_allclose(block, expected[r, c], rtol=1e-6)
    # A one-hot map lights up exactly its rectangle: no half-cell shift, no bleeding.
    r, c = 5, 8
    x0, x1, y0, y1 = _cell_rect(r, c)
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    np.testing.assert_array_equal(upsample(_one_hot(r, c), (W, H), "nearest") > 0, mask)


def test_smooth_blob_is_centred_on_its_cell() -> None:
    # 280 x 140 px with G=14 gives 20 x 10 px cells, so the cell centre lies between pixels and a
    # centred blob must be mirror-symmetric about it; a half-cell shift would break symmetry.
    r, c = 6, 4
    up = upsample(_one_hot(r, c), (280, 140), "smooth")
    cols = up[r * 10 + 5, c * 20 - 10 : (c + 1) * 20 + 10]  # 2 cells wide, centred on the cell
    rows = up[r * 10 - 5 : (r + 1) * 10 + 5, c * 20 + 10]
    np.testing.assert_allclose(cols, cols[::-1], atol=1e-6)
    np.testing.assert_allclose(rows, rows[::-1], atol=1e-6)
    assert up[r * 10 + 5, c * 20 + 10] > up[r * 10 + 5, c * 20 - 10] > 0.0


def test_upsample_normalisation_edge_cases() -> None:
    uniform = np.full((G, G), 1.0 / G**2)
    np.testing.assert_allclose(upsample(uniform, (50, 40), "smooth"), 1.0, atol=1e-6)
    assert not upsample(np.zeros((G, G)), (50, 40), "smooth").any()


# --------------------------------------------------------------------------- blend


@pytest.mark.parametrize("size", [(W, H), (200, 300), (37, 23)])
@pytest.mark.parametrize("style", ["heat", "spotlight"])
def test_blend_same_size_as_image(size: tuple[int, int], style: str) -> None:
    for img in (_image(*size), _image(*size).convert("L"), _image(*size).convert("RGBA")):
        out = blend(img, _peaked(3, 3), options=OverlayOptions(style=style))
        assert out.size == size
        assert out.mode == "RGB"


@pytest.mark.parametrize("mode", ["smooth", "nearest"])
@pytest.mark.parametrize("cell", [(2, 11), (12, 1)])
def test_blend_hottest_pixel_inside_cell(mode: str, cell: tuple[int, int]) -> None:
    alpha = _peaked(*cell)
    # Heat: a grey colormap at full opacity makes the blend the heat map itself.
    gray = OverlayOptions(mode=mode, cmap="gray", opacity=1.0)
    heat = np.asarray(blend(_image(), alpha, options=gray).convert("L"))
    assert _inside(np.unravel_index(np.argmax(heat), heat.shape), *cell)
    # Jet: the hottest pixel gets the colormap's top colour (dark red), mixed at 55%.
    grey = Image.new("RGB", (W, H), (128, 128, 128))
    jet_options = OverlayOptions(mode=mode, cmap="jet")
    jet = np.asarray(blend(grey, alpha, options=jet_options), dtype=np.float64)
    top = 128 * 0.45 + np.array(matplotlib.colormaps["jet"](1.0)[:3]) * 255 * 0.55
    distance = np.abs(jet - top).sum(axis=-1)
    assert distance.min() <= 1.5
    assert _inside(np.unravel_index(np.argmin(distance), distance.shape), *cell)
    # Spotlight: a uniform image stays brightest where attention is highest.
    spotlight = OverlayOptions(mode=mode, style="spotlight")
    spot = np.asarray(blend(grey, alpha, options=spotlight).convert("L"))
    assert _inside(np.unravel_index(np.argmax(spot), spot.shape), *cell)
    assert spot.max() == 128 and spot.min() < 128 * 0.5


# --------------------------------------------------------------------------- panel grid


def test_panel_grid_layout_and_labels() -> None:
    img, alphas = _image(), _alphas(len(TOKENS))
    grid = panel_grid(img, TOKENS, alphas, columns=5, panel_size=120)
    layout = panel_layout(img.size, len(TOKENS) + 1, columns=5, panel_size=120)
    # original + 7 words = 8 panels -> 2 rows of 5 columns; panels keep the 3:2 aspect ratio.
    assert (layout.columns, layout.rows) == (5, 2)
    assert (layout.panel_width, layout.panel_height) == (120, 80)
    assert layout.label_height > 0
    pad = layout.pad
    assert grid.size == (pad + 5 * (120 + pad), pad + 2 * (80 + layout.label_height + pad))
    assert grid.size == (layout.width, layout.height)

    px = np.asarray(grid)
    # Panel 0 is the untouched (resized) original, with an empty label strip.
    original = np.asarray(img.resize((120, 80), Image.Resampling.BICUBIC))
    left, top, right, bottom = layout.box(0)
    np.testing.assert_array_equal(px[top:bottom, left:right], original)
    l0, t0, r0, b0 = layout.label_box(0)
    assert (px[t0:b0, l0:r0] == 255).all()
    # Every word panel differs from the original and has dark text in its label strip.
    for i in range(1, len(TOKENS) + 1):
        left, top, right, bottom = layout.box(i)
        assert not np.array_equal(px[top:bottom, left:right], original)
        lx0, ly0, lx1, ly1 = layout.label_box(i)
        assert px[ly0:ly1, lx0:lx1].min() < 100, f"no text under panel {i}"
    # The two unused slots at the end of the last row stay background.
    for i in (8, 9):
        left, top, right, _ = layout.box(i)
        assert (px[top : layout.label_box(i)[3], left:right] == 255).all()


def test_panel_grid_without_original_and_single_row() -> None:
    grid = panel_grid(
        _image(), TOKENS[:3], _alphas(3), columns=5, panel_size=64, include_original=False
    )
    layout = panel_layout((W, H), 3, columns=5, panel_size=64)
    assert (layout.columns, layout.rows) == (3, 1)
    assert grid.size == (layout.width, layout.height)


def test_long_word_label_is_shortened_to_fit() -> None:
    grid = panel_grid(_image(), ["x" * 200], _alphas(1), panel_size=64, include_original=False)
    assert grid.size == panel_layout((W, H), 1, panel_size=64)[-2:]


# --------------------------------------------------------------------------- animation / GIF


def test_gif_has_one_frame_per_token(tmp_path) -> None:
    frames = animate(_image(), TOKENS, _alphas(len(TOKENS)), size=96)
    assert len(frames) == len(TOKENS)
    assert len({f.size for f in frames}) == 1
    assert frames[0].size[0] == 96 and frames[0].size[1] > 64  # image part + caption strip
    path = save_gif(frames, tmp_path / "a.gif", duration_ms=500)
    with Image.open(path) as gif:
        assert gif.n_frames == len(TOKENS)
        assert gif.info["duration"] == 500
        assert gif.info["loop"] == 0


def test_gif_single_token(tmp_path) -> None:
    path = save_gif(animate(_image(), ["dog"], _alphas(1), size=64), tmp_path / "one.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 1


def test_caption_grows_frame_by_frame() -> None:
    frames = [np.asarray(f) for f in animate(_image(), TOKENS[:3], _alphas(3), size=96)]
    strip = slice(64, None)  # below the 96 x 64 image
    dark = [int((f[strip] < 128).any(axis=-1).sum()) for f in frames]
    assert dark[0] < dark[1] < dark[2], dark


# --------------------------------------------------------------------------- determinism


def test_outputs_are_deterministic(tmp_path) -> None:
    img, alphas = _image(), _alphas(len(TOKENS))

    def digest() -> tuple[str, ...]:
        grid = panel_grid(img, TOKENS, alphas, panel_size=64)
        frames = animate(img, TOKENS, alphas, size=64)
        gif = save_gif(frames, tmp_path / "d.gif").read_bytes()
        page = render_html(img, TOKENS, alphas, max_side=64)
        return tuple(
            hashlib.sha256(b).hexdigest()
            for b in (grid.tobytes(), b"".join(f.tobytes() for f in frames), gif, page.encode())
        )

    assert digest() == digest()


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("tokens", "alphas", "match"),
    [
        (TOKENS[:2], np.full((2, G * G), 1.0 / G**2), r"\(T, G, G\).*reshape"),
        (TOKENS[:2], np.full((2, G, G + 1), 0.01), r"\(T, G, G\)"),
        (TOKENS[:2], np.full((G, G), 1.0 / G**2), r"\(T, G, G\)"),
        (TOKENS[:3], _alphas(2), r"3 tokens but 2 attention maps"),
        ([], np.zeros((0, G, G)), r"at least one"),
        ("a dog", _alphas(5), r"sequence of words"),
        (TOKENS[:1], -_alphas(1), r"negative"),
        (TOKENS[:1], np.full((1, G, G), np.nan), r"NaN"),
    ],
)
def test_bad_inputs_raise_clear_errors(tokens, alphas, match: str) -> None:
    for fn in (panel_grid, animate, render_html):
        with pytest.raises(ValueError, match=match):
            fn(_image(40, 30), tokens, alphas)


def test_bad_options_raise() -> None:
    img, alpha = _image(40, 30), _peaked(1, 1)
    with pytest.raises(ValueError, match=r"\(G, G\)"):
        upsample(alpha.ravel(), (40, 30))
    with pytest.raises(ValueError, match="mode"):
        upsample(alpha, (40, 30), "bilinear")
    with pytest.raises(ValueError, match="size"):
        upsample(alpha, (0, 30))
    with pytest.raises(ValueError, match="style"):
        OverlayOptions(style="glow")
    with pytest.raises(ValueError, match="opacity"):
        OverlayOptions(opacity=1.5)
    with pytest.raises(ValueError, match="colormap"):
        OverlayOptions(cmap="no-such-map")
    with pytest.raises(ValueError, match="columns"):
        panel_grid(img, ["a"], _alphas(1), columns=0)
    with pytest.raises(ValueError, match="frame"):
        save_gif([], "unused.gif")


# --------------------------------------------------------------------------- HTML (static)


def test_html_is_self_contained_and_escaped() -> None:
    tokens = ["a", "<b>cat</b>", "&", 'say "hi"']
    page = render_html(_image(), tokens, _alphas(4), caption="A <cat> & co.", title="T<1>")
    assert page.count('class="word"') == len(tokens)
    assert re.findall(r'data-index="(\d+)"', page) == ["0", "1", "2", "3"]
    # Every image reference is inline; nothing can be fetched from anywhere.
    refs = re.findall(r'\b(?:src|data-src|data-original|href)="([^"]*)"', page)
    assert len(refs) == 1 + 1 + len(tokens)  # overlay src + data-original + one per word
    assert all(ref.startswith("data:image/jpeg;base64,") for ref in refs)
    assert not re.search(r"https?://|//cdn|@import|url\(", page)
    assert "Content-Security-Policy" in page
    # Words, caption and title are escaped; the raw markup never appears.
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>cat</b>" not in page
    assert "say &quot;hi&quot;" in page
    assert "A &lt;cat&gt; &amp; co." in page
    assert "<title>T&lt;1&gt;</title>" in page
    # Distinct maps give distinct overlays, and the page stays small.
    assert len(set(refs[2:])) == len(tokens)
    assert len(page) < 60_000 * len(tokens)


def test_write_overlays(tmp_path) -> None:
    img, alphas = _image(), _alphas(3)
    opts = OverlaySizes(panel_size=64, gif_size=64, html_max_side=64)
    paths = write_overlays(
        tmp_path / "out",
        "ex1",
        img,
        TOKENS[:3],
        alphas,
        png=True,
        gif=True,
        html=True,
        sizes=opts,
    )
    assert set(paths) == {"png", "gif", "html"}
    assert [p.name for p in paths.values()] == ["ex1.png", "ex1.gif", "ex1.html"]
    with Image.open(paths["png"]) as png:
        assert png.size == panel_grid(img, TOKENS[:3], alphas, panel_size=64).size
    with Image.open(paths["gif"]) as gif:
        assert gif.n_frames == 3
    assert paths["html"].read_text(encoding="utf-8").count('class="word"') == 3
    only_png = write_overlays(tmp_path / "out2", "ex2", img, TOKENS[:3], alphas, sizes=opts)
    assert set(only_png) == {"png"}


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("mode", "bilinear", ["'smooth'", "'nearest'"]),
        ("mode", None, ["'smooth'", "'nearest'"]),
        ("style", "glow", ["'heat'", "'spotlight'"]),
        ("cmap", "no-such-map", ["matplotlib.colormaps", "'jet'"]),
        ("cmap", matplotlib.colormaps["jet"], ["matplotlib.colormaps"]),
        ("opacity", 1.5, ["[0, 1]"]),
        ("opacity", -0.1, ["[0, 1]"]),
        ("opacity", math.nan, ["[0, 1]"]),
        ("opacity", "0.5", ["[0, 1]"]),
        ("opacity", True, ["[0, 1]"]),
    ],
)
def test_invalid_option_fails_at_construction(field: str, value, allowed: list[str]) -> None:
    with pytest.raises(ValueError) as err:
        OverlayOptions(**{field: value})
    message = str(err.value)
    assert f"OverlayOptions.{field}" in message
    for text in allowed:
        assert text in message, message


@pytest.mark.parametrize(
    "field", ["columns", "panel_size", "gif_size", "gif_duration_ms", "html_max_side"]
)
@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_invalid_size_fails_at_construction(field: str, value) -> None:
    with pytest.raises(ValueError, match=rf"OverlaySizes\.{field} must be an integer >= 1"):
        OverlaySizes(**{field: value})


def test_options_accept_every_allowed_value_and_are_frozen() -> None:
    for mode in MODES:
        for style in STYLES:
            assert OverlayOptions(mode=mode, style=style, opacity=np.float32(0.5)).opacity == 0.5
    assert OverlayOptions(opacity=1) == OverlayOptions(opacity=1.0)  # stored as float
    with pytest.raises(dataclasses.FrozenInstanceError):
        OverlayOptions().mode = "bilinear"  # type: ignore[misc]  # no way round the check


@pytest.mark.parametrize(
    "loose", [{"mode": "smooth"}, {"style": "heat"}, {"cmap": "jet"}, {"opacity": 0.5}]
)
def test_renderers_take_options_not_loose_parameters(loose: dict) -> None:
    img, alphas = _image(40, 30), _alphas(2)
    calls = [
        lambda: blend(img, alphas[0], **loose),
        lambda: panel_grid(img, TOKENS[:2], alphas, **loose),
        lambda: animate(img, TOKENS[:2], alphas, **loose),
        lambda: render_html(img, TOKENS[:2], alphas, **loose),
        lambda: write_overlays("unused", "x", img, TOKENS[:2], alphas, **loose),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="unexpected keyword"):
            call()


@pytest.mark.parametrize("style", STYLES)
def test_opacity_zero_leaves_the_image_untouched_in_every_renderer(style: str) -> None:
    img, alphas, tokens = _image(), _alphas(3), TOKENS[:3]
    clear = OverlayOptions(style=style, opacity=0.0)
    np.testing.assert_array_equal(np.asarray(blend(img, alphas[0], options=clear)), np.asarray(img))

    grid = np.asarray(panel_grid(img, tokens, alphas, panel_size=120, options=clear))
    layout = panel_layout(img.size, len(tokens) + 1, panel_size=120)
    boxes = [grid[t:b, l:r] for l, t, r, b in (layout.box(i) for i in range(len(tokens) + 1))]
    for panel in boxes[1:]:
        np.testing.assert_array_equal(panel, boxes[0])  # every word panel is the original

    small = np.asarray(img.resize((96, 64), Image.Resampling.BICUBIC))
    for frame in animate(img, tokens, alphas, size=96, options=clear):
        np.testing.assert_array_equal(np.asarray(frame)[:64], small)

    page = render_html(img, tokens, alphas, max_side=64, options=clear)
    original = re.search(r'data-original="([^"]*)"', page).group(1)
    assert re.findall(r'data-src="([^"]*)"', page) == [original] * len(tokens)


CHANGED = [
    OverlayOptions(mode="nearest"),
    OverlayOptions(style="spotlight"),
    OverlayOptions(cmap="viridis"),
    OverlayOptions(opacity=0.9),
]


def _renders(options: OverlayOptions) -> dict[str, bytes]:
    img, alphas, tokens = _image(), _alphas(3), TOKENS[:3]
    return {
        "blend": blend(img, alphas[0], options=options).tobytes(),
        "panel_grid": panel_grid(img, tokens, alphas, panel_size=64, options=options).tobytes(),
        "animate": b"".join(
            f.tobytes() for f in animate(img, tokens, alphas, size=64, options=options)
        ),
        "render_html": render_html(img, tokens, alphas, max_side=64, options=options).encode(),
    }


@pytest.mark.parametrize("options", CHANGED, ids=repr)
def test_every_renderer_honours_each_option(options: OverlayOptions) -> None:
    default, changed = _renders(OverlayOptions()), _renders(options)
    assert _renders(OverlayOptions()) == default  # so a difference below is the option's doing
    for name in default:
        assert changed[name] != default[name], f"{name} ignored {options}"


@pytest.mark.parametrize("options", [OverlayOptions(), *CHANGED], ids=repr)
def test_panels_and_frames_are_the_blend_of_their_word(options: OverlayOptions) -> None:
    img, alphas, tokens = _image(), _alphas(3), TOKENS[:3]
    layout = panel_layout(img.size, len(tokens) + 1, panel_size=120)
    small = img.resize((layout.panel_width, layout.panel_height), Image.Resampling.BICUBIC)
    grid = np.asarray(panel_grid(img, tokens, alphas, panel_size=120, options=options))
    for t in range(len(tokens)):
        left, top, right, bottom = layout.box(t + 1)
        expected = np.asarray(blend(small, alphas[t], options=options))
        np.testing.assert_array_equal(grid[top:bottom, left:right], expected)
    small = img.resize((96, 64), Image.Resampling.BICUBIC)
    for t, frame in enumerate(animate(img, tokens, alphas, size=96, options=options)):
        expected = np.asarray(blend(small, alphas[t], options=options))
        np.testing.assert_array_equal(np.asarray(frame)[:64], expected)


@pytest.mark.parametrize(
    "options",
    [
        OverlayOptions(mode="nearest", cmap="viridis", opacity=0.8),
        OverlayOptions(style="spotlight", opacity=0.3),
    ],
    ids=repr,
)
def test_write_overlays_passes_options_to_png_gif_and_html(
    tmp_path, options: OverlayOptions
) -> None:
    img, alphas, tokens = _image(), _alphas(3), TOKENS[:3]
    sizes = OverlaySizes(
        columns=2, panel_size=64, gif_size=80, gif_duration_ms=300, html_max_side=72
    )
    paths = write_overlays(
        tmp_path, "ex", img, tokens, alphas,
        png=True, gif=True, html=True, caption="A dog runs.", options=options, sizes=sizes,
    )

    def expected(look: OverlayOptions, name: str) -> tuple[bytes, bytes, str]:
        grid = panel_grid(img, tokens, alphas, columns=2, panel_size=64, options=look)
        frames = animate(img, tokens, alphas, size=80, options=look)
        gif = save_gif(frames, tmp_path / f"{name}.gif", duration_ms=300).read_bytes()
        page = render_html(img, tokens, alphas, caption="A dog runs.", max_side=72, options=look)
        return grid.tobytes(), gif, page

    with Image.open(paths["png"]) as png:
        written = (
            png.convert("RGB").tobytes(),
            paths["gif"].read_bytes(),
            paths["html"].read_text(encoding="utf-8"),
        )
    want, default = expected(options, "want"), expected(OverlayOptions(), "default")
    for kind, got, same, other in zip(("png", "gif", "html"), written, want, default, strict=True):
        assert got == same, f"{kind} was not rendered with the options given"
        assert got != other, f"{kind}: the options make no difference, so the check above is empty"


def test_write_overlays_defaults_keep_the_cli_call_working(tmp_path) -> None:
    img, alphas, tokens = _image(), _alphas(2), TOKENS[:2]
    # The call captioner.cli makes today, with neither options nor sizes.
    paths = write_overlays(
        tmp_path, "cli", img, tokens, alphas, png=True, gif=True, html=True, caption="A dog."
    )
    assert set(paths) == {"png", "gif", "html"}
    with Image.open(paths["png"]) as png:
        assert png.convert("RGB").tobytes() == panel_grid(img, tokens, alphas).tobytes()
    page = render_html(img, tokens, alphas, caption="A dog.", options=OverlayOptions())
    assert paths["html"].read_text(encoding="utf-8") == page
