"""`make bench`: the performance suite. One JSON line per figure on stdout; bench/results.md.

    .venv/bin/python bench/run.py            # the full suite, about 10-15 minutes on 2 cores
    .venv/bin/python bench/run.py --quick    # tiny sizes, seconds: checks that everything runs
    .venv/bin/python bench/run.py --only decoding,startup

Progress goes to stderr. --quick writes no results file unless --out is given, so it never
overwrites the real figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_DIR, Figure, log, machine_line
from models import DefaultModel, Sizes, default_model

SECTIONS = ("training", "decoding", "e2e", "startup", "memory", "serve", "profiling")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="captioner performance benchmarks")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the suite, not figures")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {SECTIONS}")
    p.add_argument("--out", type=Path, default=None,
                   help="results markdown (default: bench/results.md; --quick: none)")
    p.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temporary one)")
    p.add_argument("--section-result", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="e2e: also measure a git worktree of REV, alternating, for the *_over_baseline ratios")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads here and in child processes (default: torch's; --quick: 1)")
    args = p.parse_args(argv)
    args.sections = [s for s in args.only.split(",") if s]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections {sorted(unknown)}; choose from {SECTIONS}")
    if args.out is None and not args.quick:
        args.out = BENCH_DIR / "results.md"
    return args


def emit(figs: list[Figure]) -> None:
    for f in figs:
        print(f.json(), flush=True)


def rows_as_figures(rows: list[dict]) -> list[Figure]:
    """The scaling tables' cells, so that every number also appears as a JSON line."""
    out = []
    for r in rows:
        if r["table"] == "decode_T" or r["table"] == "decode_K":
            out.append(Figure(f"scale.decode.T{r['T']}.K{r['K']}", r["seconds"], "s",
                              note="batched beam search, ResNet-101-sized decoder"))
        elif r["table"] == "train_batch":
            out.append(Figure(f"scale.train.batch{r['batch']}", r["s_per_step"], "s/step",
                              note="cached-decoder training step (b)"))
    return out


def run_section(section: str, sizes: Sizes, dm: DefaultModel, work: Path, quick: bool,
                baseline: str | None = None) -> dict:
    """One section, in this process: its figures, table rows and extra report material."""
    rows: list[dict] = []
    extra: dict = {}
    if section == "training":
        import train_speed
        figs, rows = train_speed.run(sizes, work)
    elif section == "decoding":
        import decode_speed
        figs, rows = decode_speed.run(sizes, dm, work)
    elif section == "e2e":
        import e2e_speed
        figs, rows = e2e_speed.run(sizes, dm, work, baseline)
    elif section == "startup":
        import decode_speed
        import startup
        image = decode_speed.scene_images(work, 1)[0]
        figs, extra = startup.run(dm, image, sizes.cold_repeats, warmup=0 if quick else 1)
    elif section == "memory":
        import memory
        figs, rows = memory.run(sizes, dm, work)
    elif section == "serve":
        import serve_load
        figs, rows = serve_load.run(sizes, dm, work)
    else:
        import profiling
        figs, extra = profiling.run(sizes, work)
    emit(figs + rows_as_figures(rows))
    return {"figs": [dataclasses.asdict(f) for f in figs], "rows": rows, "extra": extra}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    threads = args.threads or (1 if args.quick else None)
    if threads:  # children (sections, workers, the CLI) read OMP_NUM_THREADS at their torch import
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
    sizes = Sizes.tiny() if args.quick else Sizes.full()
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="captioner-bench-")
        args.work = Path(tmp.name)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    dm = default_model(args.work, sizes)
    if args.section_result:  # a child: run one section, hand back its results in a file
        result = run_section(args.sections[0], sizes, dm, args.work, args.quick, args.baseline)
        args.section_result.write_text(json.dumps(result))
        return 0

    machine = machine_line()
    log(machine)
    log(f"default model: {dm.label} ({dm.checkpoint})")
    started = datetime.datetime.now(datetime.timezone.utc)
    figs: list[Figure] = []
    rows: list[dict] = []
    extras: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for section in args.sections:
        # Each section in a fresh process: the heap and allocator state one section leaves
        # behind (glibc's adaptive mmap threshold, for one) measurably changes the next one's speed.
        t = time.perf_counter()
        log(f"--- {section}")
        result_path = args.work / f"section-{section}.json"
        cmd = [sys.executable, str(BENCH_DIR / "run.py"), "--only", section, "--work", str(args.work),
               "--section-result", str(result_path), *(["--quick"] if args.quick else []),
               *(["--baseline", args.baseline] if args.baseline else [])]
        subprocess.run(cmd, check=True)
        result = json.loads(result_path.read_text())
        seconds[section] = time.perf_counter() - t
        figs += [Figure(**f) for f in result["figs"]]
        rows += result["rows"]
        extras[section] = result["extra"]
        log(f"--- {section}: {seconds[section]:.0f} s")

    total = sum(seconds.values())
    emit([Figure("bench.total_time", total / 60, "min", note=f"sections: {', '.join(args.sections)}")])
    failed = [f.name for f in figs if f.passed is False]
    if args.out:
        from report import write_results
        command = "make bench" if not argv and not args.quick and len(sys.argv) == 1 else \
            "bench/run.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        write_results(args.out, figs=figs, rows=rows, machine=machine,
                      date=started.strftime("%Y-%m-%d %H:%M UTC"), command=command, seconds=seconds,
                      profiles=extras.get("profiling", {}), startup=extras.get("startup", {}), quick=args.quick)
        log(f"wrote {args.out}")
    log(f"done in {total / 60:.1f} min; targets missed: {', '.join(failed) or 'none'}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
