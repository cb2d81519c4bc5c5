"""Runs every script in perf/ with ``--smoke`` (tiny sizes, seconds each) in one process, so the heavy imports (torch,
diffusers, Ray) are paid once, and reports which ran and wrote their JSON.

    .venv/bin/python -m perf.smoke [--out-dir DIR] [--report FILE] [SCRIPT ...]

A smoke run checks that a script still runs against the current code; its numbers are not measurements. Scripts
listed in ``ELSEWHERE`` are run by their own tests instead (their smoke path takes longer than CI's share for this
file allows). Exit status 1 when any script failed.
"""
from __future__ import annotations

import argparse
import json
import runpy
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PERF = ROOT / "perf"
# modules of perf/ that are not measurement scripts
LIBRARY = {"harness.py", "smoke.py", "tables.py", "__init__.py"}
# scripts whose --smoke path another test runs (script -> that test)
ELSEWHERE = {
    "gpu_check.py": "tests/train/test_gpu_check_smoke.py",
    "memory_plan.py": "tests/train/test_memory_plan.py",
}


def scripts() -> list[str]:
    """Every measurement script in perf/ (file names)."""
    return sorted(p.name for p in PERF.glob("*.py") if p.name not in LIBRARY)


def smoke_scripts() -> list[str]:
    return [name for name in scripts() if name not in ELSEWHERE]


def run_one(name: str, out_dir: Path) -> dict:
    """Runs ``perf/<name> --smoke --out <out_dir>/<stem>.json`` in this process."""
    out = out_dir / f"{Path(name).stem}.json"
    out.unlink(missing_ok=True)
    argv, path = sys.argv, sys.path[:]
    threads = _torch_threads()
    sys.argv = [str(PERF / name), "--smoke", "--out", str(out)]
    began = time.perf_counter()
    error = ""
    try:
        runpy.run_path(str(PERF / name), run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (None, 0):
            error = f"exit {stop.code}"
    except BaseException:  # noqa: BLE001 - reported, the next script still runs
        error = traceback.format_exc(limit=12)
    finally:
        sys.argv, sys.path[:] = argv, path
        if threads:
            import torch

            torch.set_num_threads(threads)
    seconds = time.perf_counter() - began
    if not error and not out.exists():
        error = f"ran but wrote no {out.name}"
    return {"ok": not error, "error": error, "seconds": round(seconds, 2), "json": str(out)}


def _torch_threads() -> int:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scripts to run (default: all but those run elsewhere)")
    parser.add_argument("--out-dir", type=Path, default=None, help="where the scripts' JSON go (default: a temp dir)")
    parser.add_argument("--report", type=Path, default=None, help="write {script: {ok, error, seconds, json}} here")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="editkit-perf-smoke-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    report = {}
    for name in args.names or smoke_scripts():
        report[name] = run_one(name, out_dir)
        print(f"smoke {name}: {'ok' if report[name]['ok'] else 'FAILED'} in {report[name]['seconds']} s",
              file=sys.stderr, flush=True)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    failed = [name for name, row in report.items() if not row["ok"]]
    for name in failed:
        print(f"--- {name}\n{report[name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
