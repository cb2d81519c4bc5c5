"""Outputs written atomically: a directory (or several, as one unit) or a text file appears complete or not at all.

Each output is built under a temporary name beside it and renamed into place. Names a killed run may leave carry
the pid of the process that made them, so a later run can tell litter from work in progress and repair it
(:func:`recover`) before it writes: the previous output is never lost, never half-replaced. Readers repair what they
read the same way (:func:`recover_input`), so a stage whose input was left hidden by a kill puts it back (or
finishes its commit) instead of failing; every repair is logged and returned, for the stage's metrics.

Files can join a commit (``files=``: a stage's metrics), so they are replaced in the same step as the directories
they describe. An output path that exists and is not an output (a file where a directory goes, or a folder holding
entries the caller does not own, ``owns=``) is refused with :class:`~editkit.errors.OutputRefused`, never moved.
"""
from __future__ import annotations

import fnmatch
import glob
import json
import logging
import os
import re
import shutil
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from editkit.errors import OutputRefused

log = logging.getLogger(__name__)


@contextmanager
def atomic_dir(final: Path | str) -> Iterator[Path]:
    """Yield a temp directory beside ``final``; on success it replaces ``final`` (see :func:`atomic_dirs`)."""
    with atomic_dirs(final) as (tmp,):
        yield tmp


@contextmanager
def atomic_dirs(*finals: Path | str, files: Sequence[Path | str] = (),
                owns: Sequence[Sequence[str] | None] | None = None) -> Iterator[list[Path]]:
    """Yield one temp directory beside each of ``finals`` (then one temp file path beside each of ``files``); on
    success they replace ``finals`` and ``files`` as ONE unit.

    A run killed at any point leaves, beside each output, only names a later run recognises and repairs first
    (:func:`recover`): ``X.tmp-<pid>-*`` (unfinished, deleted once its process is gone), ``X.old-<pid>-*`` (the
    previous ``X``, put back if ``X`` is missing) and, for several outputs, ``X.commit-<pid>-*.json``: written
    beside every output once all temp dirs and files are complete, it lets a later run finish the renames, so
    readers see either every previous output or every new one.

    ``files``: the caller writes each yielded temp file (a missing one fails the commit). ``owns``: per final, glob
    patterns of the entries a previous output holds; an existing ``final`` holding anything else is refused
    (:class:`~editkit.errors.OutputRefused`), as is a final that exists and is not a directory, whatever ``owns``.
    """
    paths, file_paths = [Path(f) for f in finals], [Path(f) for f in files]
    recover(*paths, *file_paths)
    for final, patterns in zip(paths, owns if owns is not None else [None] * len(paths)):
        refuse_foreign(final, patterns)
    for final in file_paths:
        if final.is_symlink() or (final.exists() and not final.is_file()):
            raise OutputRefused(f"{final} exists and is not a file: not replaced; choose another path or remove it")
    tmps: list[Path] = []
    file_tmps: list[Path] = []
    try:
        for final in paths:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(_owned_name(final, "tmp"))
            tmps[-1].mkdir()
        for final in file_paths:
            final.parent.mkdir(parents=True, exist_ok=True)
            file_tmps.append(_owned_name(final, "tmp"))
        try:
            yield tmps + file_tmps
            unwritten = [str(t) for t in file_tmps if not t.is_file()]
            if unwritten:
                raise RuntimeError(f"output file(s) {unwritten} were not written: nothing committed")
        except BaseException:
            for tmp in tmps:
                shutil.rmtree(tmp, ignore_errors=True)
            for tmp in file_tmps:
                tmp.unlink(missing_ok=True)
            raise
        _commit(list(zip(tmps, paths)) + [(t, f, "file") for t, f in zip(file_tmps, file_paths)])
    finally:  # whatever happened, this process no longer owns the names (as if it had died)
        with _ACTIVE_LOCK:
            _ACTIVE.difference_update(str(t) for t in tmps + file_tmps)


def refuse_foreign(final: Path | str, owns: Sequence[str] | None = None) -> None:
    """Raise :class:`OutputRefused` when ``final`` exists and is not something an output may replace: a file or a
    link, or (with ``owns``) a folder holding an entry that matches none of the patterns."""
    final = Path(final)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        what = "a link" if final.is_symlink() else "a file"
        raise OutputRefused(f"{final} exists and is {what}, not an output of this stage: not replaced; "
                            "choose another output path or remove it")
    if owns is None or not final.is_dir():
        return
    foreign = sorted(p.name for p in final.iterdir() if not any(fnmatch.fnmatchcase(p.name, g) for g in owns))
    if foreign:
        raise OutputRefused(f"{final} exists and holds {foreign[0]!r}{f' (+{len(foreign) - 1} more)' if len(foreign) > 1 else ''}"
                            f", which an output of this stage does not ({', '.join(owns)}): not replaced; "
                            "choose another output path or remove it")


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


def _commit(moves: list[tuple]) -> None:
    journals: list[Path] = []
    plan = [{"tmp": str(move[0]), "final": str(move[1]), "old": str(_owned_name(move[1], "old"))}
            | ({"file": True} if len(move) > 2 else {}) for move in moves]
    try:
        if len(moves) > 1:  # the commit point: from the first journal on, a later run rolls forward
            journals = [_owned_name(move[1], "commit") for move in moves]
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
    """Do what is left of a commit: for each output, previous -> old, temp -> final; then delete the olds. A file
    is replaced in one step (``os.replace``)."""
    for move in plan:
        tmp, final, old = Path(move["tmp"]), Path(move["final"]), Path(move["old"])
        if move.get("file"):
            if tmp.exists():
                os.replace(tmp, final)
            continue
        if tmp.exists():
            if final.exists():
                final.rename(old)
            tmp.rename(final)
        elif not final.exists() and old.exists():  # cannot happen unless someone removed the temp dir: undo
            old.rename(final)
    for move in plan:
        if not move.get("file"):
            _remove(Path(move["old"]))


def recover(*finals: Path | str) -> list[str]:
    """Repair what killed runs left beside ``finals``: finish committed multi-output renames, put a hidden previous
    output back, delete temp and old dirs whose process is gone. Every :func:`atomic_dirs` does this first.

    Returns one line per repair of an output (litter removal is not one), each also logged as a warning."""
    paths = [Path(f) for f in finals]
    repairs: list[str] = []
    for final in paths:  # journals first: their temp dirs are complete work, not litter
        for journal in _leftovers(final, "commit"):
            try:
                record = json.loads(journal.read_text())
                moves, others = record["moves"], [Path(j) for j in record["journals"]]
            except (OSError, ValueError, KeyError, TypeError):  # cut short by the kill: never the commit point
                journal.unlink(missing_ok=True)
                continue
            pending = [m["final"] for m in moves if Path(m["tmp"]).exists()]
            _roll_forward(moves)
            for other in others:
                other.unlink(missing_ok=True)
            if pending:
                repairs.append(f"completed the interrupted replacement of {', '.join(pending)} "
                               "(a run was killed while committing it)")
    for final in paths:
        olds = sorted(_leftovers(final, "old"), key=lambda p: p.stat().st_mtime_ns)
        if olds and not final.exists() and not final.is_symlink():
            olds.pop().rename(final)  # the newest previous output: the one a kill hid
            repairs.append(f"restored {final}, hidden by a run killed while replacing it (its previous version)")
        for leftover in olds + _leftovers(final, "tmp"):
            _remove(leftover)
    for repair in repairs:
        log.warning("%s", repair)
    return repairs


def recover_input(path: Path | str) -> list[str]:
    """:func:`recover` for a stage's input ``path`` and its parent (an output may be a folder above the one read,
    e.g. ``data/ingest`` for ``data/ingest/records``): a kill that hid it is repaired, not reported as missing."""
    path = Path(path)
    return recover(path) + recover(path.parent) if path.parent != path else recover(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:  # gone already, or not ours to remove: litter at worst, as rmtree(ignore_errors) leaves
            pass


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
