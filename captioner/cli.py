"""The `captioner` command line. argparse lives here and only here; each command calls the package.

Exit codes: 0 success, 1 some inputs failed (the rest were still processed), 2 usage or
input error. Expected errors print one line naming the file and reason, never a traceback.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _error(message: str) -> None:
    print(f"captioner: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- caption
def expand_inputs(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, directories (their images, sorted) and globs -> image paths, plus error lines."""
    from .image import list_images

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


def cmd_caption(args: argparse.Namespace) -> int:
    import torch

    from .api import load_captioner
    from .image import ImageLoadError, load_image

    paths, errors = expand_inputs(args.inputs)
    for line in errors:
        print(line, file=sys.stderr)
    if not paths:
        _error("no images to caption")
        return EXIT_PARTIAL if errors else EXIT_USAGE
    cap = load_captioner(args.checkpoint, device=args.device)
    overlay_dir = Path(args.overlay_dir) if args.overlay_dir else None
    if overlay_dir:
        from .overlay import write_overlays
        overlay_dir.mkdir(parents=True, exist_ok=True)
    failed = len(errors)
    stems: dict[str, int] = {}
    for start in range(0, len(paths), args.batch_size):
        chunk, images, tensors = [], [], []
        for path in paths[start:start + args.batch_size]:
            try:
                image = load_image(path)
            except ImageLoadError as err:
                print(str(err), file=sys.stderr)
                failed += 1
                continue
            chunk.append(path)
            images.append(image)
            tensors.append(cap.preprocess(image))
        if not chunk:
            continue
        results = cap.caption_tensors(torch.stack(tensors), beam_size=args.beam_size,
                                      max_len=args.max_len)
        for path, image, result in zip(chunk, images, results):
            if args.json:
                print(json.dumps({"image": str(path), "caption": result.text, "tokens": result.tokens,
                                  "score": round(result.score, 6), "grid": cap.grid,
                                  "alphas": [[[round(float(v), 6) for v in row] for row in a]
                                             for a in result.alphas]}), flush=True)
            else:
                print(f"{path}\t{result.text}", flush=True)
            if overlay_dir and result.tokens:
                stem = path.stem
                stems[stem] = stems.get(stem, 0) + 1
                if stems[stem] > 1:  # two inputs with one name: keep both
                    stem = f"{stem}-{stems[stem]}"
                write_overlays(overlay_dir, stem, image, result.tokens, result.alphas,
                               png=True, gif=args.gif, html=args.html, caption=result.text)
    return EXIT_PARTIAL if failed else EXIT_OK


def _add_caption(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("caption", help="caption images (files, directories or globs)",
                       description="Caption images with beam search and optionally write attention overlays.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, directories or globs")
    p.add_argument("--checkpoint", default=None, help="model checkpoint (default: the embedded model)")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with attention maps")
    p.add_argument("--overlay-dir", default=None, help="write a panel PNG per image here")
    p.add_argument("--gif", action="store_true", help="also write an animated GIF per image")
    p.add_argument("--html", action="store_true", help="also write an interactive HTML page per image")
    p.set_defaults(func=cmd_caption, positive=("beam_size", "max_len", "batch_size"))


# --------------------------------------------------------------------------- scenes
def cmd_scenes(args: argparse.Namespace) -> int:
    from .scenes import generate_scenes

    summary = generate_scenes(args.out, args.num_images, args.seed, size=args.size, novel=args.novel)
    print(json.dumps({"out": str(summary.out), "num_images": summary.num_images,
                      "splits": summary.split_counts}))
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
    p.set_defaults(func=cmd_scenes, positive=("num_images", "size"))


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_caption, _add_scenes]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="captioner", description="Show, Attend and Tell image captioning.")
    parser.add_argument("--version", action="version", version="captioner 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Error types that describe bad input; they print one line, not a traceback."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .image import ImageLoadError

    errors: list[type[BaseException]] = [CheckpointError, ConfigError, ImageLoadError, FileNotFoundError]
    for module, name in (("datasets", "AnnotationError"), ("metrics", "MetricsInputError")):
        try:
            errors.append(getattr(__import__(f"captioner.{module}", fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in getattr(args, "positive", ()):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        return args.func(args)
    except _expected_errors() as err:
        _error(str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
