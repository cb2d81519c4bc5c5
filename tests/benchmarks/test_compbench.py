"""CompBench: its local-task layout (tasks/<task>/metadata.json + input_image/, mask/ (> 0 = edit), edited_image/),
`bench build --bench compbench`, and its metrics in `bench evaluate` against an independent computation."""
from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import evaluation as evaluate
from benchmarks.build import build
from benchmarks.compbench import CompBenchScorer, load_lpips
from editkit import rle, schema, store
from tests.support.numerics import assert_close, assert_exact


def build_compbench(root, per_task=2):
    rng = np.random.default_rng(0)
    truth = {}
    for t, task in enumerate(("add", "remove", "replace")):
        entries = []
        for k in range(per_task):
            relative = f"{t:02x}ca3cb{k}/0/0000{k}.png"
            source = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            mask = np.zeros((48, 64), np.uint8)
            mask[10 : 30 + k, 12:40] = 255
            edited = source.copy()
            edited[mask > 0] = 255 - edited[mask > 0]
            for folder, array in (("input_image", source), ("mask", mask), ("edited_image", edited)):
                (root / "tasks" / task / folder / relative).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / "tasks" / task / folder / relative)
            entries.append({"image_path": relative, "instruction": f"{task} a thing {k}", "caption": f"a thing {k}"})
            truth[f"{task}/{relative}"] = (source, mask > 0, edited)
        entries.append({"image_path": "../../../escape.png", "instruction": "x", "caption": ""})
        (root / "tasks" / task / "metadata.json").write_text(json.dumps(entries))
    return truth


@pytest.fixture(scope="module")
def compbench_built(tmp_path_factory):
    root = tmp_path_factory.mktemp("compbench")
    truth = build_compbench(root / "release")
    stats = build("compbench", root / "release", root / "built", progress=False)
    return root, truth, stats


def test_reader_keeps_masks_as_gt_and_rejects_escapes(compbench_built):
    root, truth, stats = compbench_built
    records = [r for _, shard in store.iter_records(root / "built" / "records") for r in shard]
    ok = [r for r in records if schema.is_ok(r)]
    assert len(ok) == 6 and stats["mask_source"] == {"gt": 6} and stats["rejected"] == {"missing file": 3}
    for record in ok:
        source, mask, _ = truth[record["origin_key"]]
        np.testing.assert_array_equal(rle.decode(record["mask"]), mask)
        assert record["edit_type"] == record["origin_key"].split("/")[0]
        assert json.loads(record["meta"])["gt_path"].endswith(record["origin_key"].split("/", 1)[1])


def test_lpips_never_downloads_and_maps_torchvision_weights(tmp_path, monkeypatch):
    import torchvision

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    with pytest.raises(ValueError, match="weights by path"):
        load_lpips()
    squeeze = torchvision.models.squeezenet1_1(weights=None)
    torch.save(squeeze.state_dict(), tmp_path / "squeeze.pth")
    model = load_lpips(tmp_path / "squeeze.pth")
    assert_exact(model.net.slice1[0].weight, squeeze.features[0].weight, why="weights are copied by name")
    assert_exact(model.net.slice7._modules["12"].expand1x1.weight, squeeze.features[12].expand1x1.weight,
                 why="weights are copied by name")
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert_close(model(x, x), 0.0, dtype=torch.float32, accumulations=1,
                     why="identical inputs: identical features, differences of exactly equal values")
        assert float(model(x, -x)) > 0


def _resize(array, nearest=False):
    return np.asarray(Image.fromarray(array).resize((512, 512), Image.NEAREST if nearest else Image.BICUBIC))


def test_evaluate_reports_compbench_metrics_per_task(compbench_built, tiny_config, kontext_pipe, tiny_hf_clip_dir,
                                                    tmp_path):
    from editkit.clip import TransformersClip
    from tests.benchmarks.test_compbench_local_clip import reference_local_clip
    from transformers import CLIPModel, CLIPProcessor

    root, truth, _ = compbench_built
    clip = TransformersClip(tiny_hf_clip_dir, device="cpu")
    scorer = CompBenchScorer(load_lpips(random_init=True), clip)
    result = evaluate.evaluate(root / "built", tmp_path / "run", tiny_config(), pipe=kontext_pipe, progress=False,
                               compbench=scorer)
    rows = result["report"]["subsets"]["full"]
    assert {"add", "remove", "replace", "all"} <= set(rows)
    for key in ("cb_psnr", "cb_ssim", "cb_lpips", "lc_t", "lc_i"):
        assert rows["all"][f"{key}_n"] == 6
    items = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text().splitlines()]
    item = next(i for i in items if i["error"] is None)
    source, mask, edited = truth[item["key"]]
    output = np.asarray(Image.open(tmp_path / "run" / "outputs" / f"{item['id']}.png").convert("RGB"))
    # CompBench resizes the output straight to 512² (whatever its size), as the scorer does
    keep = 1 - _resize(mask.astype(np.uint8) * 255, nearest=True)[..., None] / 255.0
    a, b = _resize(output) / 255.0 * keep, _resize(source) / 255.0 * keep
    assert_close(item["scores"]["cb_psnr"], 10 * np.log10(1 / np.mean((a - b) ** 2)), accumulations=a.size,
                 growth="linear", why="a float64 MSE over 512² × 3 values, in another order, in dB")
    reference = (CLIPModel.from_pretrained(tiny_hf_clip_dir).eval(), CLIPProcessor.from_pretrained(tiny_hf_clip_dir))
    want = reference_local_clip(reference, output, mask, [f"a thing {item['key'][-5]}"], edited)
    chain = 64 * 2  # the tiny CLIP's towers: 64-wide sums through 2 layers, in float32
    assert_close(item["scores"]["lc_t"], want["lc_t"], dtype=np.float32, accumulations=chain, growth="linear",
                 scale=100.0, why="100 × the cosine of float32 embeddings, reference through the forward in float64")
    assert_close(item["scores"]["lc_i"], want["lc_i"], dtype=np.float32, accumulations=chain, growth="linear",
                 scale=1.0, why="the cosine of float32 embeddings, reference through the vision tower in float64")
    assert "CompBench LPIPS" in (tmp_path / "run" / "report.md").read_text()

