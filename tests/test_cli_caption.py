"""`captioner caption` end to end on generated scenes, with a tiny checkpoint (conftest.py).

Most runs call `captioner.cli.main([...])` in-process (importing torch in a subprocess costs
seconds); one subprocess runs the `caption.py` wrapper, as a user would.

The tiny model uses the *offline* ImageNet EfficientNet-Lite0 weights, not a random encoder:
a randomly initialised EfficientNet's features collapse to ~1e-9 after its BatchNorms, so every
image would get the same caption and uniform attention, and "batch size does not change the
captions" would hold trivially. With real features the captions differ between images, and the
checkpoint stays small because a frozen offline encoder is not stored in it.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image

from captioner.cli import main
from captioner.image.loading import ImageLoadError, load_image
from captioner.data.scene_spec import COLORS, SHAPES, SIZES
from captioner.data.scenes import generate_scenes
from conftest import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
GRID = 2
WORDS = ("a", "and", *SIZES, *COLORS, *SHAPES)
OUTPUT_WORDS = {"<unk>", *WORDS}  # what a caption may contain: no <pad>, <start>, <end>
FAST = ["--max-len", "5", "--device", "cpu"]  # every caption is then 5 words (see tiny_checkpoint)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded, untrained 64 px / 2 x 2 grid model that never emits <end> first, so every
    caption is --max-len words long; seed 3 gives the five test scenes different captions."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", seed=3, grid=GRID,
                                words=WORDS, end_bias=-20.0)


@pytest.fixture(scope="session")
def scene_paths(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Five generated scenes, 64 px, sorted by name."""
    out = tmp_path_factory.mktemp("scenes")
    generate_scenes(out, 5, seed=7, size=64)
    return sorted((out / "images").glob("*.png"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose valid IHDR claims width x height RGB pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"")) + _png_chunk(b"IEND", b""))


class BadInputs(NamedTuple):
    missing: Path
    empty: Path
    truncated: Path
    text_as_jpg: Path
    bomb: Path  # over twice Pillow's limit: Pillow itself refuses it at open
    big: Path  # between 1x and 2x the limit: Pillow only warns; our header check refuses it


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory, scene_paths: list[Path]) -> BadInputs:
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.png").write_bytes(b"")
    good = scene_paths[0].read_bytes()
    (d / "truncated.png").write_bytes(good[: len(good) // 2])
    (d / "notes.jpg").write_text("<html><body>404 Not Found</body></html>\n")
    (d / "bomb.png").write_bytes(png_header_only(60000, 60000))
    (d / "big.png").write_bytes(png_header_only(10000, 10000))
    return BadInputs(d / "missing.png", d / "empty.png", d / "truncated.png", d / "notes.jpg",
                     d / "bomb.png", d / "big.png")


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str], list[str]]:
    """main(["caption", ...]) in-process -> (exit code, stdout lines, stderr lines)."""
    code = main(["caption", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> str:
    """argparse exits with 2 on usage errors; returns its stderr."""
    with pytest.raises(SystemExit) as exc:
        main(["caption", *map(str, argv)])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    return err


def parse_tab_lines(lines: list[str]) -> dict[str, str]:
    parsed = {}
    for line in lines:
        path, caption = line.split("\t")  # exactly one tab
        parsed[path] = caption
    return parsed


# ----------------------------------------------------------------------------- exit code 0


def test_file_directory_and_glob_inputs(capsys, tiny_checkpoint, scene_paths, tmp_path):
    # A directory of images written out of order, plus files that are not images: the
    # directory is listed sorted by name and only images are captioned.
    d = tmp_path / "in"
    d.mkdir()
    for i in (3, 0, 4, 1, 2):
        shutil.copy(scene_paths[i], d / f"img_{i}.png")
    (d / "readme.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"macOS resource fork, not a PNG")
    expected = [str(d / f"img_{i}.png") for i in range(5)]

    code, out, err = run_cli(capsys, d, "--checkpoint", tiny_checkpoint, *FAST)
    assert code == 0 and err == []
    assert [line.split("\t")[0] for line in out] == expected
    captions = parse_tab_lines(out)
    for caption in captions.values():
        assert caption and all(w in OUTPUT_WORDS for w in caption.split(" "))

    # A glob (expanded sorted) and a plain file, in the order given; same captions as before.
    code, out, err = run_cli(capsys, d / "img_[0-2].png", expected[4], "--checkpoint", tiny_checkpoint, *FAST)
    assert code == 0 and err == []
    assert out == [f"{p}\t{captions[p]}" for p in (*expected[:3], expected[4])]


@pytest.mark.slow
def test_caption_py_wrapper_subprocess(tiny_checkpoint, scene_paths, bad_inputs):
    """The repo-root wrapper as a user runs it: a good file, a bad one -> exit 1, no traceback."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "caption.py"), str(scene_paths[0]), str(bad_inputs.text_as_jpg),
         "--checkpoint", str(tiny_checkpoint), *FAST],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 1 and out[0].startswith(f"{scene_paths[0]}\t") and out[0].split("\t")[1]
    err = proc.stderr.splitlines()
    assert len(err) == 1 and str(bad_inputs.text_as_jpg) in err[0] and "not an image" in err[0]
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- exit code 1


def test_bad_inputs_are_reported_and_good_ones_still_captioned(capsys, tiny_checkpoint, scene_paths,
                                                               bad_inputs):
    good_a, good_b = scene_paths[0], scene_paths[1]
    inputs = [good_a, bad_inputs.missing, bad_inputs.empty, bad_inputs.truncated,
              bad_inputs.text_as_jpg, good_b, bad_inputs.bomb, bad_inputs.big]
    # Batches of 2 put bad inputs next to good ones, and one batch holds only bad ones.
    code, out, err = run_cli(capsys, *inputs, "--checkpoint", tiny_checkpoint, "--batch-size", "2", *FAST)
    assert code == 1
    assert [line.split("\t")[0] for line in out] == [str(good_a), str(good_b)]
    assert all(line.split("\t")[1] for line in out)
    assert not any("Traceback" in line for line in err)
    reasons = {"missing": "not found", "empty": "empty file", "truncated": "truncated",
               "text_as_jpg": "not an image", "bomb": "decompression bomb", "big": "decompression bomb"}
    assert len(err) == len(reasons), err  # exactly one line per bad input, nothing else
    for name, reason in reasons.items():
        path = str(getattr(bad_inputs, name))
        [line] = [line for line in err if path in line]
        assert reason in line, line


@pytest.mark.parametrize("name", ["bomb", "big"])
def test_decompression_bomb_is_refused_from_the_header(bad_inputs, name):
    """60000^2 (or 10000^2) RGB would be gigabytes; refusing must not start decoding it."""
    path = getattr(bad_inputs, name)
    assert path.stat().st_size < 100
    start = time.perf_counter()
    with pytest.raises(ImageLoadError, match="decompression bomb"):
        load_image(path)
    assert time.perf_counter() - start < 2.0


# ----------------------------------------------------------------------------- exit code 2


def test_no_inputs_is_a_usage_error(capsys):
    assert "IMAGE_OR_DIR" in usage_error(capsys)


@pytest.mark.parametrize("option", ["--beam-size", "--max-len", "--batch-size"])
def test_non_positive_numbers_are_usage_errors(capsys, scene_paths, option):
    err = usage_error(capsys, scene_paths[0], option, "0")
    assert f"{option} must be at least 1" in err


def test_unknown_option_is_a_usage_error(capsys, scene_paths):
    assert "--bogus" in usage_error(capsys, scene_paths[0], "--bogus")


def test_missing_checkpoint_is_one_line_exit_2(capsys, scene_paths, tmp_path):
    missing = tmp_path / "nope.pt"
    code, out, err = run_cli(capsys, scene_paths[0], "--checkpoint", missing, *FAST)
    assert code == 2 and out == []
    assert len(err) == 1 and str(missing) in err[0] and "checkpoint not found" in err[0]


def test_unreadable_checkpoint_is_one_line_exit_2(capsys, scene_paths, tmp_path):
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a checkpoint")
    code, out, err = run_cli(capsys, scene_paths[0], "--checkpoint", bogus, *FAST)
    assert code == 2 and out == []
    assert len(err) == 1 and str(bogus) in err[0] and "not a readable checkpoint" in err[0]


def test_missing_embedded_model_is_one_line_exit_2(capsys, scene_paths, tmp_path, monkeypatch):
    """Without --checkpoint the embedded model is used; a broken install must say so plainly."""
    monkeypatch.setattr("captioner.api.DEFAULT_CHECKPOINT", tmp_path / "default.pt")
    code, out, err = run_cli(capsys, scene_paths[0], *FAST)
    assert code == 2 and out == []
    assert len(err) == 1 and "embedded default model is missing" in err[0]


def test_invalid_device_is_one_line_exit_2(capsys, tiny_checkpoint, scene_paths):
    code, out, err = run_cli(capsys, scene_paths[0], "--checkpoint", tiny_checkpoint,
                             "--max-len", "5", "--device", "nonsense")
    assert code == 2 and out == []
    assert len(err) == 1 and "nonsense" in err[0]


# ----------------------------------------------------------------------------- --json


def json_run(capsys, paths: list[Path], checkpoint: Path, *extra: str) -> list[dict]:
    code, out, err = run_cli(capsys, *paths, "--checkpoint", checkpoint, "--json", *FAST, *extra)
    assert code == 0 and err == []
    return [json.loads(line) for line in out]


def test_json_records(capsys, tiny_checkpoint, scene_paths):
    records = json_run(capsys, scene_paths, tiny_checkpoint)
    assert [r["image"] for r in records] == [str(p) for p in scene_paths]
    for r in records:
        assert set(r) == {"image", "caption", "tokens", "score", "alphas", "grid"}
        assert r["grid"] == GRID
        assert 1 <= len(r["tokens"]) <= 5 and set(r["tokens"]) <= OUTPUT_WORDS
        assert r["caption"] == " ".join(r["tokens"])
        assert isinstance(r["score"], float) and r["score"] < 0  # a log-probability
        alphas = np.asarray(r["alphas"])
        assert alphas.shape == (len(r["tokens"]), GRID, GRID)
        assert np.all(alphas >= 0)
        np.testing.assert_allclose(alphas.sum(axis=(1, 2)), 1.0, atol=1e-4)


def test_batch_size_does_not_change_captions(capsys, tiny_checkpoint, scene_paths):
    small = json_run(capsys, scene_paths, tiny_checkpoint, "--batch-size", "2")
    large = json_run(capsys, scene_paths, tiny_checkpoint, "--batch-size", "16")
    assert len({r["caption"] for r in large}) > 1  # otherwise equality below proves nothing
    for a, b in zip(small, large, strict=True):
        assert (a["image"], a["tokens"]) == (b["image"], b["tokens"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        np.testing.assert_allclose(a["alphas"], b["alphas"], atol=1e-4)


# ----------------------------------------------------------------------------- --overlay-dir


def _same_name_inputs(tmp_path: Path, scene_paths: list[Path], names: list[str]) -> list[Path]:
    """Different scenes copied to tmp_path/dir_k/name_k."""
    paths = []
    for k, name in enumerate(names):
        p = tmp_path / f"dir_{k}" / name
        p.parent.mkdir()
        shutil.copy(scene_paths[k], p)
        paths.append(p)
    return paths


def test_overlays_png_gif_html_and_same_names_kept_apart(capsys, tiny_checkpoint, scene_paths, tmp_path):
    inputs = _same_name_inputs(tmp_path, scene_paths, ["photo.png", "photo.png"])
    out_dir = tmp_path / "overlays"  # created by the CLI
    records = json_run(capsys, inputs, tiny_checkpoint, "--overlay-dir", str(out_dir), "--gif", "--html")
    stems = sorted({p.stem for p in out_dir.iterdir()})
    assert len(stems) == 2, stems
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{s}.{ext}" for s in stems
                                                              for ext in ("png", "gif", "html"))
    # Each stem's files belong to one input: its HTML page's word buttons are that input's tokens.
    pages = [(out_dir / f"{s}.html").read_text(encoding="utf-8") for s in stems]
    words = sorted([html.unescape(w) for w in re.findall(r'class="word"[^>]*>([^<]*)</button>', page)]
                   for page in pages)
    assert words == sorted(r["tokens"] for r in records) and words[0] != words[1]
    for s in stems:
        with Image.open(out_dir / f"{s}.png") as png:
            assert png.format == "PNG" and png.width > 64
        with Image.open(out_dir / f"{s}.gif") as gif:
            assert gif.format == "GIF" and gif.n_frames >= 2
    panels = {(out_dir / f"{s}.png").read_bytes() for s in stems}
    assert len(panels) == 2  # two different images, two different panels: nothing overwritten


def test_overlay_names_never_collide(capsys, tiny_checkpoint, scene_paths, tmp_path):
    inputs = _same_name_inputs(tmp_path, scene_paths, ["x.png", "x.png", "x-2.png"])
    out_dir = tmp_path / "overlays"
    json_run(capsys, inputs, tiny_checkpoint, "--overlay-dir", str(out_dir))
    assert len(list(out_dir.glob("*.png"))) == 3


def test_an_overlay_that_cannot_be_written_fails_alone(capsys, tiny_checkpoint, scene_paths, tmp_path,
                                                       monkeypatch):
    import errno

    import captioner.overlay.files

    real = captioner.overlay.files.write_overlays

    def disk_full_for_the_first(out_dir, stem, *args, **kwargs):
        if stem == scene_paths[0].stem:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / f"{stem}.png"))
        return real(out_dir, stem, *args, **kwargs)

    monkeypatch.setattr(captioner.overlay.files, "write_overlays", disk_full_for_the_first)
    out_dir = tmp_path / "overlays"
    code, out, err = run_cli(capsys, scene_paths[0], scene_paths[1], "--checkpoint", tiny_checkpoint,
                             "--overlay-dir", out_dir, *FAST)
    assert code == 1 and len(out) == 2  # both captioned
    assert err == [f"{scene_paths[0]}: overlay not written: {out_dir / scene_paths[0].stem}.png: "
                   f"No space left on device"]
    assert [p.name for p in out_dir.iterdir()] == [f"{scene_paths[1].stem}.png"]


def test_unusable_overlay_dir_and_huge_beam_are_one_line_errors(capsys, tiny_checkpoint, scene_paths, tmp_path):
    a_file = tmp_path / "taken"
    a_file.write_text("")
    code, out, err = run_cli(capsys, scene_paths[0], "--checkpoint", tiny_checkpoint, "--overlay-dir", a_file, *FAST)
    assert code == 2 and out == [] and err == [f"captioner: error: --overlay-dir {a_file}: exists and is not a directory"]
    assert "--beam-size must be at most 1000" in usage_error(capsys, scene_paths[0], "--beam-size", "100000000")


def test_overlay_look_flags_reach_the_files(capsys, tiny_checkpoint, scene_paths, tmp_path):
    """--overlay-style/--overlay-mode/--cmap/--opacity build one OverlayOptions that the PNG uses."""
    from captioner.overlay.options import OverlayOptions
    from captioner.overlay.render import panel_grid

    panels = {}
    for name, flags in {"default": [], "look": ["--overlay-style", "spotlight", "--overlay-mode", "nearest",
                                                 "--opacity", "0.8"]}.items():
        out_dir = tmp_path / name
        [record] = json_run(capsys, [scene_paths[0]], tiny_checkpoint, "--overlay-dir", str(out_dir), *flags)
        panels[name] = out_dir / f"{scene_paths[0].stem}.png"
    with Image.open(panels["default"]) as a, Image.open(panels["look"]) as b:
        assert np.asarray(a).shape == np.asarray(b).shape and not np.array_equal(np.asarray(a), np.asarray(b))
        alphas = np.asarray(record["alphas"], dtype=np.float64)
        expected = panel_grid(load_image(scene_paths[0]), record["tokens"], alphas,
                              options=OverlayOptions(style="spotlight", mode="nearest", opacity=0.8))
        assert np.abs(np.asarray(b, dtype=int) - np.asarray(expected.convert(b.mode), dtype=int)).max() <= 2


@pytest.mark.parametrize("flags", [["--opacity", "1.5"], ["--cmap", "no-such-map"]])
def test_bad_overlay_values_are_one_line_errors(capsys, tiny_checkpoint, scene_paths, flags):
    code, out, err = run_cli(capsys, scene_paths[0], "--checkpoint", tiny_checkpoint, *FAST, *flags)
    assert code == 2 and out == [] and len(err) == 1 and flags[0] in err[0]


def test_unknown_overlay_style_is_a_usage_error(capsys, tiny_checkpoint, scene_paths):
    err = usage_error(capsys, scene_paths[0], "--checkpoint", tiny_checkpoint, "--overlay-style", "glow")
    assert "--overlay-style" in err


def test_reading_workers_do_not_change_the_output(capsys, tiny_checkpoint, scene_paths):
    plain = json_run(capsys, scene_paths, tiny_checkpoint, "--batch-size", "2")
    workers = json_run(capsys, scene_paths, tiny_checkpoint, "--batch-size", "2", "--workers", "1")
    assert [r["tokens"] for r in workers] == [r["tokens"] for r in plain]
    assert "--workers" in usage_error(capsys, scene_paths[0], "--workers", "-1")
