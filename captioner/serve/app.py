"""The web app (Starlette, ASGI): the page, the JSON API and the files of recent results.

    GET  /                               the page (upload, examples, beam size, attention view)
    POST /api/caption                    multipart: `image` (a file) or `example` (a name), `beam_size`,
                                         `hard_decode` (hard-attention models: argmax or expectation)
    GET  /api/examples                   the bundled examples' names
    GET  /api/results/{id}/view          the interactive attention page (render_html)
    GET  /api/results/{id}/panel.png     the panel grid; /animation.gif the animation
    GET  /examples/{name}                a bundled example image
    GET  /healthz                        {"status": "ok", "model": {...}, ...}

Every error is JSON `{"error": "..."}` with its status code, never a traceback. Nothing here
runs torch or decodes pixels on the event loop: uploads are decoded and overlays rendered in a
small thread pool, and the model runs in the batcher's one thread.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any, AsyncIterator, BinaryIO, Callable, Iterable, TypeVar

import anyio
import python_multipart  # noqa: F401 - Starlette parses forms with it, and would only say so at the first upload
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from captioner.captioning import Caption, Captioner
from captioner.config import HARD_DECODE_RULES
from captioner.image.loading import ImageLoadError, load_image_file
from captioner.serve.batching import Batcher
from captioner.serve.examples import load_examples, media_type
from captioner.serve.options import ServeOptions
from captioner.serve.results import Result, ResultStore, safe_stem, shrunk

log = logging.getLogger("captioner.serve")
T = TypeVar("T")

#: Host names a server bound to a loopback address answers to. Anything else is refused, so a
#: web page elsewhere cannot reach it through a DNS name that resolves to 127.0.0.1.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

_PAGE_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "img-src 'self' data: blob:; connect-src 'self'; frame-src 'self'; base-uri 'none'; "
             "form-action 'none'; frame-ancestors 'none'")
_VIEW_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
             "base-uri 'none'; frame-ancestors 'self'")
_FILES = {"panel.png": ("png", "image/png"), "animation.gif": ("gif", "image/gif")}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def caption_record(caption: Caption, grid: int) -> dict[str, Any]:
    """The fields of `captioner caption --json`, rounded the same way."""
    return {"caption": caption.text, "tokens": caption.tokens, "score": round(caption.score, 6), "grid": grid,
            "alphas": [[[round(float(v), 6) for v in row] for row in a] for a in caption.alphas]}


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    """A request we answer with an error: status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class _Guard:
    """Pure ASGI middleware: the Host check, and `nosniff` on every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str] | None) -> None:
        self.app = app
        self.allowed = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.allowed is not None:
            host = Headers(scope=scope).get("host", "")
            name = re.sub(r":\d+$", "", host).lower()
            if name not in self.allowed:
                await error(400, f"Host {host!r} is not one this server answers to "
                                 f"({', '.join(sorted(self.allowed))}); start it with --host to serve another "
                                 "name")(scope, receive, send)
                return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-content-type-options", b"nosniff")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Service:
    """Everything the routes share: the options, the batcher, recent results, the examples."""

    def __init__(self, captioner: Captioner, options: ServeOptions, model_name: str) -> None:
        self.captioner, self.options = captioner, options
        self.hard = captioner.config.model.attention == "hard"
        self.model = {"name": model_name, "device": str(captioner.device), "grid": captioner.grid,
                      "image_size": captioner.config.model.image_size, "backbone": captioner.config.model.backbone,
                      "vocab_size": len(captioner.vocab), **captioner.checkpoint_info}
        self.batcher = Batcher(captioner, max_batch=options.max_batch, max_wait_s=options.max_wait_s,
                               max_len=options.max_len)
        self.results = ResultStore(options.results_kept)
        self.examples = load_examples()
        self.in_progress = 0  # caption requests admitted and not yet answered (event loop only)
        self.threads: anyio.CapacityLimiter | None = None  # made in the lifespan: it needs the loop
        self.page = self._page()

    def _page(self) -> str:
        config = {"examples": list(self.examples), "max_upload_bytes": self.options.max_upload_bytes,
                  "max_beam_size": self.options.max_beam_size, "default_beam_size": self.options.default_beam_size,
                  "model": self.model["name"], "hard": self.hard, "hard_decode": self.options.hard_decode}
        blob = json.dumps(config).replace("<", "\\u003c")  # cannot close the <script> it sits in
        template = files("captioner.serve").joinpath("page.html").read_text(encoding="utf-8")
        return template.replace("__CONFIG__", blob)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.threads = anyio.CapacityLimiter(self.options.image_threads)
        self.batcher.start()
        try:
            yield
        finally:  # the server has finished its in-flight requests by now
            await anyio.to_thread.run_sync(self.batcher.close)

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.threads)

    # ------------------------------------------------------------------ routes
    async def page_route(self, request: Request) -> Response:
        return HTMLResponse(self.page, headers={"content-security-policy": _PAGE_CSP, "cache-control": "no-store"})

    async def healthz(self, request: Request) -> Response:
        stats = self.batcher.stats
        body = {"status": "ok" if self.batcher.alive else "error", "model": self.model,
                "in_progress": self.in_progress, "max_queue": self.options.max_queue,
                "max_batch": self.options.max_batch, "batches": stats.batches, "captioned": stats.images,
                "largest_batch": stats.largest}
        return JSONResponse(body, status_code=200 if self.batcher.alive else 503)

    async def examples_route(self, request: Request) -> Response:
        return JSONResponse({"examples": list(self.examples)})

    async def example_image(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in self.examples:
            return error(404, f"no example named {name!r}; the examples are {', '.join(self.examples)}")
        return Response(self.examples[name], media_type=media_type(name), headers={"cache-control": "max-age=3600"})

    async def result_file(self, request: Request) -> Response:
        result = self._result(request)
        if isinstance(result, Response):
            return result
        what = request.path_params["file"]
        if what not in _FILES:
            return error(404, f"no such file: {what}; a result has panel.png and animation.gif")
        kind, media = _FILES[what]
        data = await self.in_thread(result.overlay, kind)
        disposition = f'attachment; filename="{result.stem}-attention.{kind}"'
        return Response(data, media_type=media, headers={"content-disposition": disposition})

    async def result_view(self, request: Request) -> Response:
        result = self._result(request)
        if isinstance(result, Response):
            return result
        page = await self.in_thread(result.overlay, "html")
        return Response(page, media_type="text/html; charset=utf-8", headers={"content-security-policy": _VIEW_CSP})

    def _result(self, request: Request) -> Result | Response:
        result = self.results.get(request.path_params["rid"])
        if result is None:
            return error(404, f"no result {request.path_params['rid']!r}: only the last "
                              f"{self.options.results_kept} results are kept; caption the image again")
        if not result.caption.tokens:
            return error(404, "the caption is empty, so there is no attention to show")
        return result

    async def caption(self, request: Request) -> Response:
        if self.in_progress >= self.options.max_queue:
            return error(503, f"busy: {self.in_progress} requests are in progress, the limit "
                              f"(--max-queue) is {self.options.max_queue}; try again shortly",
                         headers={"retry-after": "1"})
        self.in_progress += 1
        try:
            return await self._caption(request)
        except _Refused as err:
            return error(err.status, err.message)
        except _TooLarge:
            # Connection: close, so the server does not read (and throw away) the rest of the body.
            return error(413, f"request body over the limit of {self.options.max_upload_mb:g} MB "
                              "(--max-upload-mb)", headers={"connection": "close"})
        finally:
            self.in_progress -= 1

    async def _caption(self, request: Request) -> Response:
        limit = self.options.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            if not declared.isdigit():
                raise _Refused(400, f"bad Content-Length {declared!r}")
            raise _TooLarge
        with self.batcher.arriving() as slot:  # from here the model worker may wait for this image
            form = await _read_form(request, limit)
            try:
                beam_size, hard_decode = self._beam_size(form), self._hard_decode(form)
                file, name = self._image_source(form)
                image, kept = await self.in_thread(self._prepare, file, name)
                try:
                    # A soft model ignores the rule: its requests batch together whatever they name.
                    future = slot.submit(image, beam_size, hard_decode if self.hard else self.options.hard_decode)
                except RuntimeError:
                    raise _Refused(503, "the server is shutting down") from None
            finally:
                await form.close()
        done = await asyncio.wrap_future(future)
        result = Result(kept, done.caption, safe_stem(name))
        rid = self.results.add(result)
        base = f"/api/results/{rid}"
        links = ({"view": f"{base}/view", "png": f"{base}/panel.png", "gif": f"{base}/animation.gif"}
                 if done.caption.tokens else None)
        body = {"image": name, **caption_record(done.caption, self.captioner.grid), "beam_size": beam_size,
                "hard_decode": hard_decode if self.hard else None, "id": rid, "batch_size": done.batch_size,
                "links": links}
        return JSONResponse(body)

    def _beam_size(self, form: FormData) -> int:
        value = form.get("beam_size")
        top = self.options.max_beam_size
        if value is None or value == "":
            return self.options.default_beam_size
        text = value.strip() if isinstance(value, str) else None
        if text is None or not text.isdigit() or not 1 <= int(text) <= top:
            shown = value if isinstance(value, str) else "a file"
            raise _Refused(422, f"beam_size must be an integer from 1 to {top}, got {shown!r}")
        return int(text)

    def _hard_decode(self, form: FormData) -> str:
        """The request's decoding rule for a hard-attention model (a soft model ignores it, but a
        bad value is refused all the same, so a client learns of its mistake on any model)."""
        value = form.get("hard_decode")
        if value is None or value == "":
            return self.options.hard_decode
        if not isinstance(value, str) or value.strip() not in HARD_DECODE_RULES:
            shown = value if isinstance(value, str) else "a file"
            raise _Refused(422, f"hard_decode must be one of {', '.join(HARD_DECODE_RULES)}, got {shown!r}")
        return value.strip()

    def _image_source(self, form: FormData) -> tuple[BinaryIO, str]:
        upload, example = form.get("image"), form.get("example")
        if upload is not None and example is not None:
            raise _Refused(422, "give either an image or an example, not both")
        if example is not None:
            if not isinstance(example, str) or example not in self.examples:
                raise _Refused(422, f"no example named {example if isinstance(example, str) else 'a file'!r}; "
                                    f"the examples are {', '.join(self.examples) or 'none'}")
            return io.BytesIO(self.examples[example]), example
        if upload is None:
            raise _Refused(400, "no image: send multipart/form-data with a file field 'image' "
                                "(or a field 'example' naming a bundled example)")
        if not isinstance(upload, UploadFile):
            raise _Refused(400, "the field 'image' must be a file upload, not text")
        return upload.file, upload.filename or "upload"

    def _prepare(self, file: BinaryIO, name: str) -> tuple[torch.Tensor, Image.Image]:
        """Decode with the CLI's checks (empty, not an image, bomb, truncated) and preprocess."""
        try:
            image = load_image_file(file, name)
        except ImageLoadError as err:
            raise _Refused(422, str(err)) from None
        return self.captioner.preprocess(image), shrunk(image)


async def _read_form(request: Request, limit: int) -> FormData:
    """Parse the multipart body while counting its bytes; over `limit`, stop reading at once."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
        return message

    try:
        return await Request(request.scope, counted).form(max_files=1, max_fields=4)
    except ClientDisconnect:
        raise _Refused(400, "the client went away before sending the whole request") from None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, headers=dict(exc.headers or {}))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error(500, f"internal error ({type(exc).__name__}); the server log has the details")


def create_app(captioner: Captioner, options: ServeOptions = ServeOptions(), *, model_name: str = "model",
               allowed_hosts: Iterable[str] | None = None) -> Starlette:
    """The ASGI app around one captioner. `allowed_hosts` (None: any) are the Host names it
    answers; `captioner serve` passes LOOPBACK_HOSTS when it binds a loopback address.

    The batcher's thread starts and stops with the app's lifespan (uvicorn runs it; in-process
    tests enter `app.router.lifespan_context(app)`).
    """
    service = _Service(captioner, options, model_name)
    routes = [
        Route("/", service.page_route),
        Route("/healthz", service.healthz),
        Route("/api/caption", service.caption, methods=["POST"]),
        Route("/api/examples", service.examples_route),
        Route("/api/results/{rid}/view", service.result_view),
        Route("/api/results/{rid}/{file}", service.result_file),
        Route("/examples/{name}", service.example_image),
    ]
    app = Starlette(routes=routes, lifespan=service.lifespan,
                    middleware=[Middleware(_Guard, allowed_hosts=allowed_hosts)],
                    exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.state.service = service
    return app
