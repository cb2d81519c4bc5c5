"""A hostile or broken MLLM server: echoed credentials never reach a file or a log; deadlines hold against a trickle.

Timing assertions here are outcomes with generous bounds (the request FAILED with a timeout, well before the
trickle would have finished), never precise durations.
"""
from __future__ import annotations

import json
import time

import pytest

from editkit.mllm import messages as m
from editkit.mllm.client import Client
from editkit.mllm.config import ClientConfig
from editkit.mllm.redact import Redactor
from tests.support.logs import debug_log
from tests.support.scripted_server import Reply, ScriptedServer, completion

SECRET = "sk-live-0d7a4c1b9e8f2a63"


def _config(tmp_path, url, **overrides) -> ClientConfig:
    values = dict(backend="openai", endpoint=url, cache_dir=str(tmp_path / "cache"), backoff_s=0.01,
                  backoff_max_s=0.05, timeout_s=5, retries=1, max_concurrency=2)
    return ClientConfig(**{**values, **overrides})


def _request(text="hi") -> m.Request:
    return m.Request((m.user(text),))


def echo(request) -> Reply:
    """Echo the request headers back: in an error body (500 retried, 400 not) or inside a 200 answer."""
    headers = json.dumps(request.headers)
    if "retry-me" in request.text and request.index == 0:
        return Reply(status=500, body={"error": "upstream failed", "request_headers": request.headers})
    if "bad" in request.text:
        return Reply(status=400, body="Bad request. You sent:\n" + "\n".join(
            f"{k}: {v}" for k, v in request.headers.items()))
    if "garbage" in request.text:
        return Reply(body=f"not json {headers}")
    return completion(f'{{"instruction": "make it red", "debug": {headers}}}')


def test_redactor_masks_values_headers_tokens_and_urls():
    redact = Redactor([SECRET])
    text = (f'Authorization: Bearer {SECRET}\nx-api-key: abc\n{{"Cookie": "s=1"}} url https://me:pw@host/v1 '
            f'key={SECRET.replace("-", "%2D")} basic colours stay; token Basic dXNlcjpwYXNz9w== and cut {SECRET[:12]}')
    clean = redact(text)
    for leaked in (SECRET, "abc", "s=1", "me:pw", "dXNlcjpwYXNz9w==", SECRET[:12]):
        assert leaked not in clean, (leaked, clean)
    assert "basic colours stay" in clean and clean.count("[REDACTED]") >= 6
    assert redact(None) is None and Redactor([])("plain answer") == "plain answer"


def test_an_echoing_server_leaks_the_key_into_no_file_and_no_log(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITKIT_SECRET_KEY", SECRET)
    log_file = tmp_path / "logs" / "run.log"
    with debug_log(log_file):
        with ScriptedServer(echo) as server:
            with Client(_config(tmp_path, server.url, api_key_env="EDITKIT_SECRET_KEY")) as client:
                responses = client.generate([_request(t) for t in ("retry-me", "bad", "garbage", "fine")])
            assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in server.requests)  # it was sent
    assert responses[1].error.startswith("HTTP 400") and "[REDACTED]" in responses[1].error
    assert "not JSON" in responses[2].error and "[REDACTED]" in responses[3].text
    # what a stage stores: the answers and errors in records (as curate.instructions keeps them)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "records.json").write_text(json.dumps([{"text": r.text, "error": r.error} for r in responses]))
    assert "MLLM request" in log_file.read_text()  # the failures were logged ...
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("responses.sqlite") for p in files)
    for path in files:  # ... and no output, log or cache file (WAL included) holds the key
        assert SECRET.encode() not in path.read_bytes(), path


def test_the_rewrite_stage_stores_no_echoed_key(tmp_path, monkeypatch):
    import yaml

    from curate.stages import rewrite
    from tests.curate.test_rewrite import _write_ingest

    monkeypatch.setenv("EDITKIT_SECRET_KEY", SECRET)
    records_dir, images_dir = _write_ingest(tmp_path)
    params = tmp_path / "params.yaml"
    with ScriptedServer(lambda request: Reply(status=400, body=json.dumps(request.headers))) as server:
        params.write_text(yaml.safe_dump({"rewrite": {"client": {
            "backend": "openai", "endpoint": server.url, "retries": 0, "api_key_env": "EDITKIT_SECRET_KEY",
            "cache_dir": str(tmp_path / "cache")}}}))
        rewrite.main(params, records_dir, images_dir, tmp_path / "rewrite/records", tmp_path / "metrics.json")
    from editkit import store

    out = store.read_records(tmp_path / "rewrite/records", "shard-00000")
    assert any("[REDACTED]" in (r["meta"] or "") for r in out)  # the error body was kept, redacted
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        assert SECRET.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------------------------- deadlines
def test_a_trickled_answer_is_cut_at_timeout_s(tmp_path):
    slow = Reply(body=completion("x" * 40), trickle_s=0.1)  # ~200 bytes: ~20 s in all
    with ScriptedServer(lambda request: slow) as server:
        with Client(_config(tmp_path, server.url, timeout_s=1.0, retries=0)) as client:
            started = time.monotonic()
            response = client.generate_one(_request())
            elapsed = time.monotonic() - started
    assert response.text is None and "timeout after 1.0s" in response.error  # before: ~20 s later, counted ok
    assert elapsed < 10  # generous: the attempt ended near its 1 s deadline, not when the trickle finished


def test_trickled_headers_are_cut_too(tmp_path):
    with ScriptedServer(lambda request: Reply(status=503, body="x" * 50, trickle_s=0.2)) as server:
        with Client(_config(tmp_path, server.url, timeout_s=0.5, retries=1)) as client:
            response = client.generate_one(_request())
    assert "timeout" in response.error and "gave up after 2 attempt(s)" in response.error


def test_the_stage_budget_bounds_all_retries(tmp_path):
    slow = Reply(body=completion("late"), trickle_s=0.2)
    with ScriptedServer(lambda request: slow) as server:
        with Client(_config(tmp_path, server.url, timeout_s=1.0, retries=50, budget_s=2.5)) as client:
            started = time.monotonic()
            responses = client.generate([_request(f"q{i}") for i in range(6)])
            elapsed = time.monotonic() - started
            count = server.count
    assert all(r.error and "stage budget" in r.error for r in responses)
    assert count < 6 * 6  # without the budget: 6 x 51 attempts
    assert elapsed < 15  # generous; 6 x 51 one-second attempts would take minutes


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="budget_s"):
        ClientConfig(budget_s=0)


def test_fast_servers_are_unaffected_by_the_deadline(tmp_path):
    with ScriptedServer(lambda request: "quick") as server:
        with Client(_config(tmp_path, server.url, timeout_s=2.0, budget_s=60)) as client:
            assert [r.text for r in client.generate([_request(f"q{i}") for i in range(5)])] == ["quick"] * 5


def test_oversized_answers_are_refused(tmp_path, monkeypatch):
    from editkit.mllm import openai_backend

    monkeypatch.setattr(openai_backend, "MAX_RESPONSE_BYTES", 1000)
    with ScriptedServer(lambda request: "y" * 5000) as server:
        with Client(_config(tmp_path, server.url)) as client:
            assert "larger than 1000 bytes" in client.generate_one(_request()).error
