"""End to end, from image file to caption: what a user captioning a folder waits for.

Each measurement runs in a fresh process (`e2e_worker.py`). With `--baseline REV`, the same
measurements also run against a git worktree of REV, alternating with this tree's, so a
"faster than before" figure is a ratio of two medians from one run on one machine.

- `e2e.MODEL.beamK.batched`: images/s of one `Captioner.caption(paths)` call for all images;
  `one_by_one`: one call per image; `batched_over_one_by_one` (target >= 1).
- `e2e.MODEL.encoder_chunkC`: the CNN alone on preprocessed images, C per call, BatchNorms
  folded (how captioning runs it); `encoder_fused_over_plain`: the folding's gain at C = 1;
  `e2e.MODEL.encoder_bound`: the CNN alone at the chunk captioning uses;
  `e2e.MODEL.encoder_bound_same_rounds`: the same, timed interleaved with the caption calls, the
  bound of the end-to-end figures; `e2e.MODEL.beamK.batched_over_encoder_bound` (target >= 0.85
  at K = 3).
- `e2e.default.preprocess`: images/s of reading the files and preprocessing them, no CNN.
- `e2e.cli_folder`: `captioner caption DIR` on a folder of generated scenes, wall seconds of a
  fresh process.
- `e2e.cache_build`: images/s of building the frozen default encoder's feature cache.
- With a baseline: `*_over_baseline`, this tree's throughput over REV's.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import BENCH_DIR, REPO, Figure, judged, log, median
from decode_speed import scene_images
from models import DefaultModel, Sizes, numbered_vocab, recipe_config

WORKER = BENCH_DIR / "e2e_worker.py"


def baseline_tree(work: Path, rev: str) -> Path:
    """A git worktree of `rev` in the scratch folder (made once per work folder)."""
    tree = work / f"baseline-{rev}"
    if not (tree / "captioner").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(tree), rev], cwd=REPO, check=True,
                       capture_output=True)
    return tree


def worker(tree: Path, *args: str) -> dict[str, list[float]]:
    """e2e_worker.py with `tree`'s captioner package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, cwd=tree,
                          env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"e2e_worker {' '.join(args[:1])} in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def alternating(trees: dict[str, Path], rounds: int, *args: str,
                new_args: tuple[str, ...] = ()) -> dict[str, dict[str, list[float]]]:
    """Run the same worker for every tree, round-robin, one fresh process per tree and round
    (`new_args` go to this tree's only, such as an engine the baseline does not have)."""
    out: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    for _ in range(rounds):
        for name, tree in trees.items():
            extra = new_args if name == "new" else ()
            for key, times in worker(tree, *args, *extra, "--rounds", "1").items():
                out[name].setdefault(key, []).extend(times)
    return out


def recipe_checkpoint(sizes: Sizes, work: Path) -> Path:
    """The popular recipe's model as a checkpoint: ResNet-101 with random weights (stored, since
    they cannot be rebuilt offline), V = sizes.vocab, and <end> made unlikely so that every
    caption runs to max_len, like the tutorial comparison's 51 decoder steps."""
    from captioner.checkpoint import new_model, save_checkpoint
    from captioner.config import Config

    path = work / f"recipe-{sizes.image_size}px.pt"
    if not path.is_file():
        torch.manual_seed(0)
        vocab = numbered_vocab(sizes.vocab)
        model = new_model(recipe_config(sizes), len(vocab), load_weights=False)
        with torch.no_grad():
            model.decoder.L_o.bias[vocab.end_id] = -1e4
        save_checkpoint(path, model=model, config=Config(model=recipe_config(sizes)), vocab=vocab, epoch=0, step=0)
        # The baseline (0.1) rejects config keys it does not know. Captioning reads the model
        # section only, so keep just that, less `attention` (0.1 has none; this tree reads it back
        # as its default, soft): the data and train sections, which grow with every release,
        # load as their defaults in both trees, so one file serves both.
        ckpt = torch.load(path, weights_only=True)
        model_section = dict(ckpt["config"]["model"])
        model_section.pop("attention")
        ckpt["config"] = {"model": model_section}
        torch.save(ckpt, path)
    return path


def caption_figures(model: str, times: dict[str, dict[str, list[float]]], n: int, beams: tuple[int, ...],
                    bound_s: float, note: str) -> list[Figure]:
    """Batched and one-by-one images/s per beam, and each over the CNN-alone bound: `bound_s`, or
    where the caption worker timed it in its own rounds (`--bound`), that time instead."""
    new = times["new"]
    figs: list[Figure] = []
    if "encoder_bound" in new:  # timed in the same rounds as the captions: the ratio's own bound
        bound_s = median(new["encoder_bound"])
        figs.append(Figure(f"e2e.{model}.encoder_bound_same_rounds", n / bound_s, "images/s",
                           note="the CNN alone as captioning runs it, interleaved with the caption calls: "
                                "the bound the batched_over_encoder_bound ratios divide by"))
    for k in beams:
        tb, to = median(new[f"beam{k}.batched"]), median(new[f"beam{k}.one_by_one"])
        figs += [Figure(f"e2e.{model}.beam{k}.batched", n / tb, "images/s", note=f"{note}; {tb:.2f} s for {n}"),
                 Figure(f"e2e.{model}.beam{k}.one_by_one", n / to, "images/s", note=f"{to:.2f} s for {n}"),
                 judged(f"e2e.{model}.beam{k}.batched_over_one_by_one", to / tb, "x", ">=", 1.0,
                        "same process, interleaved"),
                 Figure(f"e2e.{model}.beam{k}.batched_over_encoder_bound", bound_s / tb, "x",
                        note="the CNN alone on preprocessed images over file -> caption")
                 if k != 3 else
                 judged(f"e2e.{model}.beam{k}.batched_over_encoder_bound", bound_s / tb, "x", ">=", 0.85,
                        "the CNN alone on preprocessed images over file -> caption")]
    return figs


def baseline_figures(name: str, times: dict[str, dict[str, list[float]]], key: str, target: float | None,
                     rev: str) -> list[Figure]:
    if "baseline" not in times or key not in times["baseline"]:
        return []
    t_new, t_old = median(times["new"][key]), median(times["baseline"][key])
    note = f"{rev}: {t_old:.2f} s, this tree: {t_new:.2f} s (medians, alternating fresh processes)"
    if target is None:
        return [Figure(name, t_old / t_new, "x", note=note)]
    return [judged(name, t_old / t_new, "x", ">=", target, note)]


def encoder_figures(model: str, times: dict[str, list[float]], n: int, backbone: str,
                    engine: str) -> tuple[list[Figure], float]:
    """The CNN alone: torch (folded) by chunk, unfolded, ONNX Runtime, OpenVINO; each engine is
    compared at the chunk captioning would give it, and the bound is `engine`'s (the one
    captioning runs)."""
    from captioner.features.encoder import default_encode_chunk

    cpu = torch.device("cpu")
    chunk = {e: default_encode_chunk(cpu, backbone, e) for e in ("torch", "onnx", "openvino")}
    figs = [Figure(f"e2e.{model}.encoder_chunk{c}", n / median(times[f"fused.chunk{c}"]), "images/s",
                   note=f"CNN alone, torch, {c} image(s) per call, BatchNorms folded")
            for c in sorted(int(k.split("chunk")[1]) for k in times if k.startswith("fused."))]
    figs.append(Figure(f"e2e.{model}.encoder_fused_over_plain",
                       median(times["plain.chunk1"]) / median(times["fused.chunk1"]), "x",
                       note="BatchNorms folded into the convs, torch, at 1 image per call"))
    names = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
    t_torch = median(times[f"fused.chunk{chunk['torch']}"])
    for exported, name in names.items():
        if f"{exported}.chunk{chunk[exported]}" not in times:
            continue
        for c in (1, 4):
            figs.append(Figure(f"e2e.{model}.encoder_{exported}_chunk{c}", n / median(times[f"{exported}.chunk{c}"]),
                               "images/s", note=f"CNN alone, {name}, {c} image(s) per call"))
        figs.append(Figure(f"e2e.{model}.encoder_{exported}_over_torch",
                           t_torch / median(times[f"{exported}.chunk{chunk[exported]}"]), "x",
                           note=f"{name} at chunk {chunk[exported]}, torch at chunk {chunk['torch']} (as captioning "
                                f"runs each), same process"))
    if all(f"{e}.chunk{chunk[e]}" in times for e in names):
        figs.append(Figure(f"e2e.{model}.encoder_openvino_over_onnx", median(times[f"onnx.chunk{chunk['onnx']}"])
                           / median(times[f"openvino.chunk{chunk['openvino']}"]), "x",
                           note=f"OpenVINO at chunk {chunk['openvino']}, ONNX Runtime at chunk {chunk['onnx']}, "
                                f"same process; > 1: OpenVINO is faster"))
    key = f"{engine if engine in names else 'fused'}.chunk{chunk[engine if engine in names else 'torch']}"
    if key not in times:
        raise RuntimeError(f"e2e: {model}'s encoder bound needs {key}, which e2e_worker.py did not measure")
    bound = median(times[key])
    figs.append(Figure(f"e2e.{model}.encoder_bound", n / bound, "images/s",
                       note=f"{engine}, chunk {key.split('chunk')[1]}, as captioning runs it"))
    return figs, bound


def cli_folder_seconds(tree: Path, folder: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "captioner.cli", "caption", str(folder)], capture_output=True,
                          text=True, cwd=tree, env=env, timeout=1800)
    seconds = time.perf_counter() - t
    if proc.returncode != 0 or len(proc.stdout.splitlines()) != n:
        raise RuntimeError(f"captioner caption in {tree} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def run(sizes: Sizes, dm: DefaultModel, work: Path, baseline: str | None) -> tuple[list[Figure], list[dict]]:
    from captioner.features.inference import cpu_engine

    # The engine `--engine auto` runs for each backbone: the fastest one this install has.
    engine, rengine = cpu_engine("efficientnet_lite0"), cpu_engine("resnet101")
    trees = {"new": REPO}
    if baseline:
        trees["baseline"] = baseline_tree(work, baseline)
    figs: list[Figure] = []

    # The default model on generated scenes.
    paths = [str(p) for p in scene_images(work, sizes.e2e_images)]
    n = len(paths)
    log(f"e2e: encoder alone, then file -> caption, default model, {n} images, beams {sizes.beams}")
    times = {"new": worker(REPO, "encoder", "caption", "preprocess", "--images", *paths, "--beams",
                           *map(str, sizes.beams), "--rounds", str(sizes.e2e_rounds), "--engine", engine, "--bound")}
    enc_figs, bound = encoder_figures("default", times["new"], n, "efficientnet_lite0", engine)
    figs.append(Figure("e2e.default.preprocess", n / median(times["new"]["preprocess"]), "images/s",
                       note="reading the files and preprocessing them (`load_image`, `Captioner.preprocess`), "
                            "no CNN"))
    figs += enc_figs + caption_figures("default", times, n, sizes.beams, bound,
                                       f"default model, engine {engine}, generated scenes, max_len 50")
    if baseline:
        log(f"e2e: default model, beam 3, against {baseline}")
        vs = alternating(trees, sizes.e2e_rounds, "caption", "--images", *paths, "--beams", "3",
                         new_args=("--engine", engine))
        figs += baseline_figures("e2e.default.beam3.batched_over_baseline", vs, "beam3.batched", 2.0, baseline)
        figs += baseline_figures("e2e.default.beam3.one_by_one_over_baseline", vs, "beam3.one_by_one", None, baseline)

    # The popular recipe: ResNet-101 at 448 px, V = 10,000, 50 words a caption.
    ckpt = str(recipe_checkpoint(sizes, work))
    rpaths = paths[: sizes.e2e_resnet_images]
    rn, max_len = len(rpaths), str(sizes.e2e_max_len)
    log(f"e2e: encoder alone, then file -> caption, ResNet-101 recipe, {rn} images, beams {sizes.beams}")
    rtimes = {"new": worker(REPO, "encoder", "caption", "--checkpoint", ckpt, "--images", *rpaths, "--beams",
                            *map(str, sizes.beams), "--max-len", max_len, "--rounds", str(sizes.e2e_resnet_rounds),
                            "--engine", rengine, "--bound")}
    renc_figs, rbound = encoder_figures("resnet101", rtimes["new"], rn, "resnet101", rengine)
    figs += renc_figs + caption_figures("resnet101", rtimes, rn, sizes.beams, rbound,
                                        f"ResNet-101 recipe (random weights, V={sizes.vocab}), engine {rengine}, {max_len} words")
    if baseline:
        log(f"e2e: ResNet-101 recipe, beam 5, against {baseline}")
        vs = alternating(trees, 3, "caption", "--checkpoint", ckpt, "--images", *rpaths, "--beams", "5",
                         "--max-len", max_len, new_args=("--engine", rengine))
        figs += baseline_figures("e2e.resnet101.beam5.batched_over_baseline", vs, "beam5.batched", 1.4, baseline)

    # The CLI on a folder, and the feature cache's build.
    folder = scene_images(work, sizes.e2e_folder_images)[0].parent
    nf = sizes.e2e_folder_images
    wall = {}
    for name, tree in trees.items():
        log(f"e2e: captioner caption on a folder of {nf} images ({name})")
        wall[name] = cli_folder_seconds(tree, folder, nf)
    figs.append(Figure("e2e.cli_folder", wall["new"], "s",
                       note=f"`captioner caption DIR`, {nf} scenes, fresh process: {nf / wall['new']:.1f} images/s"))
    if baseline:
        figs.append(Figure("e2e.cli_folder_over_baseline", wall["baseline"] / wall["new"], "x",
                           note=f"{baseline}: {wall['baseline']:.1f} s, this tree: {wall['new']:.1f} s"))
    cache_paths = paths[: sizes.e2e_cache_images] if sizes.e2e_cache_images <= n else \
        [str(p) for p in scene_images(work, sizes.e2e_cache_images)]
    log(f"e2e: feature-cache build, {len(cache_paths)} images")
    ctimes = alternating(trees, sizes.e2e_rounds, "cache", "--images", *cache_paths)
    tc = median(ctimes["new"]["cache_build"])
    figs.append(Figure("e2e.cache_build", len(cache_paths) / tc, "images/s",
                       note=f"default encoder, {len(cache_paths)} images, batch 64 (configs/scenes.toml)"))
    figs += baseline_figures("e2e.cache_build_over_baseline", ctimes, "cache_build", 2.0, baseline or "")
    return figs, []
