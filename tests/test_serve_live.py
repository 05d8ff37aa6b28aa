"""`captioner serve` as a real server: uvicorn on a free local port, raw sockets, signals, Chromium.

The in-process API tests are in tests/test_serve_api.py. Here:
- a Content-Length over the limit gets its 413 before the body is sent, and the connection closes;
- SIGTERM and SIGINT let the request in flight finish, then the process exits 0 (a subprocess
  running `python -m captioner.cli serve`, so the CLI's own signal handling is what is tested);
- the page in headless Chromium (Debian's, through Playwright; never `playwright install`):
  upload an image, wait for the caption, hover a word, the attention view changes.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from captioner import load_captioner
from captioner.cli import main
from captioner.data.scenes import generate_scenes
from captioner.serve.options import ServeOptions
from captioner.serve.server import bind_socket, build_server, is_loopback
from conftest import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 1, seed=7, size=128)
    return next((out / "images").glob("*.png"))


@pytest.fixture(scope="module")
def live_server(checkpoint: Path) -> Iterator[str]:
    """uvicorn in a thread, on a port the OS picked; yields its base URL."""
    cap = load_captioner(checkpoint, device="cpu")
    sock = bind_socket("127.0.0.1", 0)
    server = build_server(cap, ServeOptions(max_len=5, max_upload_mb=1), sock, host="127.0.0.1",
                          model_name="tiny.pt", log_level="warning")
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(30)
    sock.close()


def test_a_declared_oversize_body_is_refused_before_it_is_sent(live_server: str) -> None:
    port = int(live_server.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /api/caption HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000000\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):  # the server answers, then closes: no body was ever sent
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 "), reply
    assert b"connection: close" in head.lower()
    assert json.loads(body) == {"error": "request body over the limit of 1 MB (--max-upload-mb)"}


def test_the_live_server_captions_and_stays_healthy(live_server: str, scene: Path) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as client:
        r = client.post("/api/caption", files={"image": (scene.name, scene.read_bytes(), "image/png")})
        assert r.status_code == 200 and len(r.json()["tokens"]) == 5
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.get("/healthz", headers={"host": "evil.example"}).status_code == 400


def test_loopback_detection() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.5", "::", "example.com"]))


def test_serve_checks_its_flags_before_loading_a_model(capsys) -> None:
    for argv, message in ((["--max-batch", "0"], "--max-batch must be an integer >= 1"),
                          (["--max-wait-ms", "-5"], "--max-wait-ms must be a number >= 0"),
                          (["--max-upload-mb", "0"], "--max-upload-mb must be a number > 0"),
                          (["--port", "70000"], "--port must be from 0 to 65535")):
        assert main(["serve", "--checkpoint", "/nonexistent.pt", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_a_port_in_use_is_one_line(checkpoint: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--checkpoint", str(checkpoint), "--port", str(port), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- graceful shutdown


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_lets_the_request_in_flight_finish(checkpoint: Path, scene: Path, sig: signal.Signals) -> None:
    # The upload stops halfway until the signal has been sent, so the signal surely finds the
    # request in flight (a lone request is not held in the batch window, and on a loaded machine
    # polling for a short one is a race).
    cmd = [sys.executable, "-m", "captioner.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0",
           "--device", "cpu", "--max-batch", "8", "--log-level", "info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        first = proc.stderr.readline()
        match = re.search(r"captioner serve: (http://127\.0\.0\.1:\d+) ", first)
        assert match, first + proc.stderr.read()
        url = match.group(1)
        with httpx.Client(base_url=url, timeout=60) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # uvicorn starts listening after the announcement
                try:
                    if client.get("/healthz").json()["status"] == "ok":
                        break
                except httpx.TransportError:
                    time.sleep(0.05)
            reply: dict = {}
            signalled = threading.Event()
            boundary = "captioner-test-boundary"
            body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{scene.name}"\r\n'
                    f"Content-Type: image/png\r\n\r\n").encode() + scene.read_bytes() + f"\r\n--{boundary}--\r\n".encode()

            def halves():
                yield body[: len(body) // 2]
                signalled.wait(60)
                yield body[len(body) // 2:]

            def post() -> None:
                r = client.post("/api/caption", content=halves(),
                                headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                         "Content-Length": str(len(body))})
                reply.update(status=r.status_code, body=r.json())

            sender = threading.Thread(target=post)
            sender.start()
            with httpx.Client(base_url=url, timeout=10) as probe:
                deadline = time.monotonic() + 60
                while probe.get("/healthz").json()["in_progress"] < 1:
                    if time.monotonic() > deadline:
                        signalled.set()
                        raise AssertionError("the request never arrived")
                    time.sleep(0.02)
            proc.send_signal(sig)
            time.sleep(0.5)  # the server has begun to shut down while the upload is still open
            signalled.set()
            sender.join(60)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert reply.get("status") == 200 and len(reply["body"]["tokens"]) == 50, reply
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Finished server process" in err, err
    with pytest.raises(httpx.TransportError):  # and it is gone
        httpx.get(url + "/healthz", timeout=2)


# ----------------------------------------------------------------------------- the page, in Chromium


@pytest.mark.browser
def test_the_page_captions_an_upload_and_hovering_a_word_changes_the_view(live_server: str, scene: Path,
                                                                         chromium: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context()
            outside: list[str] = []

            def only_local(route) -> None:  # the page needs nothing but its own server
                url = route.request.url
                if url.startswith((live_server, "data:", "about:")):
                    route.continue_()
                else:
                    outside.append(url)
                    route.abort()

            context.route("**/*", only_local)
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(live_server + "/")
            expect(page.locator("#model")).to_have_text("tiny.pt")
            assert page.locator("#examples button.example").count() >= 3
            page.select_option("#beam", "2")

            page.set_input_files("#file", str(scene))
            caption = page.locator("#caption")
            expect(caption).not_to_be_empty(timeout=30_000)
            assert len(caption.inner_text().split()) == 5
            assert "batch of 1" in page.locator("#meta").inner_text()

            view = page.frame_locator("#view")
            overlay, words = view.locator("#overlay"), view.locator(".word")
            expect(words).to_have_count(5, timeout=30_000)
            original = overlay.get_attribute("src")
            assert original == overlay.get_attribute("data-original")
            words.nth(0).hover()
            expect(overlay).not_to_have_attribute("src", original)
            hovered = overlay.get_attribute("src")
            assert hovered == words.nth(0).get_attribute("data-src")
            words.nth(2).click()
            expect(words.nth(2)).to_have_class(re.compile(r"\bactive\b"))

            for link, kind in (("#png", "image/png"), ("#gif", "image/gif")):
                href = page.locator(link).get_attribute("href")
                r = page.request.get(live_server + href)
                assert r.status == 200 and r.headers["content-type"] == kind

            page.locator("#examples button.example").first.click()  # an example, by name
            expect(page.locator("#meta")).to_contain_text(page.locator("#examples button.example").first
                                                          .get_attribute("data-name"), timeout=30_000)

            assert not errors, errors
            bad = scene.parent / "notes.png"  # last: Chromium logs the 422 itself as a console error
            bad.write_text("not an image")
            page.set_input_files("#file", str(bad))
            expect(page.locator("#error")).to_contain_text("notes.png: not an image", timeout=30_000)
            assert not outside, outside
        finally:
            browser.close()
