"""Outputs that repair themselves: a stage whose input a kill left hidden restores it (and says so), metrics are
committed with the records (a kill never leaves metrics describing other records), and an ``--out`` that is a
user's file or folder is refused in one line, never moved."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curate.stages import rewrite
from editkit import atomic, schema, store
from editkit.errors import OutputRefused, UserError
from tests.support.files import pair_folder
from tests.support.kill import KillAt, Killed

DEAD = 999_999_999  # above any pid_max: a process that is certainly gone


def write_input(directory: Path, n: int) -> None:
    records = [schema.new_record(id=f"r{i:03d}", origin="sample", instruction=f"make {i} red", edit_type="add",
                                 image_shard="shard-00000") for i in range(n)]
    store.write_records(directory, "shard-00000", records)


def litter(*finals: Path) -> list[str]:
    """Names a commit leaves beside an output (temp, old, journal)."""
    return sorted(p.name for f in finals for p in f.parent.iterdir()
                  if p.name.startswith(f.name + ".") and atomic._OWNED.search(p.name))


# ------------------------------------------------------------------------------------ a hidden input is repaired
def test_a_stage_restores_an_input_hidden_between_the_two_renames(tmp_path, caplog):
    ingest_out = tmp_path / "data" / "ingest"
    write_input(ingest_out / "records", 3)
    hidden = tmp_path / "data" / f"ingest.old-{DEAD}-0123abcd"  # renamed aside; the kill came before the new one
    ingest_out.rename(hidden)
    (tmp_path / "data" / f"ingest.tmp-{DEAD}-4567cdef" / "records").mkdir(parents=True)
    metrics_file = tmp_path / "metrics" / "rewrite.json"
    metrics = rewrite.run(rewrite.RewriteParams(), ingest_out / "records", tmp_path / "rewrite", None,
                          metrics_file=metrics_file)
    assert metrics["records"] == 3 and store.count_records(tmp_path / "rewrite") == 3
    assert store.count_records(ingest_out / "records") == 3 and litter(ingest_out) == []
    (said,) = metrics["repaired"]
    assert said.startswith(f"restored {ingest_out}") and json.loads(metrics_file.read_text())["repaired"] == [said]
    assert said in caplog.text  # and logged


def test_a_stage_completes_an_input_whose_commit_was_interrupted(tmp_path, monkeypatch):
    records_in, out = tmp_path / "ingest" / "records", tmp_path / "rewrite"
    write_input(records_in, 3)
    rewrite.run(rewrite.RewriteParams(), records_in, out, None, metrics_file=tmp_path / "rewrite.json")
    write_input(records_in, 5)
    with monkeypatch.context() as patch:
        # journals written (steps 0, 1), the output renamed aside (2): killed before the new one
        KillAt(patch, at=3, arm_at_commit=True)
        with pytest.raises(Killed):
            rewrite.run(rewrite.RewriteParams(), records_in, out, None, metrics_file=tmp_path / "rewrite.json")
    assert not out.exists()  # hidden: what made the next stage fail with "no record shards"
    metrics = rewrite.run(rewrite.RewriteParams(), out, tmp_path / "next", None)  # the next stage reads `out`
    assert metrics["records"] == 5 and any("completed the interrupted replacement" in r for r in metrics["repaired"])
    assert store.count_records(out) == 5 and json.loads((tmp_path / "rewrite.json").read_text())["records"] == 5
    assert litter(out) == []


# ------------------------------------------------------------------------------------ metrics join the commit
@pytest.mark.parametrize("at", range(9))
def test_a_kill_at_any_commit_step_never_leaves_metrics_describing_other_records(tmp_path, monkeypatch, at):
    records_in, out, metrics_file = tmp_path / "ingest" / "records", tmp_path / "rewrite", tmp_path / "m.json"
    write_input(records_in, 3)
    rewrite.run(rewrite.RewriteParams(), records_in, out, None, metrics_file=metrics_file)
    write_input(records_in, 5)
    with monkeypatch.context() as patch:
        killer = KillAt(patch, at=at, arm_at_commit=True)
        try:
            rewrite.run(rewrite.RewriteParams(), records_in, out, None, metrics_file=metrics_file)
        except Killed:
            pass
        else:
            assert killer.calls <= at  # the commit had fewer steps than `at`: it finished
    store.recover(out, metrics_file)  # what the next run (or the next stage, for its input) does first
    described = json.loads(metrics_file.read_text())["records"]
    assert described == store.count_records(out) and described in (3, 5), at
    assert litter(out, metrics_file) == []


def test_the_commit_has_the_metrics_in_its_journal(tmp_path, monkeypatch):
    records_in, out, metrics_file = tmp_path / "in", tmp_path / "out", tmp_path / "m.json"
    write_input(records_in, 2)
    seen = []
    real = atomic._commit
    monkeypatch.setattr(atomic, "_commit", lambda moves: (seen.append([str(m[1]) for m in moves]), real(moves)))
    rewrite.run(rewrite.RewriteParams(), records_in, out, None, metrics_file=metrics_file)
    assert seen == [[str(out), str(metrics_file)]]


# ------------------------------------------------------------------------------------ --out refusal
@pytest.fixture
def ingest_args(tmp_path):
    folder = pair_folder(tmp_path, size=16)
    (folder / "pairs.jsonl").write_text(json.dumps({"source": "s.png", "edited": "e.png", "instruction": "x"}) + "\n")
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"ingest": {"source": "folder", "folder": {"path": str(folder)}}}))

    def args(out: Path) -> list[str]:
        return ["ingest", "--params", str(params), "--out", str(out), "--metrics", str(tmp_path / "m.json"),
                "--no-progress"]

    return args


def invoke(args):
    from typer.testing import CliRunner

    from curate.cli import app

    return CliRunner().invoke(app, args)


def test_an_out_that_is_a_users_file_is_refused_never_moved(tmp_path, ingest_args):
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes")
    result = invoke(ingest_args(precious))
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0] == (f"error: {precious} exists and is a file, not an output of this stage: not replaced; "
                        "choose another output path or remove it")
    assert precious.read_text() == "my notes" and litter(precious) == [] and not (tmp_path / "m.json").exists()


def test_an_out_that_is_a_foreign_folder_is_refused(tmp_path, ingest_args):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    (folder / "records").mkdir()
    result = invoke(ingest_args(folder))
    assert result.exit_code == 2 and "holds 'holiday.jpg', which an output of this stage does not" in result.output
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg", "records"] and litter(folder) == []


def test_an_out_that_is_a_previous_output_or_empty_is_replaced(tmp_path, ingest_args):
    out = tmp_path / "data"
    out.mkdir()  # empty
    assert invoke(ingest_args(out)).exit_code == 0
    first = json.loads((tmp_path / "m.json").read_text())
    result = invoke(ingest_args(out))  # the previous output of the same stage
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text()) == first and store.count_records(out / "records") == 1
    assert litter(out) == []


def test_refusal_is_a_user_error_for_every_record_stage(tmp_path):
    write_input(tmp_path / "in", 1)
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(OutputRefused) as caught:
        rewrite.run(rewrite.RewriteParams(), tmp_path / "in", tmp_path / "out", None)
    assert isinstance(caught.value, UserError) and (tmp_path / "out").read_text() == "not a folder"
    (tmp_path / "out").unlink()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("x")
    with pytest.raises(OutputRefused, match="thesis.tex"):
        rewrite.run(rewrite.RewriteParams(), tmp_path / "in", tmp_path / "out", None)
