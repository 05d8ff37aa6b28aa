"""Recent results, kept in memory for the page: its attention view and its downloads.

A result is found by a random id the server made (never by anything the client chose), and
the store is bounded: past `capacity` results the oldest is dropped, so memory stays flat
however many requests come. The overlay files are rendered on first request by
`captioner.overlay.files.overlay_bytes`, the renderer `captioner caption --overlay-dir` uses,
and kept with the result.
"""
from __future__ import annotations

import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from PIL import Image

from captioner.captioning import Caption
from captioner.overlay.files import overlay_bytes
from captioner.overlay.options import OverlayOptions, OverlaySizes

#: The kept copy of an image is at most this many pixels on its longer side: above every
#: overlay size (OverlaySizes: panels 224, GIF 320, page 384), far below an upload's.
KEEP_SIDE = 512


def shrunk(image: Image.Image) -> Image.Image:
    """A copy at most KEEP_SIDE px on its longer side (smaller images are kept as they are)."""
    small = image.copy()
    small.thumbnail((KEEP_SIDE, KEEP_SIDE), Image.Resampling.BICUBIC)
    return small


def safe_stem(name: str) -> str:
    """A download file name's stem from a client's file name: letters, digits, '.', '_', '-'."""
    stem = name.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:60]
    return stem or "image"


@dataclass
class Result:
    image: Image.Image  # shrunk()
    caption: Caption
    stem: str  # for download names
    files: dict[str, bytes] = field(default_factory=dict)  # "png" | "gif" | "html" -> rendered bytes
    lock: threading.Lock = field(default_factory=threading.Lock)

    def overlay(self, kind: str, options: OverlayOptions = OverlayOptions(),
                sizes: OverlaySizes = OverlaySizes()) -> bytes:
        """The overlay file of this result (rendered once; call it off the event loop)."""
        with self.lock:
            if kind not in self.files:
                self.files[kind] = overlay_bytes(kind, self.image, self.caption.tokens, self.caption.alphas,
                                                 caption=self.caption.text, options=options, sizes=sizes)
            return self.files[kind]


class ResultStore:
    """The last `capacity` results by id; used from the event loop only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Result] = OrderedDict()

    def add(self, result: Result) -> str:
        rid = secrets.token_urlsafe(12)
        self._items[rid] = result
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return rid

    def get(self, rid: str) -> Result | None:
        return self._items.get(rid)

    def __len__(self) -> int:
        return len(self._items)
