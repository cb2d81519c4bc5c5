"""`editkit export fiftyone`: the dataset FiftyOne builds in its own virtualenv reads back equal to our records.

The integration test installs FiftyOne into ``.venv-fiftyone`` on first use (kept between runs, like Label Studio's
virtualenv), builds the dataset of a small ``select`` stage from the built-in sample with a tiny CLIP, and reads it
back through FiftyOne in another process. Its FiftyOne processes run under the egress guard (annotate/egress): any
outbound connection or name lookup would be refused and logged.
"""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from curate.fiftyone_export import FiftyOneParams, build, interchange, read_back, venv
from curate.stages.score import ClipParams
from editkit import rle, schema, store
from tests.curate.test_gallery import make_stage
from tests.support.numerics import assert_close, assert_exact

REPO = Path(__file__).resolve().parents[2]
EGRESS_GUARD = REPO / "annotate" / "egress"


def _bits(mask: np.ndarray) -> dict:
    return {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(mask.astype(bool).ravel())).decode()}


def _mongods(db: Path) -> list[int]:
    """PIDs of every mongod process running on ``db`` (whatever its lock file says)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"mongod") and str(db.resolve()).encode() in argv:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from tests.support.tiny.clip import build_clip

    root = tmp_path_factory.mktemp("fiftyone")
    data = make_stage(root, n=6, size=48)
    clip = ClipParams(enabled=True, model=f"local-dir:{build_clip(root / 'clip')}", pretrained=None,
                      cache_dir=str(root / "clip-cache"))
    params = FiftyOneParams(venv=str(REPO / ".venv-fiftyone"), dir=str(root / "fiftyone"), batch_size=4)
    venv.ensure_installed(params)  # pip needs the package index: before the egress guard
    log = root / "egress.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(EGRESS_GUARD))
        patch.setenv("EDITKIT_EGRESS_LOG", str(log))
        with venv.database(params, venv.check(params)):  # one mongod for both commands: they share it
            result = build("select", data, params, clip=clip, device="cpu", progress=False)
            back = read_back(params, result["name"])
    return data, clip, params, result, back, log


@pytest.mark.integration
@pytest.mark.slow
def test_dataset_reads_back_equal_to_the_records(built):
    from editkit.clip import ClipScorer

    data, clip, params, result, back, log = built
    records = [r for _, shard in store.iter_records(data / "select" / "records") for r in shard]
    assert result["groups"] == len(records) == 6 and result["samples"] == 12
    assert back["slices"] == ["source", "edited"] and back["default_slice"] == "source"
    assert back["mask_targets"] == {"mask": {"255": "edit"}, "gt_mask": {"255": "edit"}}
    assert sorted(back["groups"]) == sorted(r["id"] for r in records)
    scorer = ClipScorer(clip.model, None, "cpu", cache_dir=None)
    folder = Path(result["interchange"])
    written = np.load(folder / "embeddings.npy", allow_pickle=False)
    lines = {line["record_id"]: line["slices"] for line in map(json.loads, (folder / "samples.jsonl").open())}
    for record in records:
        group = back["groups"][record["id"]]
        assert sorted(group) == ["edited", "source"]
        shard = store.ImageShard(data / "ingest" / "images" / f"{record['image_shard']}.parquet")
        expected_vectors = scorer.embed_images([shard.source_bytes(record["id"]), shard.edited_bytes(record["id"])])
        expected_tags = list(record["flags"]) + ([record["reject_reason"]] if not schema.is_ok(record) else [])
        for k, (slice_name, sample) in enumerate(sorted(group.items(), key=lambda kv: kv[0] != "source")):
            # masks exactly, read through FiftyOne's Segmentation
            assert sample["masks"]["mask"] == _bits(rle.decode(record["mask"])), (record["id"], slice_name)
            assert sample["masks"]["gt_mask"] == _bits(rle.decode(record["gt_mask"])), (record["id"], slice_name)
            # scores: float64 through JSON and BSON, both exact
            scores = {k[len("score_"):]: v for k, v in sample["fields"].items() if k.startswith("score_")}
            assert_exact(np.array([scores[name] for name in sorted(record["scores"])]),
                         np.array([record["scores"][name] for name in sorted(record["scores"])]),
                         why="float64 scores are written as JSON and stored as BSON doubles: no rounding")
            assert sorted(scores) == sorted(record["scores"])
            assert sample["tags"] == expected_tags
            # provenance kept
            fields = sample["fields"]
            assert (fields["record_id"], fields["origin"], fields["origin_key"], fields["status"]) == (
                record["id"], record["origin"], record["origin_key"], record["status"])
            assert fields.get("reject_reason") == record["reject_reason"]
            assert fields["source_dataset"] == "sample" and fields["edit_type"] == record["edit_type"]
            # our CLIP embedding of this slice's own image: the very vector we wrote, and what the model gives
            assert len(sample["embedding"]) == 32
            assert_exact(np.array(sample["embedding"], np.float32), written[lines[record["id"]][slice_name]["embedding"]],
                         why="float32 vectors stored by FiftyOne as they were handed over")
            assert_close(np.array(sample["embedding"]), expected_vectors[k], dtype=np.float32, accumulations=256,
                         why="the same tiny CLIP (4 layers of 64-wide reductions) on the same image, another batch")
            image = Path(sample["filepath"])
            original = shard.source_bytes(record["id"]) if slice_name == "source" else shard.edited_bytes(record["id"])
            assert image.read_bytes() == original
    # the rejected records carry their reason as a tag, the flagged ones their flag
    assert {t for g in back["groups"].values() for t in g["source"]["tags"]} >= {"grounding_disagrees"}
    assert any(g["source"]["fields"]["status"] == "rejected" for g in back["groups"].values())
    # FiftyOne's similarity index over our embeddings ranks like cosine similarity does
    assert back["brain_runs"] == ["clip_sim"] and back["info"]["embedding_model"].startswith("local-dir:")
    keys = [(rid, s) for rid, g in back["groups"].items() for s in g]
    vectors = np.array([back["groups"][rid][s]["embedding"] for rid, s in keys])
    query = keys.index((back["similar"]["query"], "source"))
    cosine = vectors @ vectors[query] / np.linalg.norm(vectors, axis=1) / np.linalg.norm(vectors[query])
    nearest = [tuple(n) for n in back["similar"]["nearest"]]
    assert nearest[0] == keys[query] and len(set(nearest)) == 3
    # the tiny CLIP's embeddings lie close together: compare the cosines of the images it chose with the three
    # largest, so that a near-tie decided the other way by float32 rounding still passes
    assert_close(np.array([cosine[keys.index(n)] for n in nearest]), np.sort(cosine)[::-1][:3], dtype=np.float32,
                 accumulations=32, why="cosines of 32-dim float32 embeddings, FiftyOne's index against numpy")
    # no database server left running, nothing tried to leave the machine
    assert venv.mongod_pid(params) is None and _mongods(Path(params.dir) / "db") == []
    assert not log.exists(), log.read_text()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from curate.stages import export as export_stage

    root = tmp_path_factory.mktemp("fiftyone-export")
    data = make_stage(root, n=6, size=32)
    (root / "select.json").write_text(json.dumps({"records_in": 6, "funnel": []}))
    params = export_stage.ExportParams(leak_check=export_stage.LeakCheckParams(enabled=False))
    export_stage.run(params, data / "select" / "records", data / "ingest" / "images", data / "export",
                     root / "select.json", root / "no-funnel.png")
    return data


def test_export_interchange_keeps_masks_scores_flags_and_provenance(exported, tmp_path):
    """The exported dataset's rows as the builder reads them (no FiftyOne needed): images as stored, masks as PNGs
    equal to the RLE, scores, flags as tags, provenance fields; embeddings as a plain .npy."""
    from datasets import load_from_disk
    from PIL import Image

    out = tmp_path / "interchange"
    fake = lambda images: np.stack([np.full(4, len(b) % 7, np.float32) for b in images])  # noqa: E731
    total = load_from_disk(str(exported / "export" / "dataset")).num_rows
    manifest = interchange.write(interchange.export_items(exported / "export" / "dataset"), out, name="t",
                                 stage="export", origin="x", total=total, embed=fake, embedding_model="fake",
                                 batch_size=3, progress=False)
    assert manifest["records"] == total == 4  # the select stage's 4 rejected records are not exported
    vectors = np.load(out / "embeddings.npy", allow_pickle=False)
    rows = {row["id"]: row for row in load_from_disk(str(exported / "export" / "dataset"))}
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(line["record_id"] for line in lines) == sorted(rows)
    for line in lines:
        row = rows[line["record_id"]]
        assert line["tags"] == row["flags"] and "licence_unknown" in line["tags"]
        mask = np.asarray(Image.open(out / line["masks"]["mask"])) == interchange.MASK_VALUE
        assert_exact(mask, rle.decode(row["mask"]), why="a mask is a PNG of its RLE")
        for slice_name, column in (("source", "source_image"), ("edited", "edited_image")):
            entry = line["slices"][slice_name]
            image = Image.open(out / entry["filepath"])
            assert_exact(np.asarray(image.convert("RGB")), np.asarray(row[column].convert("RGB")),
                         why="images are stored as they are")
            assert vectors[entry["embedding"]][0] == len((out / entry["filepath"]).read_bytes()) % 7
        fields = line["fields"]
        assert {k: fields[f"score_{k[len('score_'):]}"] for k in row if k.startswith("score_")} == {
            k: row[k] for k in row if k.startswith("score_")}
        assert (fields["source_dataset"], fields["licence"], fields["origin_key"]) == (
            row["dataset"], row["licence"], row["origin_key"])
    assert manifest["embeddings"]["dim"] == 4 and manifest["mask_fields"] == ["mask"]
    # a rebuild writes nothing new and removes nothing
    again = interchange.write(interchange.export_items(exported / "export" / "dataset"), out, name="t",
                              stage="export", origin="x", total=total, progress=False)
    assert again["files"] == {"written": 0, "removed": 0} and again["embeddings"] is None


def _fake_python(path: Path, body: str, shell: str = "/bin/sh") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{shell}\n{body}\n")
    path.chmod(0o755)
    return path


def test_failed_install_and_broken_venv_are_one_clear_line(exported, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from editkit.cli import app

    broken = tmp_path / "venv-broken"
    _fake_python(broken / "bin" / "python", "echo 'ModuleNotFoundError: No module named fiftyone' >&2; exit 1")
    (broken / venv.MARKER).write_text(json.dumps({"fiftyone": FiftyOneParams.version,
                                                  "db_package": FiftyOneParams.db_package}))
    failing = tmp_path / "venv-failing"  # pip answers as it does when the index has no such version
    _fake_python(failing / "bin" / "python", "echo 'ERROR: No matching distribution found for fiftyone==0.0.0'; exit 1")
    monkeypatch.chdir(tmp_path)
    for folder, expected in ((broken, "the FiftyOne virtualenv .*venv-broken is broken \\(ModuleNotFoundError: No "
                                      "module named fiftyone\\): delete it and run again to reinstall it"),
                             (failing, "installing fiftyone into .*venv-failing failed: ERROR: No matching "
                                       "distribution found for fiftyone==0.0.0 \\(pip's output: .*install.log\\)")):
        (tmp_path / "params.yaml").write_text(f"fiftyone:\n  venv: {folder}\n  dir: {tmp_path / 'fo'}\n")
        done = CliRunner().invoke(app, ["export", "fiftyone", "select", "--data", str(exported), "--no-progress",
                                        "--no-embeddings"])
        assert done.exit_code == 2, done.output
        lines = [line for line in done.output.splitlines() if line.startswith("error:")]
        assert len(lines) == 1, done.output
        assert re.search(expected, lines[0]), lines[0]
    assert os.path.exists(tmp_path / "fo" / "install.log")


def test_missing_stage_is_one_clear_error(exported, tmp_path):
    from editkit.errors import UserError

    params = FiftyOneParams(venv=str(tmp_path / "never-created"), dir=str(tmp_path / "fo"))
    with pytest.raises(UserError, match="no records at .*nothing/records.*stages with records: ingest, select, "
                                        "export"):
        build("nothing", exported, params, progress=False)
    assert not (tmp_path / "never-created").exists()


_FAKE_MONGOD = """
import os, signal, socket, sys
args = sys.argv[1:]
db, port = args[args.index("--dbpath") + 1], int(args[args.index("--port") + 1])
server = socket.socket()
server.bind(("127.0.0.1", port))
server.listen()
with open(os.path.join(db, "mongod.lock"), "w") as lock:
    lock.write(str(os.getpid()))
def stop(*_):
    open(os.path.join(db, "mongod.lock"), "w").close()  # as mongod does on a clean shutdown
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    server.accept()[0].close()
"""


def test_database_server_is_ours_stopped_by_pid_and_a_leftover_is_stopped(tmp_path):
    """`venv.database` starts mongod on 127.0.0.1, stops it by its PID, and stops one that a killed command left."""
    import subprocess
    import sys
    import time

    (tmp_path / "fake.py").write_text(_FAKE_MONGOD)
    mongod = _fake_python(tmp_path / "bin" / "mongod", f'exec -a "$0" {sys.executable} {tmp_path / "fake.py"} "$@"',
                          shell="/bin/bash")  # argv[0] stays .../mongod, as mongod_pid expects
    params = FiftyOneParams(venv=str(tmp_path / "unused"), dir=str(tmp_path / "fo"))
    db = Path(params.dir) / "db"
    with venv.database(params, mongod) as uri:
        pid = venv.mongod_pid(params)
        assert pid is not None and _mongods(db) == [pid]
        assert uri == f"mongodb://127.0.0.1:{json.loads((Path(params.dir) / 'mongod.json').read_text())['port']}"
        with venv.database(params, mongod) as shared:  # a second command while this one runs shares it
            assert shared == uri and venv.mongod_pid(params) == pid
        assert venv.mongod_pid(params) == pid
    assert venv.mongod_pid(params) is None and _mongods(db) == []
    assert not (Path(params.dir) / "mongod.json").exists()

    # a command killed while its mongod ran: the next one stops that server by its PID and starts its own
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    db.mkdir(parents=True, exist_ok=True)
    leftover = subprocess.Popen([str(mongod), "--dbpath", str(db), "--port", str(venv._free_port())],
                                start_new_session=True)
    try:
        for _ in range(100):
            if venv.mongod_pid(params) == leftover.pid:
                break
            time.sleep(0.05)
        (Path(params.dir) / "mongod.json").write_text(json.dumps({"pid": leftover.pid, "port": 1, "owner": dead.pid}))
        with venv.database(params, mongod):
            assert leftover.wait(10) == 0  # stopped with SIGTERM, cleanly
            assert venv.mongod_pid(params) not in (None, leftover.pid)
        assert _mongods(db) == []
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
