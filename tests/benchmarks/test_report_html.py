"""``report.html`` of a benchmark run (benchmarks/report_html.py): every item's images and scores, the baseline's
beside them, thumbnails cached by content; and in a real browser (Debian chromium via Selenium), opened from disk
after the run folder was moved: sorting by a metric orders the items, and every image loads. Also writes the
screenshot docs/reports.md shows (docs/report.png)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks import evaluation, items, report, report_html
from benchmarks.editor import EditorConfig



class ShiftPipe:
    """A stand-in editing pipeline: each output is the (resized) input brightened by an amount that depends on the
    prompt, so items score differently and the two runs differ."""

    def __init__(self, shift: float) -> None:
        self.shift = shift

    def __call__(self, image, prompt, height, width, **_):
        return SimpleNamespace(images=[np.clip(np.asarray(im, np.float32) / 255 + self.shift * (1 + len(p) % 7) / 8, 0, 1)
                                       for im, p in zip(image, prompt)])


@pytest.fixture(scope="module")
def runs(built, tmp_path_factory):
    """A base run and a run compared with it on the 4-item GEdit fixture (no model: :class:`ShiftPipe`)."""
    root = tmp_path_factory.mktemp("report_runs")
    config = EditorConfig(model="shift", steps=1, resolution=32, multiple_of=16, device="cpu")
    evaluation.evaluate(built["gedit"], root / "base", config, pipe=ShiftPipe(0.05), progress=False)
    evaluation.evaluate(built["gedit"], root / "run", config, pipe=ShiftPipe(0.4), baseline_dir=root / "base",
                        progress=False)
    return root


def page_data(page: Path) -> dict:
    return page_data_text(page.read_text())


def _rows(run: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (run / "items.jsonl").read_text().splitlines())}


def test_page_holds_every_item_with_both_runs_images_and_scores(runs, built):
    run, base = runs / "run", runs / "base"
    data = page_data(run / "report.html")
    rows, base_rows = _rows(run), _rows(base)
    assert [i["id"] for i in data["items"]] == list(rows) and data["baseline"] == "base"
    records = {r["id"]: r for r in items.load_records(built["gedit"])}
    for item in data["items"]:
        row = rows[item["id"]]
        assert item["scores"] == row["scores"] and item["baseline"]["scores"] == base_rows[item["id"]]["scores"]
        assert item["instruction"] == records[item["id"]]["instruction"]
        expected = {"source", "output", "baseline"} | ({"mask"} if records[item["id"]]["mask"] else set())
        assert set(item["images"]) == expected
        for rel in item["images"].values():
            assert not Path(rel).is_absolute() and (run / rel).is_file()
        assert item["images"]["output"] != item["images"]["baseline"]  # the two runs' outputs differ
    assert {"psnr_bg", "ssim_bg", "edit_l1", "mask_area"} <= {c["key"] for c in data["columns"]}
    assert data["subsets"]["full"]["all"]["n"] == 4 and data["baseline_subsets"]["full"]["all"]["n"] == 4
    # every thumbnail shown is on disk and nothing else is: the folder holds what the page shows
    shown = {run / rel for item in data["items"] for rel in item["images"].values()}
    assert set((run / "thumbs").glob("*/*.jpg")) == shown
    stamps = {p: p.stat().st_mtime_ns for p in shown}
    report.write_comparison(run, report.load_report(run), report.load_report(base))  # `bench compare` again
    assert {p: p.stat().st_mtime_ns for p in (run / "thumbs").glob("*/*.jpg")} == stamps  # all reused
    assert str(runs) not in (run / "report.html").read_text()  # only relative paths: the folder can move


def test_page_without_the_built_benchmark_and_text_that_would_end_the_script(runs):
    """A run whose benchmark folder is gone still gets its page (outputs and scores); no text can close the inline
    data's script element."""
    data = report_html.page_data(runs / "base", {**json.loads((runs / "base" / "report.json").read_text()),
                                                 "bench_data": str(runs / "gone")}, metrics=report.METRICS)
    assert not data["sources"] and all(set(i["images"]) == {"output"} for i in data["items"])
    data["items"][0]["instruction"] = "<!--<script></script><script>alert(1)</script>"
    page = report_html.render(data)
    assert "<script>alert(1)" not in page and "<!--" not in page
    assert page_data_text(page)["items"][0]["instruction"] == data["items"][0]["instruction"]


def page_data_text(text: str) -> dict:
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def browser():
    from tests.support.browser import driver_or_skip

    web = driver_or_skip(size=(1400, 1000))
    yield web
    web.quit()


def _column(web, key: str) -> list[tuple[str, float | None]]:
    return web.execute_script(
        "return [...document.querySelectorAll('#items tbody tr')].map((tr) => {"
        f"  const td = tr.querySelector('td[data-col=\"{key}\"]');"
        "  return [tr.dataset.id, td.hasAttribute('data-value') ? Number(td.dataset.value) : null]; });")


def _images_loaded(web) -> bool:
    return web.execute_script("const i = [...document.querySelectorAll('#items img')];"
                              "return i.length > 0 && i.every((x) => x.complete && x.naturalWidth > 0);")


def test_browser_sorts_by_a_metric_with_images_loaded(browser, runs, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import docs_screenshot, page_requests

    moved = tmp_path / "copied-run"
    shutil.copytree(runs / "run", moved)  # the run folder stands alone wherever it is copied
    rows = _rows(moved)
    browser.get((moved / "report.html").as_uri())
    assert [i for i, _ in _column(browser, "psnr_bg")] == list(rows)  # the run's order until sorted
    values = {i: r["scores"].get("psnr_bg") for i, r in rows.items()}
    assert any(v is None for v in values.values()) and sum(v is not None for v in values.values()) >= 2

    def expect(descending: bool) -> list[str]:
        known = sorted((i for i, v in values.items() if v is not None), key=lambda i: values[i], reverse=descending)
        return known + [i for i, v in values.items() if v is None]  # no value: last, in run order

    header = browser.find_element("css selector", '#items th[data-col="psnr_bg"]')
    header.click()
    shown = _column(browser, "psnr_bg")
    assert [i for i, _ in shown] == expect(descending=True)
    assert all(v == values[i] for i, v in shown)  # JSON and JS numbers round-trip doubles exactly
    assert browser.find_element("css selector", '#items th[data-col="psnr_bg"]').get_attribute("aria-sort") \
        == "descending"
    browser.find_element("css selector", '#items th[data-col="psnr_bg"]').click()
    assert [i for i, _ in _column(browser, "psnr_bg")] == expect(descending=False)
    WebDriverWait(browser, 20).until(_images_loaded)
    per_row = browser.execute_script("return [...document.querySelectorAll('#items tbody tr')]"
                                     ".map((tr) => tr.querySelectorAll('img').length);")
    assert len(per_row) == len(rows) and all(n >= 3 for n in per_row)  # source, output, baseline (+ mask)
    assert browser.find_elements("css selector", "#aggregate table.aggregate")  # the tables on top
    assert all(url.startswith("file://") for url in page_requests(browser))

    header = browser.find_element("css selector", '#items th[data-col="psnr_bg"]')
    header.click()  # highest first again, for the screenshot the docs show
    browser.set_window_size(1400, 1150)
    WebDriverWait(browser, 20).until(_images_loaded)
    docs_screenshot(browser, "report.png", tmp_path)
