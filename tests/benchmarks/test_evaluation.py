"""`evaluate` end to end with a tiny FLUX.1-Kontext pipeline on 4-item fixture benchmarks in both formats."""
import json
import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from benchmarks import evaluation, items
from benchmarks.editor import EditorConfig, working_size
from editkit import rle, store, taxonomy
from tests.support.numerics import assert_close

def _items_by_id(run_dir):
    return {row["id"]: row for row in map(json.loads, (run_dir / "items.jsonl").read_text().splitlines())}


@pytest.mark.parametrize("bench", ["gedit", "imgedit"])
def test_full_run_metrics_match_independent_computation(bench, built, base_runs):
    run, result = base_runs[bench]["dir"], base_runs[bench]
    assert result["stats"]["generated"] == 4 and result["stats"]["generation_failed"] == 0
    rows = _items_by_id(run)
    from PIL import Image

    checked = 0
    for _, records, images in items.iter_benchmark(built[bench]):
        for record in records:
            row = rows[record["id"]]
            source = images.source(record["id"])
            output = np.asarray(Image.open(run / "outputs" / f"{record['id']}.png").convert("RGB"))
            assert output.shape[:2] == working_size(source.shape[1], source.shape[0], 32, 16)[::-1]
            resized = np.asarray(Image.fromarray(output).resize(source.shape[1::-1], Image.Resampling.LANCZOS))
            mask = rle.decode(record["mask"])
            keep = ~mask
            assert_close(row["scores"]["mask_area"], mask.mean(), accumulations=mask.size,
                         why="a float64 mean over the mask's pixels")
            diff = np.abs(resized.astype(float) - source.astype(float)) / 255
            assert_close(row["scores"]["edit_l1"], diff[mask].mean(), accumulations=diff[mask].size,
                         why="a float64 mean of |difference| / 255 over the edit region, another order")
            if not taxonomy.get(record["edit_type"]).pixel_aligned or not keep.any():
                assert "psnr_bg" not in row["scores"] and row["skipped"]["psnr_bg"]
                continue
            mse = ((resized.astype(float) - source.astype(float))[keep] ** 2).mean()
            assert_close(row["scores"]["psnr_bg"], 10 * math.log10(255 ** 2 / mse), accumulations=keep.sum() * 3,
                         growth="linear", why="a float64 MSE over the background's values (/255 vs not), in dB")
            _, ssim_map = structural_similarity(source, resized, channel_axis=2, data_range=255, full=True,
                                              gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
            assert_close(row["scores"]["ssim_bg"], ssim_map.mean(axis=2)[keep].mean(), scale=1.0,
                         accumulations=11 * 11 * ssim_map.size, growth="linear",
                         why="float64 11x11 Gaussian windows (OpenCV vs scipy), then a mean over the background")
            checked += 1
    assert checked == 3  # one whole-image / not pixel-aligned item per fixture
    report = json.loads((run / "report.json").read_text())
    assert report["subsets"]["full"]["all"]["n"] == 4 and report["subsets"]["full"]["all"]["psnr_bg_n"] == 3
    assert ("intersection" in report["subsets"]) == (bench == "gedit")
    markdown = (run / "report.md").read_text()
    assert "PSNR bg" in markdown and (run / "plots" / "full.png").stat().st_size > 1000


def test_resume_after_interruption(built, tiny_config, kontext_pipe, tmp_path):
    run = tmp_path / "run"
    done = []

    def stop_after_two(record_id):
        done.append(record_id)
        if len(done) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(built["gedit"], run, tiny_config(), pipe=kontext_pipe, on_item=stop_after_two,
                          progress=False)
    assert sorted(p.stem for p in (run / "outputs").glob("*.png")) == sorted(done)
    first = {d: (run / "outputs" / f"{d}.png").read_bytes() for d in done}
    calls = []
    original = kontext_pipe.__class__.__call__

    class Counting:
        def __getattr__(self, name):
            return getattr(kontext_pipe, name)

        def __call__(self, **kwargs):
            calls.append(len(kwargs["prompt"]))
            return original(kontext_pipe, **kwargs)

    counting = Counting()
    counting.__class__.__name__ = "FluxKontextPipeline"  # the family table is keyed by class name
    result = evaluation.evaluate(built["gedit"], run, tiny_config(), pipe=counting, progress=False)
    assert result["stats"]["cached"] == 2 and result["stats"]["generated"] == 2 and sum(calls) == 2
    assert all((run / "outputs" / f"{d}.png").read_bytes() == data for d, data in first.items())
    with pytest.raises(ValueError, match="other settings"):
        evaluation.evaluate(built["gedit"], run, tiny_config(seed=1), pipe=kontext_pipe, progress=False)


def test_outputs_do_not_depend_on_batching(built, tiny_config, kontext_pipe, base_runs, tmp_path):
    evaluation.evaluate(built["imgedit"], tmp_path / "b4", tiny_config(batch_size=4), pipe=kontext_pipe, progress=False)
    for path in (base_runs["imgedit"]["dir"] / "outputs").glob("*.png"):  # made with batch size 1
        a = store.decode_rgb(path.read_bytes()).astype(int)
        b = store.decode_rgb((tmp_path / "b4" / "outputs" / path.name).read_bytes()).astype(int)
        assert np.abs(a - b).max() <= 2  # same seed per item; batched matmuls may differ in the last bit


def test_lora_run_compared_with_base(built, tiny_config, tiny_lora, base_runs, tmp_path):
    """A real LoRA loaded through load_lora_weights changes the outputs; --baseline gives the side-by-side table."""
    base = base_runs["gedit"]
    lora = evaluation.evaluate(built["gedit"], tmp_path / "lora", tiny_config(lora=str(tiny_lora)),
                             baseline_dir=base["dir"], progress=False)
    some = next((base["dir"] / "outputs").glob("*.png")).name
    assert (base["dir"] / "outputs" / some).read_bytes() != (tmp_path / "lora" / "outputs" / some).read_bytes()
    compare = json.loads((tmp_path / "lora" / "compare.json").read_text())
    cell = compare["subsets"]["full"]["all"]["psnr_bg"]
    assert_close(cell["baseline"], base["report"]["subsets"]["full"]["all"]["psnr_bg"], accumulations=1,
                 why="the baseline report's value, read back")
    assert_close(cell["delta"], cell["run"] - cell["baseline"], accumulations=1, scale=abs(cell["run"]),
                 why="one subtraction: its error is relative to the operands (dB), not to the small delta")
    markdown = lora["paths"]["compare_markdown"].read_text()
    assert "lora vs baseline base" in markdown and "→" in markdown
    assert (tmp_path / "lora" / "plots" / "compare.png").is_file()


def _judge_reply(request):
    text = request.text
    if "over-editing" in text:
        return '{"score": [8, 6], "reasoning": "ok"}' if "red" not in text else "I cannot rate this."
    if "naturalness" in text:
        return '```json\n{"score": [7, 9], "reasoning": "fine"}\n```'
    return "Looks right.\nPrompt Compliance: 4\nVisual Seamlessness: 3\nPhysical & Detail Fidelity: 5"


@pytest.mark.parametrize("bench", ["gedit", "imgedit"])
def test_judge_scores_through_scripted_server(bench, built, tiny_config, kontext_pipe, warm_run):
    run = warm_run(bench)
    from editkit.mllm.config import ClientConfig
    from tests.support.scripted_server import ScriptedServer

    with ScriptedServer(_judge_reply) as server:
        config = ClientConfig(backend="openai", endpoint=server.url, model="scripted", cache_dir="", retries=0)
        judge, client = evaluation.make_judge(bench, built[bench], config)
        try:
            result = evaluation.evaluate(built[bench], run, tiny_config(), judge=judge,
                                       pipe=kontext_pipe, progress=False)
            sent = server.count
            assert result["stats"]["generated"] == 0  # outputs came from the shared run
            # the raw answers are cached per item: a rerun sends nothing
            evaluation.evaluate(built[bench], run, tiny_config(), judge=judge, pipe=kontext_pipe,
                              progress=False)
            assert server.count == sent
        finally:
            client.close()
        assert all(r.n_images == (2 if "naturalness" not in r.text else 1) for r in server.requests)
    rows = _items_by_id(run)
    if bench == "gedit":
        assert sent == 8  # SC + PQ per item
        red = [r for r in rows.values() if r["key"].endswith("0")]  # item 0 is "Remove the red square."
        assert "malformed judge answer" in red[0]["skipped"]["judge"] and "judge_o" not in red[0]["scores"]
        good = [r for r in rows.values() if "judge_o" in r["scores"]]
        assert len(good) == 3
        for r in good:
            assert_close(r["scores"]["judge_o"], math.sqrt(42), accumulations=2, why="sqrt(6 × 7): two roundings")
        assert result["report"]["subsets"]["full"]["all"]["judge_sc"] == 6
    else:
        assert sent == 4
        assert all(r["scores"]["judge_avg"] == 4 for r in rows.values())
        # the benchmark's own rubric (prompts.json of the local copy) was used, pinned by its hash
        assert result["report"]["judge"]["prompt_version"].startswith("imgedit-prompts-")
        assert json.loads(next((run / "judge").glob("*.json")).read_text())["raw"][0][0].startswith("Looks")


def test_judge_repeats_report_mean_and_spread(built, tiny_config, kontext_pipe, warm_run, tmp_path):
    run = warm_run("imgedit")
    from editkit.mllm.config import ClientConfig
    from tests.support.scripted_server import ScriptedServer

    answers = iter([3, 5] * 100)

    def reply(request):
        k = next(answers)
        return f"ok\nPrompt Compliance: {k}\nVisual Seamlessness: {k}\nPhysical & Detail Fidelity: {k}"

    with ScriptedServer(reply) as server:
        config = ClientConfig(backend="openai", endpoint=server.url, model="scripted", cache_dir=str(tmp_path / "c"),
                              retries=0, max_concurrency=1)
        judge, client = evaluation.make_judge("imgedit", built["imgedit"], config, repeats=2)
        try:
            result = evaluation.evaluate(built["imgedit"], run, tiny_config(), judge=judge,
                                       pipe=kontext_pipe, progress=False)
        finally:
            client.close()
        assert server.count == 8  # 4 items x 2 repeats: the repeats are not served from the client's cache
    row = result["report"]["subsets"]["full"]["all"]
    assert row["judge_avg"] == 4 and row["judge_avg_std"] == 1
    assert "judge spread" in (run / "report.md").read_text()


def test_qwen_image_edit_pipeline(built, tiny_qwen_edit, tmp_path, monkeypatch):
    """The Qwen-Image-Edit family (true CFG with a negative prompt per item), loaded by DiffusionPipeline."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as qwen_edit

    # the pipeline resizes its condition image to ~1024² whatever the output size; keep the tiny test tiny
    original = qwen_edit.calculate_dimensions
    monkeypatch.setattr(qwen_edit, "calculate_dimensions", lambda area, ratio: original(32 * 32, ratio))
    config = EditorConfig(model=str(tiny_qwen_edit), steps=2, resolution=32, multiple_of=16, device="cpu",
                          batch_size=2)
    result = evaluation.evaluate(built["imgedit"], tmp_path / "run", config, progress=False)
    assert result["stats"]["generated"] == 4 and result["stats"]["generation_failed"] == 0
    rows = _items_by_id(tmp_path / "run")
    assert sum("psnr_bg" in r["scores"] for r in rows.values()) == 3  # extract has none
    assert json.loads((tmp_path / "run" / "run.json").read_text())["editor"]["model"] == str(tiny_qwen_edit)


def test_unreviewed_benchmark_scores_only_what_it_can(bench_sources, tiny_config, kontext_pipe, warm_run, tmp_path):
    """Without masks (no grounding, no review yet) local items get no masked scores, with the reason recorded."""
    run = warm_run("gedit")
    from benchmarks import build

    build.build("gedit", bench_sources["gedit"], tmp_path / "bench", progress=False)
    result = evaluation.evaluate(tmp_path / "bench", run, tiny_config(), pipe=kontext_pipe,
                               progress=False)
    rows = _items_by_id(run)
    no_mask = [r for r in rows.values() if r["mask_source"] == "none"]
    assert len(no_mask) == 3 and all(r["skipped"]["psnr_bg"] == "no_mask" and "l1_all" in r["scores"] for r in no_mask)
    whole = [r for r in rows.values() if r["mask_source"] == "whole"]
    assert whole[0]["skipped"]["psnr_bg"] == "no_unedited_region" and whole[0]["scores"]["mask_area"] == 1
    assert result["report"]["subsets"]["full"]["all"]["psnr_bg_n"] == 0


def test_generation_failures_are_recorded_and_retried(built, tiny_config, kontext_pipe, tmp_path):
    """An exception (e.g. OOM) or a NaN output fails only its items, with the reason; a rerun retries just those."""
    from types import SimpleNamespace

    class Flaky:
        def __getattr__(self, name):
            return getattr(kontext_pipe, name)

        def __call__(self, **kwargs):
            prompt = kwargs["prompt"][0]
            if "red" in prompt:
                raise RuntimeError("CUDA out of memory (simulated)")
            result = kontext_pipe(**kwargs)
            if "blue" in prompt:
                return SimpleNamespace(images=np.full_like(np.asarray(result.images), np.nan))
            return result

    flaky = Flaky()
    flaky.__class__.__name__ = "FluxKontextPipeline"
    first = evaluation.evaluate(built["gedit"], tmp_path / "run", tiny_config(), pipe=flaky, progress=False)
    assert first["stats"]["generated"] == 2 and first["stats"]["generation_failed"] == 2
    errors = sorted(r["error"] for r in _items_by_id(tmp_path / "run").values() if r["error"])
    assert "CUDA out of memory" in errors[0] and "non-finite" in errors[1]
    assert first["report"]["subsets"]["full"]["all"]["failed"] == 2
    second = evaluation.evaluate(built["gedit"], tmp_path / "run", tiny_config(), pipe=kontext_pipe,
                               progress=False)
    assert second["stats"] == {**second["stats"], "cached": 2, "generated": 2, "generation_failed": 0}


def test_judge_server_down_is_recorded_not_cached(built, tiny_config, kontext_pipe, warm_run):
    run = warm_run("imgedit")
    from editkit.mllm.config import ClientConfig
    from tests.support.scripted_server import Reply, ScriptedServer

    with ScriptedServer(lambda request: Reply(status=503)) as server:
        config = ClientConfig(backend="openai", endpoint=server.url, model="scripted", cache_dir="", retries=0)
        judge, client = evaluation.make_judge("imgedit", built["imgedit"], config)
        try:
            result = evaluation.evaluate(built["imgedit"], run, tiny_config(), judge=judge,
                                       pipe=kontext_pipe, progress=False)
        finally:
            client.close()
    assert result["stats"]["judge_failed"] == 4 and not list((run / "judge").glob("*.json"))
    assert all("judge request failed" in r["skipped"]["judge"] for r in _items_by_id(run).values())


def test_mask_rejected_in_review_is_not_scored(built, base_runs):
    """A reviewer's "reject" (no usable mask) removes the masked scores, with that reason."""
    from benchmarks.editor import OutputCache

    record = next(r for r in items.load_records(built["gedit"]) if r["mask_source"] == "gt")
    record["review_status"] = "reject"
    run = base_runs["gedit"]["dir"]
    cache = OutputCache(run, json.loads((run / "run.json").read_text())["editor"])
    source = next(images.source(record["id"]) for _, _, images in items.iter_benchmark(built["gedit"]))
    result = evaluation._score_item(record, source, cache, {})
    assert "psnr_bg" not in result["scores"] and result["skipped"]["psnr_bg"] == "mask_rejected_in_review"
    assert "l1_all" in result["scores"]
