"""What every script in perf/ shares: the ``--smoke`` and ``--out`` options, where results go, the provenance block
(hardware, date, commit, load average) written into each result, and interleaved timing with medians.

``--smoke`` runs a script at tiny sizes in seconds. It checks that the script still runs and writes its JSON; its
numbers mean nothing, so a smoke run writes to a temporary file unless ``--out`` names one, and its provenance says
``"smoke": true``. CI runs every script this way (tests/perf/test_perf_smoke.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"


def add_options(parser: argparse.ArgumentParser, name: str, out: bool = True) -> None:
    """``--smoke`` (and ``--out`` unless the script has its own) for the script writing ``results/<name>.json``."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes, seconds: checks that the script runs and writes its JSON (not a measurement; "
                             "written to a temporary file unless --out is given)")
    if out:
        parser.add_argument("--out", type=Path, default=None,
                            help=f"JSON written (default perf/results/{name}.json)")


def parse(parser: argparse.ArgumentParser, name: str, smoke: dict[str, Any],
          out: bool = True) -> tuple[argparse.Namespace, Provenance]:
    """Adds the shared options, parses the command line, applies the ``smoke`` sizes (option name -> value) when
    ``--smoke`` is given, and starts the :class:`Provenance` (before the measurement)."""
    add_options(parser, name, out)
    args = parser.parse_args()
    if args.smoke:
        for option, value in smoke.items():
            setattr(args, option, value)
    return args, Provenance(args.smoke)


def out_path(args: argparse.Namespace, name: str) -> Path:
    """``--out`` if given; else ``perf/results/<name>.json``, or a temporary file for a smoke run."""
    if getattr(args, "out", None):
        return Path(args.out)
    if getattr(args, "smoke", False):
        return Path(tempfile.gettempdir()) / "editkit-perf-smoke" / f"{name}.json"
    return RESULTS / f"{name}.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def hardware(gpu: str | None = None) -> str:
    """``2-core x86_64 CPU (AMD EPYC ...), 24 GiB RAM, no GPU``: what the tables print as the hardware."""
    memory = _memory_gib()
    ram = f", {memory:.0f} GiB RAM" if memory else ""
    return f"{cores()}-core {platform.machine()} CPU ({_cpu_model()}){ram}, {gpu or 'no GPU'}"


def commit() -> str:
    """The repository's commit (12 hex digits), ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head or "unknown") + ("+dirty" if dirty else "")


class Provenance:
    """Started before the measurement (load average before), closed into a dict after it."""

    def __init__(self, smoke: bool = False, gpu: str | None = None) -> None:
        self.smoke = smoke
        self.gpu = gpu
        self.load_before = os.getloadavg()[0]
        self.started = time.time()

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {"hardware": hardware(self.gpu), "cores": cores(),
                "date": datetime.datetime.fromtimestamp(self.started, datetime.timezone.utc).strftime("%Y-%m-%d"),
                "commit": commit(), "load_average_1m": [round(self.load_before, 2), round(os.getloadavg()[0], 2)],
                "smoke": self.smoke, **extra}


def write_result(path: Path, result: dict[str, Any], provenance: Provenance, **extra: Any) -> Path:
    """Writes ``result`` with its ``provenance`` block as JSON (sorted keys are not imposed: the order is the
    script's)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "provenance": provenance.as_dict(**extra)}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def interleaved(candidates: dict[str, Callable[[], Any]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds of each candidate over ``rounds`` rounds, candidates interleaved within a round (so a burst of load
    from other jobs falls on all of them), after ``warmup`` untimed rounds."""
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for index in range(warmup + rounds):
        for name, fn in candidates.items():
            began = time.perf_counter()
            fn()
            if index >= warmup:
                times[name].append(time.perf_counter() - began)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)
