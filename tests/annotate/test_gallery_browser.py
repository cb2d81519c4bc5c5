"""The `editkit view` gallery in a real browser (Debian chromium via Selenium), opened from disk: filter to one reject
reason, see exactly those records with their thumbnails loaded, and nothing requested but local files. Also writes
the screenshot the README shows (docs/gallery.png)."""
from __future__ import annotations

from pathlib import Path

import pytest

from curate import gallery
from tests.curate.test_gallery import make_stage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser():
    from tests.support.browser import driver_or_skip

    web = driver_or_skip(size=(1280, 900))
    yield web
    web.quit()


def _wait_ready(web, previous: str | None = None) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    def ready(w):
        value = w.find_element("id", "status").get_attribute("data-ready")
        return value if value and value != previous else None

    return WebDriverWait(web, 20).until(ready)


def _images_loaded(web) -> bool:
    return web.execute_script("const i = [...document.querySelectorAll('#grid img')];"
                              "return i.length > 0 && i.every((x) => x.complete && x.naturalWidth > 0);")


def test_filter_by_reject_reason_from_disk(browser, tmp_path):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.support.browser import docs_screenshot, page_requests

    data = make_stage(tmp_path, n=24)
    out = tmp_path / "copied"
    gallery.build("select", data, tmp_path / "gallery", progress=False)
    (tmp_path / "gallery").rename(out)  # the folder stands alone: it still works where it is moved to
    records = gallery_records(out)
    reason = "mask_too_large"
    expected = {r["id"] for r in records if r["reject_reason"] == reason}
    assert 0 < len(expected) < len(records)

    browser.get((out / "index.html").as_uri())
    token = _wait_ready(browser)
    assert len(browser.find_elements("css selector", "#grid .card")) == len(records)
    Select(browser.find_element("id", "f-reason")).select_by_value(
        str(gallery_vocab(out)["reject_reason"].index(reason)))
    token = _wait_ready(browser, token)
    cards = browser.find_elements("css selector", "#grid .card")
    assert {c.get_attribute("data-id") for c in cards} == expected
    assert all(reason in c.text for c in cards)  # the reason is shown on each card
    WebDriverWait(browser, 20).until(_images_loaded)
    per_card = [len(c.find_elements("tag name", "img")) for c in cards]
    assert all(n >= 4 for n in per_card)  # source, edited, mask, difference (+ shipped mask)
    assert all(url.startswith("file://") for url in page_requests(browser))

    Select(browser.find_element("id", "f-reason")).select_by_index(0)  # back to everything, for the screenshot
    _wait_ready(browser, token)
    WebDriverWait(browser, 20).until(_images_loaded)
    docs_screenshot(browser, "gallery.png", tmp_path)


def gallery_records(out: Path) -> list[dict]:
    from tests.curate.test_gallery import _calls

    return [r for p in sorted((out / "pages").glob("p-*.js")) for r in _calls(p)]


def gallery_vocab(out: Path) -> dict:
    from tests.curate.test_gallery import _calls

    return _calls(out / "meta.js")["vocab"]
