"""The ablation study (`make ablation`): what each attention mechanism and scorer buys.

    .venv/bin/python bench/ablation.py --out runs/ablation

Every row trains the same decoder on the same scenes, from the same frozen feature cache, with
the same budget and the same seeds; only the attention differs. The frozen encoder is the
shipped default model's (`--encoder default`: ImageNet EfficientNet-Lite0 with stage 5
fine-tuned on the default model's own 16,000 training scenes, extracted from
captioner/assets/default.pt), so that each decoder starts from features that see these scenes;
`--encoder imagenet` reads the ImageNet weights alone, as the study of 2026-12-03 did. The rows: the six soft scorers
(`additive`, `concat`, `dot`, `scaled_dot`, `general` and `none`, the mean-pooled fixed
context), and hard attention with the additive scorer at the unbiased REINFORCE weight
lambda_r 1 and at 0.1 (each scored twice: argmax-region and expectation decoding of the same
models); `--rows` adds the doubly stochastic penalty at lambda 0 and 1 beside the recipe's 0.1.
Each run is then evaluated (beam 3) on held-out scenes in the training style, on the reserved
styles and on novel colour-shape pairs. The scenes are the default model's randomised `train`
style (`--style` picks another, e.g. `flat`; at this budget flat scenes did not train further:
held-out F1 0.74 against 0.70, one seed each).

It writes `<out>/<row>/seed<k>/result.json` per run (an expectation row's is
`result-expectation.json` in its hard row's folder) and `<out>/table.md`, one line per row: the
mean over seeds and, after the +-, half the range between them. The table has the rows this call
ran and those an earlier call finished in the same `--out` with the same settings and seeds, so
`--rows` adds rows to `make ablation`'s table. A finished run is never redone,
so a killed study resumes where it stopped (an unfinished run restarts from its last epoch).
The budget (scenes, epochs) is scaled so that the whole study fits a 2-core CPU in well under
90 minutes; the table's caption says so. `--rows` and `--seeds` pick a subset.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

#: (row name, config overrides, hard-attention decoding rule). The recipe is configs/scenes.toml's;
#: lambda is train.alpha_c, lambda_r train.hard_reinforce_weight. Rows with the same overrides
#: share one training run per seed: an "expectation decoding" row scores the hard models of the
#: row above it, read with the alpha-weighted mean context instead of the argmax region.
ROWS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("soft additive", ("model.scorer=additive",), "argmax"),
    ("soft concat", ("model.scorer=concat",), "argmax"),
    ("soft dot", ("model.scorer=dot",), "argmax"),
    ("soft scaled_dot", ("model.scorer=scaled_dot",), "argmax"),
    ("soft general", ("model.scorer=general",), "argmax"),
    ("none (mean-pooled)", ("model.scorer=none",), "argmax"),
    ("hard additive", ("model.scorer=additive", "model.attention=hard"), "argmax"),
    ("hard additive, expectation decoding", ("model.scorer=additive", "model.attention=hard"), "expectation"),
    ("hard additive, lambda_r 0.1", ("model.scorer=additive", "model.attention=hard",
                                     "train.hard_reinforce_weight=0.1"), "argmax"),
    ("hard additive, lambda_r 0.1, expectation decoding", ("model.scorer=additive", "model.attention=hard",
                                                           "train.hard_reinforce_weight=0.1"), "expectation"),
    ("soft additive, lambda 0", ("model.scorer=additive", "train.alpha_c=0.0"), "argmax"),
    ("soft additive, lambda 1", ("model.scorer=additive", "train.alpha_c=1.0"), "argmax"),
)
#: The rows `make ablation` runs: all but the lambda sweep, whose four more runs took 11.6 more
#: minutes on 2 cores on 2026-12-03 (38 without them; 61 on 2026-12-01): run them with --rows.
DEFAULT_ROWS: tuple[str, ...] = tuple(name for name, _, _ in ROWS if "lambda " not in name)
#: The test sets: (folder name, generator arguments). Seeds differ from the training scenes'.
TEST_SETS: tuple[tuple[str, dict], ...] = (
    ("heldout", {"seed": 107}),
    ("reserved", {"seed": 109, "style": "reserved"}),
    ("novel", {"seed": 108, "novel": True}),
)
#: (result key, column header) of the table, strict metrics before lenient ones.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("heldout.object_f1", "F1"),
    ("heldout.exact_set_accuracy", "exact-set"),
    ("heldout.pointing_strict", "pointing (strict)"),
    ("heldout.pointing_slack1", "pointing (1-cell slack)"),
    ("heldout.attention_mass_in_box", "mass in box"),
    ("novel.object_f1", "novel-pair F1"),
    ("reserved.object_f1", "reserved-style F1"),
    ("train_seconds", "training s"),
    ("heldout.images_per_s", "decoding images/s"),
)


@dataclass(frozen=True)
class Budget:
    """How much each run trains; with the defaults `make ablation` took 38 minutes on 2 cores (2026-12-03)."""

    train_scenes: int = 2000  # 80% train, 10% val, 10% unused test
    test_scenes: int = 250
    epochs: int = 4
    val_images: int = 150
    style: str = "train"  # the training scenes' (and held-out, novel-pair sets') appearance style
    overrides: tuple[str, ...] = ()  # config overrides of every row (--set), before the row's own
    encoder: str = "default"  # one of ENCODERS: whose frozen weights every row reads
    pretrained: str = "imagenet"  # the model.pretrained that `encoder` resolves to (encoder_weights)


#: --encoder: the frozen encoder every row's decoder reads (the rows differ only in the decoder).
#: "default": the shipped default model's encoder, ImageNet EfficientNet-Lite0 with stage 5 fine-tuned
#: on the default model's 16,000 training scenes (with a soft additive decoder; seeds and scenes other
#: than the study's); "imagenet": the ImageNet weights alone, as the study of 2026-12-03 ran.
ENCODERS: tuple[str, ...] = ("default", "imagenet")


def encoder_weights(root: Path, encoder: str) -> str:
    """`model.pretrained` for the study's `encoder`: "imagenet", or a file of the default model's
    backbone weights (float32), extracted once from captioner/assets/default.pt into `root` and
    named by that file's digest, so that another default model gets another file (and feature cache)."""
    if encoder == "imagenet":
        return "imagenet"
    import hashlib

    import torch

    from captioner.api import DEFAULT_CHECKPOINT
    from captioner.atomic import atomic_path

    digest = hashlib.sha256(DEFAULT_CHECKPOINT.read_bytes()).hexdigest()[:16]
    target = root / f"default-encoder-{digest}.pt"
    if not target.is_file():
        prefix = "encoder.backbone."
        state = torch.load(DEFAULT_CHECKPOINT, map_location="cpu", weights_only=True)["model"]
        backbone = {key[len(prefix):]: value.float() if value.is_floating_point() else value
                    for key, value in state.items() if key.startswith(prefix)}
        with atomic_path(target) as tmp:
            torch.save(backbone, tmp)
    return str(target)


def slug(row: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in row).strip("-").replace("--", "-")


def make_data(root: Path, budget: Budget) -> dict[str, Path]:
    """The training scenes and the three test sets (generated once; same seeds, same bytes)."""
    from captioner.data.scenes import generate_scenes

    sets = {"train": (root / "train", budget.train_scenes, {"seed": 101, "style": budget.style})}
    sets |= {name: (root / name, budget.test_scenes, {"style": budget.style} | kwargs) for name, kwargs in TEST_SETS}
    for folder, count, kwargs in sets.values():
        if (folder / "dataset.json").is_file() and not _scenes_match(folder, count, kwargs["style"]):
            shutil.rmtree(folder)  # made for another budget or style
        if not (folder / "dataset.json").is_file():
            generate_scenes(folder, count, **kwargs)
    return {name: folder for name, (folder, _, _) in sets.items()}


def _scenes_match(folder: Path, count: int, style: str) -> bool:
    """The folder holds `count` scenes, all on backgrounds of `style`'s families."""
    from captioner.data.scene_spec import SCENE_STYLES

    images = json.loads((folder / "captions.json").read_text())["images"]
    return len(images) == count and all(im.get("background") in SCENE_STYLES[style] for im in images)


class StudyMismatch(Exception):
    """A finished run in --out was made with other settings than this study's."""


def settings(budget: Budget, overrides: tuple[str, ...]) -> dict:
    """What a run's result depends on besides its seed: recorded with it, checked on reuse."""
    return {"train_scenes": budget.train_scenes, "test_scenes": budget.test_scenes, "epochs": budget.epochs,
            "val_images": budget.val_images, "style": budget.style, "overrides": [*budget.overrides, *overrides],
            "encoder": budget.encoder, "encoder_weights": Path(budget.pretrained).name}


def _reuse(path: Path, wanted: dict) -> dict:
    record = json.loads(path.read_text())
    if record.get("settings") != wanted:
        raise StudyMismatch(f"{path} was made with other settings ({record.get('settings')}, this study's are "
                            f"{wanted}): give another --out, or the settings it was made with")
    return record


#: The study compares attention mechanisms on the frozen encoder's cached grids with every caption
#: each epoch, as its table was measured; further fine-tuning of stage 5 is a --set away: --set
#: model.finetune_blocks=1 (then each row trains it on from the --encoder's weights).
FROZEN_RECIPE = ("model.finetune_blocks=0", "data.caption_policy=all")


def recipe(data: dict[str, Path], budget: Budget, seed: int, overrides: tuple[str, ...] = ()):
    """configs/scenes.toml on the ablation's data and budget (encoder frozen: FROZEN_RECIPE), with a
    row's overrides."""
    from captioner.config import load_config

    return load_config(Path(__file__).resolve().parent.parent / "configs" / "scenes.toml", [
        f"data.data={data['train'] / 'dataset.json'}", f"data.instances={data['train'] / 'instances.json'}",
        f"data.max_val_images={budget.val_images}", f"train.epochs={budget.epochs}",
        f"train.patience={budget.epochs}", f"train.seed={seed}", "train.log_every=1000000",
        f"model.pretrained={budget.pretrained}", *FROZEN_RECIPE, *budget.overrides, *overrides])


def cache(data: dict[str, Path], budget: Budget) -> None:
    """Build the shared feature cache first, so that no row's training time includes it (with
    --set model.finetune_blocks=N, the cache of the frozen stages' output that fine-tuning reads)."""
    from captioner.train.data import cache_features

    list(cache_features(recipe(data, budget, seed=0)))


def train_dir(overrides: tuple[str, ...]) -> str:
    """The folder of the training runs with these overrides: the first row's that has them."""
    return slug(next(name for name, o, _ in ROWS if o == overrides))


def run_dir(out: Path, overrides: tuple[str, ...], seed: int) -> Path:
    """One training run's folder in the study's `out`."""
    return out / train_dir(overrides) / f"seed{seed}"


def result_file(run: Path, hard_decode: str) -> Path:
    """Where a run's evaluation with `hard_decode` is written (argmax: result.json)."""
    return run / ("result.json" if hard_decode == "argmax" else f"result-{hard_decode}.json")


def run_one(row: str, overrides: tuple[str, ...], seed: int, data: dict[str, Path], out: Path,
            budget: Budget, hard_decode: str = "argmax") -> dict:
    """Train one row's model with one seed unless it is trained (resuming a killed run), then
    evaluate it with `hard_decode` on the test sets. `out`: the training run's folder."""
    from captioner.api import load_captioner
    from captioner.evaluation import evaluate
    from captioner.train.loop import train

    wanted = settings(budget, overrides)
    done = result_file(out, hard_decode)
    if done.is_file():
        return _reuse(done, wanted)
    trained = out / "trained.json"
    if not trained.is_file():
        config = recipe(data, budget, seed, overrides)
        start = time.perf_counter()
        train(config, out, resume=(out / "last.pt").is_file(), log=lambda _msg: None)
        trained.write_text(json.dumps({"train_seconds": round(time.perf_counter() - start, 1),
                                       "settings": wanted}) + "\n")
    result: dict = {"row": row, "seed": seed, "overrides": list(overrides), "hard_decode": hard_decode,
                    "train_seconds": _reuse(trained, wanted)["train_seconds"], "settings": wanted}
    cap = load_captioner(out / "best.pt", device="cpu", engine="torch")
    for name, _ in TEST_SETS:
        start = time.perf_counter()
        report = evaluate(cap, data[name] / "captions.json", grounding=data[name] / "instances.json",
                          beam_size=3, java=False, hard_decode=hard_decode)
        seconds = time.perf_counter() - start
        for key, value in report.scores.items():
            if isinstance(value, (int, float)):
                result[f"{name}.{key}"] = value
        result[f"{name}.images_per_s"] = round(report.scores["images"] / seconds, 2)
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def finished_elsewhere(out: Path, budget: Budget, seeds: list[int], asked: set[str]) -> list[dict]:
    """The results of rows not asked for this time that an earlier call finished in `out` with this
    study's settings, for every one of `seeds`: the table keeps them, so that `--rows` adds rows
    to `make ablation`'s table instead of replacing it. A row finished with other settings, or
    for only some of the seeds, is left out and named on stderr."""
    found = []
    for row, overrides, hard_decode in ROWS:
        if row in asked:
            continue
        files = [result_file(run_dir(out, overrides, seed), hard_decode) for seed in seeds]
        if not any(f.is_file() for f in files):
            continue
        try:
            if not all(f.is_file() for f in files):
                raise StudyMismatch(f"it is finished for only some of the seeds {seeds}")
            found += [_reuse(f, settings(budget, overrides)) for f in files]
        except StudyMismatch as err:
            print(f"note: row {row!r} in {out} is not in the table: {err}", file=sys.stderr)
    return found


#: The figure's rows: (label, row whose seed-0 model draws it, decoding rule).
FIGURE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("soft additive", "soft additive", "argmax"),
    ("hard additive, argmax region", "hard additive", "argmax"),
    ("hard additive, lambda_r 0.1, argmax region", "hard additive, lambda_r 0.1", "argmax"),
)


def soft_vs_hard_figure(out: Path, data: dict[str, Path], scene: int = 0, seed: int = 0) -> Path | None:
    """`<out>/soft_vs_hard.png`: one held-out scene captioned by the soft and the hard models
    (seed `seed`), each word's map drawn over it, one strip per model (the exact grid cells,
    so a hard model's one-hot read and a soft map are drawn alike). None if no model is trained."""
    from PIL import Image, ImageDraw

    from captioner.api import load_captioner
    from captioner.overlay.options import OverlayOptions
    from captioner.overlay.render import panel_grid

    records = json.loads((data["heldout"] / "captions.json").read_text())["images"]
    path = data["heldout"] / "images" / records[scene]["file_name"]
    strips = []
    for label, row, rule in FIGURE_ROWS:
        overrides = next(o for name, o, _ in ROWS if name == row)
        ckpt = run_dir(out, overrides, seed) / "best.pt"
        if not (ckpt.parent / "trained.json").is_file():  # not trained, or killed mid-training
            continue
        cap = load_captioner(ckpt, device="cpu", engine="torch")
        [caption] = cap.caption([path], beam_size=3, hard_decode=rule)
        with Image.open(path) as image:
            grid = panel_grid(image.convert("RGB"), caption.tokens, caption.alphas, columns=8, panel_size=128,
                              options=OverlayOptions(mode="nearest"))
        title = Image.new("RGB", (grid.width, 22), "white")
        ImageDraw.Draw(title).text((6, 4), f"{label}: \"{caption.text}\"", fill="black")
        strips += [title, grid]
    if not strips:
        return None
    figure = Image.new("RGB", (max(s.width for s in strips), sum(s.height for s in strips)), "white")
    top = 0
    for strip in strips:
        figure.paste(strip, (0, top))
        top += strip.height
    target = out / "soft_vs_hard.png"
    figure.save(target, optimize=True)
    return target


def _mean_spread(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean, half_range = sum(values) / len(values), (max(values) - min(values)) / 2
    digits = 0 if mean >= 100 else (1 if mean >= 10 else 3)
    return f"{mean:.{digits}f} +- {half_range:.{digits}f}"


def table(results: list[dict], budget: Budget, seeds: list[int]) -> str:
    lines = [f"Each row: {len(seeds)} seeds ({', '.join(map(str, seeds))}); mean +- half the range. Budget scaled "
             f"down to fit a 2-core CPU: {int(budget.train_scenes * 0.8)} training scenes (5 captions each) in the "
             f"{budget.style!r} style (held-out and novel-pair scenes too; reserved-style scenes are never trained on), "
             f"{budget.epochs} epochs, best epoch by validation object F1 on {budget.val_images} images; test sets of "
             f"{budget.test_scenes} scenes each, beam 3. Every row reads the same frozen encoder: "
             + ("the shipped default model's (ImageNet EfficientNet-Lite0 with stage 5 fine-tuned on the default "
                "model's 16,000 training scenes, beside a soft additive decoder)" if budget.encoder == "default"
                else "ImageNet EfficientNet-Lite0") +
             f". Training s: the decoder's training from the shared "
             f"feature cache (built once beforehand), validation included; decoding images/s: "
             f"the held-out evaluation, file to caption."
             + (" An \"expectation decoding\" row scores the models of the hard row above it (so its training s "
                "is that row's) with the alpha-weighted mean context instead of the argmax region."
                if any(r.get("hard_decode") == "expectation" for r in results) else "")
             + (f" Every row also sets {', '.join(budget.overrides)}." if budget.overrides else ""), "",
             "| row | " + " | ".join(header for _, header in COLUMNS) + " |",
             "|---|" + "--:|" * len(COLUMNS)]
    for row, _, _ in ROWS:
        runs = [r for r in results if r["row"] == row]
        if runs:
            cells = [_mean_spread([float(r.get(key, math.nan)) for r in runs]) for key, _ in COLUMNS]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--data", type=Path, help="where the scenes go (default: datasets/ablation-<style>)")
    parser.add_argument("--rows", nargs="*", help="row names (default: all but the lambda sweep)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--train-scenes", type=int, default=Budget.train_scenes)
    parser.add_argument("--test-scenes", type=int, default=Budget.test_scenes)
    parser.add_argument("--epochs", type=int, default=Budget.epochs)
    parser.add_argument("--val-images", type=int, default=Budget.val_images)
    parser.add_argument("--style", default=Budget.style,
                        help="appearance style of the training, held-out and novel-pair scenes (reserved stays reserved)")
    parser.add_argument("--encoder", choices=ENCODERS, default=Budget.encoder,
                        help="the frozen encoder of every row: the default model's (default) or ImageNet's")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every row (repeatable), e.g. train.decoder_lr=0.002")
    args = parser.parse_args(argv)
    budget = Budget(args.train_scenes, args.test_scenes, args.epochs, args.val_images, args.style,
                    tuple(args.overrides), args.encoder)
    rows = [r for r in ROWS if r[0] in (args.rows or DEFAULT_ROWS)]
    unknown = set(args.rows or ()) - {name for name, _, _ in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows are {[name for name, _, _ in ROWS]}")
    root = args.data or Path(f"datasets/ablation-{args.style}")
    data = make_data(root, budget)
    budget = replace(budget, pretrained=encoder_weights(root, budget.encoder))
    cache(data, budget)
    results = []
    for row, overrides, hard_decode in rows:
        for seed in args.seeds:
            try:
                result = run_one(row, overrides, seed, data, run_dir(args.out, overrides, seed),
                                 budget, hard_decode)
            except StudyMismatch as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            results.append(result)
            print(json.dumps({k: result[k] for k in ("row", "seed", "train_seconds")}
                             | {key: result.get(key) for key, _ in COLUMNS[:3]}), flush=True)
    results = finished_elsewhere(args.out, budget, args.seeds, {row for row, _, _ in rows}) + results
    text = table(results, budget, args.seeds)
    (args.out / "table.md").write_text(text)
    print(text)
    figure = soft_vs_hard_figure(args.out, data)
    if figure is not None:
        print(f"soft and hard attention maps of one held-out scene: {figure}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
