"""Processes we start ourselves, recorded by PID in a file: is it alive, collect its exit, stop its process group."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def spawn(command: list[str], env: dict[str, str], log: Path, path: Path, *fields: object) -> int:
    """Start ``command`` in its own process group (:func:`stop_group` ends it and its children, nothing else), its
    output appended to ``log``; record it in ``path`` (the PID, then ``fields``). Returns the PID."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    path.write_text(" ".join(str(field) for field in (process.pid, *fields)) + "\n")
    return process.pid


def running_pid(path: Path) -> int | None:
    """The PID recorded in `path` (its first field) if that process is alive; a stale file is removed."""
    if not path.exists():
        return None
    pid = int(path.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        path.unlink()
        return None
    return pid


def reap(pid: int | None) -> bool:
    """Collect our exited child (a zombie otherwise looks alive); True when it has exited."""
    if pid is None:
        return False
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False
    return done == pid


def stop_group(path: Path, timeout_s: float) -> bool:
    """Stop the process group led by the PID in `path`: SIGTERM, SIGKILL after `timeout_s`. False if none ran."""
    pid = running_pid(path)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        reap(pid)
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
        reap(pid)
    path.unlink(missing_ok=True)
    return True
