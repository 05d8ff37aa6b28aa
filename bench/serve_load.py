"""`captioner serve` under load: 8 clients, 400 requests, good and bad, on 127.0.0.1.

The server is the installed `captioner serve` with the default model, in its own process, run
twice: with dynamic batching (the default --max-batch 16, --max-wait-ms 20) and with
--max-batch 1. Each run gets the same requests: three in four caption a generated scene (beam 3)
and must come back with the caption that image gets alone; one in four is bad (not an image, a
truncated PNG, a decompression bomb, beam_size 0, a body declared over --max-upload-mb) and
must be refused with its 4xx. /healthz must still say ok at the end, with nothing in progress.

On a CPU the CNN runs a few images a call at most (features.encoder.default_encode_chunk: one,
or four with OpenVINO, which gains it a little), so batching mostly speeds up the decoder:
measured here in-process, in the same run, the decoder's share of the per-image time gives the
bound on the gain (1 / (1 - share): a decoder that cost nothing, the CNN as costly as alone), and
the batched decoder's own speed-up gives the gain the parts predict. On a GPU, where the CNN
batches too, the gain can be far larger.
"""
from __future__ import annotations

import http.client
import json
import re
import signal
import struct
import subprocess
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from common import REPO, Figure, captioner_cmd, judged, log, median
from decode_speed import scene_images
from models import DefaultModel, Sizes

BEAM = 3
TOO_LARGE = 25_000_000  # declared Content-Length: over the default --max-upload-mb 20


@dataclass(frozen=True)
class Load:
    clients: int
    requests: int
    images: int  # distinct good images
    share_repeats: int
    batch: int  # images in the batched-decoder measurement (the server's --max-batch)
    rounds: int  # load runs per server, alternating between the two servers

    @classmethod
    def of(cls, sizes: Sizes) -> "Load":
        return cls(2, 20, 2, 1, 2, 1) if sizes.quick else cls(8, 400, 8, 2, 16, 3)


@dataclass(frozen=True)
class Request:
    kind: str  # "good" or the bad input's name
    body: bytes | None  # None: headers only, declaring TOO_LARGE bytes
    content_type: str
    status: int  # what the server must answer
    expected: list[str] | None = None  # tokens, for a good one


def multipart(fields: dict[str, str], image: bytes | None, name: str = "image.png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    if image is not None:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def png_bomb(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose header claims width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def requests(images: list[Path], expected: list[list[str]], n: int) -> list[Request]:
    """n requests: every 4th bad (cycling through the kinds), the rest good (cycling through images)."""
    good = [multipart({"beam_size": str(BEAM)}, p.read_bytes(), p.name) for p in images]
    first = images[0].read_bytes()
    bad = [("not_an_image", *multipart({}, b"<html><body>404 Not Found</body></html>"), 422),
           ("truncated", *multipart({}, first[: len(first) // 2]), 422),
           ("bomb", *multipart({}, png_bomb(60000, 60000)), 422),
           ("bad_beam", *multipart({"beam_size": "0"}, first), 422),
           ("too_large", None, good[0][1], 413)]
    out = []
    for i in range(n):
        if i % 4 == 3:
            kind, body, ctype, status = bad[(i // 4) % len(bad)]
            out.append(Request(kind, body, ctype, status))
        else:
            j = (i - i // 4) % len(images)
            out.append(Request("good", good[j][0], good[j][1], 200, expected[j]))
    return out


class FeatureBatch(NamedTuple):
    """What `Captioner.caption_batches(..., from_features=True)` takes."""

    images: torch.Tensor  # (B, P, E) region features
    index: torch.Tensor  # (B,)
    skipped: list[str]


class Parts:
    """The parts of per-image time, through the library's captioning calls: the CNN on one image,
    beam search on one image, and beam search per image in a batch of `load.batch`. Timed in
    rounds between the server runs (with no server running), so that a change of load on the
    machine reaches the parts and the runs alike; the figures are medians over all rounds."""

    def __init__(self, dm: DefaultModel, images: list[Path], load: Load) -> None:
        from captioner import load_captioner
        from captioner.captioning import SearchOptions
        from captioner.image.loading import load_image

        self.cap = load_captioner(dm.checkpoint, device="cpu", engine="auto")  # as `captioner serve` runs it
        self.options = SearchOptions(beam_size=BEAM)
        self.load = load
        self.x = torch.stack([self.cap.preprocess(load_image(p)) for p in images])  # (N, 3, S, S)
        with torch.inference_mode():
            self.feats = torch.cat([self.cap.model.encode(self.x[i:i + 1]) for i in range(len(self.x))])  # (N, P, E)
        self.batch = self.feats[torch.arange(load.batch) % len(self.feats)]  # (batch, P, E)
        self.x_batch = self.x[torch.arange(load.batch) % len(self.x)]  # (batch, 3, S, S)
        self.times: dict[str, list[float]] = {k: [] for k in ("cnn_s", "decoder_alone_s", "decoder_batched_s",
                                                               "call_alone_s", "call_batched_s")}
        self.round(timed=False)  # warm-up

    def expected(self) -> list[list[str]]:
        """Each image's caption alone: what the server must answer."""
        return [self.cap.caption_tensors(self.x[i:i + 1], beam_size=BEAM)[0].tokens for i in range(len(self.x))]

    def _beam_search(self, feats: torch.Tensor) -> None:  # (B, P, E)
        list(self.cap.caption_batches([FeatureBatch(feats, torch.arange(len(feats)), [])], self.options,
                                      from_features=True))

    def round(self, timed: bool = True) -> None:
        with torch.inference_mode():
            for _ in range(self.load.share_repeats if timed else 1):
                for i in range(len(self.x)):
                    t = time.perf_counter()
                    self.cap.model.encode(self.x[i:i + 1])
                    t_enc = time.perf_counter() - t
                    t = time.perf_counter()
                    self._beam_search(self.feats[i:i + 1])
                    t_dec = time.perf_counter() - t
                    t = time.perf_counter()
                    self.cap.caption_tensors(self.x[i:i + 1], beam_size=BEAM)
                    t_call = time.perf_counter() - t
                    if timed:
                        self.times["cnn_s"].append(t_enc)
                        self.times["decoder_alone_s"].append(t_dec)
                        self.times["call_alone_s"].append(t_call)
                t = time.perf_counter()
                self._beam_search(self.batch)
                t_bat = (time.perf_counter() - t) / self.load.batch
                t = time.perf_counter()
                self.cap.caption_tensors(self.x_batch, beam_size=BEAM)
                t_call = (time.perf_counter() - t) / self.load.batch
                if timed:
                    self.times["decoder_batched_s"].append(t_bat)
                    self.times["call_batched_s"].append(t_call)

    def summary(self) -> dict:
        out = {k: median(v) for k, v in self.times.items()}
        enc, dec, bat = out["cnn_s"], out["decoder_alone_s"], out["decoder_batched_s"]
        share = dec / (enc + dec)
        return {**out, "share": share, "bound": 1 / (1 - share), "predicted": (enc + dec) / (enc + bat),
                "call_gain": out["call_alone_s"] / out["call_batched_s"]}


class Server:
    """`captioner serve --port 0` in a child process, on 127.0.0.1."""

    def __init__(self, max_batch: int) -> None:
        cmd = captioner_cmd() + ["serve", "--port", "0", "--max-batch", str(max_batch), "--log-level", "warning"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+) ", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"captioner serve did not start: {line}{self.proc.stderr.read()[-3000:]}")
        self.port = int(match.group(1))
        self._stderr: list[str] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()
        for _ in range(600):
            try:
                if self.health()["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("captioner serve never became healthy")

    def health(self) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/healthz")
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
        return float("nan")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def send(conn: http.client.HTTPConnection, req: Request) -> tuple[int, dict]:
    if req.body is None:  # headers only: the server must refuse from Content-Length alone
        conn.putrequest("POST", "/api/caption")
        conn.putheader("Content-Type", req.content_type)
        conn.putheader("Content-Length", str(TOO_LARGE))
        conn.endheaders()
    else:
        conn.request("POST", "/api/caption", body=req.body, headers={"Content-Type": req.content_type})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    if resp.will_close:
        conn.close()  # reopened by the next request
    return resp.status, body


def load_run(server: Server, reqs: list[Request], clients: int) -> dict:
    """The requests over `clients` keep-alive connections at once; latency per good request."""
    latencies: list[float] = []
    wrong: list[str] = []
    lock = threading.Lock()

    def client(mine: list[Request]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for req in mine:
            t = time.perf_counter()
            try:
                status, body = send(conn, req)
            except (OSError, http.client.HTTPException, ValueError) as err:
                status, body = -1, {"error": f"{type(err).__name__}: {err}"}
                conn.close()
            dt = time.perf_counter() - t
            ok = status == req.status and (body.get("tokens") == req.expected if req.kind == "good"
                                           else set(body) == {"error"})
            with lock:
                if req.kind == "good":
                    latencies.append(dt)
                if not ok:
                    wrong.append(f"{req.kind}: {status} {str(body)[:200]}")
        conn.close()

    threads = [threading.Thread(target=client, args=(reqs[i::clients],)) for i in range(clients)]
    before = server.health()
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    health = server.health()
    healthy = health.get("status") == "ok" and health.get("in_progress") == 0
    ms = np.array(latencies) * 1000
    return {"wall_s": wall, "good": len(latencies), "throughput": len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "wrong": wrong, "healthy": healthy, "mean_batch": (health["captioned"] - before["captioned"]) / max(1, health["batches"] - before["batches"]),
            "largest_batch": health["largest_batch"], "peak_rss_mb": server.peak_rss_mb()}


def run(sizes: Sizes, dm: DefaultModel, work: Path) -> tuple[list[Figure], list[dict]]:
    load = Load.of(sizes)
    images = scene_images(work, load.images)
    timer = Parts(dm, images, load)
    reqs = requests(images, timer.expected(), load.requests)
    n_bad = sum(r.kind != "good" for r in reqs)
    figs: list[Figure] = []
    rows: list[dict] = []
    results = {}
    configs = {"batched": 16, "max_batch_1": 1}
    # Both servers stay up and take turns, so that a change of load on this shared machine hits
    # them alike; each figure is the run with the median throughput of its server.
    servers = {label: Server(max_batch) for label, max_batch in configs.items()}
    runs: dict[str, list[dict]] = {label: [] for label in configs}
    codes: dict[str, int] = {}
    try:
        for server in servers.values():
            load_run(server, reqs[: 2 * load.clients], load.clients)  # warm-up, untimed
        for _ in range(load.rounds):
            for label, server in servers.items():
                timer.round()
                runs[label].append(load_run(server, reqs, load.clients))
    finally:
        codes = {label: server.stop() for label, server in servers.items()}
    for label, max_batch in configs.items():
        ordered = sorted(runs[label], key=lambda run: run["throughput"])
        r = {**ordered[len(ordered) // 2], "exit_code": codes[label]}
        r["wrong"] = [w for run in runs[label] for w in run["wrong"]]
        r["healthy"] = all(run["healthy"] for run in runs[label])
        results[label] = r
        flag = f"--max-batch {max_batch}"
        code = codes[label]
        failures = len(r["wrong"]) + (not r["healthy"]) + (code != 0)
        log(f"serve {flag}: {r['throughput']:.2f} images/s, p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB, mean batch {r['mean_batch']:.1f}; failures {failures}"
            + (f": {r['wrong'][:3]}" if r["wrong"] else ""))
        each = ", ".join(f"{run['throughput']:.1f}" for run in runs[label])
        cond = (f"`captioner serve {flag}`, default model, beam {BEAM}; {load.clients} clients, {len(reqs)} requests "
                f"({len(reqs) - n_bad} good, {n_bad} bad), median of {load.rounds} runs alternating with the other "
                f"server ({each} images/s)")
        figs += [
            Figure(f"serve.{label}.throughput", r["throughput"], "images/s",
                   note=f"{cond}; good requests answered / wall time ({r['wall_s']:.1f} s)"),
            Figure(f"serve.{label}.p50_latency", r["p50_ms"], "ms", note="good requests, client-side"),
            Figure(f"serve.{label}.p95_latency", r["p95_ms"], "ms", note="good requests, client-side"),
            Figure(f"serve.{label}.peak_rss", r["peak_rss_mb"], "MB", note="the server process (VmHWM)"),
            Figure(f"serve.{label}.mean_batch", r["mean_batch"], "images",
                   note=f"images per model call (largest {r['largest_batch']})"),
            judged(f"serve.{label}.failures", failures, "requests", "<=", 0,
                   "wrong answers, missing refusals, and /healthz not ok (or the server not exiting 0 on SIGTERM) "
                   "at the end"),
        ]
        rows.append({"table": "serve", "config": flag, **{k: v for k, v in r.items() if k != "wrong"},
                     "failures": failures})
    timer.round()
    parts = timer.summary()
    log(f"serve: CNN {parts['cnn_s'] * 1000:.0f} ms/image, decoder {parts['decoder_alone_s'] * 1000:.0f} ms alone, "
        f"{parts['decoder_batched_s'] * 1000:.0f} ms/image in a batch of {load.batch}: decoder share "
        f"{parts['share']:.2f}, bound {parts['bound']:.2f}x, predicted {parts['predicted']:.2f}x; the model call "
        f"{parts['call_alone_s'] * 1000:.0f} ms alone, {parts['call_batched_s'] * 1000:.0f} ms/image batched")
    gain = results["batched"]["throughput"] / results["max_batch_1"]["throughput"]
    figs += [
        judged("serve.batching_gain", gain, "x", ">=", 1,
               "throughput with --max-batch 16 / with --max-batch 1, same requests; batching must never lower it"),
        Figure("serve.decoder_share", parts["share"], "fraction",
               note=f"beam search / (CNN + beam search), one image alone, medians over 3 rounds between the server runs: {parts['decoder_alone_s'] * 1000:.0f} ms / "
                    f"({parts['cnn_s'] * 1000:.0f} + {parts['decoder_alone_s'] * 1000:.0f}) ms, in-process"),
        Figure("serve.gain_bound", parts["bound"], "x",
               note="1 / (1 - decoder share): the gain if batching made the decoder free and left the CNN's "
                    "per-image cost as it is alone (on a CPU it runs 1-4 images a call)"),
        Figure("serve.gain_predicted", parts["predicted"], "x",
               note=f"(CNN + decoder alone) / (CNN + decoder per image in a batch of {load.batch}: "
                    f"{parts['decoder_batched_s'] * 1000:.0f} ms)"),
        Figure("serve.model_call_gain", parts["call_gain"], "x",
               note=f"the server's whole model call (Captioner.caption_tensors): one image "
                    f"{parts['call_alone_s'] * 1000:.0f} ms / per image in a batch of {load.batch} "
                    f"{parts['call_batched_s'] * 1000:.0f} ms, in-process"),
    ]
    rows.append({"table": "serve_parts", **parts, "batch": load.batch, "gain": gain})
    return figs, rows
