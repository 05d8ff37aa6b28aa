"""Dynamic batching: requests that arrive close together are captioned in one model call.

One worker thread owns the model, so torch never runs on the event loop and two batches never
compete for the CPU. The worker takes the queued images (up to `max_batch`) and, while the batch
is not full, waits for the requests still on their way (admitted, their upload being received or
decoded: see `Batcher.arriving`), for at most `max_wait_s` after it took the first. A lone
request therefore never waits, and the model is never kept idle waiting for requests that do not
exist, which is how batching never lowers throughput. Under load, images also pile up while the
model is busy and go together into the next call. A batch is captioned through the one
captioning loop, `Captioner.caption_tensors`, one call per beam size (and hard-attention decoding
rule) present, and each image's
result equals its caption alone, up to float rounding: batched beam search keeps no state
across images (tests/test_serve_api.py checks it through the server).
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import NamedTuple

import torch

from captioner.captioning import Caption, Captioner

log = logging.getLogger("captioner.serve")


class Batched(NamedTuple):
    caption: Caption
    batch_size: int  # images in the model call that captioned it


class BatchStats(NamedTuple):
    batches: int  # model calls
    images: int  # images captioned
    largest: int  # most images in one call


class _Job(NamedTuple):
    image: torch.Tensor  # (3, S, S), preprocessed
    beam_size: int
    hard_decode: str  # how a hard-attention model reads its context (SearchOptions.hard_decode)
    future: Future


class Slot:
    """A request on its way to the model: `submit` its image once it is decoded."""

    def __init__(self, batcher: "Batcher") -> None:
        self._batcher, self.submitted = batcher, False

    def submit(self, image: torch.Tensor, beam_size: int, hard_decode: str) -> Future:
        """Queue one preprocessed image (3, S, S); the future's result is a `Batched`."""
        if self.submitted:
            raise RuntimeError("a slot takes one image")
        future = self._batcher._put(image, beam_size, hard_decode)
        self.submitted = True
        return future


class Batcher:
    """A queue in front of one model thread. Any thread may announce a request with `arriving`
    and submit its image through the slot; `close` captions what is queued, then stops."""

    def __init__(self, captioner: Captioner, *, max_batch: int, max_wait_s: float, max_len: int = 50) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1 and max_wait_s >= 0, got {max_batch} and {max_wait_s}")
        self.captioner = captioner
        self.max_batch, self.max_wait_s, self.max_len = max_batch, max_wait_s, max_len
        self._jobs: deque[_Job] = deque()
        self._arriving = 0  # requests announced by `arriving` and not yet submitted
        self._closed = False
        self._cond = threading.Condition()  # guards the three above
        self._thread = threading.Thread(target=self._run, name="captioner-model", daemon=True)
        self._stats = BatchStats(0, 0, 0)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stats(self) -> BatchStats:
        return self._stats

    @contextmanager
    def arriving(self) -> Iterator[Slot]:
        """Announce a request whose image is still being received or decoded, so that the
        worker may wait for it (within max_wait_s) before it starts a batch without it."""
        with self._cond:
            self._arriving += 1
        slot = Slot(self)
        try:
            yield slot
        finally:
            if not slot.submitted:  # refused, or failed: the worker need not wait for it
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def _put(self, image: torch.Tensor, beam_size: int, hard_decode: str) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model worker is shut down")
            self._jobs.append(_Job(image, beam_size, hard_decode, future))
            self._arriving -= 1
            self._cond.notify_all()
        return future

    def close(self, timeout: float | None = None) -> None:
        """Caption everything already queued, then stop the worker thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ the worker thread
    def _next_batch(self) -> list[_Job]:
        """Block for a first job, then wait for announced ones until the batch is full or the
        wait runs out. An empty list: closed, and nothing is left to caption."""
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while self._jobs and len(self._jobs) < self.max_batch and self._arriving > 0 and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return [self._jobs.popleft() for _ in range(min(len(self._jobs), self.max_batch))]

    def _caption(self, jobs: list[_Job]) -> None:
        settings = lambda j: (j.beam_size, j.hard_decode)  # noqa: E731 - one model call per setting
        for (beam_size, hard_decode), group in itertools.groupby(sorted(jobs, key=settings), key=settings):
            group = [j for j in group if j.future.set_running_or_notify_cancel()]
            if not group:
                continue
            try:
                images = torch.stack([j.image for j in group])  # (B, 3, S, S)
                captions = self.captioner.caption_tensors(images, beam_size=beam_size, max_len=self.max_len,
                                                          hard_decode=hard_decode)
            except Exception as err:  # noqa: BLE001 - every waiting request must hear of it
                log.exception("captioning a batch of %d failed", len(group))
                for j in group:
                    j.future.set_exception(err)
                continue
            s = self._stats
            self._stats = BatchStats(s.batches + 1, s.images + len(group), max(s.largest, len(group)))
            for j, caption in zip(group, captions, strict=True):
                j.future.set_result(Batched(caption, len(group)))

    def _run(self) -> None:
        while jobs := self._next_batch():
            self._caption(jobs)
