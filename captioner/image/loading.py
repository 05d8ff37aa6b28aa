"""One robust image loader, used by every stage that reads pixels.

Real caption datasets contain every kind of awkward file: phone JPEGs whose pixels are stored
sideways with an EXIF orientation tag, greyscale and CMYK JPEGs, transparent PNGs, 16-bit
scientific PNGs, truncated downloads and the odd HTML error page saved as ``.jpg``. Loading them
in one place means training, evaluation and captioning all see the same RGB pixels, and a bad
file becomes one :class:`ImageLoadError` that names the file instead of a crash deep inside a
DataLoader worker.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["IMAGE_EXTENSIONS", "ImageLoadError", "list_images", "load_image", "load_image_file", "to_rgb"]

#: Lower-case file suffixes that :func:`list_images` treats as images.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
)

# Modes with an alpha channel: composited over white, the usual look of a transparent image on
# a page. Dropping alpha instead exposes whatever colour the transparent pixels happen to hold
# (often black), which the encoder would then "see".
_ALPHA_MODES = frozenset({"LA", "La", "RGBA", "RGBa", "PA"})
# Single-channel modes with more than 8 bits: rescaled by their actual value range.
_WIDE_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Grey value used for a wide-range image that holds a single value: without any contrast there
# is no meaningful brightness to recover, so we pick the neutral middle.
_CONSTANT_GREY = 128


class ImageLoadError(Exception):
    """An image that cannot be used, with the file and a human reason.

    Carries ``path`` and ``reason`` separately so callers (datasets, the CLI) can report the
    reason without parsing the message. It pickles, so it can cross DataLoader worker processes.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


def list_images(directory: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``directory``, sorted by name.

    Non-recursive and chosen by suffix (case-insensitive), so listing a folder of 100k images
    stays cheap. Hidden files (names starting with ``.``, e.g. macOS ``._x.jpg`` resource forks,
    which are not images) are skipped.
    """
    d = Path(directory)
    if not d.exists():
        raise FileNotFoundError(f"{d}: directory not found")
    if not d.is_dir():
        raise NotADirectoryError(f"{d}: not a directory")
    return sorted(
        p for p in d.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )


def load_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """Load ``source`` as an upright RGB image, or raise :class:`ImageLoadError`.

    A path is checked (exists, is a file, is not empty), opened, checked against Pillow's
    decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) from the header alone, and only then
    fully decoded, so truncation is detected here rather than later in a transform. The EXIF
    orientation is applied and the mode converted with :func:`to_rgb`. An already-open PIL image
    is oriented and converted only. The returned image holds no open file.
    """
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL.Image>"
        return to_rgb(_upright(source, name), name)

    path = Path(source)
    name = str(path)
    if not path.exists():
        raise ImageLoadError(name, "file not found")
    if path.is_dir():
        raise ImageLoadError(name, "is a directory, not an image file")
    try:
        if path.stat().st_size == 0:
            raise ImageLoadError(name, "empty file")
    except OSError as e:  # e.g. a broken network mount
        raise ImageLoadError(name, f"cannot read file ({e.strerror or e})") from e

    return _decode(path, name)


def load_image_file(file: BinaryIO, name: str = "<upload>") -> Image.Image:
    """Load an open binary file (an upload, bytes in a ``BytesIO``) as :func:`load_image` loads a
    path: the same checks (empty, not an image, decompression bomb refused from the header,
    truncated), the same orientation and RGB conversion. ``name`` stands for the file in errors.
    The file must be seekable; it is read from its start and left open.
    """
    try:
        file.seek(0, os.SEEK_END)
        empty = file.tell() == 0
        file.seek(0)
    except (OSError, ValueError) as e:  # closed, or not seekable
        raise ImageLoadError(name, f"cannot read file ({e})") from e
    if empty:
        raise ImageLoadError(name, "empty file")
    return _decode(file, name)


def _decode(source: Path | BinaryIO, name: str) -> Image.Image:
    """Open (a path or a binary file), refuse a decompression bomb from the header, then decode."""
    try:
        # Our own size check below refuses images above the limit; silence Pillow's warning so
        # the refusal is an error, not a warning followed by a slow decode.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(name, f"image too large, refused as a possible decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageLoadError(name, "not an image (unrecognised format)") from e
    except PermissionError as e:
        raise ImageLoadError(name, "permission denied") from e
    except OSError as e:
        raise ImageLoadError(name, f"cannot read file ({e})") from e

    with img:
        limit = Image.MAX_IMAGE_PIXELS
        pixels = img.width * img.height
        if limit is not None and pixels > limit:
            raise ImageLoadError(
                name,
                f"image too large ({img.width}x{img.height} = {pixels} pixels > limit {limit}), "
                "refused as a possible decompression bomb",
            )
        try:
            img.load()
        # Pillow's decoders raise a zoo of types for bad data (OSError, SyntaxError, ValueError,
        # EOFError, struct.error, zlib.error, ...); all of them mean the same thing to us.
        except Exception as e:  # noqa: BLE001
            raise ImageLoadError(name, f"truncated or corrupt image data ({type(e).__name__}: {e})") from e
        rgb = to_rgb(_upright(img, name), name)
        if rgb is img:  # detach from the file handle closed by `with`
            rgb = img.copy()
    return rgb


def _upright(img: Image.Image, name: str) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is warned about, not fatal."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception as e:  # noqa: BLE001 - malformed EXIF raises various types
        warnings.warn(f"{name}: ignoring unreadable EXIF orientation ({e})", stacklevel=3)
        return img


def to_rgb(img: Image.Image, name: str = "<image>") -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without losing the picture.

    - alpha (LA, RGBA, PA, palette with transparency) is composited over white;
    - 16/32-bit integer and float images (I;16, I, F) are rescaled from their actual
      min..max to 0..255, because a plain ``convert`` clips them (a 16-bit PNG comes out white).
      A constant image becomes mid-grey (128);
    - everything else (1, L, P, CMYK, YCbCr, ...) uses Pillow's own conversion.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P":
        mode = "PA" if "transparency" in img.info else "P"
        if mode == "PA":
            img = img.convert("RGBA")
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _WIDE_MODES:
        return _rescale_wide(img).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as e:
        raise ImageLoadError(name, f"unsupported colour mode {img.mode!r} ({e})") from e


def _rescale_wide(img: Image.Image) -> Image.Image:
    """Map a single-channel wide image's finite value range onto 0..255 (mode L)."""
    try:
        a = np.asarray(img, dtype=np.float64)
    except (TypeError, ValueError):  # exotic layouts (e.g. big-endian I;16B on old numpy)
        a = np.asarray(img.convert("I"), dtype=np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return Image.new("L", img.size, _CONSTANT_GREY)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if hi <= lo:
        return Image.new("L", img.size, _CONSTANT_GREY)
    a = np.where(finite, a, lo)
    out = np.clip(np.rint((a - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
    return Image.fromarray(out)  # 2-D uint8 -> mode L
