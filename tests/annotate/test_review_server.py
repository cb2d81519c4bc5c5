"""Against a real Label Studio: idempotency from the server's task list, latest review wins, no telemetry,
drafts block `stop` and are never merged, the benchmark review path through the CLI."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from annotate import project, server
from annotate.cli import app
from editkit import rle, store
from tests.support.review import api, make_sample, write_params

pytestmark = pytest.mark.integration


def _isolated(params, tmp_path, title):
    """The session's server, with this test's own project and folders."""
    return dataclasses.replace(params, project_title=title, records=str(tmp_path / "records"),
                               images=str(tmp_path / "images"), reviews=str(tmp_path / "reviews" / "masks.json"),
                               out=str(tmp_path / "out"), metrics=str(tmp_path / "metrics.json"))


def _annotate(ls, task_id, choice, mask=None, comment=""):
    result = [{"from_name": "review", "to_name": "source", "type": "choices", "value": {"choices": [choice]}}]
    if mask is not None:
        result.append(project.brush_result(rle.encode(mask)))
    if comment:
        result.append({"from_name": "comment", "to_name": "source", "type": "textarea", "value": {"text": [comment]}})
    return ls.annotations.create(id=task_id, result=result)


def test_push_is_idempotent_against_the_server_not_a_local_file(ls_server, tmp_path):
    params = _isolated(ls_server, tmp_path, "idempotency")
    records = make_sample(params.records, params.images, prefix="idem")
    ls = server.client(params)
    images = store.ImageStore(params.images)
    assert project.push(ls, params, records, images)["created"] == 3
    project_id = project.find_project(ls, params.project_title)
    for path in params.state_dir.glob(f"tasks-{project_id}.json"):
        path.unlink()  # local state lost

    assert project.push(ls, params, records, images) == {"created": 0, "updated": 0, "unchanged": 3,
                                                          "skipped_rejected": 0, "repaired_images": 0}
    changed = np.zeros((40, 56), dtype=bool)
    changed[1:3, 1:3] = True
    moved = dict(records[1], mask=rle.encode(changed))
    assert project.push(ls, params, [records[0], moved, records[2]], images)["updated"] == 1
    tasks = list(ls.tasks.list(project=project_id))
    assert len(tasks) == 3
    task = next(t for t in tasks if t.data["sample_id"] == "idem1")
    assert task.data["mask_digest"] == project.mask_digest(moved["mask"])
    [prediction] = [p for p in ls.predictions.list(task=task.id) if p.model_version == params.model_version]
    review = project.review_from_task({"id": task.id, "data": task.data,
                                       "annotations": [{"id": 1, "result": prediction.result}]})
    assert np.array_equal(rle.decode(review["mask"]), changed)  # the new prediction, pixel-exact
    assert project.push(ls, params, [moved], images)["unchanged"] == 1


def test_re_push_verifies_the_images_it_serves(ls_server, tmp_path):
    """A deleted or altered task image is rebuilt from the image shards on re-push; without them push refuses."""
    import shutil

    from annotate.project import ImagesMissing

    params = _isolated(ls_server, tmp_path, "served images")
    records = make_sample(params.records, params.images, n=2, prefix="served")
    ls = server.client(params)
    images = store.ImageStore(params.images)
    project.push(ls, params, records, images)
    project_id = project.find_project(ls, params.project_title)
    tasks = {t.data["sample_id"]: t.data for t in ls.tasks.list(project=project_id)}
    source = project._served_path(tasks["served0"]["source_image"], params)
    edited = project._served_path(tasks["served1"]["edited_image"], params)
    served = source.read_bytes()
    source.unlink()  # the local image folder lost a file
    edited.write_bytes(b"not the image that was reviewed")
    assert project.push(ls, params, records, images)["repaired_images"] == 2
    assert source.read_bytes() == served and all(project.images_intact(t.data, params)
                                                 for t in ls.tasks.list(project=project_id))
    assert project.push(ls, params, records, images)["repaired_images"] == 0
    source.unlink()
    shutil.rmtree(params.images)
    with pytest.raises(ImagesMissing, match="served0.*missing or changed.*cannot rebuild it"):
        project.push(ls, params, records, store.ImageStore(params.images))


def test_two_annotations_of_one_task_resolve_by_updated_at(ls_server, tmp_path):
    params = _isolated(ls_server, tmp_path, f"two annotations {tmp_path.name}")
    records = make_sample(params.records, params.images, n=1, prefix="two")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    [task] = list(ls.tasks.list(project=project_id))
    first = _annotate(ls, task.id, "accept")
    _annotate(ls, task.id, "reject", comment="wrong object")
    from annotate import reviewers

    reviews = project.pull(ls, params, tmp_path / "export.json", params.project_title)
    assert [r["choice"] for r in reviews] == ["accept", "reject"]  # both kept; one reviewer: the latest counts
    assert reviewers.resolve(reviews, None).review["choice"] == "reject"
    ls.annotations.update(id=first.id, result=[  # the first annotation is edited last: it wins
        {"from_name": "review", "to_name": "source", "type": "choices", "value": {"choices": ["empty"]}}])
    reviews = project.pull(ls, params, tmp_path / "export.json", params.project_title, previous=reviews)
    assert len(reviews) == 2  # the same reviewer's own update replaces their earlier version of that annotation
    review = reviewers.resolve(reviews, None).review
    assert review["choice"] == "empty" and review["annotation_id"] == first.id


def test_telemetry_is_off_in_the_effective_settings_and_the_page(ls_server, monkeypatch):
    from annotate import telemetry

    monkeypatch.setenv("SENTRY_DSN", "https://key@o1.ingest.sentry.io/1")  # a shell that sets them anyway
    monkeypatch.setenv("LABEL_STUDIO_FRONTEND_SENTRY_DSN", "https://key@o1.ingest.sentry.io/2")
    settings = telemetry.effective_settings(ls_server, (*telemetry.TELEMETRY_OFF, "ML_BLOCK_LOCAL_IP"))
    assert {k: settings[k] for k in telemetry.TELEMETRY_OFF} == telemetry.TELEMETRY_OFF
    assert settings["ML_BLOCK_LOCAL_IP"] is True  # the SSRF guard stays on (loopback alone is allowed)
    import httpx

    from annotate.screenshot import session_cookies

    with httpx.Client(base_url=server.base_url(ls_server), cookies=session_cookies(ls_server), timeout=60) as web:
        for path in ("/user/login/", "/projects/"):
            page = web.get(path, follow_redirects=True).text
            assert "sentry-cdn" not in page and "ingest.sentry.io" not in page, path
        assert "sentry_dsn: null" in page and "collect_analytics: false" in page  # the app page's settings


def test_drafts_block_stop_and_are_pulled_as_drafts(ls_server, tmp_path):
    params = _isolated(ls_server, tmp_path, "drafts")
    records = make_sample(params.records, params.images, n=2, prefix="draft")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    task = next(t for t in ls.tasks.list(project=project_id) if t.data["sample_id"] == "draft0")
    painted = np.zeros((40, 56), dtype=bool)
    painted[:10, :10] = True
    with api(params) as web:
        stroke = {"from_name": "mask", "to_name": "source", "type": "brushlabels", "original_width": 56,
                  "original_height": 40, "value": {"format": "rle", "rle": [], "brushlabels": ["edit region"],
                                                   "touches": [{"type": "add", "points": [5, 5, 20, 5]}]}}
        answer = web.post(f"/api/tasks/{task.id}/drafts", json={"result": [project.brush_result(rle.encode(painted)),
                                                                           stroke], "lead_time": 3.0})
        assert answer.status_code == 201, answer.text
        draft_id = answer.json()["id"]
    params_file = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    try:
        refused = runner.invoke(app, ["stop", "--params", str(params_file)])
        assert refused.exit_code == 2 and "drafts" in refused.output and "'drafts': 1" in refused.output
        assert server.running_pid(params) is not None  # still up
        forced = runner.invoke(app, ["stop", "--params", str(params_file), "--force"])
        assert forced.exit_code == 2 and "would lose" in forced.output and "  drafts: draft0 by " in forced.output
        assert "--discard" in forced.output and server.running_pid(params) is not None

        pulled = runner.invoke(app, ["pull", "--params", str(params_file)])
        assert pulled.exit_code == 0, pulled.output
        assert json.loads(open(params.reviews).read())["reviews"] == []  # a draft is never a review
        [draft] = json.loads((params.state_dir / "drafts" / "drafts.json").read_text())
        assert draft["sample_id"] == "draft0" and draft["draft_id"] == draft_id and draft["draft"]
        assert draft["draft_strokes"] == 1 and "invalid" not in draft  # reported as a draft's strokes, not invalid
        assert "1 with brush strokes Submit has not rasterised" in pulled.output
        assert np.array_equal(rle.decode(draft["mask"]), painted)
    finally:
        with api(params) as web:
            web.delete(f"/api/drafts/{draft_id}/")


def test_benchmark_review_path_as_documented(ls_server, tmp_path, monkeypatch):
    """`push --records data/bench/gedit/records` finds the images beside them, its own project and reviews file."""
    monkeypatch.chdir(tmp_path)
    params = dataclasses.replace(ls_server, reviews="reviews/masks.json", metrics="metrics/review.json")
    bench = tmp_path / "data" / "bench" / "gedit"
    records = make_sample(bench / "records", bench / "images", n=2, prefix="gedit")
    params_file = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    pushed = runner.invoke(app, ["push", "--params", str(params_file), "--records", "data/bench/gedit/records"])
    assert pushed.exit_code == 0, pushed.output
    assert "editkit mask review: bench_gedit" in pushed.output and "created=2" in pushed.output

    ls = server.client(params)
    project_id = project.find_project(ls, "editkit mask review: bench_gedit")
    task = next(t for t in ls.tasks.list(project=project_id) if t.data["sample_id"] == "gedit1")
    painted = rle.decode(records[1]["mask"]).copy()
    painted[30:38, 40:50] = True
    _annotate(ls, task.id, "accept", mask=painted)  # "accept" ticked over a painted change: still a correction

    pulled = runner.invoke(app, ["pull", "--params", str(params_file), "--records", "data/bench/gedit/records"])
    assert pulled.exit_code == 0, pulled.output
    pulled = json.loads((tmp_path / "reviews/bench_gedit.json").read_text())["reviews"]  # a stamped reviews file
    assert [r["sample_id"] for r in pulled] == ["gedit1"]
    merged = runner.invoke(app, ["merge", "--params", str(params_file), "--records", "data/bench/gedit/records"])
    assert merged.exit_code == 0, merged.output
    out = {r["id"]: r for r in store.read_records(tmp_path / "data/bench/gedit_reviewed/records", "shard-00000")}
    assert out["gedit1"]["review_status"] == "fixed" and np.array_equal(rle.decode(out["gedit1"]["mask"]), painted)
    metrics = json.loads((tmp_path / "metrics/bench_gedit_review.json").read_text())
    assert metrics["choice_to_status"] == {"accept": {"fixed": 1}}


def test_the_brush_colour_is_the_users(ls_server, tmp_path):
    from annotate.labeling import overlay_of
    from editkit.errors import ConfigError

    params = dataclasses.replace(_isolated(ls_server, tmp_path, f"colours {tmp_path.name}"), brush_colour="#00ff44")
    records = make_sample(params.records, params.images, n=1, prefix="colour")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    config = ls.projects.get(id=project_id).label_config
    assert overlay_of(config) == "#00ff44"
    recoloured = dataclasses.replace(params, brush_colour="#2962ff")  # changed later: the project follows
    project.push(ls, recoloured, records, store.ImageStore(params.images))
    assert overlay_of(ls.projects.get(id=project_id).label_config) == "#2962ff"
    with pytest.raises(ConfigError, match="annotate.brush_colour: overlay colour must look like #rrggbb"):
        project.push(ls, dataclasses.replace(params, brush_colour="purple"), records, store.ImageStore(params.images))
