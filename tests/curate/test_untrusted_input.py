"""Untrusted pairs files: paths stay inside the folder, no byte sequence crashes ingest, ids are unique.

The property tests throw random bytes, random JSON and random Unicode (lone surrogates included) at the folder
source, the schema and ingest, and check that the stage always finishes with one record per non-blank line.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from curate.sources import RawPair
from curate.sources.folder import FolderParams, FolderSource
from curate.stages.ingest import IngestParams, run_ingest, to_record
from curate import images
from editkit import schema, store
from tests.support.files import pair_folder, random_image


def png(seed: int, size: int = 8) -> bytes:
    return random_image(seed, size=size)


def folder(root: Path, lines: list[bytes]) -> FolderSource:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return FolderSource(FolderParams(path=str(root)))


def ingest(source, out: Path) -> list[dict]:
    run_ingest(source, out, IngestParams(), progress=False)
    return [r for _, records in store.iter_records(out / "records") for r in records]


def line(source: str, edited: str = "e.png", instruction: str = "make it red", **extra) -> bytes:
    return json.dumps({"source": source, "edited": edited, "instruction": instruction, **extra}).encode()


# ----------------------------------------------------------------------------------------------- containment
@pytest.fixture
def pairs_dir(tmp_path):
    root = pair_folder(tmp_path)
    secret = tmp_path / "secret.png"  # a valid image OUTSIDE the folder: must never reach the shards
    secret.write_bytes(png(2))
    (root / "link.png").symlink_to(secret)
    (root / "sub").mkdir()
    return root, secret


def test_paths_outside_the_folder_are_rejected_with_a_reason(pairs_dir, tmp_path):
    root, secret = pairs_dir
    depth = len(root.resolve().parts)
    lines = [line("s.png"), line("../secret.png"), line(str(secret)), line("link.png"),
             line("../" * depth + "etc/hostname"), line("/dev/zero"), line("sub"), line("sub/../s.png", "e.png", "x")]
    records = ingest(folder(root, lines), tmp_path / "out")
    reasons = [r["reject_reason"] for r in records]
    assert schema.is_ok(records[0]) and schema.is_ok(records[7])  # `sub/../s.png` resolves inside: fine
    for reason in reasons[1:5]:
        assert reason.startswith("unsafe source path") and "outside the dataset root" in reason, reason
    assert reasons[5].startswith("unsafe source path") and "outside" in reasons[5]
    assert reasons[6].startswith("unsafe source path") and "not a regular file" in reasons[6]
    shard = store.ImageShard(tmp_path / "out/images/shard-00000.parquet")
    assert all(secret.read_bytes() != shard.source_bytes(r["id"]) for r in records if schema.is_ok(r))


def test_allow_outside_root_is_an_explicit_opt_in_and_still_refuses_devices(pairs_dir, tmp_path):
    root, secret = pairs_dir
    (root / "pairs.jsonl").write_bytes(line(str(secret)) + b"\n" + line("/dev/zero") + b"\n")
    source = FolderSource(FolderParams(path=str(root), allow_outside_root=True))
    ok, device = ingest(source, tmp_path / "out")
    assert schema.is_ok(ok)
    assert device["reject_reason"].startswith("unsafe source path") and "not a regular file" in device["reject_reason"]


def test_oversized_files_are_rejected_unread(pairs_dir, tmp_path):
    root, _ = pairs_dir
    (root / "big.png").write_bytes(png(3, 64))
    (root / "pairs.jsonl").write_bytes(line("big.png") + b"\n")
    (record,) = ingest(FolderSource(FolderParams(path=str(root), max_file_bytes=1000)), tmp_path / "out")
    assert "too large" in record["reject_reason"]


# ----------------------------------------------------------------------------------------------- encodings
def test_invalid_utf8_costs_only_its_line(pairs_dir, tmp_path):
    root, _ = pairs_dir
    lines = [line("s.png"), b'{"source": "s.png", "edited": "e.png", "instruction": "caf\xe9"}', line("e.png", "s.png")]
    records = ingest(folder(root, lines), tmp_path / "out")
    assert len(records) == 3 and schema.is_ok(records[0]) and schema.is_ok(records[2])
    assert records[1]["reject_reason"] == "malformed pairs line: not UTF-8 (byte 0xe9 at 58)"


def test_lone_surrogates_are_rejected_not_crashing(pairs_dir, tmp_path):
    root, _ = pairs_dir
    lines = [b'{"source": "s.png", "edited": "e.png", "instruction": "red \\ud800 car"}',
             b'{"id": "\\udfff", "source": "s.png", "edited": "e.png", "instruction": "blue"}', line("s.png")]
    records = ingest(folder(root, lines), tmp_path / "out")
    assert [r["reject_reason"].split(":")[0] for r in records[:2]] == ["unencodable text"] * 2
    assert records[0]["instruction"] == "red \\ud800 car" and records[1]["origin_key"] == "\\udfff"
    assert schema.is_ok(records[2])


def test_numbers_too_long_and_nesting_too_deep_are_malformed_lines(pairs_dir, tmp_path):
    root, _ = pairs_dir
    records = ingest(folder(root, [b"1" * 5000, b"[" * 100000, line("s.png")]), tmp_path / "out")
    assert [r["reject_reason"].split(":")[0] for r in records[:2]] == ["malformed pairs line"] * 2


# ----------------------------------------------------------------------------------------------- unique ids
def test_duplicates_keep_their_own_id_and_name_the_first(tmp_path):
    pair = lambda key: RawPair("test", key, "make it red", png(0), png(1))  # noqa: E731
    missing = lambda: RawPair("test", "k", "x", None, None, error="missing source image: a.png not found")  # noqa: E731
    records = ingest([pair("a"), pair("b"), pair("c"), missing(), missing()], tmp_path / "out")
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids) == 5
    assert schema.is_ok(records[0]) and records[1]["reject_reason"] == "duplicate: same content as a"
    assert [json.loads(r["meta"]).get("duplicate_of") for r in records] == [None, ids[0], ids[0], None, ids[3]]
    assert records[4]["reject_reason"].startswith("missing source image")  # its own reason, first one wins
    again = ingest([pair("a"), pair("b"), pair("c"), missing(), missing()], tmp_path / "again")
    assert [r["id"] for r in again] == ids  # still deterministic


def test_stage_stats_charge_only_their_own_rejects(tmp_path):
    from editkit.pipeline import run_stage

    pair = lambda key: RawPair("test", key, "make it red", png(0), png(1))  # noqa: E731
    run_ingest([pair("a"), pair("b")], tmp_path / "ingest", IngestParams(), progress=False)
    stats = run_stage("masks", tmp_path / "ingest/records", tmp_path / "masks", lambda records, _: records,
                      progress=False)
    assert stats.rejected_here == {}  # the duplicate was ingest's reject, not masks'


# ----------------------------------------------------------------------------------------------- properties
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=20)  # surrogates included
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)
PATHS = st.sampled_from(["s.png", "e.png", "../secret.png", "/dev/zero", "/etc/hostname", "sub", "", "nope.png",
                         "link.png", "s.png\x00x"]) | TEXT
ENTRY = st.fixed_dictionaries({}, optional={"source": PATHS | JSON, "edited": PATHS | JSON, "instruction": TEXT | JSON,
                                            "id": TEXT | JSON, "mask": PATHS, "edit_type": TEXT | st.just("recolor")})
LINE = (st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))
        | JSON.map(lambda v: json.dumps(v).encode())
        | ENTRY.map(lambda v: json.dumps(v, ensure_ascii=bool(v) and len(v) % 2 == 0).encode("utf-8", "surrogatepass"))
        | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass").replace(b"\n", b"")))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=8))
def test_any_pairs_file_ingests_one_record_per_line(pairs_dir, lines):
    root, _ = pairs_dir
    (root / "pairs.jsonl").write_bytes(b"\n".join(lines))
    source = FolderSource(FolderParams(path=str(root)))
    expected = sum(1 for raw in lines if raw.strip())
    assert len(source) == expected
    with tempfile.TemporaryDirectory() as out:
        records = ingest(source, Path(out) / "ingest")
    assert len(records) == expected
    assert len({r["id"] for r in records}) == expected
    for record in records:
        assert schema.is_ok(record) or (record["reject_stage"] == "ingest" and record["reject_reason"])


@settings(max_examples=200, deadline=None)
@given(instruction=st.one_of(TEXT, JSON), key=TEXT, edit_type=st.one_of(st.none(), TEXT), phrases=st.lists(TEXT))
def test_any_text_makes_a_storable_record(instruction, key, edit_type, phrases):
    assert len(schema.content_id(key, instruction if isinstance(instruction, str) else "")) == 16
    pair = RawPair("x", key, instruction, png(0), png(1), edit_type=edit_type, target_phrases=phrases)
    record, _ = to_record(pair, images.ImagePolicy())
    table = schema.to_table([record])  # Arrow accepts it: nothing unencodable got through
    assert schema.from_table(table)[0]["id"] == record["id"]
    assert schema.is_ok(record) or record["reject_reason"]


def test_fifo_is_not_opened(tmp_path):
    root = tmp_path / "pairs"
    root.mkdir()
    os.mkfifo(root / "pipe.png")
    (root / "e.png").write_bytes(png(1))
    (record,) = ingest(folder(root, [line("pipe.png")]), tmp_path / "out")  # would block forever if opened
    assert "not a regular file" in record["reject_reason"]
