"""Outputs written atomically: a directory (or several, as one unit) or a text file appears complete or not at all.

Each output is built under a temporary name beside it and renamed into place. Names a killed run may leave carry
the pid of the process that made them, so a later run can tell litter from work in progress and repair it
(:func:`recover`) before it writes: the previous output is never lost, never half-replaced.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a temp directory beside ``final``; on success it replaces ``final`` (see :func:`atomic_dirs`)."""
    with atomic_dirs(final) as (tmp,):
        yield tmp


@contextmanager
def atomic_dirs(*finals: Path | str) -> Iterator[list[Path]]:
    """Yield one temp directory beside each of ``finals``; on success they replace ``finals`` as ONE unit.

    A run killed at any point leaves, beside each output, only names a later run recognises and repairs first
    (:func:`recover`): ``X.tmp-<pid>-*`` (unfinished, deleted once its process is gone), ``X.old-<pid>-*`` (the
    previous ``X``, put back if ``X`` is missing) and, for several outputs, ``X.commit-<pid>-*.json``: written
    beside every output once all temp dirs are complete, it lets a later run finish the renames, so readers see
    either every previous output or every new one.
    """
    paths = [Path(f) for f in finals]
    recover(*paths)
    tmps = []
    try:
        for final in paths:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(_owned_name(final, "tmp"))
            tmps[-1].mkdir()
        try:
            yield tmps
        except BaseException:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        _commit(list(zip(tmps, paths)))
    finally:  # whatever happened, this process no longer owns the names (as if it had died)
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update(str(t) for t in tmps)


# Names this process is using right now: a name with our own pid that is NOT here was left by a failed attempt.
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()
_OWNED = re.compile(r"\.(tmp|old|commit)-(?:(\d+)-)?[0-9a-f]{8}(\.json)?$")


def _owned_name(final: Path, kind: str) -> Path:
    suffix = ".json" if kind == "commit" else ""
    path = final.with_name(f"{final.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")
    with _ACTIVE_LOCK:
        _ACTIVE.add(str(path))
    return path


def _commit(moves: list[tuple[Path, Path]]) -> None:
    journals: list[Path] = []
    plan = [{"tmp": str(tmp), "final": str(final), "old": str(_owned_name(final, "old"))} for tmp, final in moves]
    try:
        if len(moves) > 1:  # the commit point: from the first journal on, a later run rolls forward
            journals = [_owned_name(final, "commit") for _, final in moves]
            text = json.dumps({"moves": plan, "journals": [str(j) for j in journals]}, indent=1)
            for journal in journals:
                atomic_write_text(journal, text)
        _roll_forward(plan)
        for journal in journals:
            journal.unlink()
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update([m["old"] for m in plan] + [str(j) for j in journals])


def _roll_forward(plan: list[dict[str, str]]) -> None:
    """Do what is left of a commit: for each output, previous -> old, temp -> final; then delete the olds."""
    for move in plan:
        tmp, final, old = Path(move["tmp"]), Path(move["final"]), Path(move["old"])
        if tmp.exists():
            if final.exists():
                final.rename(old)
            tmp.rename(final)
        elif not final.exists() and old.exists():  # cannot happen unless someone removed the temp dir: undo
            old.rename(final)
    for move in plan:
        shutil.rmtree(move["old"], ignore_errors=True)


def recover(*finals: Path | str) -> None:
    """Repair what killed runs left beside ``finals``: finish committed multi-output renames, put a hidden previous
    output back, delete temp and old dirs whose process is gone. Every :func:`atomic_dirs` does this first."""
    paths = [Path(f) for f in finals]
    for final in paths:  # journals first: their temp dirs are complete work, not litter
        for journal in _leftovers(final, "commit"):
            try:
                record = json.loads(journal.read_text())
            except (OSError, ValueError):  # a journal cut short by the kill: it was never the commit point
                journal.unlink(missing_ok=True)
                continue
            _roll_forward(record["moves"])
            for other in record["journals"]:
                Path(other).unlink(missing_ok=True)
    for final in paths:
        olds = sorted(_leftovers(final, "old"), key=lambda p: p.stat().st_mtime_ns)
        if olds and not final.exists():
            olds.pop().rename(final)  # the newest previous output: the one a kill hid
        for leftover in olds + _leftovers(final, "tmp"):
            shutil.rmtree(leftover, ignore_errors=True)


def _leftovers(final: Path, kind: str) -> list[Path]:
    """``final``'s ``kind`` names whose owner is gone (names without a pid come from older versions: gone too)."""
    found = []
    for path in final.parent.glob(f"{glob.escape(final.name)}.{kind}-*"):
        match = _OWNED.search(path.name)
        if not match or path.name[: match.start()] != final.name or match.group(1) != kind:
            continue
        with _ACTIVE_LOCK:
            active = str(path) in _ACTIVE
        if not active and not _alive(int(match.group(2)) if match.group(2) else None):
            found.append(path)
    return found


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    if pid == os.getpid():
        return False  # our own pid but not in _ACTIVE: left by an attempt of this process that failed
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def atomic_write_text(path: Path | str, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)
