"""Paths inside benchmark releases are data: they must stay inside the release (or the masks folder)."""
from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from benchmarks import build, gedit, imgedit
from benchmarks.items import load_records
from editkit import schema


def _png(seed=0) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def imgedit_copy(bench_sources, tmp_path):
    root = tmp_path / "imgedit"
    shutil.copytree(bench_sources["imgedit"], root)
    edit_json = imgedit.find_edit_json(root)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_png(7))
    entries = json.loads(edit_json.read_text())
    image_root = imgedit.find_image_root(edit_json)
    (image_root / "link.jpg").symlink_to(secret)
    entries["800"] = {"id": "../" * 12 + str(secret).lstrip("/"), "prompt": "x", "edit_type": "remove"}
    entries["801"] = {"id": str(secret), "prompt": "x", "edit_type": "remove"}
    entries["802"] = {"id": "link.jpg", "prompt": "x", "edit_type": "remove"}
    entries["803"] = {"id": "/dev/zero", "prompt": "x", "edit_type": "remove"}
    edit_json.write_text(json.dumps(entries))
    return root, secret


def test_imgedit_ids_outside_the_image_root_are_rejected(imgedit_copy):
    root, secret = imgedit_copy
    items = {i.key: i for i in imgedit.read_imgedit(root)}
    for key in ("800", "801", "802", "803"):
        assert items[key].image_bytes is None and items[key].error.startswith("unsafe image path"), key
    assert all(i.error is None for k, i in items.items() if not k.startswith("8"))
    opted_in = {i.key: i for i in imgedit.read_imgedit(root, allow_outside=True)}
    assert opted_in["801"].image_bytes == secret.read_bytes()  # the explicit opt-in
    assert "not a regular file" in opted_in["803"].error  # still no devices


def test_gedit_path_cells_must_stay_inside_the_dataset(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(3))
    root = tmp_path / "gedit"
    root.mkdir()
    (root / "inside.png").write_bytes(_png(4))
    row = {"task_type": "color_alter", "key": "k", "instruction": "x", "instruction_language": "en"}
    outside = gedit._item({**row, "input_image_raw": {"bytes": None, "path": str(secret)}}, "input_image_raw", root)
    assert outside.image_bytes is None and outside.error.startswith("unsafe source image path")
    inside = gedit._item({**row, "input_image_raw": {"bytes": None, "path": "inside.png"}}, "input_image_raw", root)
    assert inside.error is None and inside.image_bytes == (root / "inside.png").read_bytes()


def test_mask_file_names_from_item_keys_cannot_leave_the_masks_folder(bench_sources, tmp_path):
    root = tmp_path / "imgedit"
    shutil.copytree(bench_sources["imgedit"], root)
    masks = tmp_path / "masks"
    masks.mkdir()
    edit_json = imgedit.find_edit_json(root)
    entries = json.loads(edit_json.read_text())
    first_key, first = next(iter(entries.items()))
    entries = {"../escape": first}
    edit_json.write_text(json.dumps(entries))
    (tmp_path / "escape.png").write_bytes(_png(5))  # masks/../escape.png: outside the masks folder
    build.build("imgedit", root, tmp_path / "out", masks_dir=masks, progress=False)
    (record,) = load_records(tmp_path / "out")
    assert not schema.is_ok(record) and record["reject_reason"].startswith("unsafe mask path")
