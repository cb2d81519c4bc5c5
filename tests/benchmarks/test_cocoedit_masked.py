"""CoCoEdit's masked GEdit-Bench / ImgEdit-Bench release (metafile_*.json, <key>_mask.png beside each image, white =
keep) read by `bench build --layout cocoedit`: its masks become gt, polarity converted."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.build import BenchParams, build
from editkit import rle, schema, store


def _image_and_mask(folder, stem, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(folder / f"{stem}.png")
    edit = np.zeros((40, 48), bool)
    edit[5 + seed : 20 + seed, 8:30] = True
    Image.fromarray(np.where(edit, 0, 255).astype(np.uint8)).save(folder / f"{stem}_mask.png")  # white = keep
    return edit


def build_release(root):
    truth = {}
    gedit = root / "geditbench"
    meta = {}
    for n, (task, key) in enumerate([("color_alter", "0d6038e1"), ("subject-remove", "a7f3")]):
        truth[("gedit", key)] = _image_and_mask(gedit / "fullset" / task / "en", key, n)
        meta[key] = {"ref_image_path": f"/data/gedit-bench/fullset/{task}/en/{key}.png", "caption": f"edit {key}"}
    meta["broken"] = {"ref_image_path": "/data/gedit-bench/fullset/color_alter/en/missing.png", "caption": "x"}
    meta["escape"] = {"ref_image_path": "../../etc/passwd", "caption": "x"}
    (gedit / "metafile_geditbench.json").write_text(json.dumps(meta))
    imgedit = root / "imgedit"
    meta, types = {}, {}
    for n, (folder, key, kind) in enumerate([("animal", "000000265", "replace"), ("for_add", "000000011", "add")]):
        truth[("imgedit", key)] = _image_and_mask(imgedit / "singleturn" / folder, key, n + 2)
        meta[key] = {"id": f"{folder}/{key}.jpg", "prompt": f"edit {key}"}  # ImgEdit ids name .jpg files
        types[key] = {"id": f"{folder}/{key}.jpg", "prompt": f"edit {key}", "edit_type": kind}
    (imgedit / "metafile_imgeditbench.json").write_text(json.dumps(meta))
    public = root / "ImgEdit" / "Basic"
    public.mkdir(parents=True)
    (public / "basic_edit.json").write_text(json.dumps(types))
    return truth


@pytest.mark.parametrize("bench", ["gedit", "imgedit"])
def test_masked_release_builds_with_its_masks_as_gt(bench, tmp_path):
    truth = build_release(tmp_path / "release")
    params = BenchParams(layout="cocoedit", imgedit_path=str(tmp_path / "release" / "ImgEdit" / "Basic"))
    stats = build(bench, tmp_path / "release", tmp_path / bench, params, progress=False)
    records = [r for _, shard in store.iter_records(tmp_path / bench / "records") for r in shard]
    ok = [r for r in records if schema.is_ok(r)]
    assert len(ok) == 2 and stats["mask_source"] == {"gt": 2}
    for record in ok:
        assert record["mask_source"] == "gt" and record["instruction"] == f"edit {record['origin_key']}"
        np.testing.assert_array_equal(rle.decode(record["mask"]), truth[(bench, record["origin_key"])])
    if bench == "gedit":
        rejected = sorted(r["reject_reason"] for r in records if not schema.is_ok(r))
        assert len(rejected) == 2 and all("missing file" in reason for reason in rejected)
        assert any("outside the dataset root" in reason for reason in rejected)  # a path outside the release is refused
        assert {json.loads(r["meta"])["task_type"] for r in ok} == {"color_alter", "subject-remove"}
    else:
        assert {r["edit_type"] for r in ok} == {"replace", "add"}


def test_imgedit_without_types_is_rejected_with_the_reason(tmp_path):
    build_release(tmp_path / "release")
    build("imgedit", tmp_path / "release", tmp_path / "out", BenchParams(layout="cocoedit", imgedit_path=None),
          progress=False)
    records = [r for _, shard in store.iter_records(tmp_path / "out" / "records") for r in shard]
    assert records and all("no edit_type" in r["reject_reason"] for r in records)
    with pytest.raises(FileNotFoundError, match="metafile_geditbench.json"):
        build("gedit", tmp_path, tmp_path / "none", BenchParams(layout="cocoedit"), progress=False)
