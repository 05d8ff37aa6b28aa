"""Peak RSS: captioning 32 images with the default model, and cached training as data grows.

Every figure is the peak RSS of one fresh child process (common.run_child). For cached
training the child also reports, at its end, how much of its RSS is anonymous memory (heap:
model, optimizer, batches) and how much is file-backed (mapped files: libraries, the checkpoint), which
says where any growth comes from. (Two fixes once measured here as prototypes, cache rows read
with pread and the CNN run on 4 images per call, are now in captioner itself, so this measures
them as the product runs.)
"""
from __future__ import annotations

from pathlib import Path

from captioner.features.encoder import encoder_dim

from common import Figure, captioner_cmd, judged, log, run_child, worker_cmd
from cached_data import default_data
from decode_speed import scene_images
from models import DefaultModel, Sizes, default_config

def caption_rss(dm: DefaultModel, images: list[Path], batch_size: int | None) -> tuple[float, float, str]:
    """Peak RSS (MB), wall seconds and stdout of `captioner caption DIR` over the images' directory."""
    cmd = captioner_cmd() + ["caption", str(images[0].parent)]
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    res = run_child(cmd)
    if len(res.stdout.splitlines()) != len(images):
        raise RuntimeError(f"expected {len(images)} captions, got:\n{res.stdout}")
    return res.peak_rss_mb, res.seconds, res.stdout


def cached_training(sizes: Sizes, n: int, work: Path) -> dict:
    """One epoch of the default model's cached training in a child."""
    default_data(sizes, n, work)  # written here, so the child only reads
    args = ["cached-train", "--model", "default", "--images", str(n), "--batch", str(sizes.memory_batch),
            "--epoch", "--work", str(work)]
    res = run_child(worker_cmd(*args, *(["--quick"] if sizes.quick else [])))
    out = res.last_json()
    out["peak_rss_mb"] = res.peak_rss_mb
    log(f"memory: {n} images: peak {res.peak_rss_mb:.0f} MB, "
        f"anon {out['RssAnon']:.0f} MB, file {out['RssFile']:.0f} MB at the end, {out['seconds']:.1f} s")
    return out


def run(sizes: Sizes, dm: DefaultModel, work: Path) -> tuple[list[Figure], list[dict]]:
    figs: list[Figure] = []
    n_img = 32 if not sizes.quick else 2
    images = scene_images(work, n_img)
    # The CLI's default batch is 16; with more images, also all of them in one batch.
    for bs in (None, n_img) if n_img > 16 else (None,):
        label = "CLI default --batch-size 16" if bs is None else f"--batch-size {bs}"
        suffix = "" if bs is None else "_one_batch"
        rss, secs, _ = caption_rss(dm, images, bs)
        figs.append(judged(f"memory.caption_peak_rss{suffix}", rss, "MB", "<=", 1500,
                           f"`captioner caption DIR` on {n_img} scenes ({label}, beam 3), {dm.label}; "
                           f"{secs:.1f} s wall"))
        log(f"memory: caption {n_img} images ({label}): {rss:.0f} MB, {secs:.1f} s")

    rows = []
    for n in sizes.memory_images:
        r = cached_training(sizes, n, work)
        rows.append({"table": "memory", "images": n, "P": sizes.memory_grid ** 2, "reader": "pread (FeatureCache)", **r})
        figs.append(Figure(f"memory.cached_train_{n}_images", r["peak_rss_mb"], "MB",
                           note=f"one epoch, batch {sizes.memory_batch}, (P, E) = ({sizes.memory_grid ** 2}, {encoder_dim(default_config().model)}); "
                                f"at the end: anon {r['RssAnon']:.0f} MB, file-backed {r['RssFile']:.0f} MB"))
    lo, hi = rows[0], rows[-1]
    figs.append(judged("memory.cached_train_growth", hi["peak_rss_mb"] / lo["peak_rss_mb"], "x", "<=", 1.1,
                       f"peak RSS at {hi['images']} images / at {lo['images']} images; flat means <= 1.1"))
    figs.append(Figure("memory.cached_train_anon_growth", hi["RssAnon"] / lo["RssAnon"], "x",
                       note="anonymous RSS (heap) only, end of epoch"))
    return figs, rows
