"""Per-item pixel metrics against independent computations, judge answer parsing, report tables and comparison."""
import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from benchmarks import judge, report
from benchmarks.pixel_metrics import pixel_metrics
from tests.support.numerics import approx, assert_close


def _reference(source, output, keep):
    """Closed-form PSNR and scikit-image's SSIM map, both over the kept region's pixels only."""
    diff = source.astype(np.float64) - output.astype(np.float64)
    psnr = 10 * math.log10(255.0 ** 2 / (diff[keep] ** 2).mean())
    _, ssim_map = structural_similarity(source, output, channel_axis=2, data_range=255, full=True,
                                      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    return psnr, float(ssim_map.mean(axis=2)[keep].mean())


def test_pixel_metrics_match_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    for height, width in [(33, 47), (64, 64)]:
        source = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        output = np.clip(source.astype(int) + rng.integers(-40, 40, source.shape), 0, 255).astype(np.uint8)
        mask = rng.random((height, width)) > 0.7
        got = pixel_metrics(source, output, mask)["scores"]
        psnr, ssim = _reference(source, output, ~mask)
        values = source.size
        assert_close(got["psnr_bg"], psnr, accumulations=values, growth="linear",
                     why="a float64 MSE over the background's values (/255 vs not), in dB")
        assert_close(got["ssim_bg"], ssim, accumulations=11 * 11 * values, growth="linear", scale=1.0,
                     why="float64 11x11 Gaussian windows (OpenCV vs scipy), then a mean over the background")
        edit = np.abs(source.astype(float) - output.astype(float))[mask].mean() / 255
        assert_close(got["edit_l1"], edit, accumulations=values, why="a float64 mean over the edit region's values")
        assert_close(got["mask_area"], mask.mean(), accumulations=mask.size, why="a float64 mean of mask pixels")


def test_untouched_background_scores_capped_not_infinite():
    image = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    mask = np.zeros((24, 24), bool)
    mask[:5, :5] = True
    got = pixel_metrics(image, image, mask)["scores"]
    assert got["psnr_bg"] == 100.0 and got["edit_l1"] == 0
    assert_close(got["ssim_bg"], 1.0, accumulations=11 * 11 * image.size, growth="linear",
                 why="SSIM of identical backgrounds: float64 windows and a mean")


def test_pixel_metrics_no_uint8_wraparound_and_resize():
    source = np.full((16, 16, 3), 10, np.uint8)
    output = np.full((32, 32, 3), 250, np.uint8)  # other size: resized to the source first
    mask = np.zeros((16, 16), bool)
    mask[:4] = True
    got = pixel_metrics(source, output, mask)["scores"]
    assert_close(got["edit_l1"], 240 / 255, accumulations=source.size, why="a float64 mean of equal values")
    assert_close(got["l1_all"], 240 / 255, accumulations=source.size, why="a float64 mean of equal values")


def test_pixel_metrics_skip_reasons():
    image = np.zeros((8, 8, 3), np.uint8)
    assert pixel_metrics(image, image, None)["skipped"]["psnr_bg"] == "no_mask"
    whole = pixel_metrics(image, image, np.ones((8, 8), bool))
    assert whole["skipped"]["psnr_bg"] == "no_unedited_region" and "edit_l1" in whole["scores"]
    extract = pixel_metrics(image, image, np.eye(8, dtype=bool), pixel_aligned=False)
    assert extract["skipped"]["ssim_bg"] == "not_pixel_aligned" and "psnr_bg" not in extract["scores"]
    with pytest.raises(ValueError, match="mask is"):
        pixel_metrics(image, image, np.ones((4, 4), bool))


def test_judge_parsers():
    assert judge.parse_score_pair('```json\n{"score": [7, 4], "reasoning": "x"}\n```') == (7.0, 4.0)
    for bad in ["no json", '{"score": [7]}', '{"score": [11, 2]}', '{"score": "high"}']:
        with pytest.raises(judge.JudgeError):
            judge.parse_score_pair(bad)
    answer = "Brief reasoning: fine.\nPrompt Compliance: 4\nVisual Seamlessness: 3\nPhysical & Detail Fidelity: 5"
    assert judge.parse_rubric_scores(answer) == [4.0, 3.0, 5.0]
    with pytest.raises(judge.JudgeError):
        judge.parse_rubric_scores("Prompt Compliance: 4\nVisual Seamlessness: 9\nPhysical & Detail Fidelity: 5")
    scores = judge.gedit_scores((8, 6), (7, 9))
    assert scores == {"judge_sc": 6, "judge_pq": 7,
                      "judge_o": approx(math.sqrt(42), accumulations=2, why="sqrt(6 × 7): two roundings")}


def _items(offset):
    return [
        {"category": "remove", "intersection_exist": True, "scores": {"psnr_bg": 30 + offset, "ssim_bg": 0.9,
                                                                             "mask_area": 0.15}},
        {"category": "remove", "intersection_exist": False, "scores": {"psnr_bg": 20 + offset}},
        {"category": "style", "intersection_exist": True, "scores": {"edit_l1": 0.3, "mask_area": 1.0}},
        {"category": "style", "intersection_exist": False, "scores": {}, "error": "generation failed: x"},
    ]


def test_report_tables_and_comparison(tmp_path):
    base = report.build_report("gedit", "base", _items(0))
    run = report.build_report("gedit", "lora", _items(2))
    rows = base["subsets"]["full"]
    assert rows["remove"]["psnr_bg"] == 25 and rows["remove"]["psnr_bg_n"] == 2 and rows["remove"]["ssim_bg_n"] == 1
    assert rows["style"]["psnr_bg"] is None and rows["style"]["failed"] == 1 and rows["all"]["n"] == 4
    assert base["subsets"]["intersection"]["remove"]["psnr_bg"] == 30
    assert base["mask_area_histogram"]["counts"] == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    markdown = report.to_markdown(base)
    assert "| remove | 2 | 25.00 | 0.900 |" in markdown and "## intersection" in markdown
    paths = report.write_report(tmp_path, run, baseline=base)
    comparison = report.load_report(tmp_path)  # the run's own report round-trips
    assert comparison["run"] == "lora"
    compare_md = paths["compare_markdown"].read_text()
    assert "25.00 → 27.00 (+2.000 ✓)" in compare_md
    assert paths["plot"].stat().st_size > 1000 and paths["compare_plot"].stat().st_size > 1000
    assert paths["plot_intersection"].is_file() and paths["plot_mask_area"].is_file()
    with pytest.raises(ValueError, match="cannot compare"):
        report.compare(run, report.build_report("imgedit", "x", _items(0)))
