"""The MLLM client: message model, cache, the OpenAI-compatible backend against a scripted server, and the
transformers backend on a tiny random Qwen2.5-VL."""
from __future__ import annotations

import base64
import io
import logging
import random
import threading

import numpy as np
import pytest
from PIL import Image

from editkit.mllm import messages as m
from editkit.mllm.backends import MLLMError
from editkit.mllm.client import Client
from editkit.mllm.hf_backend import chat_conversation
from editkit.mllm.config import ClientConfig
from editkit.mllm.openai_backend import backoff_delay
from tests.support.numerics import assert_close
from tests.support.scripted_server import Reply, ScriptedServer, completion, free_port, sequence


def _config(tmp_path, url, **overrides) -> ClientConfig:
    values = dict(backend="openai", endpoint=url, cache_dir=str(tmp_path / "cache"), backoff_s=0.02,
                  backoff_max_s=0.2, timeout_s=5, retries=3, max_concurrency=4)
    values.update(overrides)
    return ClientConfig(**values)


def _request(text="hi", image=None, **kw) -> m.Request:
    parts = [text] if image is None else [text, image]
    return m.Request((m.user(*parts),), **kw)


# ---------------------------------------------------------------- message model
def test_image_parts_normalise_and_validate():
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, (9, 7, 3), dtype=np.uint8)
    from_array = m.ImagePart.from_any(array)
    from_pil = m.ImagePart.from_any(Image.fromarray(array))
    assert from_array == from_pil and from_array.mime == "image/png"
    jpeg = io.BytesIO()
    Image.fromarray(array).save(jpeg, format="JPEG")
    part = m.ImagePart.from_any(jpeg.getvalue())
    assert part.mime == "image/jpeg" and part.data == jpeg.getvalue()
    assert base64.b64decode(part.data_url().split(",", 1)[1]) == jpeg.getvalue()
    np.testing.assert_array_equal(np.asarray(from_array.to_pil()), array)
    with pytest.raises(ValueError, match="do not decode"):
        m.ImagePart.from_any(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="uint8"):
        m.ImagePart.from_any(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="role"):
        m.Message("robot", ("x",))


def test_backoff_delay_bounds_cap_and_retry_after():
    rng = random.Random(0)
    for attempt in range(6):
        step = min(1.0, 0.1 * 2 ** attempt)
        delays = [backoff_delay(attempt, 0.1, 1.0, rng) for _ in range(500)]
        assert min(delays) >= step / 2 and max(delays) <= step
        assert np.std(delays) > 0.05 * step  # jittered, not constant
    assert backoff_delay(0, 0.1, 1.0, rng, retry_after=0.7) >= 0.7
    assert backoff_delay(0, 0.1, 1.0, rng, retry_after=100) <= 1.0


# ---------------------------------------------------------------- openai backend
def test_parses_text_logprobs_and_sends_images(tmp_path):
    logprobs = [("7", -0.1, [("7", -0.1), ("8", -2.5), ("6", -3.0)]), (".", -0.01, [(".", -0.01)])]
    with ScriptedServer(lambda req: completion("7.", logprobs)) as server:
        image = np.full((6, 5, 3), 200, np.uint8)
        with Client(_config(tmp_path, server.url)) as client:
            response = client.generate_one(_request("score it", image, top_logprobs=3, max_tokens=5))
        body = server.requests[0].body
    assert response.ok and response.text == "7." and response.finish_reason == "stop"
    assert [(t.token, t.logprob) for t in response.logprobs] == [("7", -0.1), (".", -0.01)]
    assert response.logprobs[0].top == [("7", -0.1), ("8", -2.5), ("6", -3.0)]
    assert body["logprobs"] is True and body["top_logprobs"] == 3 and body["max_tokens"] == 5
    assert body["model"] == "scripted" and body["temperature"] == 0.0
    url = body["messages"][0]["content"][1]["image_url"]["url"]
    sent = base64.b64decode(url.split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(sent))), image)


def test_retries_5xx_and_429_with_growing_backoff(tmp_path):
    replies = sequence(Reply(status=503), Reply(status=500), Reply(status=429, headers={"Retry-After": "0.15"}), "done")
    with ScriptedServer(replies) as server:
        with Client(_config(tmp_path, server.url, backoff_s=0.04, backoff_max_s=1.0)) as client:
            response = client.generate_one(_request())
        arrived = [r.arrived for r in server.requests]
    assert response.text == "done" and server.count == 4
    gaps = np.diff(arrived)
    assert gaps[0] >= 0.02 and gaps[1] >= 0.04  # at least half of 0.04·2^attempt
    assert gaps[2] >= 0.15  # Retry-After honoured


def test_client_errors_are_not_retried_and_failures_not_cached(tmp_path):
    with ScriptedServer(sequence(Reply(status=400, body={"error": "bad image"}))) as server:
        with Client(_config(tmp_path, server.url)) as client:
            response = client.generate_one(_request())
        assert server.count == 1 and not response.ok and "HTTP 400" in response.error and "bad image" in response.error
    with ScriptedServer(lambda req: Reply(status=500)) as server:
        with Client(_config(tmp_path, server.url, retries=2)) as client:
            first = client.generate_one(_request())
            second = client.generate_one(_request())
        assert "gave up after 3 attempt(s)" in first.error and "HTTP 500" in first.error
        assert server.count == 6 and not second.cached  # errors are retried on the next run, never served from cache


def test_malformed_bodies_become_error_responses(tmp_path):
    with ScriptedServer(sequence(Reply(body="{not json"), Reply(body={"choices": []}))) as server:
        with Client(_config(tmp_path, server.url, max_concurrency=1)) as client:
            a = client.generate_one(_request("a"))
            b = client.generate_one(_request("b"))
    assert "not JSON" in a.error and "malformed chat-completions response" in b.error


def test_timeouts_are_retried_then_reported(tmp_path):
    with ScriptedServer(sequence(Reply(delay_s=1.0, body=completion("late")), "fast")) as server:
        with Client(_config(tmp_path, server.url, timeout_s=0.3)) as client:
            assert client.generate_one(_request()).text == "fast"
    with ScriptedServer(lambda req: Reply(delay_s=1.0, body=completion("late"))) as server:
        with Client(_config(tmp_path, server.url, timeout_s=0.3, retries=1)) as client:
            response = client.generate_one(_request("other"))
        assert server.count == 2 and "timeout after 0.3s" in response.error


def test_concurrency_limit_is_respected_and_used(tmp_path):
    with ScriptedServer(lambda req: Reply(delay_s=0.15, body=completion("ok"))) as server:
        with Client(_config(tmp_path, server.url, max_concurrency=3)) as client:
            responses = client.generate([_request(f"q{i}") for i in range(12)])
    assert all(r.text == "ok" for r in responses) and server.count == 12
    assert server.max_in_flight == 3


def test_cache_hits_on_rerun_and_resume_after_failures(tmp_path):
    image = np.zeros((4, 4, 3), np.uint8)
    requests = [_request(f"q{i}", image, prompt_version="p1") for i in range(6)]
    failing = {"q1", "q4"}
    handler = lambda req: Reply(status=400) if req.text in failing else f"answer {req.text}"
    with ScriptedServer(handler) as server:
        with Client(_config(tmp_path, server.url)) as client:
            first = client.generate(requests)
            assert [r.ok for r in first] == [True, False, True, True, False, True]
        failing.clear()  # the "server" recovers; a new run resends only what has no cached answer
        with Client(_config(tmp_path, server.url)) as client:
            second = client.generate(requests)
            assert client.stats["cache_hits"] == 4 and client.stats["sent"] == 2 and server.count == 8
        assert [r.text for r in second] == [f"answer q{i}" for i in range(6)]
        assert [r.cached for r in second] == [True, False, True, True, False, True]
        with Client(_config(tmp_path, server.url)) as client:
            assert all(r.cached for r in client.generate(requests)) and server.count == 8
            # The key covers image bytes, prompt version and generation settings.
            other_image = _request("q0", np.ones((4, 4, 3), np.uint8), prompt_version="p1")
            other_version = _request("q0", image, prompt_version="p2")
            other_tokens = _request("q0", image, prompt_version="p1", max_tokens=7)
            assert not any(r.cached for r in client.generate([other_image, other_version, other_tokens]))
        assert server.count == 11


def test_cache_is_safe_with_concurrent_clients(tmp_path):
    with ScriptedServer(lambda req: f"a:{req.text}") as server:
        def work(worker: int) -> None:
            with Client(_config(tmp_path, server.url)) as client:
                client.generate([_request(f"w{worker}-{i}") for i in range(10)])

        threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        with Client(_config(tmp_path, server.url)) as client:
            assert len(client.cache) == 40


def test_endpoint_down_or_unhealthy_gives_a_clear_error(tmp_path):
    with pytest.raises(MLLMError, match=r"not reachable.*vllm serve"):
        Client(_config(tmp_path, f"http://127.0.0.1:{free_port()}/v1"))
    with ScriptedServer(lambda req: "x", models_route=False, health_route=False) as server:
        with pytest.raises(MLLMError, match="not healthy"):
            Client(_config(tmp_path, server.url, model="m"))
    with ScriptedServer(lambda req: "x", models_route=False) as server:  # /health only: fine with a model name
        with Client(_config(tmp_path, server.url, model="m")) as client:
            assert client.generate_one(_request()).text == "x"
    with ScriptedServer(lambda req: "x", models=("a", "b")) as server:
        with pytest.raises(MLLMError, match=r"not served.*\['a', 'b'\]"):
            Client(_config(tmp_path, server.url, model="c"))
        with pytest.raises(MLLMError, match="set `model`"):
            Client(_config(tmp_path, server.url))
    with pytest.raises(MLLMError, match="needs `endpoint`"):
        Client(_config(tmp_path, ""))


def test_api_key_is_sent_but_never_logged_or_cached(tmp_path, monkeypatch, caplog):
    secret = "sk-test-6f1c0a9e7d"
    monkeypatch.setenv("EDITKIT_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)  # every logger, httpx/httpcore included
    with ScriptedServer(sequence(Reply(status=503), Reply(status=401), "ok", "ok")) as server:
        with Client(_config(tmp_path, server.url, api_key_env="EDITKIT_TEST_KEY", retries=1)) as client:
            responses = client.generate([_request("a"), _request("b")])
        assert all(r.headers["Authorization"] == f"Bearer {secret}" for r in server.requests)
    assert secret not in caplog.text and "MLLM request" in caplog.text  # retries/errors were logged, without it
    assert all(secret not in (r.error or "") for r in responses)
    for path in (tmp_path / "cache").iterdir():
        assert secret.encode() not in path.read_bytes()
    monkeypatch.delenv("EDITKIT_TEST_KEY")
    with pytest.raises(MLLMError, match="EDITKIT_TEST_KEY"):
        Client(_config(tmp_path, "http://127.0.0.1:1/v1", api_key_env="EDITKIT_TEST_KEY"))


def test_none_backend_is_explicit_pass_through(tmp_path):
    with Client(ClientConfig(backend="none", cache_dir=str(tmp_path / "c"))) as client:
        response = client.generate_one(_request())
        assert response.text is None and response.finish_reason == "none" and client.cache is None
    with pytest.raises(ValueError, match="unknown MLLM backend 'vllm'"):
        Client(ClientConfig(backend="vllm"))


# ---------------------------------------------------------------- transformers backend (tiny Qwen2.5-VL)
@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    from tests.support.tiny.qwen_vl import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.mark.parity
def test_transformers_backend_batches_and_reports_true_logprobs(tiny_qwen, tmp_path):
    import torch

    config = ClientConfig(backend="transformers", model=str(tiny_qwen), cache_dir=str(tmp_path / "c"),
                          max_tokens=4, max_concurrency=3, max_pixels=56 * 56)
    rng = np.random.default_rng(1)
    requests = [
        _request("describe the change", rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), top_logprobs=3),
        _request("a much longer text-only prompt, so the batch needs left padding", top_logprobs=3),
        m.Request((m.system("be brief"), m.user("two images", rng.integers(0, 255, (30, 30, 3), dtype=np.uint8),
                                                rng.integers(0, 255, (50, 40, 3), dtype=np.uint8))), top_logprobs=3),
    ]
    with Client(config) as client:
        batched = client.generate(requests)
        backend = client.backend
        alone = [r for _, r in backend.generate([requests[1]])][0]
        # Independent reference: one forward pass over the prompt gives the first token's distribution.
        conversation, images = chat_conversation(requests[0])
        text = backend.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = backend.processor(text=[text], images=[i.to_pil() for i in images], return_tensors="pt")
        with torch.no_grad():
            reference = torch.log_softmax(backend.model(**inputs).logits[0, -1].float(), -1)
        assert all(r.cached for r in client.generate(requests))
    # a log-prob: hidden-32 dot products through the tiny model, then a vocab-long log-softmax, in float32
    terms = 32 * reference.shape[-1]
    for response in batched:
        assert response.ok and response.finish_reason in ("stop", "length") and response.logprobs
        for token in response.logprobs:
            assert [lp for _, lp in token.top] == sorted([lp for _, lp in token.top], reverse=True)
            assert_close(token.logprob, token.top[0][1], dtype=torch.float32, accumulations=terms,
                         why="greedy picks the arg-max: the same log-prob, read from the top-k or the choice")
    top = torch.topk(reference, 3)
    first = batched[0].logprobs[0]
    assert_close([lp for _, lp in first.top], top.values, dtype=torch.float32, accumulations=terms,
                 why="a batched, left-padded generate vs one plain forward: float32 sums in another order")
    assert_close(first.logprob, reference.max(), dtype=torch.float32, accumulations=terms,
                 why="a batched, left-padded generate vs one plain forward: float32 sums in another order")
    # Left padding must not change a request's result.
    assert alone.text == batched[1].text
    assert_close([t.logprob for t in alone.logprobs], [t.logprob for t in batched[1].logprobs], dtype=torch.float32,
                 accumulations=terms, why="the request alone vs left-padded in a batch of 3")


def test_transformers_backend_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(MLLMError, match="cannot load Qwen2.5-VL"):
        Client(ClientConfig(backend="transformers", model=str(tmp_path / "nowhere"), cache_dir=""))


# ---------------------------------------------------------------- scores from log-probs
def test_expected_score_matches_closed_form_on_random_distributions():
    from editkit.mllm.logprob_scores import expected_score, first_score_position

    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.dirichlet(np.ones(11))
        alternatives = [(f" {s}" if s % 2 else str(s), float(np.log(p[s]))) for s in rng.permutation(11)]
        alternatives.append(("hello", float(np.log(0.3))))  # not a score: ignored
        token = m.TokenLogprob(alternatives[0][0], alternatives[0][1], alternatives)
        assert_close(expected_score(token), (p * np.arange(11)).sum() / p.sum(), accumulations=2 * 11,
                     growth="linear", why="float64 exp(log p) then a weighted mean over 11 scores, another order")
    only = m.TokenLogprob("7", -0.5, [("7", -0.5), ("7 ", -1.0), ("x", -2.0)])  # duplicates add up
    assert_close(expected_score(only), 7.0, accumulations=4, why="a weighted mean of 7s: a few roundings")
    assert expected_score(m.TokenLogprob("x", -0.1, [("x", -0.1)])) is None
    assert_close(expected_score(m.TokenLogprob("3", -0.1, [])), 3.0, accumulations=2,
                 why="no alternatives: the token itself, weighted by its own probability")
    tokens = [m.TokenLogprob("Score", -0.1), m.TokenLogprob(":", -0.1), m.TokenLogprob(" 8", -0.2)]
    assert first_score_position(tokens) == 2 and first_score_position(tokens[:2]) is None


# ---------------------------------------------------------------- a killed run resumes
KILLED_CLIENT = """
import sys
from editkit.mllm import Client, ClientConfig, Request, user
config = ClientConfig(backend="openai", endpoint=sys.argv[1], cache_dir=sys.argv[2], max_concurrency=1)
Client(config).generate([Request((user(f"q{i}"),)) for i in range(20)])
"""


def test_killed_run_resumes_from_the_cache(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    victim: dict = {}

    def handler(request):
        if request.index == 8 and "process" in victim:  # the 9th request: kill the client mid-run
            os.kill(victim["process"].pid, signal.SIGKILL)
            return Reply(delay_s=0.5, body=completion("never delivered"))
        return f"a:{request.text}"

    with ScriptedServer(handler) as server:
        cache = tmp_path / "cache"
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        victim["process"] = subprocess.Popen([sys.executable, "-c", KILLED_CLIENT, server.url, str(cache)], cwd=root)
        assert victim["process"].wait(timeout=60) == -signal.SIGKILL
        time.sleep(0.6)
        assert server.count == 9
        victim.clear()
        with Client(_config(tmp_path, server.url, max_concurrency=1)) as client:
            responses = client.generate([_request(f"q{i}") for i in range(20)])
        # answers 0-7 arrived and were cached before the kill: the 9th request is sent only after the 8th answer
        # is in the cache (one request in flight at max_concurrency=1), however slowly the client keeps up
        hits, sent = client.stats["cache_hits"], client.stats["sent"]
        assert hits == 8 and hits + sent == 20 and server.count == 9 + sent
    assert [r.text for r in responses] == [f"a:q{i}" for i in range(20)]


def test_transformers_backend_isolates_a_bad_request_in_a_batch(tiny_qwen, tmp_path):
    config = ClientConfig(backend="transformers", model=str(tiny_qwen), cache_dir="", max_tokens=2,
                          max_concurrency=3, max_pixels=56 * 56)
    sliver = np.zeros((1, 300, 3), np.uint8)  # aspect ratio 300:1, which Qwen2-VL's resize refuses
    with Client(config) as client:
        responses = client.generate([_request("a"), _request("b", sliver), _request("c")])
    assert responses[0].ok and responses[2].ok
    assert not responses[1].ok and "generation failed" in responses[1].error
