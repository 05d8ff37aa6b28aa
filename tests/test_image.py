"""The image loader on awkward formats and bad files, all made here in tmp_path."""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
from PIL import Image, ImageFile

from captioner.image.loading import IMAGE_EXTENSIONS, ImageLoadError, list_images, load_image, load_image_file


def _px(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    assert img.mode == "RGB"
    return img.getpixel(xy)


# ----------------------------------------------------------------------------- awkward formats


def test_exif_orientation_is_applied(tmp_path):
    # Stored sideways: left half red, right half blue, 40 wide x 20 high. Orientation 6 means
    # "rotate 90 degrees clockwise to display", so upright it is 20 x 40 with red on top.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    Image.fromarray(a).save(path, quality=95, exif=exif.tobytes())

    img = load_image(path)
    assert img.size == (20, 40)
    top, bottom = _px(img, (10, 5)), _px(img, (10, 34))
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_grey_and_one_bit(tmp_path):
    a = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (4, 1))
    Image.fromarray(a).save(tmp_path / "grey.png")
    img = load_image(tmp_path / "grey.png")
    assert img.mode == "RGB" and img.size == (16, 4)
    assert _px(img, (3, 1)) == (48, 48, 48)

    bw = Image.new("1", (8, 8), 0)
    bw.putpixel((2, 2), 1)
    bw.save(tmp_path / "bw.png")
    img = load_image(tmp_path / "bw.png")
    assert _px(img, (2, 2)) == (255, 255, 255) and _px(img, (0, 0)) == (0, 0, 0)


def test_rgba_and_la_composite_over_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)  # transparent black everywhere
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[1, 1] = (0, 0, 0, 128)  # half-transparent black
    Image.fromarray(a, mode="RGBA").save(tmp_path / "rgba.png")
    img = load_image(tmp_path / "rgba.png")
    assert _px(img, (3, 3)) == (255, 255, 255)  # not black: transparency is white
    assert _px(img, (0, 0)) == (255, 0, 0)
    assert all(120 <= v <= 135 for v in _px(img, (1, 1)))

    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((0, 0), (50, 255))
    img = load_image(la)  # an in-memory image works too
    assert _px(img, (1, 1)) == (255, 255, 255) and _px(img, (0, 0)) == (50, 50, 50)


def test_palette_with_and_without_transparency(tmp_path):
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 0, 0, 200, 0] + [0] * (256 * 3 - 6))
    p.putpixel((0, 0), 1)
    p.save(tmp_path / "pal.png", transparency=0)
    img = load_image(tmp_path / "pal.png")
    assert _px(img, (0, 0)) == (0, 200, 0)
    assert _px(img, (2, 2)) == (255, 255, 255)

    p.save(tmp_path / "pal.gif")  # no transparency: index 0 stays black
    img = load_image(tmp_path / "pal.gif")
    assert _px(img, (2, 2)) == (0, 0, 0) and _px(img, (0, 0)) == (0, 200, 0)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    with Image.open(tmp_path / "cmyk.jpg") as raw:
        assert raw.mode == "CMYK"
    r, g, b = _px(load_image(tmp_path / "cmyk.jpg"), (8, 8))
    assert r > 200 and g < 60 and b < 60


def test_16_bit_png_keeps_its_gradient(tmp_path):
    a = np.tile(np.linspace(1000, 3000, 64), (8, 1)).astype(np.uint16)  # left-to-right ramp
    Image.fromarray(a).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as raw:
        assert raw.mode.startswith("I")
    img = np.asarray(load_image(tmp_path / "deep.png"))
    assert img.min() == 0 and img.max() == 255  # neither all white nor all black
    row = img[4, :, 0].astype(int)
    assert (np.diff(row) >= 0).all() and row[32] in range(120, 136)
    assert (img[..., 0] == img[..., 1]).all()

    Image.fromarray(np.full((4, 4), 2000, np.uint16)).save(tmp_path / "flat.png")
    assert _px(load_image(tmp_path / "flat.png"), (1, 1)) == (128, 128, 128)  # documented mid-grey


def test_float_and_int32_tiff(tmp_path):
    f = np.linspace(-1.0, 1.0, 32, dtype=np.float32).reshape(4, 8)
    f[0, 0] = np.nan  # non-finite values must not poison the range
    Image.fromarray(f).save(tmp_path / "float.tif")
    img = np.asarray(load_image(tmp_path / "float.tif"))
    assert img[..., 0].max() == 255 and img[3, 7, 0] == 255 and img[0, 1, 0] < 10

    i32 = (np.arange(32, dtype=np.int32).reshape(4, 8) * 100000)
    Image.fromarray(i32).save(tmp_path / "int.tif")
    img = np.asarray(load_image(tmp_path / "int.tif"))
    assert img[0, 0, 0] == 0 and img[3, 7, 0] == 255


def test_returned_image_is_detached_from_file(tmp_path):
    Image.new("RGB", (4, 4), (1, 2, 3)).save(tmp_path / "x.png")
    img = load_image(tmp_path / "x.png")
    (tmp_path / "x.png").unlink()
    assert img.getpixel((0, 0)) == (1, 2, 3)


# ----------------------------------------------------------------------------- bad files


def _reason(path) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as info:
        load_image(path)
    e = info.value
    assert e.path == str(path) and str(e) == f"{path}: {e.reason}"
    return e


def test_missing_empty_directory_and_text(tmp_path):
    assert _reason(tmp_path / "nope.jpg").reason == "file not found"
    (tmp_path / "empty.png").write_bytes(b"")
    assert _reason(tmp_path / "empty.png").reason == "empty file"
    (tmp_path / "folder.jpg").mkdir()
    assert "directory" in _reason(tmp_path / "folder.jpg").reason
    (tmp_path / "page.jpg").write_text("<html>404 not found</html>")
    assert _reason(tmp_path / "page.jpg").reason == "not an image (unrecognised format)"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file(tmp_path, fmt):
    rng = np.random.default_rng(0)
    path = tmp_path / f"cut.{fmt.lower()}"
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _reason(path).reason.startswith("truncated or corrupt image data")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # no global switch flipped


@pytest.mark.parametrize("side", [40, 100])  # 1600 px: Pillow's warning zone; 10000: its error zone
def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch, side):
    path = tmp_path / "bomb.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)

    def no_decode(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # must not leak out
        e = _reason(path)
    assert time.perf_counter() - t0 < 0.5
    assert "too large" in e.reason and "decompression bomb" in e.reason


def test_an_open_file_loads_as_its_path_does(tmp_path):
    """load_image_file (uploads) runs load_image's checks: the same pixels, the same refusals."""
    import io

    rng = np.random.default_rng(1)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:60])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    with open(good, "rb") as f:
        assert np.array_equal(np.asarray(load_image_file(f, "up.png")), np.asarray(load_image(good)))
        assert not f.closed
    for name in ("cut.png", "text.png", "empty.png"):
        with pytest.raises(ImageLoadError) as from_file:
            load_image_file(io.BytesIO((tmp_path / name).read_bytes()), name)
        assert from_file.value.reason == _reason(tmp_path / name).reason and from_file.value.path == name


def test_error_pickles_across_processes():
    e = ImageLoadError("a/b.jpg", "empty file")
    back = pickle.loads(pickle.dumps(e))
    assert (back.path, back.reason, str(back)) == ("a/b.jpg", "empty file", "a/b.jpg: empty file")


# ----------------------------------------------------------------------------- listing


def test_list_images(tmp_path):
    for name in ["b.JPG", "a.png", "c.Tiff", "notes.txt", ".hidden.jpg", "d.webp"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "e.jpg").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG", "c.Tiff", "d.webp"]
    assert set(IMAGE_EXTENSIONS) == {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
    with pytest.raises(FileNotFoundError, match="missing"):
        list_images(tmp_path / "missing")
