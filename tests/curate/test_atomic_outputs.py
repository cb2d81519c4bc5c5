"""Atomic outputs recover from a kill at every step of the commit (injected between the steps, not timed)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from editkit import atomic, schema, store
from tests.support.kill import KillAt, Killed


def fill(directory: Path, text: str) -> None:
    (directory / "sub").mkdir()
    (directory / "sub" / "data.txt").write_text(text)


def content(directory: Path) -> str | None:
    path = directory / "sub" / "data.txt"
    return path.read_text() if path.exists() else None


def litter(*finals: Path) -> list[str]:
    return sorted(p.name for f in finals for p in f.parent.iterdir() if p.name.startswith(f.name + "."))


def commit(finals: list[Path], text: str, killer: KillAt | None = None) -> None:
    with store.atomic_dirs(*finals) as tmps:
        for tmp in tmps:
            fill(tmp, text)
        if killer is not None:
            killer.armed = True


def count_steps(tmp_path, monkeypatch, finals) -> int:
    for final in finals:
        final.mkdir(parents=True)
        fill(final, "old")
    killer = KillAt(monkeypatch)
    commit(finals, "new", killer)
    monkeypatch.undo()
    for final in finals:
        shutil.rmtree(final)
    return killer.calls


@pytest.mark.parametrize("outputs", [1, 2])
def test_a_kill_at_every_commit_step_is_repaired_by_the_next_run(tmp_path, monkeypatch, outputs):
    finals = [tmp_path / "data" / "rejects", tmp_path / "data" / "select" / "records"][:outputs]
    steps = count_steps(tmp_path, monkeypatch, finals)
    assert steps >= (3 if outputs == 1 else 8)  # renames + old removal (+ journals written and removed)
    for at in range(steps):
        for final in finals:
            final.mkdir(parents=True, exist_ok=True)
            fill(final, "old")
        with monkeypatch.context() as patch:
            with pytest.raises(Killed):
                commit(finals, "new", KillAt(patch, at))
        store.recover(*finals)  # what the next run does first
        seen = {content(f) for f in finals}
        assert len(seen) == 1 and seen <= {"old", "new"}, (at, seen)  # every output present, all from ONE run
        if outputs == 2 and at > 0:
            assert seen == {"new"}, at  # past the commit point (first journal written): rolled forward
        assert litter(*finals) == [], (at, litter(*finals))
        commit(finals, "next")  # and the next run itself succeeds
        assert {content(f) for f in finals} == {"next"}
        for final in finals:
            shutil.rmtree(final)


def test_a_hidden_previous_output_from_an_older_version_is_restored(tmp_path):
    final = tmp_path / "records"
    hidden = tmp_path / "records.old-1a2b3c4d"  # the state a kill between the two renames used to leave forever
    hidden.mkdir()
    fill(hidden, "previous")
    (tmp_path / "records.tmp-5e6f7a8b").mkdir()
    store.recover(final)
    assert content(final) == "previous" and litter(final) == []


def test_stale_temp_dirs_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)  # that process has exited
    final = tmp_path / "out"
    stale = tmp_path / f"out.tmp-{dead}-0123abcd"
    live = tmp_path / f"out.tmp-{os.getppid()}-4567cdef"  # our parent is alive: maybe a concurrent run, keep it
    for path in (stale, live):
        path.mkdir()
        (path / "big.bin").write_bytes(b"x" * 1000)
    with store.atomic_dir(final) as tmp:
        assert tmp.name.startswith(f"out.tmp-{os.getpid()}-")  # the owner pid is in the name
        fill(tmp, "new")
    assert not stale.exists() and live.exists() and content(final) == "new"


def test_a_failed_attempt_of_this_process_is_cleaned_by_its_next_one(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(Killed):
        with store.atomic_dir(final) as tmp:
            fill(tmp, "x")
            raise Killed()
    assert litter(final) == []  # an exception inside the block removes its temp dir at once
    (tmp_path / f"out.tmp-{os.getpid()}-89abcdef").mkdir()  # as a kill would have left it, pid = ours
    with store.atomic_dir(final) as tmp:
        fill(tmp, "y")
    assert content(final) == "y" and litter(final) == []


def test_a_journal_cut_short_before_the_commit_point_is_ignored(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for final in (first, second):
        final.mkdir()
        fill(final, "old")
    (tmp_path / "a.commit-999999999-0123abcd.json").write_text('{"moves": [')  # torn write
    store.recover(first, second)
    assert content(first) == content(second) == "old" and litter(first, second) == []


def test_select_commits_records_and_rejects_as_one_unit(tmp_path, monkeypatch):
    from curate.stages import select as select_stage

    rng = np.random.default_rng(0)
    records = [schema.new_record(id=f"r{i:03d}", edit_type=t, scope="local",
                                 scores={"mask_area": 0.1, "bg_psnr": 35.0, "bg_ssim": 0.95},
                                 phash={k: int(rng.integers(0, 2**62)) for k in ("source", "edited", "change")})
               for i, t in enumerate(["add"] * 6 + ["remove"] * 4)]
    store.write_records(tmp_path / "score", "shard-00000", records)
    out, rejects = tmp_path / "select" / "records", tmp_path / "rejects"
    select_stage.run(select_stage.SelectParams(target_size=10), tmp_path / "score", out, rejects)
    before = (store.count_records(out), sorted(p.name for p in rejects.iterdir()))
    renames = []
    real = Path.rename

    def rename(self, target):
        renames.append(Path(target))
        if len(renames) == 3:  # records replaced, rejects not yet
            raise Killed()
        return real(self, target)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "rename", rename)
        with pytest.raises(Killed):
            select_stage.run(select_stage.SelectParams(target_size=4), tmp_path / "score", out, rejects)
    assert renames[1] == out  # the records were already in place when the kill came
    store.recover(out, rejects)
    import pyarrow.parquet as pq

    n_rejected = pq.read_table(rejects / "rejects.parquet").num_rows
    statuses = [r["status"] for _, shard in store.iter_records(out) for r in shard]
    assert statuses.count("ok") == 4 and n_rejected == 6  # both outputs from the second run
    assert before[0] == 10 and litter(out, rejects) == []
    assert atomic._ACTIVE == set()
