"""Run the app under uvicorn on one socket: bind it, serve, and shut down gracefully.

On SIGINT or SIGTERM uvicorn stops accepting connections, lets the requests in flight finish
(for at most SHUTDOWN_GRACE_S), then runs the app's lifespan shutdown, which drains the
batcher and stops its thread. A second Ctrl-C quits at once.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from typing import Callable

import uvicorn

from captioner.captioning import Captioner
from captioner.config import ConfigError
from captioner.serve.app import LOOPBACK_HOSTS, create_app
from captioner.serve.options import ServeOptions

#: How long in-flight requests may take to finish after a shutdown signal.
SHUTDOWN_GRACE_S = 30


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one; read it from getsockname())."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except (OSError, UnicodeError) as err:
        raise ConfigError(f"--host {host!r}: cannot resolve it ({err})") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({err.strerror or err})") from None
    sock.set_inheritable(True)
    return sock


def build_server(captioner: Captioner, options: ServeOptions, sock: socket.socket, *, host: str,
                 model_name: str, log_level: str = "info") -> uvicorn.Server:
    """A uvicorn server for the app on `sock`; `.run(sockets=[sock])` serves until told to stop."""
    allowed = LOOPBACK_HOSTS if is_loopback(host) else None
    app = create_app(captioner, options, model_name=model_name, allowed_hosts=allowed)
    config = uvicorn.Config(app, host=host, port=sock.getsockname()[1], log_level=log_level,
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S, lifespan="on", http="h11",
                            loop="asyncio", ws="none", server_header=False)
    return uvicorn.Server(config)


def run_server(captioner: Captioner, options: ServeOptions, *, host: str = "127.0.0.1", port: int = 8000,
               model_name: str = "model", log_level: str = "info",
               announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully and return. Main thread only."""
    sock = bind_socket(host, port)
    shown = f"[{host.strip('[]')}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    (announce or (lambda line: print(line, file=sys.stderr, flush=True)))(
        f"captioner serve: {url} (model {model_name} on {captioner.device}; max batch {options.max_batch}, "
        f"max wait {options.max_wait_ms:g} ms, uploads up to {options.max_upload_mb:g} MB, "
        f"queue {options.max_queue})")
    if not is_loopback(host):
        logging.getLogger("captioner.serve").warning(
            "listening on %s: other machines can reach this demo, and it has no authentication", host)
    server = build_server(captioner, options, sock, host=host, model_name=model_name, log_level=log_level)
    # uvicorn handles SIGTERM while it serves and, after its graceful shutdown, raises the signal
    # again under the handler it found: a no-op here, so that the command then exits normally.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # SIGINT, raised again the same way after the graceful shutdown
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
