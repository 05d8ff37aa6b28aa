"""The example images the page offers, shipped inside the package (captioner/assets/examples/).

They are read once, at start-up, into a name -> bytes table; a request picks one by name from
that table, so no client input ever becomes a path on the server.
"""
from __future__ import annotations

from importlib.resources import files
from captioner.image.loading import IMAGE_EXTENSIONS

_MEDIA_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                ".webp": "image/webp", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}


def load_examples() -> dict[str, bytes]:
    """{file name: bytes} of the bundled examples, sorted by name."""
    folder = files("captioner").joinpath("assets", "examples")
    if not folder.is_dir():
        return {}
    found = {f.name: f.read_bytes() for f in folder.iterdir()
             if f.is_file() and not f.name.startswith(".") and _suffix(f.name) in IMAGE_EXTENSIONS}
    return dict(sorted(found.items()))


def media_type(name: str) -> str:
    return _MEDIA_TYPES.get(_suffix(name), "application/octet-stream")


def _suffix(name: str) -> str:
    return name[name.rfind("."):].lower() if "." in name else ""

