"""The `captioner` command line. argparse lives here and only here; each command calls the package.

Exit codes: 0 success, 1 some inputs failed (the rest were still processed), 2 usage or
input error. Expected errors print one line naming the file and reason, never a traceback.
"""
from __future__ import annotations

import argparse
import functools
import glob
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

from captioner.data.scene_spec import BACKGROUNDS, SCENE_STYLES
from captioner.overlay.options import MODES, STYLES, OverlayOptions

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2
#: From this many images on, `--engine auto` uses an exported engine (OpenVINO or ONNX Runtime):
#: its set-up (export and compile, about 1.5 s) costs more than it saves on fewer
#: (bench/results.md, e2e.*.encoder_*).
EXPORTED_MIN_IMAGES = 64
#: `--engine`: `captioner.features.inference.ENGINES`, repeated so the CLI starts without torch
#: (tests/test_captioning.py checks they agree).
ENGINE_CHOICES = ("auto", "torch", "onnx", "openvino")
#: DataLoader workers that read images for `caption` while the model runs, by device. On a CPU
#: the CNN already keeps every core busy and workers only compete with it (bench/README.md).
CAPTION_WORKERS = {"cpu": 0, "cuda": 2}
#: Widest beam the commands accept.
MAX_BEAM = 1000


def _error(message: str) -> None:
    print(f"captioner: error: {message}", file=sys.stderr)


def _describe(err: BaseException) -> str:
    """One line for an error: OSErrors as 'FILE: reason' (str() would add '[Errno 30]')."""
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.filename}: {err.strerror}"
    return str(err)


# --------------------------------------------------------------------------- caption
def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, directories (their images, sorted) and globs -> image paths, plus error lines."""
    from captioner.image.loading import list_images

    paths: list[Path] = []
    errors: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = list_images(p)
            if not found:
                errors.append(f"{item}: directory contains no images")
            paths += found
        elif p.exists():
            paths.append(p)
        elif any(ch in item for ch in "*?["):
            found = [Path(m) for m in sorted(glob.glob(item, recursive=True)) if Path(m).is_file()]
            if not found:
                errors.append(f"{item}: pattern matched no files")
            paths += found
        else:
            errors.append(f"{item}: file not found")
    return paths, errors


def _engine(choice: str, images: int) -> str:
    """--engine auto: an exported engine once there are enough images to repay its set-up."""
    return ("auto" if images >= EXPORTED_MIN_IMAGES else "torch") if choice == "auto" else choice


def _add_engine(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                   help=f"what runs the CNN: torch, onnx (ONNX Runtime) or openvino, both on a CPU, faster per "
                        f"image but ~1.5 s to set up; auto: on a CPU, the fastest installed for the backbone "
                        f"(openvino for EfficientNet-Lite, onnx for ResNets), from {EXPORTED_MIN_IMAGES} images on")


def cmd_caption(args: argparse.Namespace) -> int:
    from captioner.api import load_captioner
    from captioner.image.loading import ImageLoadError, load_image
    from tqdm import tqdm

    paths, errors = expand_inputs(args.inputs)
    for line in errors:
        print(line, file=sys.stderr)
    if not paths:
        _error("no images to caption")
        return EXIT_PARTIAL if errors else EXIT_USAGE
    overlay_dir = Path(args.overlay_dir) if args.overlay_dir else None
    try:
        overlay = OverlayOptions(mode=args.overlay_mode, style=args.overlay_style, cmap=args.cmap,
                                 opacity=args.opacity)
    except ValueError as err:  # a colormap matplotlib does not know, an opacity outside [0, 1]
        _error(str(err).replace("OverlayOptions.", "--"))
        return EXIT_USAGE
    if overlay_dir and overlay_dir.exists() and not overlay_dir.is_dir():
        _error(f"--overlay-dir {overlay_dir}: exists and is not a directory")
        return EXIT_USAGE
    cap = load_captioner(args.checkpoint, device=args.device, engine=_engine(args.engine, len(paths)))
    if overlay_dir:
        from captioner.overlay.files import write_overlays
        overlay_dir.mkdir(parents=True, exist_ok=True)
    failed = len(errors)
    used_stems: set[str] = set()
    workers = CAPTION_WORKERS.get(cap.device.type, 0) if args.workers is None else args.workers
    results = cap.caption_iter(paths, beam_size=args.beam_size, max_len=args.max_len,
                               batch_size=args.batch_size, num_workers=workers, hard_decode=args.hard_decode)
    # A progress bar only when stderr is a terminal (tqdm's disable=None); messages go through
    # tqdm.write so that they do not tear it.
    bar = tqdm(results, total=len(paths), unit="img", file=sys.stderr, disable=None, leave=False)
    say = functools.partial(tqdm.write, file=sys.stderr)
    for result in bar:
        path, caption = paths[result.index], result.caption
        if caption is None:  # unreadable: it fails alone, the other images go on
            say(str(result.error))
            failed += 1
            continue
        if args.json:
            print(json.dumps({"image": str(path), "caption": caption.text, "tokens": caption.tokens,
                              "score": round(caption.score, 6), "grid": cap.grid,
                              "alphas": [[[round(float(v), 6) for v in row] for row in a]
                                         for a in caption.alphas]}), flush=True)
        else:
            print(f"{path}\t{caption.text}", flush=True)
        if overlay_dir and not caption.tokens:
            say(f"{path}: empty caption, no overlay written")
        elif overlay_dir:
            stem, n = path.stem, 1
            while stem in used_stems:  # two inputs with one name: keep both
                n += 1
                stem = f"{path.stem}-{n}"
            used_stems.add(stem)
            try:
                write_overlays(overlay_dir, stem, load_image(path), caption.tokens, caption.alphas,
                               png=True, gif=args.gif, html=args.html, caption=caption.text, options=overlay)
            except (OSError, ImageLoadError) as err:  # a full disk or a read-only folder: the captions go on
                say(f"{path}: overlay not written: {_describe(err)}")
                failed += 1
    return EXIT_PARTIAL if failed else EXIT_OK


def _add_caption(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption images (files, directories or globs)",
                       description="Caption images with beam search and optionally write attention overlays.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, directories or globs")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded model)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    _add_hard_decode(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=None,
                   help="processes that decode and resize images while the model runs (0: in this process; "
                        "default: 0 on a CPU, 2 on a GPU)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    _add_engine(p)
    p.add_argument("--json", action="store_true", help="one JSON object per line, with attention maps")
    p.add_argument("--overlay-dir", default=None, help="write a panel PNG per image here")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF per image")
    p.add_argument("--html", action="store_true", help="also write an interactive HTML page per image")
    defaults = OverlayOptions()
    p.add_argument("--overlay-mode", choices=MODES, default=defaults.mode,
                   help="how a G x G map is upsampled: smooth (bicubic) or nearest (the grid's cells)")
    p.add_argument("--overlay-style", choices=STYLES, default=defaults.style,
                   help="heat: a colour map over the image; spotlight: dim what the model did not look at")
    p.add_argument("--cmap", default=defaults.cmap, help="a matplotlib colour map name, for --overlay-style heat")
    p.add_argument("--opacity", type=float, default=defaults.opacity, help="overlay opacity, 0 to 1")
    p.set_defaults(func=cmd_caption, positive=("beam_size", "max_len", "batch_size"))


# --------------------------------------------------------------------------- scenes
def cmd_scenes(args: argparse.Namespace) -> int:
    from captioner.data.scenes import generate_scenes

    try:
        summary = generate_scenes(args.out, args.num_images, args.seed, size=args.size, novel=args.novel,
                                  style=args.style)
    except ValueError as err:  # out-of-range --seed or --size, named by the message
        _error(str(err))
        return EXIT_USAGE
    print(json.dumps({"out": str(summary.out), "num_images": summary.num_images,
                      "splits": summary.split_counts, "style": summary.style}))
    return EXIT_OK


def _add_scenes(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenes", help="generate the synthetic scenes dataset",
                       description="Write DIR/images/*.png, captions.json, instances.json and dataset.json.")
    p.add_argument("--out", required=True)
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--novel", action="store_true",
                   help="only scenes with held-out colour-shape pairs (compositional test split)")
    p.add_argument("--style", default="train", choices=sorted(SCENE_STYLES), metavar="STYLE",
                   help="background families: train (the seven training ones; default), reserved (the three "
                        "kept out of training, for evaluation), or one family: " + ", ".join(BACKGROUNDS))
    p.set_defaults(func=cmd_scenes, positive=("num_images", "size"))


# --------------------------------------------------------------------------- train
def _train_config(args: argparse.Namespace):
    from captioner.config import load_config

    overrides = list(args.set or [])
    for flag, key in (("data", "data.data"), ("images", "data.images"), ("val_data", "data.val_data"),
                      ("epochs", "train.epochs"), ("batch_size", "train.batch_size"),
                      ("save_every", "train.save_every"), ("device", "train.device")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")
    return load_config(args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from captioner.train.loop import train

    config = _train_config(args)
    summary = train(config, args.out, resume=args.resume)
    if not summary.main:  # under torchrun, one summary: rank 0's
        return EXIT_OK
    print(json.dumps({"out": str(summary.out_dir), "epochs": summary.epochs_completed, "steps": summary.steps,
                      "best_" + config.train.metric: summary.best_score if math.isfinite(summary.best_score) else None,
                      "best_epoch": summary.best_epoch,
                      "stopped_early": summary.stopped_early, "skipped_images": summary.skipped_images}))
    return EXIT_OK


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a captioner (COCO or Karpathy-split data)",
                       description="Train with real-decoding validation, crash-safe checkpoints and resume. "
                                   "Without --config the embedded default model's architecture and recipe are "
                                   "used, except alpha_c (1.0, the paper's) and the selection metric (CIDEr-D); "
                                   "configs/scenes.toml has all of it.")
    p.add_argument("--data", help="COCO captions json or Karpathy split json (default: from the config)")
    p.add_argument("--images", help="image root (default: the data file's directory)")
    p.add_argument("--val-data", help="separate validation annotations, e.g. captions_val2014.json")
    p.add_argument("--out", required=True, help="output directory for last.pt, best.pt, metrics.jsonl")
    p.add_argument("--config", help="TOML config (see configs/)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config field")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--save-every", type=int, metavar="STEPS", help="write last.pt every STEPS steps")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.set_defaults(func=cmd_train)


def cmd_cache_features(args: argparse.Namespace) -> int:
    from captioner.train.data import cache_features

    config = _train_config(args)
    for name, status, path in cache_features(config):
        print(json.dumps({"split": name, "status": status, "cache": str(path)}))
    return EXIT_OK


def _add_cache_features(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache-features", help="precompute the frozen encoder's region grids",
                       description="Compute each image's G x G grid once into a memory-mapped fp16 cache "
                                   "next to the data file; `train` then reads it. With model.finetune_blocks N "
                                   "it caches the output of the stages before the last N, which train then "
                                   "fine-tunes.")
    p.add_argument("--data")
    p.add_argument("--images")
    p.add_argument("--val-data")
    p.add_argument("--config")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE")
    p.add_argument("--device")
    p.set_defaults(func=cmd_cache_features)


# --------------------------------------------------------------------------- evaluate / score
def _print_scores(scores: dict, warnings: list[str], table: str | None, show_table: bool) -> None:
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    if table and show_table:
        print(table, file=sys.stderr)
    print(json.dumps(scores), flush=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from captioner.api import load_captioner
    from captioner.evaluation import evaluate

    cap = load_captioner(args.checkpoint, device=args.device, engine=_engine(args.engine, EXPORTED_MIN_IMAGES))
    report = evaluate(cap, args.data, args.images, split=args.split, beam_size=args.beam_size,
                      max_len=args.max_len, batch_size=args.batch_size, num_workers=args.workers,
                      grounding=args.grounding, results_path=args.results,
                      java=False if args.no_java else None, hard_decode=args.hard_decode)
    table = "\n".join(f"{k:>24}  {v:.4f}" if isinstance(v, float) else f"{k:>24}  {v}"
                      for k, v in report.scores.items() if not isinstance(v, dict))
    _print_scores(report.scores, report.warnings, table, not args.quiet)
    return EXIT_OK


def _add_scoring_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-java", action="store_true", help="Python PTB tokenizer, no METEOR")
    p.add_argument("--quiet", action="store_true", help="no table on stderr")


def _add_hard_decode(p: argparse.ArgumentParser) -> None:
    # The names of captioner.model.hard_attention.DECODE_RULES, spelled out so that the CLI starts
    # without importing torch (tests/test_hard_attention.py checks they agree).
    p.add_argument("--hard-decode", choices=["argmax", "expectation"], default="argmax",
                   help="hard-attention models only: read each word's most likely region (default; the "
                        "overlay shows it) or the alpha-weighted mean, as the paper's code does at test time")


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="caption a split and score it (BLEU, METEOR, ROUGE-L, CIDEr-D)",
                       description="Caption a split with beam search, write a COCO results file and print "
                                   "the metrics as JSON on the last stdout line.")
    p.add_argument("--data", required=True, help="Karpathy split json or COCO captions json")
    p.add_argument("--images", help="image root (default: the data file's directory)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "restval"],
                   help="Karpathy split (ignored for COCO captions files, which have none)")
    p.add_argument("--checkpoint", help="default: the embedded model")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers for image loading")
    _add_hard_decode(p)
    _add_engine(p)
    p.add_argument("--device", default="auto")
    p.add_argument("--results", help="write the COCO results file here")
    p.add_argument("--grounding", metavar="INSTANCES.json",
                   help="COCO instances file: report the attention pointing game (and object F1 for scenes)")
    _add_scoring_flags(p)
    p.set_defaults(func=cmd_evaluate, positive=("beam_size", "max_len", "batch_size"))


def cmd_score(args: argparse.Namespace) -> int:
    from captioner.data.annotations import load_references, load_results
    from captioner.scoring.coco_metrics import format_table, score_captions

    refs = load_references(args.references, args.split)
    results = load_results(args.results)
    report = score_captions(refs, results, java=False if args.no_java else None)
    scores = dict(report.scores) | {"images": report.num_images, "tokenizer": report.tokenizer}
    if report.unavailable:
        scores["unavailable"] = report.unavailable
    _print_scores(scores, report.warnings, format_table(report), not args.quiet)
    return EXIT_OK


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score any system's COCO results file against references",
                       description="Score [{image_id, caption}] results with the COCO caption toolkit's "
                                   "metrics; the JSON is the last stdout line, a table goes to stderr.")
    p.add_argument("--references", required=True, help="COCO captions json or Karpathy json")
    p.add_argument("--results", required=True, help='COCO results file: [{"image_id": ..., "caption": ...}]')
    p.add_argument("--split", default=None, help="Karpathy split to use (e.g. test)")
    _add_scoring_flags(p)
    p.set_defaults(func=cmd_score)


# --------------------------------------------------------------------------- export
def cmd_export(args: argparse.Namespace) -> int:
    from captioner.checkpoint import export_checkpoint

    path = export_checkpoint(args.src, args.dst, half=args.half)
    print(json.dumps({"checkpoint": str(path), "bytes": path.stat().st_size}))
    return EXIT_OK


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="strip a training checkpoint down to a release model",
                       description="Copy weights, config and vocabulary (no optimiser state).")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--half", action="store_true", help="store weights as fp16 (they load back as fp32)")
    p.set_defaults(func=cmd_export)


# --------------------------------------------------------------------------- serve
def cmd_serve(args: argparse.Namespace) -> int:
    try:  # the optional extra
        from captioner.serve.options import ServeOptions
        from captioner.serve.server import run_server
    except ModuleNotFoundError as err:
        _error(f"captioner serve needs the serve extra ({err.name} is missing): pip install 'captioner[serve]'")
        return EXIT_USAGE
    from captioner.api import load_captioner

    try:
        options = ServeOptions(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                               max_upload_mb=args.max_upload_mb, max_queue=args.max_queue,
                               hard_decode=args.hard_decode)
    except ValueError as err:
        _error("--" + str(err).replace("_", "-"))
        return EXIT_USAGE
    if not 0 <= args.port <= 65535:
        _error(f"--port must be from 0 to 65535, got {args.port}")
        return EXIT_USAGE
    # A server captions many images, so `auto` takes the exported engine at once (its set-up is repaid).
    cap = load_captioner(args.checkpoint, device=args.device, engine=_engine(args.engine, EXPORTED_MIN_IMAGES))
    name = Path(args.checkpoint).name if args.checkpoint else "default.pt (embedded)"
    run_server(cap, options, host=args.host, port=args.port, model_name=name, log_level=args.log_level)
    return EXIT_OK


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="a local web demo and JSON API (needs the serve extra)",
                       description="Serve the page (upload an image, see the caption and its attention per word) "
                                   "and POST /api/caption, with dynamic batching. Binds 127.0.0.1 unless --host "
                                   "says otherwise; SIGINT or SIGTERM lets requests in flight finish.")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="0: any free port (the address is printed)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--max-batch", type=int, default=16, help="most images captioned in one model call")
    p.add_argument("--max-wait-ms", type=float, default=20.0,
                   help="how long a batch waits for more requests after its first")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest request body, in MB")
    p.add_argument("--max-queue", type=int, default=64,
                   help="most caption requests in progress at once; past it, 503")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    _add_hard_decode(p)  # the default of requests that name no `hard_decode`
    _add_engine(p)
    p.set_defaults(func=cmd_serve)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_caption, _add_train, _add_cache_features, _add_evaluate, _add_score, _add_scenes, _add_export, _add_serve]


def build_parser() -> argparse.ArgumentParser:
    from captioner import __version__  # read from the installed metadata (pyproject.toml)

    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Error types that describe bad input; they print one line, not a traceback.

    Imported only when an error happens, so the common path does not pay for them.
    """
    from captioner.checkpoint import CheckpointError
    from captioner.config import ConfigError
    from captioner.data.annotations import AnnotationError
    from captioner.scoring.grounding import GroundingInputError
    from captioner.image.loading import ImageLoadError
    from captioner.scoring.coco_metrics import MetricsInputError

    # OSError: files that cannot be read or written (missing, a directory, no permission, a
    # read-only or full disk), whether inputs or outputs.
    return (CheckpointError, ConfigError, ImageLoadError, AnnotationError, MetricsInputError,
            GroundingInputError, OSError)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as 'warning: ...' lines, without the source location and line Python adds."""
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in getattr(args, "positive", ()):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "beam_size", 0) > MAX_BEAM:
        parser.error(f"--beam-size must be at most {MAX_BEAM} (each step holds beam x vocabulary scores "
                     f"per image in memory)")
    if (getattr(args, "workers", 0) or 0) < 0:
        parser.error("--workers must be at least 0")
    try:
        return args.func(args)
    except _expected_errors() as err:
        _error(_describe(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
