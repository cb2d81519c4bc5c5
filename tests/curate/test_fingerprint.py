"""The fingerprint stage's manifest: what each source reads, deterministic, hashing only changed files."""
from __future__ import annotations

import json
import os
from types import SimpleNamespace as NS

from curate.stages import fingerprint


def _ingest(source="folder", folder="", hf="", preset_name="", preset_path="", outside=False):
    return NS(source=source, folder=NS(path=folder, pairs_file="pairs.jsonl", allow_outside_root=outside),
              hf=NS(path=hf), preset=NS(name=preset_name, path=preset_path))


def test_folder_manifest_is_deterministic_and_hashes_only_changed_files(tmp_path):
    data = tmp_path / "pairs"
    (data / "img").mkdir(parents=True)
    (data / "pairs.jsonl").write_text('{"source": "img/a.png"}\n')
    (data / "img" / "a.png").write_bytes(b"\x89PNG fake bytes")
    cache, out = tmp_path / "cache.json", tmp_path / "inputs.json"
    first = fingerprint.run(_ingest(folder=str(data)), out, cache)
    text = out.read_text()
    assert first["hashed"] == 2 and first["reused"] == 0
    manifest = json.loads(text)
    assert manifest["source"] == "folder" and manifest["inputs"][0]["files"] == 2
    assert "mtime" not in text and str(cache) not in text  # no timestamps, no cache location

    os.utime(data / "img" / "a.png", ns=(1, 1))  # touched (another mtime), same bytes: re-hashed, same manifest
    again = fingerprint.run(_ingest(folder=str(data)), out, cache)
    assert (again["hashed"], again["reused"]) == (1, 1) and out.read_text() == text
    unchanged = fingerprint.run(_ingest(folder=str(data)), out, cache)
    assert (unchanged["hashed"], unchanged["reused"]) == (0, 2) and out.read_text() == text

    (data / "img" / "a.png").write_bytes(b"\x89PNG fake bytez")  # one byte, same size
    os.utime(data / "img" / "a.png", ns=(2, 2))
    fingerprint.run(_ingest(folder=str(data)), out, cache)
    assert out.read_text() != text


def test_sample_reads_nothing_outside(tmp_path):
    fingerprint.run(_ingest(source="sample"), tmp_path / "inputs.json", tmp_path / "cache.json")
    assert json.loads((tmp_path / "inputs.json").read_text()) == {"format": 1, "inputs": [], "source": "sample"}


def test_local_data_file_and_hub_snapshot(tmp_path, monkeypatch):
    shard = tmp_path / "train-00000-of-00001.parquet"
    shard.write_bytes(b"PAR1 ... PAR1")
    cache = fingerprint.HashCache(tmp_path / "cache.json")
    local = fingerprint.manifest(_ingest(source="hf", hf=str(shard)), cache)
    assert local["inputs"][0]["path"] == str(shard) and local["inputs"][0]["files"] == 1

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    ingest = _ingest(source="preset", preset_name="magicbrush")  # path "": the preset's hub id
    assert fingerprint.manifest(ingest, cache)["inputs"] == [
        {"hub_id": "osunlp/MagicBrush", "cached": False, "revisions": {}}]
    refs = hub / "datasets--osunlp--MagicBrush" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0123abcd\n")
    assert fingerprint.manifest(ingest, cache)["inputs"][0]["revisions"] == {"main": "0123abcd"}
    missing = fingerprint.manifest(_ingest(folder=str(tmp_path / "nope")), cache)
    assert missing["inputs"] == [{"folder": str(tmp_path / "nope"), "missing": True}]  # ingest reports it itself


def test_files_outside_the_folder_count_when_allowed(tmp_path):
    data, elsewhere = tmp_path / "pairs", tmp_path / "elsewhere.png"
    data.mkdir()
    elsewhere.write_bytes(b"outside")
    (data / "pairs.jsonl").write_text(json.dumps({"source": "../elsewhere.png", "edited": "b.png"}) + "\nnot json\n")
    cache = fingerprint.HashCache(tmp_path / "cache.json")
    assert len(fingerprint.manifest(_ingest(folder=str(data)), cache)["inputs"]) == 1  # not read without the flag
    before = fingerprint.manifest(_ingest(folder=str(data), outside=True), cache)["inputs"][1]
    assert before["outside_folder"] and before["files"] == 1 and before["bytes"] == 7
    elsewhere.write_bytes(b"outsidE")
    os.utime(elsewhere, ns=(5, 5))
    assert fingerprint.manifest(_ingest(folder=str(data), outside=True), cache)["inputs"][1] != before
