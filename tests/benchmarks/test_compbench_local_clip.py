"""CompBench's local CLIP scores (LC-T, LC-I) through transformers' CLIPProcessor, for every region shape, against an
independent re-implementation of its ``eval_all.py``: images and mask resized to 512² with PIL, the box of the mask's
pixels cropped the way PIL crops (right/bottom exclusive), LC-T as torchmetrics' CLIPScore computes it (the crop as
a uint8 C×H×W tensor, 100·max(cos, 0), mean over the captions, " " when there is none), LC-I as the cosine of the two
crops' image features processed together; a region whose box has no width or height scores 0 for both."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import evaluation as evaluate
from benchmarks.build import build
from benchmarks.compbench import CompBenchScorer, local_box
from editkit.clip import TransformersClip
from tests.support.numerics import assert_close, assert_exact

CHAIN = 64 * 2  # the tiny CLIP's towers: 64-wide sums through 2 layers, in float32


def reference_local_clip(reference, output, mask, captions, gt):
    """LC-T / LC-I written from CompBench's eval_all.py and torchmetrics' clip_score, with CLIPModel's forward."""
    model, processor = reference
    edited = Image.fromarray(output).convert("RGB").resize((512, 512), resample=Image.Resampling.BICUBIC)
    mask_img = Image.fromarray(mask.astype(np.uint8) * 255).convert("L").resize((512, 512),
                                                                                resample=Image.Resampling.NEAREST)
    y, x = np.where(np.array(mask_img) > 0)
    if len(y) == 0 or not (x.max() > x.min() and y.max() > y.min()):
        return {"lc_t": 0.0, "lc_i": 0.0}
    box = (x.min(), y.min(), x.max(), y.max())
    crop = edited.crop(box)
    pixels = torch.tensor(np.array(crop)).permute(2, 0, 1)
    scores = []
    with torch.no_grad():
        for caption in [c for c in captions if c] or [" "]:
            out = model(**processor(text=[caption], images=[pixels], return_tensors="pt", padding=True))
            scores.append(max(100.0 * float((out.image_embeds[0].double() * out.text_embeds[0].double()).sum()), 0))
        result = {"lc_t": float(np.mean(scores))}
        if gt is not None:
            gt_crop = Image.fromarray(gt).convert("RGB").resize((512, 512), resample=Image.Resampling.BICUBIC).crop(box)
            pixel_values = processor(images=[crop, gt_crop], return_tensors="pt", padding=True)["pixel_values"]
            a, b = model.visual_projection(model.vision_model(pixel_values=pixel_values).pooler_output).double()
            result["lc_i"] = float(a @ b / (a.norm() * b.norm()))
    return result


def _mask(shape, *cells):
    mask = np.zeros(shape, bool)
    for rows, cols in cells:
        mask[rows, cols] = True
    return mask


# (name, image size, mask cells, LC scored?) — at 512² the mask is what the benchmark crops
REGIONS = [
    ("rectangle", 512, [(slice(100, 200), slice(50, 300))], True),
    ("scattered pixels", 512, [(10, 20), (300, 400), (150, 33)], True),
    ("two rows: a one-pixel-high crop", 512, [(slice(40, 42), slice(10, 200))], True),
    ("two columns: a one-pixel-wide crop", 512, [(slice(10, 200), slice(40, 42))], True),
    ("four rows: a three-pixel-high crop", 512, [(slice(40, 44), slice(10, 200))], True),
    ("touching the bottom-right corner", 512, [(slice(500, 512), slice(480, 512))], True),
    ("one row", 512, [(40, slice(10, 200))], False),
    ("one column", 512, [(slice(10, 200), 40)], False),
    ("one pixel", 512, [(7, 9)], False),
    ("empty", 512, [], False),
    ("one row of a smaller image (8 rows at 512²)", 64, [(5, slice(3, 30))], True),
    ("one row of a larger image (lost at 512²)", 1030, [(1, slice(3, 300))], False),
]


@pytest.fixture(scope="module")
def tiny_clip(tiny_hf_clip_dir):
    return TransformersClip(tiny_hf_clip_dir, device="cpu")


@pytest.fixture(scope="module")
def reference(tiny_hf_clip_dir):
    """The same folder loaded separately for the reference computation."""
    from transformers import CLIPModel, CLIPProcessor

    return (CLIPModel.from_pretrained(tiny_hf_clip_dir, local_files_only=True).eval(),
            CLIPProcessor.from_pretrained(tiny_hf_clip_dir, local_files_only=True))


@pytest.mark.parametrize("name,size,cells,scored", REGIONS, ids=[r[0] for r in REGIONS])
def test_local_clip_follows_the_benchmark_for_every_region_shape(tiny_clip, reference, name, size, cells,
                                                                  scored):
    rng = np.random.default_rng(len(name))
    output, gt = (rng.integers(0, 256, (size, size + 16, 3), dtype=np.uint8) for _ in range(2))
    mask = _mask((size, size + 16), *cells)
    scorer = CompBenchScorer(lpips_model=None, clip=tiny_clip)
    got = scorer.local_clip(output, mask, "a red apple", gt)
    want = reference_local_clip(reference, output, mask, ["a red apple"], gt)
    assert set(got) == {"lc_t", "lc_i"}
    if not scored:
        assert_exact(got, {"lc_t": 0.0, "lc_i": 0.0}, why="the benchmark scores 0 where the box has no area")
        return
    assert_close(got["lc_t"], want["lc_t"], dtype=np.float32, accumulations=CHAIN, growth="linear", scale=100.0,
                 why="100 × a cosine of float32 embeddings, computed through the model's forward in float64")
    assert_close(got["lc_i"], want["lc_i"], dtype=np.float32, accumulations=CHAIN, growth="linear", scale=1.0,
                 why="a cosine of float32 embeddings, computed through the vision tower in float64")


def test_captions_missing_ground_truth_and_box_rule(tiny_clip, reference):
    rng = np.random.default_rng(3)
    output = rng.integers(0, 256, (96, 80, 3), dtype=np.uint8)
    mask = _mask((96, 80), (slice(10, 50), slice(20, 60)))
    scorer = CompBenchScorer(lpips_model=None, clip=tiny_clip)
    # no caption: the benchmark embeds " "; several captions (multi-object): the mean of their clamped scores
    for captions in ([""], ["a cat", "a dog"]):
        got = scorer.local_clip(output, mask, captions, None)
        want = reference_local_clip(reference, output, mask, captions, None)
        assert "lc_i" not in got  # no ground truth: the benchmark writes NaN and leaves it out of the mean
        assert_close(got["lc_t"], want["lc_t"], dtype=np.float32, accumulations=CHAIN, growth="linear", scale=100.0,
                     why="100 × a cosine of float32 embeddings, computed through the model's forward in float64")
    # the box: inclusive min/max, cropped right/bottom exclusive
    assert local_box(_mask((512, 512), (slice(3, 9), slice(4, 6)))) == (4, 3, 5, 8)
    assert local_box(_mask((512, 512), (slice(3, 9), 4))) is None


def _write_release(root, regions):
    rng = np.random.default_rng(0)
    entries, truth = [], {}
    for k, (size, cells, has_gt) in enumerate(regions):
        relative = f"c{k:02d}/0/0000{k}.png"
        source = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        mask = _mask((size, size), *cells).astype(np.uint8) * 255
        edited = 255 - source
        for folder, array in (("input_image", source), ("mask", mask)) + ((("edited_image", edited),) if has_gt else ()):
            path = root / "tasks" / "replace" / folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        entries.append({"image_path": relative, "instruction": f"replace thing {k}", "caption": f"a thing {k}"})
        truth[f"replace/{relative}"] = (mask > 0, edited if has_gt else None, f"a thing {k}")
    (root / "tasks" / "replace" / "metadata.json").write_text(json.dumps(entries))
    return truth


def test_evaluate_on_the_benchmark_layout_scores_every_region_shape(tiny_clip, reference, tiny_config,
                                                                   kontext_pipe, tmp_path):
    truth = _write_release(tmp_path / "release", [
        (64, [(slice(10, 40), slice(12, 50))], True),   # a rectangle
        (512, [(40, slice(10, 200))], True),             # one row at 512²: LC = 0
        (64, [(slice(10, 40), slice(12, 50))], False),  # no ground truth: no LC-I
    ])
    build("compbench", tmp_path / "release", tmp_path / "built", progress=False)
    no_lpips = lambda a, b: torch.zeros(())  # noqa: E731 - LPIPS is tested in test_compbench.py
    scorer = CompBenchScorer(no_lpips, tiny_clip)
    evaluate.evaluate(tmp_path / "built", tmp_path / "run", tiny_config(), pipe=kontext_pipe, progress=False,
                      compbench=scorer)
    items = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    assert len(items) == len(truth) and all(i["error"] is None for i in items)
    zeros = 0
    for item in items:
        mask, gt, caption = truth[item["key"]]
        output = np.asarray(Image.open(tmp_path / "run" / "outputs" / f"{item['id']}.png").convert("RGB"))
        want = reference_local_clip(reference, output, mask, [caption], gt)
        assert ("lc_i" in item["scores"]) == ("lc_i" in want)
        zeros += want == {"lc_t": 0.0, "lc_i": 0.0}
        for key, scale in (("lc_t", 100.0), ("lc_i", 1.0)):
            if key in want:
                assert_close(item["scores"][key], want[key], dtype=np.float32, accumulations=CHAIN, growth="linear",
                             scale=scale, why="float32 CLIP embeddings, reference through the forward in float64")
    assert zeros == 1
