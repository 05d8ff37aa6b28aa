"""Measurements that need a fresh process (peak RSS, cold start phases). Run by bench/run.py.

Each command prints one JSON object as its last stdout line. The parent reads the peak RSS
from the wrapper around this process (see common.run_child), so only this process counts.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

t_process = time.perf_counter()


def proc_status() -> dict[str, float]:
    """VmHWM (peak RSS), RssAnon and RssFile of this process, MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) * 1024 / 1e6
    return out


def cmd_cached_train(args: argparse.Namespace) -> dict:
    """Build what `captioner train` builds for cached training and run it for a while."""
    import torch

    from captioner.checkpoint import new_model

    from cached_data import default_data, recipe_data
    from models import Sizes, default_config, recipe_config
    from train_speed import CachedTrainer

    torch.manual_seed(0)
    sizes = Sizes.tiny() if args.quick else Sizes.full()
    if args.model == "recipe":
        vocab, dataset = recipe_data(sizes, Path(args.work))
        config = recipe_config(sizes)
    else:
        vocab, dataset = default_data(sizes, args.images, Path(args.work))
        config = default_config().model
    model = new_model(config, len(vocab))
    trainer = CachedTrainer(model.decoder, dataset, args.batch, amp=args.amp)
    steps = math.ceil(len(dataset) / args.batch) if args.epoch else args.steps
    t = time.perf_counter()
    for _ in range(steps):
        trainer.step()
    return {"steps": steps, "seconds": time.perf_counter() - t, "items": len(dataset), **proc_status()}


def cmd_startup_phases(args: argparse.Namespace) -> dict:
    """Where a cold `captioner caption` spends its time, phase by phase, in one process."""
    phases = {}
    t = time.perf_counter()
    import torch  # noqa: F401  (timed on its own: it is most of the import)
    phases["import torch"] = time.perf_counter() - t
    t = time.perf_counter()
    import captioner.cli  # noqa: F401
    from captioner.api import load_captioner
    from captioner.image.loading import load_image
    phases["import captioner (after torch)"] = time.perf_counter() - t
    t = time.perf_counter()
    cap = load_captioner(args.checkpoint, device="cpu")
    phases["load_captioner"] = time.perf_counter() - t
    t = time.perf_counter()
    x = cap.preprocess(load_image(args.image)).unsqueeze(0)
    phases["load + preprocess image"] = time.perf_counter() - t
    t = time.perf_counter()
    with torch.inference_mode():
        feats = cap.model.encode(x)
    phases["encode (CNN)"] = time.perf_counter() - t
    from captioner.words.search import beam_search
    t = time.perf_counter()
    beam_search(cap.model.decoder, feats, start_id=cap.vocab.start_id, end_id=cap.vocab.end_id,
                pad_id=cap.vocab.pad_id, beam_size=3, max_len=50)
    phases["beam search (K=3)"] = time.perf_counter() - t
    return {"phases": phases, "since_interpreter_start": time.perf_counter() - t_process}


def cmd_beam_fresh(args: argparse.Namespace) -> dict:
    """Batched and one-by-one beam search in a fresh process (no earlier benchmark's
    allocations or warm caches), with the page faults of a batched call."""
    import resource

    from captioner.words.search import beam_search

    from common import median, repeat, timed
    from decode_speed import default_features, recipe_decoder, recipe_features
    from models import Sizes, default_model, without_end

    sizes = Sizes.tiny() if args.quick else Sizes.full()
    if args.model == "default":
        dm = default_model(Path(args.work), sizes)
        decoder, feats = default_features(dm, sizes, Path(args.work))
        max_len = 50  # the CLI's default; the trained model stops at <end>
    else:
        decoder, feats = without_end(recipe_decoder(sizes), end_id=2), recipe_features(sizes, sizes.decode_images)
        max_len = sizes.decode_max_len
    kw = dict(start_id=1, end_id=2, pad_id=0, beam_size=args.beam, max_len=max_len)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t_batch = median(repeat(lambda: beam_search(decoder, feats, **kw), repeats=sizes.decode_repeats))
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / (sizes.decode_repeats + 1)
    beam_search(decoder, feats[:1], **kw)
    t_single = sum(timed(lambda i=i: beam_search(decoder, feats[i:i + 1], **kw)) for i in range(feats.size(0)))
    return {"batched_s": t_batch, "one_by_one_s": t_single, "faults_per_batched_call": faults,
            "images": int(feats.size(0))}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cached-train")
    p.add_argument("--model", choices=("recipe", "default"), required=True)
    p.add_argument("--images", type=int, default=0, help="cache size (the default model's data)")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--epoch", action="store_true", help="one full epoch instead of --steps")
    p.add_argument("--amp", choices=("none", "bf16"), default="none")
    p.add_argument("--work", required=True)
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=cmd_cached_train)
    p = sub.add_parser("startup-phases")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--image", required=True)
    p.set_defaults(func=cmd_startup_phases)
    p = sub.add_parser("beam-fresh")
    p.add_argument("--model", choices=("recipe", "default"), required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--work", required=True)
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=cmd_beam_fresh)
    args = parser.parse_args()
    print(json.dumps(args.func(args)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
