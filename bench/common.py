"""What every benchmark shares: the figure record, timing, peak RSS of a child, the machine line.

Speed claims are ratios of medians measured in one run, because this machine is shared and
noisy; absolute numbers are reported too, but only the ratios carry a target.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
MB = 1e6  # the "1.5 GB" is decimal; ru_maxrss is KiB


@dataclass(frozen=True)
class Figure:
    """One measured number. `target` is text such as ">= 10" (None: reported, not judged)."""

    name: str
    value: float
    unit: str
    target: str | None = None
    passed: bool | None = None
    note: str = ""

    def json(self) -> str:
        d = asdict(self)
        d["value"] = round(self.value, 4) if isinstance(self.value, float) else self.value
        d["pass"] = d.pop("passed")
        return json.dumps(d)


def judged(name: str, value: float, unit: str, op: str, bound: float, note: str = "") -> Figure:
    """A figure with a target `value op bound`, op one of ">=", "<="."""
    ok = value >= bound if op == ">=" else value <= bound
    return Figure(name, value, unit, f"{op} {bound:g}", ok, note)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def repeat(fn: Callable[[], object], *, repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call for `repeats` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    return [timed(fn) for _ in range(repeats)]


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Time several variants round-robin, so a load change on the machine hits them all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            out[k].append(timed(fn))
    return out


# ----------------------------------------------------------------------------- child processes
# A fresh interpreter runs the command and reports RUSAGE_CHILDREN's ru_maxrss (KiB on Linux):
# the peak RSS of exactly that one child, whatever else this process has run before.
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[1:])\n"
    "print('__PEAK_RSS_KIB__', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(r.returncode)\n"
)


@dataclass(frozen=True)
class ChildResult:
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float

    def last_json(self) -> dict:
        """The last stdout line that is a JSON object (workers end with one)."""
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"no JSON result in child output:\n{self.stdout}\n{self.stderr}")


def run_child(cmd: Sequence[str], *, timeout: float = 900) -> ChildResult:
    """Run `cmd` to completion; its output and peak RSS (MB). Raises if it fails."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    seconds = time.perf_counter() - t
    kib, lines = 0, []
    for line in proc.stderr.splitlines():
        if line.startswith("__PEAK_RSS_KIB__"):
            kib = int(line.split()[1])
        else:
            lines.append(line)
    stderr = "\n".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr[-3000:]}")
    return ChildResult(proc.stdout, stderr, kib * 1024 / MB, seconds)


def worker_cmd(*args: str) -> list[str]:
    return [sys.executable, str(BENCH_DIR / "worker.py"), *args]


def captioner_cmd() -> list[str]:
    """The installed `captioner` entry point, as a user runs it."""
    script = Path(sys.executable).parent / "captioner"
    return [str(script)] if script.exists() else [sys.executable, "-m", "captioner.cli"]


# ----------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_line() -> str:
    import torch

    flags = cpu_flags()
    isa = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags)
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines()
                      if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return (f"{cpu_model()} ({isa}), {os.cpu_count()} cores{mem}, no GPU; Linux {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__} on CPU, "
            f"{torch.get_num_threads()} threads")
