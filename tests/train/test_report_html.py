"""The training run's page (train/report_html.py): an evaluation's samples are recorded through the runtime's rewards
and forgotten on resume; a tiny real run writes the page, and a real browser (Debian chromium via Selenium) opened
from disk shows its curves and the sample grid of each evaluation with every image loaded."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from train.report_html import TrainReport
from train.rewards import RewardInputs

REPO = Path(__file__).resolve().parents[2]


class _Runtime:
    """What :meth:`TrainReport.capture` needs of a runtime: a ``rewards`` callable (total, per-reward parts)."""

    def __init__(self) -> None:
        self.rewards = self.score

    @staticmethod
    def score(inputs: RewardInputs):
        total = inputs.images.mean(dim=(1, 2, 3)).double()
        return total, {"brightness": total}


def _inputs(n: int, seed: int) -> RewardInputs:
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 24, 24, dtype=torch.bool)
    masks[:, 4:12, 6:14] = True
    return RewardInputs(torch.rand(n, 3, 24, 24, generator=g), torch.rand(n, 3, 24, 24, generator=g), masks,
                        [f"prompt {i}" for i in range(n)], ["color_alter"] * n)


def test_samples_are_recorded_through_the_rewards_and_forgotten_on_resume(tmp_path):
    runtime, report = _Runtime(), TrainReport(tmp_path)
    original = runtime.rewards
    expected = {}
    for step in (2, 4):
        with report.capture(runtime, step):
            assert runtime.rewards is not original
            first = _inputs(2, step)
            total, _ = runtime.rewards(first)  # two calls in one evaluation: one step, three samples
            runtime.rewards(_inputs(1, step + 100))
            expected[step] = total.tolist()
        assert runtime.rewards is original
    lines = [json.loads(line) for line in (tmp_path / "report" / "samples.jsonl").read_text().splitlines()]
    assert [e["step"] for e in lines] == [2, 4] and [len(e["samples"]) for e in lines] == [3, 3]
    for evaluation in lines:
        samples = evaluation["samples"]
        assert [s["reward"] for s in samples[:2]] == expected[evaluation["step"]]
        assert all(s["rewards"]["brightness"] == s["reward"] for s in samples)
        assert [s["prompt"] for s in samples] == ["prompt 0", "prompt 1", "prompt 0"]
        assert all(s["bg_psnr"] is not None and set(s["thumbs"]) == {"source", "mask", "output", "diff"}
                   for s in samples)
        assert all((tmp_path / "report" / rel).is_file() for s in samples for rel in s["thumbs"].values())
    (tmp_path / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward_mean": 0.1 * s, "loss": 1.0 / s, **({"eval_reward_mean": 0.5} if s % 2 == 0
                                                                          else {})}) + "\n" for s in range(1, 5)))
    text = report.write().read_text()
    assert 'data-key="reward_mean" data-points="4"' in text and 'data-key="eval_reward_mean" data-points="2"' in text
    assert text.count('class="evaluation"') == 2 and 'data-step="4" open' in text

    report.truncate_after(3)  # resumed from the step-3 checkpoint: step 4 is evaluated again
    text = report.write().read_text()
    assert text.count('class="evaluation"') == 1 and 'data-step="2" open' in text


def test_a_runtime_without_image_rewards_gets_curves_only(tmp_path):
    class NoRewards:
        pass

    report = TrainReport(tmp_path)
    with report.capture(NoRewards(), 1):
        pass
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.25}\n')
    text = report.write().read_text()
    assert not (tmp_path / "report" / "samples.jsonl").exists()
    assert 'data-key="loss" data-points="2"' in text and "no evaluation samples yet" in text


@pytest.fixture(scope="module")
def tiny_run(tiny_kontext_dir, edit_dataset_dir, tmp_path_factory):
    """The cheapest real run that evaluates twice: 2 steps of 1 group of 2 with 2 sampler steps, an evaluation of the
    2 held-out rows after each step."""
    from train.main import run

    out = tmp_path_factory.mktemp("report_run") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(str(REPO / "train" / "configs" / "tiny_kontext.yaml"), [
            f"model.path={tiny_kontext_dir}", f"data.dataset={edit_dataset_dir}", f"output_dir={out}",
            "train.max_steps=2", "train.groups_per_step=1", "train.group_size=2", "train.micro_batch_size=2",
            "sampler.num_steps=2", "sampler.sde_window=[0, 2]", "sampler.train_steps=1", "eval.every=1",
            "checkpoint.every=0", "logging.progress=false", "logging.tensorboard=false"])
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def browser():
    from tests.support.browser import driver_or_skip

    web = driver_or_skip(size=(1280, 900))
    yield web
    web.quit()


def test_browser_shows_curves_and_each_evaluations_samples(browser, tiny_run):
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import page_requests

    metrics = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all("eval_reward_mean" in m for m in metrics)
    browser.get((tiny_run / "report" / "index.html").as_uri())
    curves = browser.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#curves figure.curve')].map((f) =>"
        " [f.dataset.key, f.querySelector('polyline').getAttribute('points').trim().split(/\\s+/).length]));")
    for key in ("reward_mean", "loss", "eval_reward_mean", "eval_bg_psnr"):  # one point per finite value logged
        assert curves[key] == sum(math.isfinite(m.get(key, math.nan)) for m in metrics), key
    assert curves["eval_reward_mean"] == 2 and curves["eval_bg_psnr"] == 2
    evaluations = browser.find_elements("css selector", "#samples details.evaluation")
    assert [e.get_attribute("data-step") for e in evaluations] == ["2", "1"]  # newest first, open
    assert evaluations[0].get_attribute("open") is not None
    newest = evaluations[0]
    for row in ("source", "mask", "output", "diff"):
        assert len(newest.find_elements("css selector", f"tr.row-{row} img")) == 2  # the 2 held-out rows

    def loaded(web):
        return web.execute_script("const i = [...document.querySelectorAll('details[open] img')];"
                                  "return i.length === 8 && i.every((x) => x.complete && x.naturalWidth > 0);")

    WebDriverWait(browser, 20).until(loaded)
    shown = [b.text for b in newest.find_elements("css selector", "tr.row-scores b.reward")]
    rewards = [float(text) for text in shown if text != "—"]  # a NaN reward (undefined) shows as a dash
    assert len(shown) == 2 and rewards
    from tests.support.numerics import assert_close

    assert_close(sum(rewards) / len(rewards), metrics[-1]["eval_reward_mean"], rtol=1e-3,
                 why="the page's per-sample rewards, printed with 4 significant digits, average to the logged mean")
    assert all(url.startswith("file://") for url in page_requests(browser))


def test_long_curves_are_thinned_to_their_extremes():
    from train.report_html import MAX_POINTS, chart, thin

    points = [(step, float(step % 7)) for step in range(1, 10_001)]
    points[4321] = (4322, 99.0)  # one spike
    kept = thin(points)
    assert len(kept) <= MAX_POINTS + 2 and (4322, 99.0) in kept
    assert [s for s, _ in kept] == sorted(s for s, _ in kept)
    assert sorted({v for _, v in kept})[0] == 0.0 and sorted({v for _, v in kept})[-2:] == [6.0, 99.0]
    svg = chart("loss", points)
    assert 'data-points="10000"' in svg and svg.count(",") >= len(kept)
    assert thin(points[:50]) == points[:50]
