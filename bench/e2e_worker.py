"""One end-to-end measurement in a fresh process, against whichever `captioner` is importable.

bench/e2e_speed.py runs it with the working tree's package, and with `--baseline REV` also from a
git worktree of an older commit (PYTHONPATH and cwd point there), alternating the two, so that
"faster than before" is a ratio measured in one run. The modes run against a baseline
(`caption`, `cache`) use only what captioner 0.1 has too: `load_captioner`, `Captioner.caption`,
and the feature cache's `build_cache`; `encoder`, `preprocess` and `--bound` need 0.2's layout.

Prints one JSON object: seconds per round for each measured variant.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from common import interleaved, timed  # bench/common.py: stdlib only, so any tree can run this


def caption_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """File -> caption: one call for all images ("batched") and one call per image."""
    from captioner import load_captioner

    cap = load_captioner(args.checkpoint, device="cpu", **({"engine": args.engine} if args.engine else {}))
    paths = [Path(p) for p in args.images]
    variants = {}
    for k in args.beams:
        variants[f"beam{k}.batched"] = lambda k=k: cap.caption(paths, beam_size=k, max_len=args.max_len,
                                                             batch_size=len(paths))
        variants[f"beam{k}.one_by_one"] = lambda k=k: [cap.caption([p], beam_size=k, max_len=args.max_len)
                                                      for p in paths]
    if args.bound:
        variants["encoder_bound"] = _bound_variant(cap, paths)
    return interleaved(variants, rounds=args.rounds, warmup=1)  # warm-up: allocator, weights, file cache


def _bound_variant(cap, paths: list[Path]):
    """The CNN alone on the preprocessed images, with the encoder, engine and chunk that `cap`
    captions with (this tree only): timed in the same rounds as the captions, so that file ->
    caption over it is a ratio of one moment's machine."""
    import torch

    from captioner.features.encoder import encode
    from captioner.image.loading import load_image

    x = torch.stack([cap.preprocess(load_image(p)) for p in paths])  # (N, 3, S, S)

    def run() -> None:
        with torch.inference_mode():
            encode(cap.model.encoder, x, chunk=cap.encode_chunk)
    return run


def encoder_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """The CNN alone on preprocessed images (this tree only): by chunk size with the BatchNorms
    folded, as captioning runs it, unfolded at chunk 1, and through each exported engine installed."""
    import torch

    from captioner.api import load_captioner
    from captioner.checkpoint import load_model
    from captioner.features.encoder import encode
    from captioner.features.inference import engine_available
    from captioner.image.loading import load_image

    cap = load_captioner(args.checkpoint, device="cpu", engine="torch")  # BatchNorms folded
    unfused = load_model(args.checkpoint or _default_checkpoint()).model.encoder.eval()
    x = torch.stack([cap.preprocess(load_image(p)) for p in args.images])  # (N, 3, S, S)
    variants = {f"fused.chunk{c}": (lambda c=c: encode(cap.model.encoder, x, chunk=c)) for c in args.chunks}
    variants["plain.chunk1"] = lambda: encode(unfused, x, chunk=1)
    for engine in ("onnx", "openvino"):
        if engine_available(engine):
            fast = load_captioner(args.checkpoint, device="cpu", engine=engine).model.encoder
            variants |= {f"{engine}.chunk{c}": (lambda c=c, f=fast: encode(f, x, chunk=c)) for c in (1, 4)}
    with torch.inference_mode():
        return interleaved(variants, rounds=args.rounds, warmup=1)


def preprocess_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """Reading the files and preprocessing them for the model, as captioning does, without the CNN
    (0.2's layout: this tree, or a worktree of a commit since the architecture change)."""
    from captioner.checkpoint import load_model
    from captioner.image.loading import load_image
    from captioner.image.preprocess import preprocess_for

    preprocess = preprocess_for(load_model(args.checkpoint or _default_checkpoint()).config.model)
    paths = [Path(p) for p in args.images]
    return interleaved({"preprocess": lambda: [preprocess(load_image(p)) for p in paths]},
                       rounds=args.rounds, warmup=1)


def _default_checkpoint() -> Path:
    from captioner.api import DEFAULT_CHECKPOINT

    return DEFAULT_CHECKPOINT


def cache_build_times(args: argparse.Namespace) -> dict[str, list[float]]:
    """Building the frozen default encoder's feature cache for the images, as `train` does."""
    import torch

    try:  # this tree
        from captioner.checkpoint import load_model
        from captioner.data.annotations import ImageRecord
        from captioner.features.cache import CacheKey, build_cache, cache_paths
    except ImportError:  # captioner 0.1's flat modules
        from captioner.checkpoint import load_model
        from captioner.datasets import ImageRecord
        from captioner.features import CacheKey, build_cache, cache_paths

    loaded = load_model(args.checkpoint or _default_checkpoint())
    config = loaded.config.model
    records = [ImageRecord(image_id=i, path=Path(p), split="train") for i, p in enumerate(args.images)]
    key = CacheKey.for_model(config)
    out: list[float] = []
    for r in range(args.rounds + 1):  # the first round warms up
        with tempfile.TemporaryDirectory() as tmp:
            data_path, meta_path = cache_paths(Path(tmp), key, records)
            t = timed(lambda: build_cache(data_path, meta_path, key, records, loaded.model.encoder, config,
                                          batch_size=args.batch_size, num_workers=args.workers,
                                          device=torch.device("cpu")))
        if r:
            out.append(t)
    return {"cache_build": out}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("modes", nargs="+", choices=["caption", "encoder", "cache", "preprocess"],
                   help="what to measure, in this order, in this one process")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--engine", default=None, help="load_captioner's engine (this tree only; unset for a baseline)")
    p.add_argument("--bound", action="store_true",
                   help="caption: also time the CNN alone in the same rounds (this tree only)")
    args = p.parse_args()
    runs = {"caption": caption_times, "encoder": encoder_times, "cache": cache_build_times,
            "preprocess": preprocess_times}
    out: dict[str, list[float]] = {}
    for mode in args.modes:
        out |= runs[mode](args)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
