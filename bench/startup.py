"""Cold start: `captioner caption one.png`, from process start to the caption on stdout.

One untimed run first, so every timed run finds the package and the weights in the OS file
cache (the state of a second run on a laptop); then the median of the timed runs. Where the
time goes comes from `python -X importtime` (imports) and a phase timer in a fresh process.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from common import REPO, Figure, captioner_cmd, judged, log, median, run_child, worker_cmd
from models import DefaultModel


def _time_to_caption(cmd: list[str]) -> tuple[float, float]:
    """Seconds until the first stdout line, and until the process exits."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    first = proc.stdout.readline()
    t_line = time.perf_counter() - t
    rest, err = proc.communicate()
    t_exit = time.perf_counter() - t
    if proc.returncode != 0 or "\t" not in first:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {first}{rest}{err[-2000:]}")
    return t_line, t_exit


def import_profile(args: list[str], top: int = 8) -> list[dict]:
    """Import self time of the caption command, summed per top-level package (python -X importtime)."""
    code = "import sys; from captioner.cli import main; sys.exit(main())"
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], capture_output=True,
                          text=True, cwd=REPO)
    by_package: dict[str, float] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        package = name.strip().split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + int(self_us) / 1e6
    rows = [{"module": k, "self_s": v} for k, v in sorted(by_package.items(), key=lambda kv: -kv[1])]
    return rows[:top]


def run(dm: DefaultModel, image: Path, repeats: int, warmup: int = 1) -> tuple[list[Figure], dict]:
    args = ["caption", str(image)]
    cmd = captioner_cmd() + args
    for _ in range(warmup):  # untimed: fills the OS file cache
        _time_to_caption(cmd)
    runs = [_time_to_caption(cmd) for _ in range(repeats)]
    t_line, t_exit = median([r[0] for r in runs]), median([r[1] for r in runs])
    log(f"cold start: {t_line:.2f} s to the caption, {t_exit:.2f} s to exit")
    imports = import_profile(args)
    phases = run_child(worker_cmd("startup-phases", "--checkpoint", str(dm.checkpoint),
                                  "--image", str(image))).last_json()
    figs = [
        judged("startup.cold_start_caption", t_line, "s", "<=", 3,
               f"`{' '.join(['captioner', *args[:1]])} one.png`, {dm.label}; median of {repeats} after "
               f"{warmup} untimed"),
        Figure("startup.cold_start_to_exit", t_exit, "s", note="including interpreter shutdown"),
    ]
    figs += [Figure(f"startup.phase.{k.split(' (')[0].replace(' + ', '_and_').replace(' ', '_')}", v, "s",
                    note="fresh process, one image, beam 3") for k, v in phases["phases"].items()]
    return figs, {"imports": imports, "phases": phases["phases"], "command": " ".join(["captioner", *args])}
