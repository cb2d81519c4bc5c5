"""The MLLM box frame is the model processor's own resize rule: transformers' Qwen2-VL ``smart_resize``, exactly, for
every aspect ratio the model accepts (up to 200:1), and boxes come back from the frame the SERVER's processor makes,
with the server's pixel budget (a config value) rather than ours."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from curate.masks.mllm_boxes import MLLMBoxDetector, model_view_size
from editkit.config import from_dict
from curate.masks.mllm_boxes import MLLMGroundingParams
from tests.curate.test_mllm_grounding import sent_image_size, stated_size
from tests.support.numerics import assert_close
from tests.support.scripted_server import ScriptedServer

SIDES = [1, 2, 3, 13, 14, 27, 28, 29, 41, 42, 55, 56, 57, 83, 100, 111, 140, 199, 200, 201, 333, 512, 777, 1000,
         1080, 1920, 2048, 3333, 4096, 5000, 8192]
BOUNDS = [(56 * 56, 12845056), (56 * 56, 14 * 14 * 4 * 1280), (56 * 56, 512 * 28 * 28), (56 * 56, 56 * 56),
          (28 * 28, 64 * 28 * 28), (100 * 100, 300 * 300)]


def test_model_view_size_is_transformers_smart_resize_for_every_accepted_aspect_ratio():
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    checked = refused = 0
    sizes = list(itertools.product(SIDES, SIDES)) + [(1, 200), (200, 1), (2, 400), (401, 2), (3, 600), (5, 1000),
                                                    (1000, 5), (7, 1399), (41, 8200), (8200, 41)]
    for (height, width), (low, high) in itertools.product(sizes, BOUNDS):
        try:
            want = smart_resize(height, width, factor=28, min_pixels=low, max_pixels=high)
        except ValueError:  # the processor refuses ratios above 200: so do we
            with pytest.raises(ValueError, match="aspect ratio"):
                model_view_size(height, width, low, high)
            refused += 1
            continue
        assert model_view_size(height, width, low, high) == tuple(want), (height, width, low, high)
        checked += 1
    assert checked > 4000 and refused > 100


@pytest.mark.parametrize("server_max_pixels", [12845056, 16 * 28 * 28])
def test_boxes_come_back_from_the_servers_frame(server_max_pixels):
    """The uploaded image is bounded by client.max_pixels; the server's processor (budget: server_*_pixels) may
    shrink it further, and the model answers in that frame."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    image_w, image_h = 1000, 7  # extreme: 143:1
    target = np.array([100.0, 1.0, 600.0, 6.0])
    seen = []

    def handler(request):
        sent_w, sent_h = sent_image_size(request)
        frame_h, frame_w = smart_resize(sent_h, sent_w, factor=28, min_pixels=56 * 56, max_pixels=server_max_pixels)
        seen.append(((sent_h, sent_w), (frame_h, frame_w)))
        assert stated_size(request) == (frame_w, frame_h)  # the prompt states the frame the model sees
        box = target * np.array([frame_w / image_w, frame_h / image_h] * 2)
        return json.dumps([{"bbox_2d": box.round().tolist(), "label": "rail"}])

    with ScriptedServer(handler) as server:
        params = from_dict(MLLMGroundingParams, {"client": {
            "backend": "openai", "endpoint": server.url, "cache_dir": "", "retries": 0,
            "max_pixels": 64 * 28 * 28, "server_max_pixels": server_max_pixels}})
        [found] = MLLMBoxDetector(params).detect([Image.new("RGB", (image_w, image_h))], [["rail"]], max_boxes=2)
    [(sent, frame)] = seen
    assert sent == model_view_size(image_h, image_w, 56 * 56, 64 * 28 * 28)
    assert found.view_size == frame and (frame == sent) == (server_max_pixels >= 64 * 28 * 28)
    assert_close(found.boxes[0], target, atol=image_w / frame[1],
                 why="the answer is in whole frame pixels: within one frame pixel, scaled back to the image")


def test_server_budget_is_validated():
    with pytest.raises(ValueError, match="server_max_pixels"):
        from_dict(MLLMGroundingParams, {"client": {"server_min_pixels": 1000, "server_max_pixels": 10}})


def test_an_aspect_ratio_the_model_refuses_falls_back_without_a_request():
    def handler(request):
        width, height = stated_size(request)
        return json.dumps([{"bbox_2d": [0, 0, width // 2, height // 2], "label": "cat"}])

    with ScriptedServer(handler) as server:
        params = from_dict(MLLMGroundingParams, {"client": {"backend": "openai", "endpoint": server.url,
                                                            "cache_dir": "", "retries": 0}})
        refused, found = MLLMBoxDetector(params).detect([Image.new("RGB", (2010, 10)), Image.new("RGB", (90, 60))],
                                                        [["rail"], ["cat"]], max_boxes=2)
    assert refused.status == "fallback:aspect_ratio" and len(refused.boxes) == 0 and "above 200" in refused.errors[0]
    assert found.status == "ok" and len(found.boxes) == 1 and len(server.requests) == 1
