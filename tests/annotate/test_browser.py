"""The full human path in a real browser (Debian chromium via Selenium): paint, erase, choose, reject, submit,
then pull + merge and check the pixels of the merged masks."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from annotate import project, server
from editkit import rle, schema, store
from tests.support.review import make_sample

pytestmark = pytest.mark.integration
SIZE = (120, 160)  # height, width
# "Submit" for a new annotation; "Update" where the task shows an existing one (another reviewer's too)
_SAVE = "//button[normalize-space(.)='Submit' or normalize-space(.)='Update']"


@pytest.fixture(scope="module")
def egress():
    """Every non-loopback host the browser asks for lands here (and nowhere else)."""
    from tests.support.egress import EgressRecorder

    with EgressRecorder() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def browser(egress):
    from tests.support.browser import driver_or_skip

    web = driver_or_skip(resolver_rules=egress.resolver_rules())
    yield web
    web.quit()


def _login(web, params) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    creds = server.credentials(params)
    web.get(server.base_url(params) + "/user/login/")
    web.find_element("name", "email").send_keys(creds.username)
    web.find_element("name", "password").send_keys(creds.password)
    web.find_element("css selector", "button[type=submit], input[type=submit]").click()
    WebDriverWait(web, 60).until(lambda w: "/user/login" not in w.current_url)


def _open(web, params, project_id: int, task_id: int, instruction: str):
    """Open a task's editor, wait until it shows this task and its Konva stage; returns (stage, scale)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    web.get(f"{server.base_url(params)}/projects/{project_id}/data?task={task_id}")
    WebDriverWait(web, 120).until(lambda w: w.find_elements(By.XPATH, f"//*[normalize-space(text())='{instruction}']")
                                  and w.find_elements(By.XPATH, _SAVE))
    stage = WebDriverWait(web, 60).until(lambda w: w.find_elements(By.CSS_SELECTOR, ".konvajs-content"))[0]
    WebDriverWait(web, 60).until(lambda w: stage.rect["width"] > 100)
    return stage, stage.rect["width"] / SIZE[1]


def _drag(web, stage, scale, start, end, steps=12) -> None:
    """A pointer drag between two image pixels (x, y), in small moves as a hand would."""
    from selenium.webdriver.common.action_chains import ActionChains

    width, height = stage.rect["width"], stage.rect["height"]

    def offset(x, y):  # Selenium 4 offsets are from the element's centre
        return (x + 0.5) * scale - width / 2, (y + 0.5) * scale - height / 2

    chain = ActionChains(web).move_to_element_with_offset(stage, *offset(*start)).click_and_hold()
    for k in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * k / steps
        y = start[1] + (end[1] - start[1]) * k / steps
        chain.move_to_element_with_offset(stage, *offset(x, y))
    chain.release().perform()


def _assert_source_visible_under(stage, scale, row: int, cols: tuple[int, int], clear_row: int) -> None:
    """The painted stroke lets the (noisy) source show through: along the stroke the pixels still vary at least a
    fifth as much as on an unpainted row (an opaque brush would leave a flat colour; measured: about 0.3)."""
    import io

    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(stage.screenshot_as_png)).convert("RGB")).astype(float)
    xs = slice(int(cols[0] * scale), int(cols[1] * scale))
    painted = shot[int((row + 0.5) * scale), xs].std(axis=0).mean()
    clear = shot[int((clear_row + 0.5) * scale), xs].std(axis=0).mean()
    assert painted > clear / 5, (painted, clear)


def _click_text(web, text: str) -> None:
    web.find_element("xpath", f"//*[normalize-space(text())='{text}']").click()


def _submit(web, ls, task_id: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    web.find_element("xpath", "//button[normalize-space(.)='Submit']").click()
    WebDriverWait(web, 60).until(lambda w: len(list(ls.annotations.list(id=task_id))) > 0)


def test_paint_erase_reject_submit_pull_merge(ls_server, tmp_path, browser):
    from annotate.merge import load_reviews, merge_step
    from editkit import pipeline

    params = dataclasses.replace(ls_server, project_title=f"browser review {tmp_path.name}", records=str(tmp_path / "records"),
                                 images=str(tmp_path / "images"), reviews=str(tmp_path / "reviews.json"),
                                 out=str(tmp_path / "out"))
    records = make_sample(params.records, params.images, n=2, size=SIZE, prefix="web")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    tasks = {sid: t[0]["task"] for sid, t in project.server_tasks(ls, project_id).items()}
    _login(browser, params)

    # web0: a stroke along row 80, erased across its middle, "fixed", submitted
    stage, scale = _open(browser, params, project_id, tasks["web0"], "paint region 0 white")
    _click_text(browser, "edit region")  # the brush label; the brush tool is the default tool
    _drag(browser, stage, scale, (40, 80), (120, 80))
    _assert_source_visible_under(stage, scale, row=80, cols=(55, 105), clear_row=105)
    browser.find_element("css selector", "[aria-label='eraser']").click()  # the new stroke is the selected region
    _drag(browser, stage, scale, (80, 65), (80, 95))
    _click_text(browser, "fixed")
    _submit(browser, ls, tasks["web0"])

    # web1: rejected with a comment
    _open(browser, params, project_id, tasks["web1"], "paint region 1 white")
    _click_text(browser, "reject")
    from selenium.webdriver.common.keys import Keys

    browser.find_element("css selector", "[data-testid=textarea-input]").send_keys("the edit is not what was asked", Keys.ENTER)
    _submit(browser, ls, tasks["web1"])

    reviews = project.pull(ls, params, tmp_path / "export.json", params.project_title)
    store.write_json(params.reviews, reviews)
    pipeline.run_stage("review", params.records, params.out, merge_step(load_reviews(params.reviews)), progress=False)
    out = {r["id"]: r for r in store.read_records(params.out, "shard-00000")}

    merged = rle.decode(out["web0"]["mask"])
    [pulled] = [r for r in reviews if r["sample_id"] == "web0"]
    assert np.array_equal(merged, rle.decode(pulled["mask"]))  # browser -> export -> record, pixel-exact
    predicted = rle.decode(records[0]["mask"])
    assert out["web0"]["review_status"] == "fixed" and out["web0"]["mask_source"] == "human"
    assert merged[predicted].all()  # the prediction (copied into the annotation) is kept
    added = merged & ~predicted
    rows, cols = np.nonzero(added)
    assert added.sum() > 40 and rows.min() >= 74 and rows.max() <= 86 and cols.min() >= 34 and cols.max() <= 126
    assert merged[80, 45] and merged[80, 115]  # both ends of the stroke are painted
    assert not merged[70:90, 79:81].any()  # its middle was erased across the stroke
    assert not merged[100:, :].any()  # nothing painted far from the stroke

    assert out["web1"]["status"] == schema.STATUS_REJECTED and out["web1"]["reject_stage"] == "review"
    assert out["web1"]["reject_reason"] == "reviewer rejected: the edit is not what was asked"


def _login_as(web, params, email: str, password: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    web.get(server.base_url(params) + "/logout")  # the server ends the session (deleting cookies alone may not)
    web.delete_all_cookies()
    web.get(server.base_url(params) + "/user/login/")
    WebDriverWait(web, 60).until(lambda w: w.find_elements("name", "email"))
    web.find_element("name", "email").send_keys(email)
    web.find_element("name", "password").send_keys(password)
    web.find_element("css selector", "button[type=submit], input[type=submit]").click()
    WebDriverWait(web, 60).until(lambda w: "/user/login" not in w.current_url)


def test_a_second_reviewers_edit_is_kept_beside_the_first_and_raises_a_conflict(ls_server, tmp_path, browser):
    """Reviewer 1 accepted the mask; reviewer 2 (another Label Studio user) opens the task in the data manager,
    paints and saves. Both reviews survive pull, and the default policy sends the task to adjudication."""
    from selenium.webdriver.support.ui import WebDriverWait

    from annotate import reviewers
    from annotate.merge import merge_step

    params = dataclasses.replace(ls_server, project_title=f"team review {tmp_path.name}", records=str(tmp_path / "r"),
                                 images=str(tmp_path / "i"))
    records = make_sample(params.records, params.images, n=1, size=SIZE, prefix="team")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    task_id = project.server_tasks(ls, project_id)["team0"][0]["task"]
    ls.annotations.create(id=task_id, result=[{"from_name": "review", "to_name": "source", "type": "choices",
                                               "value": {"choices": ["accept"]}}])
    first = project.pull(ls, params, tmp_path / "export.json", params.project_title)
    lead = server.credentials(params).username
    assert [r["reviewer"] for r in first] == [lead]

    second = f"second.{tmp_path.name}@example.invalid"
    second_id = server.add_user(params, second, "second-reviewer-pw")
    try:
        _login_as(browser, params, second, "second-reviewer-pw")
        stage, scale = _open(browser, params, project_id, task_id, "paint region 0 white")
        _click_text(browser, "edit region")
        _drag(browser, stage, scale, (20, 60), (140, 60))
        _click_text(browser, "fixed")
        browser.find_element("xpath", _SAVE).click()

        def saved_by_second(_):
            exported = project.export(ls, project_id, tmp_path / "poll.json")
            return any(second_id in (a.get("completed_by"), a.get("updated_by"))
                       for t in exported for a in t.get("annotations") or [])

        WebDriverWait(browser, 60).until(saved_by_second)
    finally:
        _login_as(browser, params, lead, server.credentials(params).password)

    both = project.pull(ls, params, tmp_path / "export.json", params.project_title, previous=first)
    by = {r["reviewer"]: r for r in both}
    assert set(by) == {lead, second}  # the second reviewer's edit is kept beside the first
    assert by[lead]["choice"] == "accept" and by[second]["choice"] == "fixed"
    painted = rle.decode(by[second]["mask"])
    assert painted[60, 40:120].all() and painted.sum() > rle.decode(records[0]["mask"]).sum() + 100
    resolution = reviewers.resolve(both, rle.decode(records[0]["mask"]))
    assert resolution.conflict and resolution.pairs[0]["iou"] < 0.9
    [merged] = merge_step(reviewers.by_sample(both))([dict(records[0])])
    assert merged["review_status"] == "conflict" and merged["mask"] == records[0]["mask"]


def test_two_raters_keep_their_own_judgments_on_every_ui_path(ls_server, tmp_path, browser, monkeypatch):
    """A rating study with two raters: the labeling stream + Skip (rater 1), a task opened from the data manager,
    submitted, then updated (rater 2). Both raters' judgments of the same pair survive; the report has alpha."""
    import json

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from typer.testing import CliRunner

    from annotate.cli import app
    from tests.support.review import write_params

    monkeypatch.chdir(tmp_path)
    params = dataclasses.replace(ls_server, reviews=str(tmp_path / "reviews" / "masks.json"))
    bench = tmp_path / "bench" / "gedit"
    records = make_sample(bench / "records", bench / "images", n=2, size=SIZE, prefix="ui")
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for record in records:
            image = rng.integers(0, 255, (*SIZE, 3), dtype=np.uint8)
            (tmp_path / name / f"{record['id']}.png").write_bytes(store.encode_png(image))
    params_file = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    name = f"ui_{tmp_path.name}"
    pushed = runner.invoke(app, ["study", "push", "--params", str(params_file), "--bench", str(bench), "--a", "a",
                                 "--b", "b", "--raters", "2", "--name", name])
    assert pushed.exit_code == 0, pushed.output
    meta = json.loads((tmp_path / f"reviews/studies/{name}.json").read_text())
    ls = server.client(params)
    ids = {p.title: int(p.id) for p in ls.projects.list()}
    projects = [ids[title] for title in meta["projects"]]
    first_item = sorted(meta["items"])[0]
    emails = [f"r{k}.{tmp_path.name}@example.invalid" for k in (1, 2)]
    for email in emails:
        server.add_user(params, email, "rater-password")

    def annotations(project_id):
        return [a for t in project.export(ls, project_id, tmp_path / "poll.json") for a in t.get("annotations") or []]

    def choose_and_save(choice):
        from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException

        def click(w):  # the editor re-renders while it loads: retry on a stale element
            label = w.find_elements(By.XPATH, f"//*[normalize-space(text())='{choice}']")
            if not (label and w.find_elements(By.XPATH, _SAVE)):
                return False
            label[0].click()
            return True

        def save(w):
            button = w.find_elements(By.XPATH, _SAVE)
            if not (button and button[0].is_enabled()):
                return False
            try:
                button[0].click()
            except ElementClickInterceptedException:  # a "saved" toast covers it
                w.execute_script("arguments[0].click()", button[0])
            return True

        WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,)).until(click)
        WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException,)).until(save)

    try:
        # rater 1: the labeling stream ("Label All Tasks"): the first pair -> "left", the next one skipped
        _login_as(browser, params, emails[0], "rater-password")
        browser.get(f"{server.base_url(params)}/projects/{projects[0]}/data?labeling=1")
        choose_and_save("left")
        WebDriverWait(browser, 60).until(lambda w: len(annotations(projects[0])) == 1)
        skip = WebDriverWait(browser, 60).until(lambda w: w.find_elements(By.CSS_SELECTOR, "[aria-label=skip-task]"))
        browser.execute_script("arguments[0].click()", skip[0])  # a "saved" toast may cover it
        WebDriverWait(browser, 60).until(lambda w: any(a.get("was_cancelled") for a in annotations(projects[0])))

        # rater 2: the same pair opened from the data manager -> "right", then updated to "tie"
        _login_as(browser, params, emails[1], "rater-password")
        task = {t.data["study_item"]: t.id for t in ls.tasks.list(project=projects[1])}[first_item]
        browser.get(f"{server.base_url(params)}/projects/{projects[1]}/data?task={task}")
        choose_and_save("right")
        WebDriverWait(browser, 60).until(lambda w: len(annotations(projects[1])) == 1)
        browser.get(f"{server.base_url(params)}/projects/{projects[1]}/data?task={task}")
        choose_and_save("tie")
        WebDriverWait(browser, 60).until(lambda w: "tie" in json.dumps(annotations(projects[1])))
    finally:
        _login_as(browser, params, server.credentials(params).username, server.credentials(params).password)

    pulled = runner.invoke(app, ["study", "pull", "--params", str(params_file), "--name", name, "--n-boot", "200"])
    assert pulled.exit_code == 0, pulled.output
    out = tmp_path / "results/study" / name
    lines = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    by_rater = {line["rater"]: line for line in lines}
    assert set(by_rater) == {f"rater 1: {emails[0]}", f"rater 2: {emails[1]}"}  # the skip is no rating
    left = meta["items"][first_item]["left"]
    assert by_rater[f"rater 1: {emails[0]}"]["id"] == first_item and by_rater[f"rater 1: {emails[0]}"]["winner"] == left
    assert by_rater[f"rater 2: {emails[1]}"]["id"] == first_item and by_rater[f"rater 2: {emails[1]}"]["winner"] == "tie"
    report = json.loads((out / "report.json").read_text())
    assert report["raters"] == 2 and report["krippendorff_alpha_ordinal"] is not None
    assert "Krippendorff's alpha" in (out / "table.md").read_text()


def test_nothing_left_the_machine(ls_server, browser, egress):
    """Last in this module. The pages (login, home, projects, organisation, a data manager and a labeling page)
    request nothing off loopback; every outbound attempt of the browser during this module's tests went to the local
    recorder, and the only ones were the browser's own services; the server's own attempts were refused and logged
    (none)."""
    from urllib.parse import urlparse

    from selenium.webdriver.support.ui import WebDriverWait

    from tests.support.browser import BROWSER_SERVICE_SUFFIXES, page_requests

    ls = server.client(ls_server)
    project_id = int(next(iter(ls.projects.list())).id)
    task_id = int(next(iter(ls.tasks.list(project=project_id))).id)
    page_requests(browser)  # drop what earlier tests logged
    browser.delete_all_cookies()
    _login(browser, ls_server)
    requested = []
    for path in ("/", "/projects/", "/organization/", f"/projects/{project_id}/data",
                 f"/projects/{project_id}/data?task={task_id}"):
        browser.get(server.base_url(ls_server) + path)
        WebDriverWait(browser, 60).until(lambda w: w.execute_script("return document.readyState") == "complete")
        import time

        time.sleep(2)  # late fetches (tips panels, analytics) have time to start
        requested += page_requests(browser)
    off_loopback = [u for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")
                    and urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert requested and off_loopback == []
    hosts = {a.split(":", 1)[1] for a in egress.attempts}
    assert all(h.endswith(BROWSER_SERVICE_SUFFIXES) for h in hosts), sorted(hosts)  # the browser's own, recorded
    assert server.egress_attempts(ls_server) == []
