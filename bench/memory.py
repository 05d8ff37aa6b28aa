"""Peak RSS: captioning 32 images with the default model, and cached training as data grows.

Every figure is the peak RSS of one fresh child process (common.run_child). For cached
training the child also reports, at its end, how much of its RSS is anonymous memory (heap:
model, optimizer, batches) and how much is file-backed (memmapped cache pages it touched), which
says where any growth comes from. The prototypes (proto_cache.py: rows read with pread;
proto_chunked_encode.py: the CNN on 4 images per call) are measured the same way.
"""
from __future__ import annotations

import sys
from pathlib import Path

from common import BENCH_DIR, Figure, captioner_cmd, judged, log, run_child, worker_cmd
from cached_data import default_data
from decode_speed import scene_images
from models import DefaultModel, Sizes

ENCODE_CHUNK = 4


def caption_rss(dm: DefaultModel, images: list[Path], batch_size: int | None,
                chunk: int = 0) -> tuple[float, float, str]:
    """Peak RSS (MB), wall seconds and stdout of `captioner caption DIR` over the images' directory.

    chunk > 0 runs the CLI through the chunked-encoder prototype (proto_chunked_encode.py).
    """
    cli = [sys.executable, str(BENCH_DIR / "proto_chunked_encode.py"), str(chunk)] if chunk else captioner_cmd()
    cmd = cli + ["caption", str(images[0].parent)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    if not dm.trained:
        cmd += ["--checkpoint", str(dm.checkpoint)]
    res = run_child(cmd)
    if len(res.stdout.splitlines()) != len(images):
        raise RuntimeError(f"expected {len(images)} captions, got:\n{res.stdout}")
    return res.peak_rss_mb, res.seconds, res.stdout


def cached_training(sizes: Sizes, n: int, work: Path, *, reader: str = "memmap", train: bool = True) -> dict:
    """One epoch of the default model's cached training (or its input path alone) in a child."""
    default_data(sizes, n, work)  # written here, so the child only reads
    args = ["cached-train", "--model", "default", "--images", str(n), "--batch", str(sizes.memory_batch),
            "--epoch", "--reader", reader, "--work", str(work)]
    res = run_child(worker_cmd(*args, *([] if train else ["--no-train"]), *(["--quick"] if sizes.quick else [])))
    out = res.last_json()
    out["peak_rss_mb"] = res.peak_rss_mb
    log(f"memory: {n} images, {reader}, {'training' if train else 'reading'}: peak {res.peak_rss_mb:.0f} MB, "
        f"anon {out['RssAnon']:.0f} MB, file {out['RssFile']:.0f} MB at the end, {out['seconds']:.1f} s")
    return out


def run(sizes: Sizes, dm: DefaultModel, work: Path) -> tuple[list[Figure], list[dict]]:
    figs: list[Figure] = []
    n_img = 32 if not sizes.quick else 2
    images = scene_images(work, n_img)
    # The CLI's default batch is 16; with more images, also all of them in one batch. Each
    # is run as is and with the chunked-encoder prototype (4 images per CNN call).
    for bs in (None, n_img) if n_img > 16 else (None,):
        label = "CLI default --batch-size 16" if bs is None else f"--batch-size {bs}"
        suffix = "" if bs is None else "_one_batch"
        rss, secs, out = caption_rss(dm, images, bs)
        figs.append(judged(f"memory.caption_peak_rss{suffix}", rss, "MB", "<=", 1500,
                           f"`captioner caption DIR` on {n_img} scenes ({label}, beam 3), {dm.label}; "
                           f"{secs:.1f} s wall"))
        log(f"memory: caption {n_img} images ({label}): {rss:.0f} MB, {secs:.1f} s")
        if sizes.quick:
            continue
        rss_fix, secs_fix, out_fix = caption_rss(dm, images, bs, chunk=ENCODE_CHUNK)
        same = "same captions" if out_fix == out else "**captions differ**"
        figs.append(Figure(f"memory.caption_peak_rss{suffix}_fix_chunked_encode", rss_fix, "MB",
                           note=f"prototype: CNN on {ENCODE_CHUNK} images per call (bench/proto_chunked_encode.py); "
                                f"{secs_fix:.1f} s wall, {same}"))
        log(f"memory: ... with the chunked encoder: {rss_fix:.0f} MB, {secs_fix:.1f} s")

    rows = []
    for n in sizes.memory_images:
        r = cached_training(sizes, n, work)
        rows.append({"table": "memory", "images": n, "P": sizes.memory_grid ** 2, "reader": "memmap (FeatureCache)", **r})
        figs.append(Figure(f"memory.cached_train_{n}_images", r["peak_rss_mb"], "MB",
                           note=f"one epoch, batch {sizes.memory_batch}, (P, E) = ({sizes.memory_grid ** 2}, 320); "
                                f"at the end: anon {r['RssAnon']:.0f} MB, file-backed {r['RssFile']:.0f} MB"))
    lo, hi = rows[0], rows[-1]
    figs.append(judged("memory.cached_train_growth", hi["peak_rss_mb"] / lo["peak_rss_mb"], "x", "<=", 1.1,
                       f"peak RSS at {hi['images']} images / at {lo['images']} images; flat means <= 1.1"))
    figs.append(Figure("memory.cached_train_anon_growth", hi["RssAnon"] / lo["RssAnon"], "x",
                       note="anonymous RSS (heap) only, end of epoch"))

    # The prototype fix: the same epochs with rows read by pread instead of a memmap.
    for n in (sizes.memory_images[0], sizes.memory_images[-1]):
        r = cached_training(sizes, n, work, reader="pread")
        rows.append({"table": "memory", "images": n, "P": sizes.memory_grid ** 2, "reader": "pread (bench/proto_cache.py)", **r})
    p_lo, p_hi = rows[-2], rows[-1]
    figs.append(Figure("memory.cached_train_growth_pread", p_hi["peak_rss_mb"] / p_lo["peak_rss_mb"], "x",
                       note=f"prototype fix; peak {p_lo['peak_rss_mb']:.0f} -> {p_hi['peak_rss_mb']:.0f} MB"))
    figs.append(Figure("memory.cached_train_epoch_time_pread_over_memmap", p_hi["seconds"] / hi["seconds"], "x",
                       note=f"epoch of {hi['images']} images, < 1 means pread is faster"))
    if sizes.quick:
        return figs, rows
    # The input path alone, to time the two readers without the decoder's compute.
    reads = {rd: cached_training(sizes, hi["images"], work, reader=rd, train=False) for rd in ("memmap", "pread")}
    figs.append(Figure("memory.read_epoch_pread_over_memmap", reads["pread"]["seconds"] / reads["memmap"]["seconds"],
                       "x", note=f"DataLoader epoch of {hi['images']} images without training; "
                                 f"peak {reads['memmap']['peak_rss_mb']:.0f} MB (memmap) vs "
                                 f"{reads['pread']['peak_rss_mb']:.0f} MB (pread)"))
    return figs, rows
