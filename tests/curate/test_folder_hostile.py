"""Hostile folder sources, round two: the pairs file is contained like the images, repeated user ids and animated
images are flagged (kept), and the pairs file is streamed (a long line or a long file is not held in memory)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from curate.sources.folder import FolderParams, FolderSource, animation_frames
from curate.stages.ingest import IngestParams, run_ingest
from editkit import store
from editkit.errors import UserError
from tests.support.files import pair_folder, random_image


image = random_image


def line(source: str = "s.png", edited: str = "e.png", instruction: str = "make it red", **extra) -> str:
    return json.dumps({"source": source, "edited": edited, "instruction": instruction, **extra})


@pytest.fixture
def root(tmp_path):
    return pair_folder(tmp_path, "s2.png")


def records(source, out: Path) -> list[dict]:
    run_ingest(source, out, IngestParams(), progress=False)
    return [r for _, shard in store.iter_records(out / "records") for r in shard]


# ----------------------------------------------------------------------------------------------- the pairs file
def test_a_pairs_file_linking_outside_the_folder_is_refused_unread(root, tmp_path):
    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(line() + "\n")
    (root / "pairs.jsonl").symlink_to(outside)
    with pytest.raises(UserError, match=r"pairs file refused: pairs.jsonl: outside the dataset root") as caught:
        FolderSource(FolderParams(path=str(root)))
    assert "\n" not in str(caught.value)
    assert len(FolderSource(FolderParams(path=str(root), allow_outside_root=True))) == 1  # the explicit opt-in


def test_a_pairs_file_linking_inside_the_folder_is_read(root):
    (root / "real.jsonl").write_text(line() + "\n")
    (root / "pairs.jsonl").symlink_to(root / "real.jsonl")
    (pair,) = list(FolderSource(FolderParams(path=str(root))))
    assert pair.error is None and pair.source == (root / "s.png").read_bytes()


def test_a_pairs_file_that_is_not_a_regular_file_is_refused(root):
    (root / "pairs.jsonl").mkdir()
    with pytest.raises(UserError, match="not a regular file"):
        FolderSource(FolderParams(path=str(root)))


def test_the_ingest_command_reports_the_refusal_in_one_line(root, tmp_path):
    from typer.testing import CliRunner

    from curate.cli import app

    outside = tmp_path / "elsewhere.jsonl"
    outside.write_text(line() + "\n")
    (root / "pairs.jsonl").symlink_to(outside)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"ingest": {"source": "folder", "folder": {"path": str(root)}}}))
    result = CliRunner().invoke(app, ["ingest", "--params", str(params), "--out", str(tmp_path / "out"),
                                      "--metrics", str(tmp_path / "m.json"), "--no-progress"])
    lines = [text for text in result.output.splitlines() if text.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "outside the dataset root" in lines[0], result.output
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- flags
def test_a_repeated_user_id_is_flagged_and_kept(root, tmp_path):
    (root / "pairs.jsonl").write_text("\n".join([line(id="a"), line("s2.png", id="a"), line(instruction="make it blue", id="b")]) + "\n")
    got = records(FolderSource(FolderParams(path=str(root))), tmp_path / "out")
    assert [r["status"] for r in got] == ["ok", "ok", "ok"]
    assert [("duplicate_user_id" in (r["flags"] or [])) for r in got] == [False, True, False]
    assert json.loads(got[1]["meta"])["duplicate_user_id"] == "a" and got[1]["origin_key"] == "a"


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_are_flagged_first_frame_used(root, tmp_path, fmt):
    name = f"anim.{fmt.lower()}"
    (root / name).write_bytes(image(3, fmt, frames=3))
    assert animation_frames((root / name).read_bytes()) == 3
    (root / "pairs.jsonl").write_text("\n".join([line(name), line()]) + "\n")
    pairs = list(FolderSource(FolderParams(path=str(root))))
    assert pairs[0].flags == ["animated_source_first_frame"] and pairs[0].meta["frames"] == {"source": 3}
    assert pairs[1].flags == []
    got = records(FolderSource(FolderParams(path=str(root))), tmp_path / "out")
    assert got[0]["status"] == "ok" and "animated_source_first_frame" in got[0]["flags"]


@pytest.mark.parametrize("data", [image(4, "PNG"), image(4, "GIF"), image(4, "WEBP"), image(4, "JPEG"), b"GIF89a..",
                                  b"\x89PNG\r\n\x1a\nacTL", b"RIFF\x00\x00\x00\x00WEBPVP8X\x02", b"", None])
def test_still_or_broken_images_are_not_animated(data):
    assert animation_frames(data) == 1


# ----------------------------------------------------------------------------------------------- streaming
def test_a_line_over_the_limit_is_a_malformed_line_not_a_memory_hog(root):
    content = line() + "\n" + "x" * 5000 + "\n" + line(id="after") + "\n"
    (root / "pairs.jsonl").write_text(content)
    pairs = list(FolderSource(FolderParams(path=str(root), max_line_bytes=1000)))
    assert [p.error for p in pairs] == [None, "malformed pairs line: longer than 1000 bytes", None]
    assert [p.origin_key for p in pairs] == ["line 1", "line 2", "after"]


_STREAM_PEAK = """
import json, sys, tracemalloc
from curate.sources.folder import FolderParams, FolderSource
source = FolderSource(FolderParams(path=sys.argv[1]))
next(iter(source))  # the first pair imports what reading needs (image plugins): not part of the measured peak
tracemalloc.start()
total = len(source)
count = sum(1 for pair in source if pair.error)
print(json.dumps({"len": total, "errors": count, "peak": tracemalloc.get_traced_memory()[1]}))
"""


def test_the_pairs_file_is_streamed(root):
    """Measured in a fresh process: tracemalloc counts every thread's allocations, and threads other tests leave
    behind in this one (servers, compile workers) would be counted too."""
    import subprocess
    import sys

    text = "".join(line(f"missing-{n}.png", "missing.png", "x" * 1500) + "\n" for n in range(1500))  # 2.4 MB
    (root / "pairs.jsonl").write_text(text)
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _STREAM_PEAK, str(root)], capture_output=True, text=True,
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["len"] == 1500 and got["errors"] == 1500
    assert got["peak"] < len(text) / 8, got["peak"]  # the whole file was never in memory at once


def test_lines_are_read_as_they_are_needed(root):
    (root / "pairs.jsonl").write_text(line() + "\n")
    pairs = iter(FolderSource(FolderParams(path=str(root))))
    assert next(pairs).error is None
    with open(root / "pairs.jsonl", "a") as handle:  # appended after the first pair was handed out
        handle.write(line("s2.png") + "\n")
    assert next(pairs).source == (root / "s2.png").read_bytes()
