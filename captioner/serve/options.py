"""The server's limits and batching settings: one frozen dataclass, checked when it is made."""
from __future__ import annotations

from dataclasses import dataclass, fields
from numbers import Integral, Real

from captioner.config import HARD_DECODE_RULES

MB = 1_000_000  # --max-upload-mb counts decimal megabytes, as file managers show sizes


@dataclass(frozen=True)
class ServeOptions:
    """How `captioner serve` batches, and what it accepts.

    Attributes:
        max_batch: most images captioned in one model call.
        max_wait_ms: how long the model worker waits after the first request of a batch for
            more to join it (0: caption whatever is queued at once).
        max_upload_mb: largest request body, in MB (10^6 bytes): the image and its multipart
            wrapping. Checked against Content-Length first, then counted as the body streams in.
        max_queue: most caption requests in progress at once (being received, decoded, waiting
            for or inside the model); past it a request gets 503 at once, so memory stays bounded.
        max_beam_size: widest beam a request may ask for (each beam costs decoder work).
        default_beam_size: the beam when a request names none.
        max_len: longest caption, in words.
        results_kept: recent results kept in memory for the page's attention view and downloads.
        image_threads: threads that decode and preprocess uploads, and render overlays, off the
            event loop and beside the one model thread.
        hard_decode: how a hard-attention model reads each word's context when a request names
            no rule: "argmax" (the region the overlay shows) or "expectation" (the alpha-weighted
            mean, as the paper's code does at test time). Soft models ignore it.
    """

    max_batch: int = 16
    max_wait_ms: float = 20.0
    max_upload_mb: float = 20.0
    max_queue: int = 64
    max_beam_size: int = 10
    default_beam_size: int = 3
    max_len: int = 50
    results_kept: int = 32
    image_threads: int = 2
    hard_decode: str = "argmax"

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hard_decode":
                if value not in HARD_DECODE_RULES:
                    raise ValueError(f"{f.name} must be one of {', '.join(HARD_DECODE_RULES)}, got {value!r}")
                continue
            if f.type == "int":
                ok = isinstance(value, Integral) and not isinstance(value, bool) and value >= 1
                need = "an integer >= 1"
            else:
                ok = isinstance(value, Real) and not isinstance(value, bool) and value >= 0
                ok = ok and (value > 0 or f.name == "max_wait_ms")
                need = "a number >= 0" if f.name == "max_wait_ms" else "a number > 0"
            if not ok:
                raise ValueError(f"{f.name} must be {need}, got {value!r}")
        if self.default_beam_size > self.max_beam_size:
            raise ValueError(f"default_beam_size {self.default_beam_size} is above max_beam_size {self.max_beam_size}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_wait_s(self) -> float:
        return self.max_wait_ms / 1000.0
