"""The SAM2 ML backend: its HTTP API with a tiny SAM2, and interactive annotation through a real Label Studio."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from annotate.ml_backend.app import brush_target, create_app, local_image, prompt_from_context
from annotate.ml_backend.masker import Prompt, PromptMasker
from annotate.rle import rle_to_mask
from editkit import store
from tests.support.numerics import assert_close


@pytest.fixture(scope="module")
def tiny_sam2(tiny_sam2_dir):
    return tiny_sam2_dir  # one build per session (tests/conftest.py)


@pytest.fixture(scope="module")
def masker(tiny_sam2):
    return PromptMasker(str(tiny_sam2), device="cpu")


def _context(width, height, x, y, box=None, positive=True):
    result = [{"type": "keypointlabels", "original_width": width, "original_height": height, "is_positive": positive,
               "from_name": "sam_point", "to_name": "source",
               "value": {"x": 100 * x / width, "y": 100 * y / height, "width": 1, "keypointlabels": ["edit region"]}}]
    if box is not None:
        x0, y0, x1, y1 = box
        result.append({"type": "rectanglelabels", "original_width": width, "original_height": height,
                       "value": {"x": 100 * x0 / width, "y": 100 * y0 / height, "width": 100 * (x1 - x0) / width,
                                 "height": 100 * (y1 - y0) / height, "rectanglelabels": ["edit region"]}})
    return {"result": result}


def test_context_becomes_a_pixel_prompt():
    prompt, size = prompt_from_context(_context(200, 100, 50, 25, box=(10, 20, 110, 80), positive=False))
    assert size == (200, 100) and prompt.labels == [0]
    assert_close(prompt.points, [(50, 25)], accumulations=2, why="percent × size / 100: two roundings")
    assert_close(prompt.box, (10, 20, 110, 80), accumulations=2, why="percent × size / 100: two roundings")
    assert prompt_from_context(None)[0].is_empty()
    assert prompt_from_context({"result": [{"type": "keypointlabels", "value": {}}]})[0].is_empty()  # malformed


def test_local_images_stay_inside_the_data_folder(tmp_path):
    (tmp_path / "data" / "labelstudio").mkdir(parents=True)
    (tmp_path / "data" / "labelstudio" / "a.png").write_bytes(b"png")
    (tmp_path / "secret.png").write_bytes(b"no")
    assert local_image("/data/local-files/?d=labelstudio/a.png", tmp_path / "data").name == "a.png"
    for url in ("/data/local-files/?d=../secret.png", "/data/local-files/?d=/etc/passwd", "http://x/y.png"):
        with pytest.raises(ValueError):
            local_image(url, tmp_path / "data")


def test_brush_target_reads_our_config():
    from annotate.labeling import label_config

    assert brush_target(label_config(smart=True)) == ("mask", "source", "edit region", "source_image")
    assert brush_target("<not xml") == ("mask", "source", "edit region", "source_image")


def test_http_api_answers_a_click_with_the_masker_s_brush_mask(tmp_path, masker):
    from fastapi.testclient import TestClient

    from annotate.labeling import label_config

    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "s.png").write_bytes(store.encode_png(image))
    client = TestClient(create_app(masker, tmp_path))
    assert client.get("/health").json()["status"] == "UP"
    assert client.post("/setup", json={"project": "1.0", "schema": label_config()}).json()["model_version"]
    task = {"id": 7, "data": {"source_image": "/data/local-files/?d=img/s.png"}}
    body = {"tasks": [task], "label_config": label_config(smart=True),
            "params": {"context": _context(64, 48, 20, 30, box=(5, 5, 40, 40))}}
    answer = client.post("/predict", json=body).json()
    [result] = answer["results"][0]["result"]
    assert result["type"] == "brushlabels" and result["from_name"] == "mask" and result["to_name"] == "source"
    mask = rle_to_mask(result["value"]["rle"], result["original_height"], result["original_width"])
    expected, score = masker.predict(image, Prompt(points=[(20, 30)], labels=[1], box=(5, 5, 40, 40)))
    assert np.array_equal(mask, expected)
    assert_close(answer["results"][0]["score"], score, dtype=np.float32, accumulations=1,
                 why="the same float32 SAM2 score, sent through JSON")
    assert client.post("/predict", json={"tasks": [task]}).json() == {"results": []}  # no prompt: no pre-annotation
    bad = dict(body, tasks=[{"id": 8, "data": {"source_image": "/data/local-files/?d=../x.png"}}])
    assert client.post("/predict", json=bad).status_code == 400
    assert client.post("/predict", json={"tasks": "no"}).status_code == 400


@pytest.mark.integration
def test_interactive_annotation_through_the_real_server(ls_server, tmp_path, tiny_sam2, masker):
    from annotate import project, server
    from annotate.ml_backend import service
    from tests.support.review import api, free_port, make_sample

    params = dataclasses.replace(ls_server, project_title="sam2 assisted", records=str(tmp_path / "records"),
                                 images=str(tmp_path / "images"), ml_backend_model=str(tiny_sam2),
                                 ml_backend_port=free_port(), ml_backend_device="cpu")
    records = make_sample(params.records, params.images, n=1, prefix="sam")
    ls = server.client(params)
    project.push(ls, params, records, store.ImageStore(params.images))
    project_id = project.find_project(ls, params.project_title)
    url = service.start(params)
    try:
        service.connect(ls, params, project_id, url)
        service.connect(ls, params, project_id, url)  # twice: still one backend
        [backend] = list(ls.ml.list(project=project_id))
        assert "sam_point" in ls.projects.get(id=project_id).label_config
        [task] = list(ls.tasks.list(project=project_id))
        with api(params) as web:
            answer = web.post(f"/api/ml/{backend.id}/interactive-annotating",
                              json={"task": task.id, "context": _context(56, 40, 20, 12)})
        assert answer.status_code == 200, answer.text
        [result] = answer.json()["data"]["result"]
        mask = rle_to_mask(result["value"]["rle"], 40, 56)
        image = store.ImageStore(params.images).shard("shard-00000").source("sam0")
        expected, _ = masker.predict(image, Prompt(points=[(20, 12)], labels=[1]))
        assert np.array_equal(mask, expected)
    finally:
        service.stop(params)
    assert service.running_pid(params) is None


def test_a_backend_without_weights_reports_its_own_error_at_once_with_no_hub_requests(tmp_path, monkeypatch):
    """`serve --ml-backend` without weights: the backend's own one-line reason, reaped, and not one request to the
    hub (HF_ENDPOINT points at a local recorder)."""
    from annotate.ml_backend import service
    from annotate.settings import AnnotateParams
    from tests.support.echo_server import EchoServer
    from tests.support.review import free_port

    with EchoServer() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url.rsplit("/v1", 1)[0])
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
        for model, reason in ((str(tmp_path / "nowhere"), f"no SAM2 weights at {tmp_path / 'nowhere'}"),
                              ("facebook/sam2.1-hiera-tiny", "no SAM2 weights for 'facebook/sam2.1-hiera-tiny' in "
                                                             "the local Hugging Face cache")):
            params = AnnotateParams(data_root=str(tmp_path / "data"), ml_backend_model=model,
                                    ml_backend_port=free_port(), ml_backend_device="cpu")
            with pytest.raises(service.BackendFailed, match=f"exited: {reason}"):
                service.start(params)
            assert service.running_pid(params) is None and not (params.state_dir / "ml_backend.pid").exists()
        assert hub.requests == []  # zero hub requests, so zero retries


def test_distinct_tool_names():
    from annotate.labeling import BRUSH_LABEL, SMART_BOX_LABEL, SMART_POINT_LABEL, label_config

    config = label_config(smart=True)
    assert len({BRUSH_LABEL, SMART_POINT_LABEL, SMART_BOX_LABEL}) == 3
    assert all(f'value="{name}"' in config for name in (BRUSH_LABEL, SMART_POINT_LABEL, SMART_BOX_LABEL))
