"""bench/results.md: the figures table, the machine line, the scaling tables and the profiles."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from common import Figure


def _num(x: float) -> str:
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        return f"{x:,.0f}"
    ax = abs(x)
    return f"{x:.3g}" if ax < 10 else f"{x:.1f}" if ax < 100 else f"{x:,.0f}"


def _pass(f: Figure) -> str:
    return "" if f.passed is None else ("pass" if f.passed else "**fail**")


def figures_table(figs: Sequence[Figure]) -> list[str]:
    lines = ["| Figure | Value | Unit | Target | Pass | Notes |", "|---|--:|---|---|---|---|"]
    for f in figs:
        lines.append(f"| {f.name} | {_num(f.value)} | {f.unit} | {f.target or ''} | {_pass(f)} | {f.note} |")
    return lines


def marginal(rows: list[dict], key: str) -> list[str]:
    """Seconds per added unit of `key` between consecutive rows: constant when cost is linear."""
    out = []
    for a, b in zip(rows, rows[1:]):
        out.append(f"{key} {a[key]}→{b[key]}: {1000 * (b['seconds'] - a['seconds']) / (b[key] - a[key]):.0f} ms")
    return out


def sweep_table(rows: list[dict], key: str, unit: str, title: str) -> list[str]:
    """Seconds against one swept quantity, each relative to the first row, plus marginal costs."""
    base = rows[0]
    lines = [title, "", f"| {key} | seconds | ÷ first row | {key} ÷ first {key} |", "|--:|--:|--:|--:|"]
    lines += [f"| {r[key]} | {r['seconds']:.3f} | {r['seconds'] / base['seconds']:.2f} | "
              f"{r[key] / base[key]:.2f} |" for r in rows]
    return lines + ["", f"Marginal cost per {unit}: " + "; ".join(marginal(rows, key)) + ".", ""]


def scaling_section(rows: list[dict]) -> list[str]:
    dec_T = [r for r in rows if r.get("table") == "decode_T"]
    dec_K = [r for r in rows if r.get("table") == "decode_K"]
    train_B = [r for r in rows if r.get("table") == "train_batch"]
    lines = ["## Scaling", ""]
    if dec_T:
        lines += sweep_table(dec_T, "T", "step", f"Batched beam search over the ResNet-101-sized decoder "
                             f"({dec_T[0]['images']} images, <end> disabled, so exactly T steps), against "
                             f"caption length T at K={dec_T[0]['K']}:")
    if dec_K:
        lines += sweep_table(dec_K, "K", "beam", f"Against beam size K at T={dec_K[0]['T']}:")
    if train_B:
        base = train_B[0]
        lines += ["Cached-decoder training step (b) against batch size (ResNet-101-sized decoder, V=10,000, "
                  "fp32, real cache input path):", "",
                  "| batch | s/step | ms/caption | step ÷ first row | B ÷ first B |", "|--:|--:|--:|--:|--:|"]
        lines += [f"| {r['batch']} | {r['s_per_step']:.3f} | {r['ms_per_caption']:.1f} | "
                  f"{r['s_per_step'] / base['s_per_step']:.2f} | {r['batch'] / base['batch']:.2f} |" for r in train_B]
        lines.append("")
    return lines


def memory_section(rows: list[dict]) -> list[str]:
    mem = [r for r in rows if r.get("table") == "memory"]
    if not mem:
        return []
    lines = ["## Memory of cached training as the dataset grows", "",
             f"One epoch of the default model's decoder trained from an (N, {mem[0]['P']}, E) fp16 cache, in a fresh "
             "process each; RSS split measured at the end of the epoch.", "",
             "| images | cache reader | peak RSS MB | anon MB | file-backed MB | epoch s |",
             "|--:|---|--:|--:|--:|--:|"]
    lines += [f"| {r['images']} | {r['reader']} | {r['peak_rss_mb']:.0f} | {r['RssAnon']:.0f} | "
              f"{r['RssFile']:.0f} | {r['seconds']:.1f} |" for r in mem]
    return lines + [""]


def serve_section(rows: list[dict]) -> list[str]:
    runs = [r for r in rows if r.get("table") == "serve"]
    parts = next((r for r in rows if r.get("table") == "serve_parts"), None)
    if not runs:
        return []
    lines = ["## Web server under load (`captioner serve`)", "",
             f"{runs[0]['good']} good requests (beam 3) among the mixed good and bad ones, from concurrent "
             "clients on 127.0.0.1; latency of the good ones, client-side; peak RSS of the server process.", "",
             "| server | images/s | p50 ms | p95 ms | peak RSS MB | images per model call | failures |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    lines += [f"| `{r['config']}` | {r['throughput']:.2f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
              f"{r['peak_rss_mb']:.0f} | {r['mean_batch']:.1f} | {r['failures']} |" for r in runs]
    if parts:
        per_image = {r["config"]: 1000 / r["throughput"] for r in runs}  # ms per good image, served
        one, many = per_image.get("--max-batch 1"), per_image.get("--max-batch 16")
        lines += ["", f"Batching gain {parts['gain']:.2f}x. Its bound on this CPU: the CNN "
                  f"({1000 * parts['cnn_s']:.0f} ms per image) runs one image at a time either way, and beam search "
                  f"takes {1000 * parts['decoder_alone_s']:.0f} ms for one image alone, "
                  f"{1000 * parts['decoder_batched_s']:.0f} ms per image in a batch of {parts['batch']}: the decoder's "
                  f"share {parts['share']:.2f} bounds the gain at {parts['bound']:.2f}x, and the parts predict "
                  f"{parts['predicted']:.2f}x (timed in-process between the runs). The server's whole model call "
                  f"(`Captioner.caption_tensors`) takes {1000 * parts['call_alone_s']:.0f} ms for one image and "
                  f"{1000 * parts['call_batched_s']:.0f} ms per image in a batch of {parts['batch']} "
                  f"({parts['call_gain']:.2f}x)."]
        if one and many:
            lines += ["", f"Served, an image took {one:.0f} ms with `--max-batch 1` (1 / throughput) against "
                      f"{1000 * parts['call_alone_s']:.0f} ms for the model call alone, and {many:.0f} ms batched "
                      f"against {1000 * parts['call_batched_s']:.0f} ms: what batching gains beyond the bound comes "
                      "from outside the model's own work (the HTTP side shares the CPU with the model)."]
    return lines + [""]


def ops_table(title: str, ops: list[dict], phases: dict[str, float] | None = None) -> list[str]:
    lines = [f"### {title}", ""]
    if phases:
        lines += ["Phases (CPU time, profiler on): " + ", ".join(f"{k} {v:.2f} s" for k, v in phases.items()), ""]
    lines += ["| op | self CPU s | share | calls |", "|---|--:|--:|--:|"]
    lines += [f"| `{o['op']}` | {o['self_s']:.3f} | {100 * o['share']:.0f}% | {o['calls']} |" for o in ops]
    return lines + [""]


def startup_section(info: dict) -> list[str]:
    if not info:
        return []
    lines = ["## Cold start", "", f"Command: `{info['command']}`.", "",
             "Phases in a fresh process (one image):", "", "| phase | s |", "|---|--:|"]
    lines += [f"| {k} | {v:.2f} |" for k, v in info["phases"].items()]
    lines += ["", "Import time of the command by top-level package (`python -X importtime`, self time summed):", "",
              "| package | s |", "|---|--:|"]
    lines += [f"| `{r['module']}` | {r['self_s']:.2f} |" for r in info["imports"]]
    return lines + [""]


def write_results(path: Path, *, figs: Sequence[Figure], rows: list[dict], machine: str, date: str,
                  command: str, seconds: dict[str, float], profiles: dict, startup: dict, quick: bool) -> None:
    total = sum(seconds.values())
    lines = ["# Benchmarks", "",
             f"Measured {date} with `{command}`{' (QUICK MODE: tiny sizes, not representative)' if quick else ''}; "
             f"the suite took {total / 60:.1f} min.", "",
             f"Machine: {machine}.", "",
             "Speed claims are ratios of medians measured in this one run (the machine is shared and noisy).", "",
             *figures_table(figs), "", *scaling_section(rows), *memory_section(rows),
             *serve_section(rows)]
    if profiles:
        lines += ["## Profiles (torch.profiler)", "",
                  *ops_table("Cached-decoder training step (b), fp32", profiles["train_ops"], profiles["train_phases"]),
                  *ops_table("Batched beam search, K=5", profiles["beam_ops"])]
    lines += startup_section(startup)
    lines += ["## Time per section", "", "| section | s |", "|---|--:|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in seconds.items()]
    path.write_text("\n".join(lines) + "\n")
