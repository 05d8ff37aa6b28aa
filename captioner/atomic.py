"""Atomic file writes: a temp file beside the target, renamed over it only once it is complete.

A kill at any moment leaves either the old file or the new one, never a torn one. Checkpoints
and the feature cache both write this way; a killed write leaves a `.NAME.*.tmp` file, which
`remove_leftover_temps` clears on the next run.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; on success it is fsynced and renamed over
    `path` (with the permissions a plain open would give), on any error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs are shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_leftover_temps(path: str | os.PathLike) -> int:
    """Delete the temp files (`.NAME.*.tmp` beside `path`) that an atomic write of `path` leaves
    when its process is killed before the rename; returns how many were removed."""
    path = Path(path)
    leftovers = list(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for tmp in leftovers:
        tmp.unlink(missing_ok=True)
    return len(leftovers)
