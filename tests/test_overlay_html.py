"""The interactive HTML page, driven in headless Chromium through Playwright.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or the path in ``CAPTIONER_CHROMIUM``); we
never run ``playwright install``, which downloads browsers. The ``browser`` mark makes the test
skip without a browser, unless ``CAPTIONER_REQUIRE_BROWSER`` is set (CI sets it), in which case
it fails: a skipped check there would silently hide a broken page (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.overlay.html import render_html

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKENS = ["a", "<dog>", "runs", "home"]


@pytest.fixture(scope="module")
def browser(chromium: Path) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    yy, xx = np.mgrid[0:120, 0:180]
    image = Image.fromarray(np.stack([xx, yy, xx ^ yy], -1).astype(np.uint8), mode="RGB")
    alphas = np.full((len(TOKENS), 14, 14), 1e-4)
    for t, (r, c) in enumerate([(2, 2), (11, 3), (6, 12), (1, 9)]):
        alphas[t, r, c] = 1.0
    alphas /= alphas.sum(axis=(1, 2), keepdims=True)
    path = tmp_path_factory.mktemp("html") / "page.html"
    path.write_text(
        render_html(image, TOKENS, alphas, caption="A dog runs home.", max_side=160),
        encoding="utf-8",
    )
    return path


def test_clicking_words_swaps_overlay_offline(browser, page_file: Path) -> None:
    context = browser.new_context(offline=True)
    requests: list[str] = []
    errors: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    # Anything that is not the file itself or an inline image is aborted (and recorded above).
    context.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith(("file:", "data:")) else route.abort()
        ),
    )
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.goto(page_file.as_uri())

    overlay = page.locator("#overlay")
    words = page.locator(".word")
    original = overlay.get_attribute("src")
    assert words.count() == len(TOKENS)
    assert original.startswith("data:image/")
    assert original == overlay.get_attribute("data-original")
    assert words.nth(1).inner_text() == "<dog>"  # escaped in the source, shown literally
    assert page.locator(".word.active").count() == 0
    # The overlay actually decodes and renders (not a broken image).
    assert page.evaluate("document.getElementById('overlay').naturalWidth") == 160

    words.nth(0).click()
    first = overlay.get_attribute("src")
    assert first != original and first.startswith("data:image/")
    assert first == words.nth(0).get_attribute("data-src")
    assert "active" in words.nth(0).get_attribute("class")
    assert words.nth(0).get_attribute("aria-pressed") == "true"

    words.nth(2).click()
    third = overlay.get_attribute("src")
    assert third not in (original, first)
    assert page.locator(".word.active").count() == 1
    assert "active" in words.nth(2).get_attribute("class")
    assert "active" not in words.nth(0).get_attribute("class")

    # Hover previews another word without changing the pinned one; leaving restores it.
    words.nth(3).hover()
    assert overlay.get_attribute("src") == words.nth(3).get_attribute("data-src")
    page.mouse.move(0, 0)
    assert overlay.get_attribute("src") == third

    # Arrow keys step the pinned word.
    page.keyboard.press("ArrowLeft")
    assert "active" in words.nth(1).get_attribute("class")
    assert overlay.get_attribute("src") == words.nth(1).get_attribute("data-src")

    # Back to the image: with the button, and by clicking the active word again.
    page.locator("#show-image").click()
    assert overlay.get_attribute("src") == original
    assert page.locator(".word.active").count() == 0
    words.nth(0).click()
    words.nth(0).click()
    page.mouse.move(0, 0)
    assert overlay.get_attribute("src") == original
    assert page.locator(".word.active").count() == 0

    assert requests and requests[0].startswith("file:"), requests
    outside = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not outside, f"page made network requests: {outside}"
    assert not errors, errors
    context.close()
