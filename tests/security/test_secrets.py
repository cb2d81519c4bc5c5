"""The API key stays secret by construction: a server that echoes it (as the served model id, in answers, errors,
headers, log-prob tokens) cannot put it into a stage's metrics, a record, stderr, a log or the MLLM cache; and the key
goes only to the configured endpoint's host, which must be public or loopback (private ones on request; cloud
metadata services never), with no redirect followed."""
from __future__ import annotations

import base64
import json
import re
import socket
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from editkit.config import from_dict
from editkit.errors import ConfigError, UserError
from editkit.mllm import messages as m
from editkit.mllm.backends import MLLMError
from editkit.mllm.client import Client
from editkit.mllm.config import ClientConfig
from editkit.mllm.endpoint import EndpointRefused, HostGuard, check_endpoint, vet_host
from editkit.mllm.openai_backend import OpenAIBackend
from editkit.mllm.redact import Redactor
from tests.support import logs
from tests.support.echo_server import EchoServer, Seen, echo_answer
from tests.support.scripted_server import ScriptedServer

SECRET = "sk-live-7f3c9a2e5b1d4068"
KEY_ENV = "EDITKIT_SECURITY_TEST_KEY"
FORMS = (SECRET, quote(SECRET, safe=""), base64.b64encode(SECRET.encode()).decode().rstrip("="))


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)
    return SECRET


@pytest.fixture
def debug_log(tmp_path):
    with logs.debug_log(tmp_path / "logs" / "debug.log") as path:
        yield path


def _assert_no_key(tmp_path: Path, *texts: str) -> None:
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        for form in FORMS:
            assert form.encode() not in data, (path, form)
    for text in texts:
        for form in FORMS:
            assert form not in text, (form, text[-500:])


def _client_config(tmp_path, url, **overrides) -> ClientConfig:
    values = dict(backend="openai", endpoint=url, api_key_env=KEY_ENV, cache_dir=str(tmp_path / "cache"),
                  backoff_s=0.01, backoff_max_s=0.02, timeout_s=5, retries=1, max_concurrency=2)
    return ClientConfig(**{**values, **overrides})


def _rewrite_answer(seen: Seen):
    """Record 1's request fails with every header echoed; record 3 gets a non-JSON body with the key; the others a
    valid answer that names the key (see tests.support.echo_server.echo_answer)."""
    number = re.search(r"make the box (\d+) white", seen.text)
    number = int(number.group(1)) if number else 0
    if number == 1:
        return echo_answer(Seen(seen.method, seen.path, seen.headers, {"messages": [{"content": "bad"}]}))
    if number == 3:
        return echo_answer(Seen(seen.method, seen.path, seen.headers, {"messages": [{"content": "garbage"}]}))
    return echo_answer(seen)


# ------------------------------------------------------------------------------------------- secrets by construction
def test_an_echoed_key_as_served_model_id_reaches_no_metrics_record_stderr_log_or_cache(tmp_path, key, debug_log,
                                                                                        capsys):
    """Before: the probe took the served model id (the key) as the model; it landed in metrics/rewrite.json, in
    every record's meta.rewrite.model, in the cache's model column and in httpcore's debug log."""
    from curate.stages import rewrite
    from editkit import store
    from tests.curate.test_rewrite import _write_ingest

    records_dir, images_dir = _write_ingest(tmp_path)
    params = tmp_path / "params.yaml"
    with EchoServer(_rewrite_answer) as server:
        params.write_text(yaml.safe_dump({"rewrite": {"client": {
            "backend": "openai", "endpoint": server.url, "api_key_env": KEY_ENV, "retries": 0,
            "cache_dir": str(tmp_path / "cache")}}}))  # model "" : take the one the server lists (the key)
        rewrite.main(params, records_dir, images_dir, tmp_path / "rewrite/records", tmp_path / "metrics/rewrite.json")
        chats = [s for s in server.requests if s.method == "POST"]
    assert chats and all(s.headers["Authorization"] == f"Bearer {SECRET}" for s in chats)  # the key was sent ...
    assert all(s.body["model"] == SECRET for s in chats)  # ... and the served id was used, with that server only
    metrics = json.loads((tmp_path / "metrics/rewrite.json").read_text())
    assert metrics["model"] == "[REDACTED]"
    records = store.read_records(tmp_path / "rewrite/records", "shard-00000")
    metas = [json.loads(r["meta"])["rewrite"] for r in records if r["status"] != "rejected"]
    assert metas and all(meta["model"] == "[REDACTED]" for meta in metas)
    assert any("[REDACTED]" in (r["instruction_refined"] or "") for r in records)  # the answers were kept, redacted
    assert any("HTTP 400" in " ".join(meta.get("errors", [])) for meta in metas)
    captured = capsys.readouterr()
    assert (tmp_path / "cache/responses.sqlite").exists() and debug_log.read_text()
    _assert_no_key(tmp_path, captured.out, captured.err)  # records, metrics, cache (+WAL), debug log, stdout/stderr


def test_the_served_model_list_is_redacted_in_the_probe_error(tmp_path, key, capsys):
    """Before: ``model 'other' is not served by ...; it serves ['sk-live-...']`` on stderr."""
    from curate.stages import rewrite
    from tests.curate.test_rewrite import _write_ingest

    records_dir, images_dir = _write_ingest(tmp_path)
    params = tmp_path / "params.yaml"
    with EchoServer(extra_models=(f"x{SECRET}\n\x1b[31mfake line", "y" * 10_000)) as server:
        params.write_text(yaml.safe_dump({"rewrite": {"client": {
            "backend": "openai", "endpoint": server.url, "api_key_env": KEY_ENV, "model": "other"}}}))
        with pytest.raises(Exception) as info:
            rewrite.main(params, records_dir, images_dir, tmp_path / "out", tmp_path / "metrics.json")
    assert getattr(info.value, "exit_code", None) == 2
    err = capsys.readouterr().err
    line = err[err.index("rewrite [openai]"):]  # after the progress bar
    assert "is not served" in line and "[REDACTED]" in line
    assert line.count("\n") == 1 and "\x1b" not in line and len(line) < 1000  # one line, bounded, no escapes
    _assert_no_key(tmp_path, err)


def test_answers_finish_reasons_and_logprob_tokens_are_redacted_before_the_cache(tmp_path, key, caplog):
    with EchoServer() as server:
        with Client(_client_config(tmp_path, server.url)) as client:
            assert client.backend.model_id == "[REDACTED]"
            plain, scored, bad, garbage = client.generate([
                m.Request((m.user("hello"),)), m.Request((m.user("score it"),), top_logprobs=2),
                m.Request((m.user("bad"),)), m.Request((m.user("garbage"),))])
    assert plain.ok and "[REDACTED]" in plain.text and plain.finish_reason == "[REDACTED]"
    assert scored.ok and scored.logprobs is None  # the tokens spelled the key: dropped, the text kept (redacted)
    assert bad.error.startswith("HTTP 400") and "[REDACTED]" in bad.error
    assert "not JSON" in garbage.error
    _assert_no_key(tmp_path, caplog.text, repr([plain, scored, bad, garbage]))


def test_single_logprob_tokens_are_redacted_one_by_one():
    backend = OpenAIBackend.__new__(OpenAIBackend)
    backend.redact = Redactor([SECRET])
    tokens = [m.TokenLogprob("7", -0.1, [("7", -0.1), (SECRET, -2.0)]), m.TokenLogprob(SECRET, -0.5)]
    cleaned = backend._redact_logprobs(tokens[:1])
    assert cleaned[0].top == [("7", -0.1), ("[REDACTED]", -2.0)]
    assert backend._redact_logprobs(tokens) is None  # the tokens spell the key


def test_redactor_labels_are_one_bounded_line():
    redact = Redactor([SECRET])
    assert redact.label(f"{SECRET}\r\nX-Injected: 1") == "[REDACTED] X-Injected: 1"
    assert len(redact.label("m" * 10_000)) == 200 and redact.label(12) == "12"
    assert redact.names(["a", SECRET] + ["z"] * 20) == ["a", "[REDACTED]"] + ["z"] * 8 + ["... 12 more"]
    assert SECRET not in redact(base64.b64encode(SECRET.encode()).decode())
    assert SECRET not in redact(f"seen {SECRET[:14]}")  # a key cut short at the end of a body


# ------------------------------------------------------------------------------------------ where the key may go
@pytest.fixture
def no_connections(monkeypatch):
    """Any attempt to open a TCP connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a connection was attempted: {args}")

    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("endpoint, why", [
    ("http://169.254.169.254/v1", "metadata"),
    ("http://169.254.169.254:80/latest", "metadata"),
    ("http://[fd00:ec2::254]/v1", "metadata"),
    ("http://metadata.google.internal/computeMetadata/v1", "metadata"),
    ("http://METADATA.google.internal./v1", "metadata"),
    ("http://[::ffff:169.254.169.254]/v1", "metadata"),
    ("http://2852039166/v1", "metadata"),  # 169.254.169.254 written as one number: resolved, then checked
    ("http://169.254.10.20:8000/v1", "link-local"),
    ("http://[fe80::1]:8000/v1", "link-local"),
    ("http://10.0.0.5:8000/v1", "private"),
    ("http://192.168.1.20:8000/v1", "private"),
    ("http://[fd12:3456::1]:8000/v1", "private"),
    ("http://100.64.0.1:8000/v1", "non-routable"),
    ("http://0.0.0.0:8000/v1", "unspecified"),
])
def test_metadata_link_local_and_private_endpoints_are_refused_before_anything_is_sent(endpoint, why, key,
                                                                                      no_connections):
    """Before: ``endpoint: http://169.254.169.254/v1`` was accepted and the probe sent it the key."""
    with pytest.raises(EndpointRefused) as info:
        Client(ClientConfig(backend="openai", endpoint=endpoint, api_key_env=KEY_ENV, cache_dir=""))
    message = str(info.value)
    assert isinstance(info.value, ConfigError) and isinstance(info.value, UserError)
    assert isinstance(info.value, MLLMError)  # the stages' one-line error path (exit code 2)
    assert "\n" not in message and "allow_private_endpoint" in message and why in message, message


def test_the_opt_in_allows_private_addresses_but_never_a_metadata_service(key, no_connections):
    config = from_dict(ClientConfig, {"backend": "openai", "endpoint": "http://10.0.0.5:8000/v1",
                                      "allow_private_endpoint": True, "api_key_env": KEY_ENV, "cache_dir": ""})
    assert OpenAIBackend(config, probe=False).model_id == ""
    assert vet_host("fe80::1", 80, allow_private=True) == ["fe80::1"]
    for host in ("169.254.169.254", "metadata.google.internal", "100.100.100.200"):
        with pytest.raises(EndpointRefused, match="even with allow_private_endpoint"):
            vet_host(host, 80, allow_private=True)


def test_loopback_and_public_addresses_are_allowed():
    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "8.8.8.8", "2001:4860:4860::8888"):
        assert vet_host(host, 80, allow_private=False), host
    assert set(vet_host("localhost", 80, allow_private=False, resolve=lambda h, p: ["127.0.0.1", "::1"])) == {
        "127.0.0.1", "::1"}
    with pytest.raises(EndpointRefused, match="llm.example.org \\(10.1.2.3\\)"):  # any refused address refuses
        vet_host("llm.example.org", 80, False, resolve=lambda h, p: ["93.184.216.34", "10.1.2.3"])


def test_a_host_name_is_checked_where_it_resolves_at_every_connection(tmp_path, key, monkeypatch):
    """A name that resolves to loopback when checked and to the metadata address when connecting (DNS rebinding)
    gets no request: the connection uses the addresses the guard vetted at that moment."""
    answers = {"llm.test": ["127.0.0.1"]}
    real = socket.getaddrinfo

    def fake(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    with EchoServer() as server:
        url = f"http://llm.test:{server.port}/v1"
        with Client(_client_config(tmp_path, url, cache_dir="", retries=0)) as client:
            assert client.generate_one(m.Request((m.user("hello"),))).ok  # connected to 127.0.0.1, Host kept
            assert server.requests[-1].headers["Host"] == f"llm.test:{server.port}"
            before = len(server.requests)
            answers["llm.test"] = ["169.254.169.254"]  # the name now points at the metadata service
            client.backend._http._transport._pool.close()  # drop the pooled connection: the next one is new
            response = client.generate_one(m.Request((m.user("again"),)))
        assert len(server.requests) == before
    assert "connection error" in response.error and "metadata" in response.error, response.error


def test_the_transport_connects_to_the_configured_host_only():
    import httpcore

    guard = HostGuard("llm.example.org", allow_private=False, resolve=lambda h, p: ["93.184.216.34"])
    assert guard("LLM.example.org", 443) == ["93.184.216.34"]
    with pytest.raises(httpcore.ConnectError, match="requests go to llm.example.org only"):
        guard("collector.example.net", 443)
    assert check_endpoint("http://127.0.0.1:8000/v1", False).host == "127.0.0.1"
    for bad in ("ftp://127.0.0.1/v1", "127.0.0.1:8000", "http:///v1"):
        with pytest.raises(EndpointRefused):
            check_endpoint(bad, False)


def test_redirects_are_never_followed(tmp_path, key):
    """A 307 to another server (here another port) is an error answer; the other server gets nothing."""
    with ScriptedServer(lambda request: "collected") as elsewhere:
        target = elsewhere.url[: -len("/v1")]
        with EchoServer(redirect_to=target) as server:
            with pytest.raises(MLLMError, match="not healthy: GET /models -> 307"):
                Client(_client_config(tmp_path, server.url, cache_dir=""))
            with Client(_client_config(tmp_path, server.url, model="m", cache_dir="", retries=0),
                        OpenAIBackend(_client_config(tmp_path, server.url, model="m"), probe=False)) as client:
                response = client.generate_one(m.Request((m.user("hello"),)))
        assert elsewhere.count == 0
    assert response.error.startswith("HTTP 307")


def test_the_probe_answer_is_bounded(tmp_path, key, monkeypatch):
    import editkit.mllm.openai_backend as backend_module

    monkeypatch.setattr(backend_module, "MAX_PROBE_BYTES", 64)
    with EchoServer(extra_models=tuple(f"model-{i}" for i in range(20))) as server:
        with pytest.raises(MLLMError, match="larger than 64 bytes: refused"):
            Client(_client_config(tmp_path, server.url, cache_dir=""))
