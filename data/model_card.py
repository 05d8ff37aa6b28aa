"""The model card's table: evaluate checkpoints on the scene test sets and write one table.

    .venv/bin/python data/model_card.py --out runs/model-card \
        --sets datasets/scenes-heldout datasets/scenes-reserved datasets/scenes-novel \
        datasets/scenes-other --checkpoints default runs/scenes-none/best.pt

`make model-card` runs it after generating the sets. Each set is a `captioner scenes` folder
(or `data/other_renderer.py`'s, which writes the same files);
every image in its captions.json is captioned (beam 3) and scored with
`captioner.evaluation.evaluate`, the same code as `captioner evaluate --grounding`. It writes
`<out>/<column>__<set>.json` (all scores; a column is named by `column_names`) and `<out>/card.md` (the table the README's model
card copies), strict metrics first and the lenient pointing game beside them, then object F1
and exact-set accuracy per background family of each set.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from captioner.api import load_captioner
from captioner.evaluation import evaluate

#: (score key, row label) in table order: the strict form of each metric before its lenient one.
ROWS = (
    ("object_f1", "object F1 of \"<color> <shape>\""),
    ("exact_set_accuracy", "exact-set accuracy"),
    ("object_precision", "object precision"),
    ("object_recall", "object recall"),
    ("pointing_strict", "pointing game, strict (shape word)"),
    ("pointing_slack1", "pointing game, 1-cell slack (shape word)"),
    ("attention_mass_in_box", "attention mass in box (shape word)"),
    ("color_pointing_strict", "pointing game, strict (colour word)"),
    ("color_pointing_slack1", "pointing game, 1-cell slack (colour word)"),
    ("color_attention_mass_in_box", "attention mass in box (colour word)"),
    ("grounded_words", "phrases scored (hallucinated ones count as misses)"),
    ("hallucinated_words", "phrases naming no object of the image"),
    ("BLEU-4", "BLEU-4"),
    ("METEOR", "METEOR"),
    ("CIDEr-D", "CIDEr-D"),
)


#: The files `captioner train` writes into its run folder: such a checkpoint is named by that folder.
RUN_FILES = frozenset({"best", "last"})


def column_names(checkpoints: list[str]) -> list[str]:
    """One distinct column name per checkpoint: 'default' for the embedded model, the run folder
    for a training run's best.pt / last.pt (runs/scenes-none/best.pt -> scenes-none), the file's
    stem otherwise (/tmp/old-default.pt -> old-default), and a #k suffix where two would clash."""
    names = []
    for checkpoint in checkpoints:
        path = Path(checkpoint)
        if checkpoint == "default":
            names.append("default")
        elif path.stem in RUN_FILES and path.parent.name:
            names.append(path.parent.name + ("" if path.stem == "best" else f"-{path.stem}"))
        else:
            names.append(path.stem)
    return [name if names.count(name) == 1 else f"{name}#{names[:i].count(name) + 1}"
            for i, name in enumerate(names)]


#: Rows that count phrases: they print whole, every other score with 3 decimals. `evaluate`
#: returns them as ints; results JSON written before 2026-12-03 holds them as floats.
COUNT_ROWS = frozenset({"grounded_words", "hallucinated_words"})


def _cell(value: object, key: str = "") -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else (f"{value:.0f}" if key in COUNT_ROWS else f"{value:.3f}")
    return "n/a" if value is None else str(value)


def family_table(columns: list[tuple[str, dict]]) -> list[str]:
    """Object F1 / exact-set accuracy (images) per background family: a row per family, a column
    per checkpoint and set, blank where a set has no image of that family."""
    families = sorted({f for _, s in columns for f in s.get("by_background", {})})
    if not families:
        return []
    lines = ["| background family: object F1 / exact-set (images) | " + " | ".join(c for c, _ in columns) + " |",
             "|---|" + "--:|" * len(columns)]
    for family in families:
        cells = []
        for _, s in columns:
            g = s.get("by_background", {}).get(family)
            cells.append(f"{g['object_f1']:.3f} / {g['exact_set_accuracy']:.3f} ({g['images']})" if g else "")
        lines.append(f"| {family} | " + " | ".join(cells) + " |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--sets", nargs="+", required=True, help="`captioner scenes` output folders")
    parser.add_argument("--checkpoints", nargs="+", default=["default"], help="'default': the embedded model")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--no-java", action="store_true", help="Python PTB tokenizer, no METEOR")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    columns: list[tuple[str, dict]] = []
    for checkpoint, column in zip(args.checkpoints, column_names(args.checkpoints)):
        cap = load_captioner(None if checkpoint == "default" else checkpoint, device="cpu")
        for folder in map(Path, args.sets):
            start = time.perf_counter()
            report = evaluate(cap, folder / "captions.json", beam_size=args.beam_size,
                              grounding=folder / "instances.json", java=False if args.no_java else None)
            scores = dict(report.scores, seconds=round(time.perf_counter() - start, 1))
            name = f"{column}__{folder.name}"
            (args.out / f"{name}.json").write_text(json.dumps(scores, indent=1) + "\n")
            columns.append((f"{column}: {folder.name} ({scores['images']} images)", scores))
            print(name, json.dumps({k: scores.get(k) for k, _ in ROWS[:7]}), flush=True)
    lines = ["| metric (beam %d) | %s |" % (args.beam_size, " | ".join(c for c, _ in columns)),
             "|---|" + "--:|" * len(columns)]
    lines += [f"| {label} | " + " | ".join(_cell(s.get(key), key) for _, s in columns) + " |" for key, label in ROWS]
    lines += ["", *family_table(columns)]
    (args.out / "card.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
