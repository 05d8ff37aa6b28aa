"""The ablation study (`make ablation`): what each attention mechanism and scorer buys.

    .venv/bin/python bench/ablation.py --out runs/ablation

Every row trains the same decoder on the same scenes, from the same frozen feature cache, with
the same budget and the same seeds; only the attention differs: the six soft scorers
(`additive`, `concat`, `dot`, `scaled_dot`, `general` and `none`, the mean-pooled fixed
context), hard attention with the additive scorer, and the doubly stochastic penalty at
lambda 0 and 1 beside the recipe's 0.1. Each run is then evaluated (beam 3) on held-out scenes
in the training styles, on the reserved styles and on novel colour-shape pairs.

It writes `<out>/<row>/seed<k>/result.json` per run and `<out>/table.md`, one line per row: the
mean over seeds and, after the +-, half the range between them. A finished run is never redone,
so a killed study resumes where it stopped (an unfinished run restarts from its last epoch).
The budget (scenes, epochs) is scaled so that the whole study fits a 2-core CPU in well under
90 minutes; the table's caption says so. `--rows` and `--seeds` pick a subset.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

#: (row name, config overrides). The recipe is configs/scenes.toml's; lambda is train.alpha_c.
ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("soft additive", ("model.scorer=additive",)),
    ("soft concat", ("model.scorer=concat",)),
    ("soft dot", ("model.scorer=dot",)),
    ("soft scaled_dot", ("model.scorer=scaled_dot",)),
    ("soft general", ("model.scorer=general",)),
    ("none (mean-pooled)", ("model.scorer=none",)),
    ("hard additive", ("model.scorer=additive", "model.attention=hard")),
    ("soft additive, lambda 0", ("model.scorer=additive", "train.alpha_c=0.0")),
    ("soft additive, lambda 1", ("model.scorer=additive", "train.alpha_c=1.0")),
)
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
    """How much each run trains; the defaults fit the whole study in about an hour on 2 cores."""

    train_scenes: int = 2000  # 80% train, 10% val, 10% unused test
    test_scenes: int = 300
    epochs: int = 4
    val_images: int = 200


def slug(row: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in row).strip("-").replace("--", "-")


def make_data(root: Path, budget: Budget) -> dict[str, Path]:
    """The training scenes and the three test sets (generated once; same seeds, same bytes)."""
    from captioner.data.scenes import generate_scenes

    sets = {"train": (root / "train", budget.train_scenes, {"seed": 101})}
    sets |= {name: (root / name, budget.test_scenes, kwargs) for name, kwargs in TEST_SETS}
    for folder, count, kwargs in sets.values():
        if not (folder / "dataset.json").is_file():
            generate_scenes(folder, count, **kwargs)
    return {name: folder for name, (folder, _, _) in sets.items()}


def recipe(data: dict[str, Path], budget: Budget, seed: int, overrides: tuple[str, ...] = ()):
    """configs/scenes.toml on the ablation's data and budget, with a row's overrides."""
    from captioner.config import load_config

    return load_config(Path(__file__).resolve().parent.parent / "configs" / "scenes.toml", [
        f"data.data={data['train'] / 'dataset.json'}", f"data.instances={data['train'] / 'instances.json'}",
        f"data.max_val_images={budget.val_images}", f"train.epochs={budget.epochs}",
        f"train.patience={budget.epochs}", f"train.seed={seed}", "train.log_every=1000000", *overrides])


def cache(data: dict[str, Path], budget: Budget) -> None:
    """Build the shared feature cache first, so that no row's training time includes it."""
    from captioner.train.data import cache_features

    list(cache_features(recipe(data, budget, seed=0)))


def run_one(row: str, overrides: tuple[str, ...], seed: int, data: dict[str, Path], out: Path,
            budget: Budget) -> dict:
    """Train one row with one seed (resuming a killed run) and evaluate it on the test sets."""
    from captioner.api import load_captioner
    from captioner.evaluation import evaluate
    from captioner.train.loop import train

    done = out / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    config = recipe(data, budget, seed, overrides)
    start = time.perf_counter()
    train(config, out, resume=(out / "last.pt").is_file(), log=lambda _msg: None)
    result: dict = {"row": row, "seed": seed, "overrides": list(overrides),
                    "train_seconds": round(time.perf_counter() - start, 1)}
    cap = load_captioner(out / "best.pt", device="cpu", engine="torch")
    for name, _ in TEST_SETS:
        start = time.perf_counter()
        report = evaluate(cap, data[name] / "captions.json", grounding=data[name] / "instances.json",
                          beam_size=3, java=False)
        seconds = time.perf_counter() - start
        for key, value in report.scores.items():
            if isinstance(value, (int, float)):
                result[f"{name}.{key}"] = value
        result[f"{name}.images_per_s"] = round(report.scores["images"] / seconds, 2)
    done.write_text(json.dumps(result, indent=1) + "\n")
    return result


def _mean_spread(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    mean, half_range = sum(values) / len(values), (max(values) - min(values)) / 2
    digits = 0 if mean >= 100 else (1 if mean >= 10 else 3)
    return f"{mean:.{digits}f} +- {half_range:.{digits}f}"


def table(results: list[dict], budget: Budget, seeds: list[int]) -> str:
    lines = [f"Each row: {len(seeds)} seeds ({', '.join(map(str, seeds))}); mean +- half the range. Budget scaled "
             f"down to fit a 2-core CPU: {int(budget.train_scenes * 0.8)} training scenes (5 captions each), "
             f"{budget.epochs} epochs, best epoch by validation object F1 on {budget.val_images} images; test sets of "
             f"{budget.test_scenes} scenes each, beam 3. Training s: the decoder's training from the shared "
             f"feature cache (built once beforehand), validation included; decoding images/s: "
             f"the held-out evaluation, file to caption.", "",
             "| row | " + " | ".join(header for _, header in COLUMNS) + " |",
             "|---|" + "--:|" * len(COLUMNS)]
    for row, _ in ROWS:
        runs = [r for r in results if r["row"] == row]
        if runs:
            cells = [_mean_spread([float(r.get(key, math.nan)) for r in runs]) for key, _ in COLUMNS]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--data", type=Path, default=Path("datasets/ablation"))
    parser.add_argument("--rows", nargs="*", help="row names (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1])
    parser.add_argument("--train-scenes", type=int, default=Budget.train_scenes)
    parser.add_argument("--test-scenes", type=int, default=Budget.test_scenes)
    parser.add_argument("--epochs", type=int, default=Budget.epochs)
    parser.add_argument("--val-images", type=int, default=Budget.val_images)
    args = parser.parse_args(argv)
    budget = Budget(args.train_scenes, args.test_scenes, args.epochs, args.val_images)
    rows = [(name, o) for name, o in ROWS if not args.rows or name in args.rows]
    unknown = set(args.rows or ()) - {name for name, _ in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; rows are {[name for name, _ in ROWS]}")
    data = make_data(args.data, budget)
    cache(data, budget)
    results = []
    for row, overrides in rows:
        for seed in args.seeds:
            result = run_one(row, overrides, seed, data, args.out / slug(row) / f"seed{seed}", budget)
            results.append(result)
            print(json.dumps({k: result[k] for k in ("row", "seed", "train_seconds")}
                             | {key: result.get(key) for key, _ in COLUMNS[:3]}), flush=True)
    text = table(results, budget, args.seeds)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
