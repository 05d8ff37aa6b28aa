"""`captioner serve`'s app in-process: the JSON API, its errors and limits, and dynamic batching.

Requests go through httpx's ASGI transport into the real Starlette app, with the batcher's
model thread started by the app's own lifespan; the model is a tiny seeded checkpoint
(conftest.py). tests/test_serve_live.py runs the same app under uvicorn, and in Chromium.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx
import numpy as np
import pytest

from captioner import load_captioner
from captioner.captioning import Captioner
from captioner.cli import main
from captioner.data.scenes import generate_scenes
from captioner.image.loading import load_image
from captioner.serve.app import LOOPBACK_HOSTS, caption_record, create_app
from captioner.serve.options import ServeOptions
from conftest import make_tiny_checkpoint
from test_cli_caption import png_header_only

REPO = Path(__file__).resolve().parents[1]
MAX_LEN = 5  # the tiny model never ends early (end_bias -20), so every caption has 5 words
FAST = ServeOptions(max_len=MAX_LEN, max_wait_ms=0)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


@pytest.fixture(scope="module")
def cap(checkpoint: Path) -> Captioner:
    return load_captioner(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 4, seed=7, size=64)
    return sorted((out / "images").glob("*.png"))


Client = httpx.AsyncClient


def serve(app, body: Callable[[Client], Awaitable[Any]], *, base_url: str = "http://127.0.0.1:8000",
          raise_app_exceptions: bool = True) -> Any:
    """Run `body(client)` against the app, inside the app's lifespan (its model thread)."""
    async def run() -> Any:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
            async with httpx.AsyncClient(transport=transport, base_url=base_url, timeout=60) as client:
                return await body(client)
    return asyncio.run(run())


def post_image(client: Client, data: bytes, name: str = "scene.png", **fields: str):
    return client.post("/api/caption", files={"image": (name, data, "image/png")}, data=fields)


def alone(cap: Captioner, path: Path, beam_size: int) -> dict:
    """The caption_record of one image captioned by itself, straight through the library."""
    [c] = cap.caption_tensors(cap.preprocess(load_image(path))[None], beam_size=beam_size, max_len=MAX_LEN)
    return caption_record(c, cap.grid)


def assert_same_caption(got: dict, want: dict) -> None:
    assert got["tokens"] == want["tokens"] and got["caption"] == want["caption"]
    assert got["grid"] == want["grid"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    np.testing.assert_allclose(np.array(got["alphas"]), np.array(want["alphas"]), atol=1e-5)


# ----------------------------------------------------------------------------- the good path


def test_a_good_image_gets_the_fields_of_caption_json(cap, checkpoint, scenes, capsys) -> None:
    app = create_app(cap, FAST)

    async def body(client: Client) -> dict:
        r = await post_image(client, scenes[0].read_bytes(), beam_size="2")
        assert r.status_code == 200, r.text
        return r.json()

    got = serve(app, body)
    assert main(["caption", str(scenes[0]), "--json", "--checkpoint", str(checkpoint), "--beam-size", "2",
                 "--max-len", str(MAX_LEN), "--device", "cpu"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    cli = json.loads(line)
    for key in ("caption", "tokens", "score", "grid", "alphas"):
        assert got[key] == cli[key], key
    assert len(got["tokens"]) == MAX_LEN and np.array(got["alphas"]).shape == (MAX_LEN, 2, 2)
    assert got["image"] == "scene.png" and got["beam_size"] == 2 and got["batch_size"] == 1
    assert set(got["links"]) == {"view", "png", "gif"}


def test_health_names_the_model(cap) -> None:
    async def body(client: Client) -> dict:
        r = await client.get("/healthz")
        assert r.status_code == 200
        return r.json()

    health = serve(create_app(cap, FAST, model_name="tiny.pt"), body)
    assert health["status"] == "ok" and health["in_progress"] == 0
    assert health["model"]["name"] == "tiny.pt" and health["model"]["grid"] == 2
    assert health["model"]["device"] == "cpu"


def test_the_page_lists_the_bundled_examples_and_a_named_one_is_captioned(cap) -> None:
    async def body(client: Client) -> tuple:
        page = await client.get("/")
        names = (await client.get("/api/examples")).json()["examples"]
        image = await client.get(f"/examples/{names[0]}")
        caption = await client.post("/api/caption", data={"example": names[0], "beam_size": "1"})
        return page, names, image, caption

    page, names, image, caption = serve(create_app(cap, FAST), body)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert json.dumps(names) in page.text and "__CONFIG__" not in page.text
    shipped = REPO / "captioner" / "assets" / "examples"
    assert names == sorted(p.name for p in shipped.iterdir()) and len(names) >= 3
    for name in names:  # the package's copies are data/examples' files, byte for byte
        assert (shipped / name).read_bytes() == (REPO / "data" / "examples" / name).read_bytes()
    assert image.status_code == 200 and image.content == (shipped / names[0]).read_bytes()
    assert caption.status_code == 200 and caption.json()["image"] == names[0]


def test_the_result_files_are_the_cli_overlays(cap, checkpoint, scenes, tmp_path, capsys) -> None:
    """One renderer: the page's view, PNG and GIF are byte for byte `caption --overlay-dir`'s files."""
    async def body(client: Client) -> dict:
        r = await post_image(client, scenes[1].read_bytes(), name=scenes[1].name, beam_size="2")
        links = r.json()["links"]
        return {kind: await client.get(url) for kind, url in links.items()}

    got = serve(create_app(cap, FAST), body)
    assert main(["caption", str(scenes[1]), "--checkpoint", str(checkpoint), "--beam-size", "2",
                 "--max-len", str(MAX_LEN), "--device", "cpu", "--overlay-dir", str(tmp_path),
                 "--gif", "--html"]) == 0
    capsys.readouterr()
    stem = scenes[1].stem
    assert got["view"].content == (tmp_path / f"{stem}.html").read_bytes()
    assert got["png"].content == (tmp_path / f"{stem}.png").read_bytes()
    assert got["gif"].content == (tmp_path / f"{stem}.gif").read_bytes()
    assert got["png"].headers["content-type"] == "image/png"
    assert got["png"].headers["content-disposition"] == f'attachment; filename="{stem}-attention.png"'
    assert got["gif"].headers["content-type"] == "image/gif"
    assert "frame-ancestors 'self'" in got["view"].headers["content-security-policy"]


def test_only_the_last_results_are_kept(cap, scenes) -> None:
    async def body(client: Client) -> list[int]:
        ids = [(await post_image(client, scenes[0].read_bytes())).json()["id"] for _ in range(3)]
        assert len(set(ids)) == 3
        return [(await client.get(f"/api/results/{rid}/panel.png")).status_code for rid in ids]

    assert serve(create_app(cap, ServeOptions(max_len=MAX_LEN, max_wait_ms=0, results_kept=2)), body) == [404, 200, 200]


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind, reason", [
    ("empty", "empty file"),
    ("text", "not an image"),
    ("truncated", "truncated or corrupt image data"),
    ("bomb", "decompression bomb"),  # over twice Pillow's limit: refused by Image.open
    ("big", "decompression bomb"),  # between 1x and 2x: refused by our header check
])
def test_unusable_images_are_refused_with_422(cap, scenes, kind, reason) -> None:
    good = scenes[0].read_bytes()
    data = {"empty": b"", "text": b"<html><body>404 Not Found</body></html>\n", "truncated": good[: len(good) // 2],
            "bomb": png_header_only(60000, 60000), "big": png_header_only(10000, 10000)}[kind]

    async def body(client: Client) -> tuple:
        t = time.perf_counter()
        r = await post_image(client, data, name=f"{kind}.png")
        seconds = time.perf_counter() - t
        after = await post_image(client, good)  # the server goes on
        return r, seconds, after.status_code

    r, seconds, after = serve(create_app(cap, FAST), body)
    assert r.status_code == 422, r.text
    assert set(r.json()) == {"error"} and reason in r.json()["error"] and f"{kind}.png" in r.json()["error"]
    assert "Traceback" not in r.text and after == 200
    if kind in ("bomb", "big"):
        assert seconds < 2, "a bomb must be refused from its header, before decoding"


@pytest.mark.parametrize("fields, status, message", [
    ({"beam_size": "0"}, 422, "beam_size must be an integer from 1 to 10"),
    ({"beam_size": "11"}, 422, "beam_size must be an integer from 1 to 10"),
    ({"beam_size": "two"}, 422, "beam_size must be an integer"),
    ({"beam_size": "2.5"}, 422, "beam_size must be an integer"),
    ({"beam_size": "-1"}, 422, "beam_size must be an integer"),
    ({"example": "scene_1.png"}, 422, "either an image or an example"),
    ({"hard_decode": "sample"}, 422, "hard_decode must be one of argmax, expectation, got 'sample'"),
])
def test_bad_fields_are_refused(cap, scenes, fields, status, message) -> None:
    async def body(client: Client):
        return await post_image(client, scenes[0].read_bytes(), **fields)

    r = serve(create_app(cap, FAST), body)
    assert r.status_code == status and message in r.json()["error"], r.text


@pytest.mark.parametrize("case, status, message", [
    ("no image", 400, "no image"),
    ("image as text", 400, "must be a file upload"),
    ("not multipart", 400, "no image"),
    ("broken multipart", 400, "multipart"),
    ("unknown example", 422, "no example named '../../etc/passwd'"),
    ("bad content-length", 400, "Content-Length"),
])
def test_malformed_requests_are_refused(cap, case, status, message) -> None:
    async def body(client: Client):
        if case == "no image":
            return await client.post("/api/caption", data={"beam_size": "2"})
        if case == "image as text":
            return await client.post("/api/caption", data={"image": "cat.png"})
        if case == "not multipart":
            return await client.post("/api/caption", json={"image": "cat.png"})
        if case == "broken multipart":
            return await client.post("/api/caption", content=b"--x\r\ngarbage",
                                     headers={"content-type": "multipart/form-data"})
        if case == "unknown example":
            return await client.post("/api/caption", data={"example": "../../etc/passwd"})
        return await client.post("/api/caption", content=b"x", headers={"content-length": "12abc"})

    r = serve(create_app(cap, FAST), body)
    assert r.status_code == status and message in r.json()["error"], r.text


def test_unknown_routes_methods_and_results_are_json_errors(cap) -> None:
    async def body(client: Client) -> list:
        return [await client.get("/nope"), await client.get("/api/caption"),
                await client.get("/api/results/not-an-id/panel.png"), await client.get("/examples/../default.pt")]

    for r in serve(create_app(cap, FAST), body):
        assert r.status_code in (404, 405) and set(r.json()) == {"error"}, r.text


def test_a_foreign_host_header_is_refused_on_loopback(cap) -> None:
    async def body(client: Client):
        return await client.get("/healthz")

    app = create_app(cap, FAST, allowed_hosts=LOOPBACK_HOSTS)
    r = serve(app, body, base_url="http://attacker.example")
    assert r.status_code == 400 and "Host" in r.json()["error"]
    assert serve(create_app(cap, FAST, allowed_hosts=LOOPBACK_HOSTS), body,
                 base_url="http://localhost:8000").status_code == 200


# ----------------------------------------------------------------------------- limits


def test_an_oversize_body_gets_413_before_it_is_read(cap) -> None:
    """Counted as it streams (no Content-Length), and refused from a Content-Length that is too big:
    either way the server stops reading long before the end of the body."""
    limit_mb, chunk, chunks = 0.1, 16_384, 200  # 100 kB limit, a 3.3 MB body
    app = create_app(cap, ServeOptions(max_len=MAX_LEN, max_wait_ms=0, max_upload_mb=limit_mb))
    head = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n'
            b'Content-Type: image/png\r\n\r\n')

    async def body(client: Client) -> list[tuple[int, dict, str, int]]:
        out = []
        for declared in (None, str(len(head) + chunk * chunks)):
            sent = 0

            async def stream() -> AsyncIterator[bytes]:
                nonlocal sent
                yield head
                for _ in range(chunks):
                    sent += 1
                    yield b"\0" * chunk

            headers = {"content-type": "multipart/form-data; boundary=b"}
            if declared:
                headers["content-length"] = declared
            r = await client.post("/api/caption", content=stream(), headers=headers)
            out.append((r.status_code, r.json(), r.headers.get("connection", ""), sent))
        return out

    (streamed, s_json, s_conn, s_sent), (declared, d_json, d_conn, d_sent) = serve(app, body)
    assert streamed == 413 and "over the limit of 0.1 MB" in s_json["error"] and s_conn == "close"
    assert s_sent <= limit_mb * 1e6 / chunk + 2, f"read {s_sent} of {chunks} chunks"
    assert declared == 413 and d_conn == "close" and d_sent == 0


class HeldCaptioner:
    """The tiny captioner, except that the model thread waits for `release` before each batch:
    a stand-in for a busy model, so the queue fills deterministically."""

    def __init__(self, inner: Captioner, fail_once: bool = False) -> None:
        self.inner, self.release, self.fail_once = inner, threading.Event(), fail_once

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def caption_tensors(self, images, **kwargs):
        assert self.release.wait(60)
        if self.fail_once:
            self.fail_once = False
            raise RuntimeError("the model broke")
        return self.inner.caption_tensors(images, **kwargs)


async def wait_for(client: Client, key: str, value: int) -> None:
    for _ in range(600):
        if (await client.get("/healthz")).json()[key] == value:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"healthz never showed {key} = {value}")


def test_past_the_queue_limit_a_request_gets_503(cap, scenes) -> None:
    held = HeldCaptioner(cap)
    app = create_app(held, ServeOptions(max_len=MAX_LEN, max_wait_ms=0, max_batch=1, max_queue=2))
    image = scenes[0].read_bytes()

    async def body(client: Client) -> tuple:
        waiting = [asyncio.create_task(post_image(client, image)) for _ in range(2)]
        await wait_for(client, "in_progress", 2)
        refused = await post_image(client, image)
        held.release.set()
        answered = await asyncio.gather(*waiting)
        again = await post_image(client, image)
        return refused, answered, again

    refused, answered, again = serve(app, body)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert "limit (--max-queue) is 2" in refused.json()["error"]
    assert [r.status_code for r in answered] == [200, 200] and again.status_code == 200


def test_a_failing_batch_is_a_json_500_and_the_server_goes_on(cap, scenes) -> None:
    held = HeldCaptioner(cap, fail_once=True)
    held.release.set()
    app = create_app(held, FAST)

    async def body(client: Client) -> tuple:
        return (await post_image(client, scenes[0].read_bytes()), await post_image(client, scenes[0].read_bytes()),
                (await client.get("/healthz")).json())

    failed, ok, health = serve(app, body, raise_app_exceptions=False)
    assert failed.status_code == 500 and failed.json() == {
        "error": "internal error (RuntimeError); the server log has the details"}
    assert ok.status_code == 200 and health["status"] == "ok"


# ----------------------------------------------------------------------------- dynamic batching


def test_concurrent_requests_are_captioned_in_one_batch_and_equal_each_alone(cap, scenes) -> None:
    # The batch closes as soon as max_batch requests are in, so the long wait costs nothing here;
    # it only makes sure that all four join even on a slow, loaded machine.
    app = create_app(cap, ServeOptions(max_len=MAX_LEN, max_batch=4, max_wait_ms=5000))

    async def body(client: Client) -> tuple:
        replies = await asyncio.gather(*(post_image(client, p.read_bytes(), name=p.name, beam_size="3")
                                         for p in scenes))
        return replies, (await client.get("/healthz")).json()

    replies, health = serve(app, body)
    assert [r.status_code for r in replies] == [200] * 4
    assert [r.json()["batch_size"] for r in replies] == [4] * 4
    assert (health["batches"], health["captioned"], health["largest_batch"]) == (1, 4, 4)
    for path, r in zip(scenes, replies, strict=True):
        assert r.json()["image"] == path.name
        assert_same_caption(r.json(), alone(cap, path, beam_size=3))
    assert len({r.json()["caption"] for r in replies}) > 1, "the scenes' captions differ, or the check is empty"


def test_a_batch_runs_one_model_call_per_beam_size(cap, scenes) -> None:
    app = create_app(cap, ServeOptions(max_len=MAX_LEN, max_batch=4, max_wait_ms=5000))
    beams = ["1", "3", "1", "3"]

    async def body(client: Client) -> list:
        return await asyncio.gather(*(post_image(client, p.read_bytes(), beam_size=k) for p, k in zip(scenes, beams)))

    replies = serve(app, body)
    assert [r.json()["batch_size"] for r in replies] == [2] * 4
    for path, k, r in zip(scenes, beams, replies, strict=True):
        assert r.json()["beam_size"] == int(k)
        assert_same_caption(r.json(), alone(cap, path, beam_size=int(k)))


def test_the_batch_waits_only_for_requests_on_their_way(cap, scenes) -> None:
    """A lone request, or one whose companion is refused, is captioned at once: the model never
    idles through the batch window for requests that will not come."""
    app = create_app(cap, ServeOptions(max_len=MAX_LEN, max_batch=4, max_wait_ms=5000))

    async def body(client: Client) -> tuple:
        t = time.perf_counter()
        lone = await post_image(client, scenes[0].read_bytes())
        t_lone = time.perf_counter() - t
        t = time.perf_counter()
        good, bad = await asyncio.gather(post_image(client, scenes[1].read_bytes()), post_image(client, b"junk"))
        return lone, t_lone, good, bad, time.perf_counter() - t

    lone, t_lone, good, bad, t_pair = serve(app, body)
    assert lone.status_code == 200 and lone.json()["batch_size"] == 1 and t_lone < 2.5
    assert good.status_code == 200 and bad.status_code == 422 and t_pair < 2.5


def test_a_hard_model_decodes_by_the_rule_each_request_names(tmp_path, scenes) -> None:
    """A hard-attention model: the requests' `hard_decode` (or the server's default) picks how
    each word's context is read; one model call per rule, each reply equal to that image captioned
    alone with its rule; the page offers the choice. A soft model answers hard_decode null."""
    hard = load_captioner(make_tiny_checkpoint(tmp_path / "hard.pt", seed=3, attention="hard"), device="cpu")
    app = create_app(hard, ServeOptions(max_len=MAX_LEN, max_batch=4, max_wait_ms=5000, hard_decode="expectation"))
    rules = ["argmax", "expectation", "argmax", ""]  # "": the server's default

    async def body(client: Client) -> tuple:
        page = await client.get("/")
        replies = await asyncio.gather(*(post_image(client, p.read_bytes(), hard_decode=rule)
                                         for p, rule in zip(scenes, rules)))
        return page, replies

    page, replies = serve(app, body)
    assert '"hard": true' in page.text and '"hard_decode": "expectation"' in page.text
    assert [r.json()["batch_size"] for r in replies] == [2] * 4
    for path, rule, r in zip(scenes, rules, replies, strict=True):
        rule = rule or "expectation"
        assert r.json()["hard_decode"] == rule
        [want] = hard.caption_tensors(hard.preprocess(load_image(path))[None], max_len=MAX_LEN, hard_decode=rule)
        assert_same_caption(r.json(), caption_record(want, hard.grid))
        one_hot = set(np.unique(r.json()["alphas"])) <= {0.0, 1.0}
        assert one_hot == (rule == "argmax")  # argmax: the region read; expectation: alpha itself

    async def soft_body(client: Client):
        return await client.get("/"), await post_image(client, scenes[0].read_bytes(), hard_decode="expectation")

    soft_page, soft = serve(create_app(load_captioner(make_tiny_checkpoint(tmp_path / "soft.pt", seed=3),
                                                      device="cpu"), FAST), soft_body)
    assert soft.status_code == 200 and soft.json()["hard_decode"] is None and '"hard": false' in soft_page.text


def test_options_are_checked_when_made() -> None:
    for bad in ({"max_batch": 0}, {"max_queue": 0}, {"max_wait_ms": -1}, {"max_upload_mb": 0},
                {"max_batch": 2.5}, {"default_beam_size": 11}, {"hard_decode": "sample"}):
        with pytest.raises(ValueError):
            ServeOptions(**bad)
    assert ServeOptions(max_wait_ms=0).max_wait_s == 0 and ServeOptions().max_upload_bytes == 20_000_000
