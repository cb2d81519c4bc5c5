"""Labeling config validity (unit) and the push -> review -> pull -> merge round trip on a real server."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from annotate import project
from editkit import rle, store
from tests.support.review import make_sample


def test_labeling_config_is_valid_xml_with_the_expected_tags():
    root = ET.fromstring(project.LABEL_CONFIG)
    tags = {el.tag: el for el in root.iter()}
    assert {"Image", "BrushLabels", "Choices", "TextArea", "Header"} <= set(tags)
    images = {el.get("name"): el.get("value") for el in root.iter("Image")}
    assert images == {"source": "$source_image", "edited": "$edited_image"}
    assert tags["BrushLabels"].get("toName") == "source" and tags["BrushLabels"].get("name") == project.BRUSH
    assert [c.get("value") for c in root.iter("Choice")] == ["accept", "fixed", "empty", "reject"]
    assert any(el.get("value") == "$instruction" for el in root.iter("Header"))


def test_brush_result_round_trips_the_mask():
    mask = np.random.default_rng(0).random((13, 17)) < 0.3
    result = project.brush_result(rle.encode(mask))
    task = {"id": 1, "data": {"sample_id": "s"}, "annotations": [
        {"id": 5, "result": [result, {"from_name": "review", "value": {"choices": ["fixed"]}}]}]}
    review = project.review_from_task(task)
    assert review["choice"] == "fixed" and np.array_equal(rle.decode(review["mask"]), mask)
    assert project.review_from_task({"id": 2, "data": {"sample_id": "t"}, "annotations": []}) is None


@pytest.mark.integration
def test_round_trip_on_a_real_server(ls_server):
    from annotate import server
    from annotate.merge import load_reviews, merge_step
    from editkit import pipeline

    params = ls_server
    records = make_sample(params.records, params.images)
    ls = server.client(params)
    assert project.push(ls, params, records, store.ImageStore(params.images))["created"] == 3
    project_id = project.get_or_create_project(ls, params)
    task_map = json.loads((params.state_dir / f"tasks-{project_id}.json").read_text())

    # a reviewer corrects sample0's mask and accepts sample1 (as the browser would post it)
    reviewed = rle.decode(records[0]["mask"]).copy()
    reviewed[25:35, 40:50] = True
    ls.annotations.create(id=task_map["sample0"]["task"], result=[
        project.brush_result(rle.encode(reviewed)),
        {"from_name": "review", "to_name": "source", "type": "choices", "value": {"choices": ["fixed"]}},
        {"from_name": "comment", "to_name": "source", "type": "textarea", "value": {"text": ["added the lamp"]}}])
    ls.annotations.create(id=task_map["sample1"]["task"], result=[
        {"from_name": "review", "to_name": "source", "type": "choices", "value": {"choices": ["accept"]}}])

    # pushing again (one mask changed) neither duplicates tasks nor loses the annotation
    changed = dict(records[2], mask=rle.encode(np.ones((40, 56), dtype=bool)))
    counts = project.push(ls, params, [records[0], records[1], changed], store.ImageStore(params.images))
    assert counts == {"created": 0, "updated": 1, "unchanged": 2, "skipped_rejected": 0, "repaired_images": 0}
    assert len(list(ls.tasks.list(project=project_id))) == 3

    server.stop(params)  # restart between push and pull: nothing is lost
    server.start(params)
    ls = server.client(params)

    reviews = project.pull(ls, params, params.state_dir / "exports" / "review.json")
    store.write_json(params.reviews, reviews)
    assert {r["sample_id"]: r["choice"] for r in reviews} == {"sample0": "fixed", "sample1": "accept"}
    pipeline.run_stage("review", params.records, params.out, merge_step(load_reviews(params.reviews)), progress=False)
    out = {r["id"]: r for r in store.read_records(params.out, "shard-00000")}
    assert np.array_equal(rle.decode(out["sample0"]["mask"]), reviewed)  # pixel-exact
    assert out["sample0"]["mask_source"] == "human" and out["sample0"]["review_comment"] == "added the lamp"
    assert out["sample1"]["review_status"] == "accept" and out["sample2"]["review_status"] is None

    # the images are served from the data folder through the local-files storage
    import httpx

    task = next(t for t in ls.tasks.list(project=project_id) if t.data["sample_id"] == "sample0")
    image = httpx.get(server.base_url(params) + task.data["source_image"],
                      headers={"Authorization": f"Token {server.credentials(params).token}"})
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
