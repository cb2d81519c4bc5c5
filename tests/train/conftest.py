"""Shared fixtures for the trainer tests: one tiny FLUX.1-Kontext pipeline per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices on a shared 2-core machine: one thread avoids oversubscription (10x faster here). A module
    takes it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_kontext_pipe(tiny_kontext_dir):
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pretrained(tiny_kontext_dir)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    """One tiny Qwen-Image-Edit pipeline per session (curate/tiny/qwen_image_edit.py)."""
    from tests.support.tiny.qwen_image_edit import build_tiny_qwen_image_edit

    return build_tiny_qwen_image_edit(tmp_path_factory.mktemp("tiny_qwen_image_edit") / "pipe")


def build_edit_dataset(directory, count: int = 6, size: int = 40, seed: int = 0, corrupt: bool = True):
    """A small dataset in the export stage's format (its ``features``): source/edited images, instructions, edit
    type, COCO-RLE edit mask, mask PNG, a score column.

    Each pair recolours a random rectangle (the mask) of a smooth random image; one row has a mask covering the
    whole image (its pixel-consistency reward is undefined -> NaN -> masked out) and, with ``corrupt``, one more
    row has undecodable image bytes."""
    import datasets
    import numpy as np
    from PIL import Image

    from editkit import rle

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        base = rng.random((4, 4, 3))
        source = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR))
        mask = np.zeros((size, size), dtype=bool)
        if i == count - 1:
            mask[:] = True
        else:
            y, x = rng.integers(0, size // 2, 2)
            mask[y : y + size // 3, x : x + size // 3] = True
        edited = source.copy()
        edited[mask] = (rng.random(3) * 255).astype(np.uint8)
        rows.append({"id": f"row{i}", "source_image": Image.fromarray(source), "edited_image": Image.fromarray(edited),
                     "instruction": f"make the box color {i}", "instruction_refined": f"recolour the square {i}",
                     "edit_type": "color_alter", "mask": rle.encode(mask)})
    from curate.stages.export import TEXT_COLUMNS, features as export_features

    features = export_features(["clip_direction"], mask_png=True)  # exactly the export stage's schema
    for row in rows:
        row.update({name: row.get(name, "x") for name in TEXT_COLUMNS}, target_phrases=["square"],
                   mask_image=Image.fromarray(rle.decode(row["mask"]).astype(np.uint8) * 255),
                   score_clip_direction=0.3)
        row.update({name: row.get(name) for name in features})  # provenance columns the fixture leaves empty
    if corrupt:  # undecodable image bytes: the trainer must record and skip this row, not crash
        rows.append({**rows[0], "id": "corrupt", "source_image": {"bytes": b"not an image", "path": None}})
    datasets.Dataset.from_list(rows, features=features).save_to_disk(str(directory))
    return directory


@pytest.fixture(scope="session")
def edit_dataset_dir(tmp_path_factory):
    return build_edit_dataset(tmp_path_factory.mktemp("edit_dataset") / "dataset")
