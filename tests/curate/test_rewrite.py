"""The `rewrite` stage: pass-through (`none`), MLLM refinement with repair and fallback, metrics."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from editkit import schema, store
from curate.stages import rewrite


def _write_ingest(root: Path, n: int = 6) -> tuple[Path, Path]:
    """A small ingest output: records + image shards, one of them rejected by ingest."""
    rng = np.random.default_rng(0)
    records, rows = [], []
    for i in range(n):
        rid = f"r{i:03d}"
        source = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
        edited = source.copy()
        edited[4:12, 8:20] = 255
        records.append(schema.new_record(id=rid, origin="sample", image_shard="shard-00000", width=48, height=32,
                                         has_edited=True, instruction=f"make the box {i} white",
                                         edit_type="recolor", target_phrases=["box"]))
        rows.append({"id": rid, "source": store.encode_png(source), "edited": store.encode_png(edited)})
    schema.reject(records[-1], "ingest", "corrupt image")
    store.write_records(root / "ingest/records", "shard-00000", records)
    store.write_image_shard(root / "ingest/images", "shard-00000", rows)
    return root / "ingest/records", root / "ingest/images"


def _params(tmp_path: Path, prompt_version: str = "v1", **client) -> Path:
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"rewrite": {"client": client, "prompt_version": prompt_version}}))
    return path


def test_none_backend_passes_through(tmp_path):
    records_dir, images_dir = _write_ingest(tmp_path)
    params = _params(tmp_path, backend="none")
    rewrite.main(params, records_dir, images_dir, tmp_path / "rewrite/records", tmp_path / "metrics/rewrite.json")
    out = store.read_records(tmp_path / "rewrite/records", "shard-00000")
    assert [r["id"] for r in out] == [f"r{i:03d}" for i in range(6)]
    for record in out[:-1]:
        assert record["instruction_refined"] == record["instruction"]
        assert record["rewrite_status"] == "none"
        assert record["edit_type"] == "recolor" and record["target_phrases"] == ["box"] and record["scope"] == "local"
    assert out[-1]["status"] == "rejected" and out[-1]["rewrite_status"] is None
    metrics = json.loads((tmp_path / "metrics/rewrite.json").read_text())
    assert metrics["backend"] == "none" and "passed through" in metrics["note"]
    assert metrics["outcomes"] == {"none": 5, "skipped_rejected": 1}


def test_unknown_param_key_is_an_error(tmp_path):
    records_dir, images_dir = _write_ingest(tmp_path)
    with pytest.raises(ValueError, match="unknown key"):
        rewrite.main(_params(tmp_path, backend="none", tempreature=0.2), records_dir, images_dir,
                     tmp_path / "out", tmp_path / "m.json")


# ---------------------------------------------------------------- MLLM backends
import re

from editkit.mllm.backends import MLLMError
from editkit.mllm.config import ClientConfig
from curate.instructions import RewriteOutput, taxonomy_table
from editkit.mllm.structured import ParseError, parse_json
from tests.support.scripted_server import Reply, ScriptedServer, free_port

VALID = '{"instruction": "Paint the square white", "edit_type": "recolor", "target_phrases": ["Square "], "scope": "local"}'


def _record_number(request) -> int:
    return int(re.search(r"make the box (\d+) white", request.text).group(1))


def _run(tmp_path, server_url, **section):
    records_dir, images_dir = _write_ingest(tmp_path)
    values = dict(backend="openai", endpoint=server_url, cache_dir=str(tmp_path / "cache"), backoff_s=0.01,
                  retries=1, max_concurrency=3)
    values.update(section)
    params = _params(tmp_path, **values)
    rewrite.main(params, records_dir, images_dir, tmp_path / "rewrite/records", tmp_path / "metrics/rewrite.json")
    records = store.read_records(tmp_path / "rewrite/records", "shard-00000")
    return {r["id"]: r for r in records}, json.loads((tmp_path / "metrics/rewrite.json").read_text())


def test_parse_json_tolerates_fences_and_rejects_bad_output():
    fenced = f"Sure!\n```json\n{VALID}\n```\nanything else?"
    parsed = parse_json(fenced, RewriteOutput)
    assert parsed.target_phrases == ["square"] and parsed.instruction == "Paint the square white"
    cases = {
        "I cannot help with that": "no_json",
        '{"instruction": "x", ': "invalid_json",
        VALID.replace("recolor", "teleport"): "schema",
        VALID.replace('"local"', '"global"'): "schema",  # scope contradicts the taxonomy
        VALID.replace('["Square "]', "[]"): "schema",  # a local edit needs a target
        VALID.replace("}", ', "why": "because"}'): "schema",  # strict: no extra keys
    }
    for text, reason in cases.items():
        with pytest.raises(ParseError) as info:
            parse_json(text, RewriteOutput)
        assert info.value.reason == reason, text


def test_prompt_lists_the_taxonomy_with_benchmark_mappings():
    table = taxonomy_table()
    from editkit import taxonomy

    for name in taxonomy.EDIT_TYPES:
        assert f"- {name} (" in table
    for key in list(taxonomy.GEDIT_TO_EDIT_TYPE) + list(taxonomy.IMGEDIT_TO_EDIT_TYPE):
        assert key in table


def test_openai_backend_ok_repaired_and_fallbacks_with_metrics_and_cache(tmp_path):
    # Record i's behaviour: 0, 1 valid; 2 malformed then valid (repaired); 3 malformed twice; 4 fails with HTTP 400.
    def handler(request):
        number = _record_number(request)
        repairing = len(request.body["messages"]) > 2
        if number in (0, 1) or (number == 2 and repairing):
            return VALID
        if number == 2 or number == 3:
            return '{"instruction": "Paint it", "edit_type": '
        return Reply(status=400, body={"error": "unsupported"})

    with ScriptedServer(handler) as server:
        records, metrics = _run(tmp_path, server.url)
        first_count = server.count
        repair_requests = [r for r in server.requests if len(r.body["messages"]) > 2]
        assert all(r.n_images == 2 for r in server.requests if len(r.body["messages"]) == 2)
        # Rerun: everything that got a reply is cached; only the failed request is sent again.
        records_again, metrics_again = _run(tmp_path, server.url)
        assert server.count == first_count + 1
    assert first_count == 2 + 2 + 2 + 1  # 5 first requests + 2 repairs (400 is neither retried nor repaired)
    assert len(repair_requests) == 2 and "malformed" in repair_requests[0].body["messages"][-1]["content"]
    statuses = {k: v["rewrite_status"] for k, v in records.items()}
    assert statuses == {"r000": "ok", "r001": "ok", "r002": "repaired", "r003": "fallback:invalid_json",
                        "r004": "fallback:request_failed", "r005": None}
    good = records["r000"]
    assert good["instruction_refined"] == "Paint the square white" and good["target_phrases"] == ["square"]
    assert good["scope"] == "local" and good["instruction"] == "make the box 0 white"
    for rid in ("r003", "r004"):
        kept = records[rid]
        assert kept["instruction_refined"] == kept["instruction"] and kept["target_phrases"] == ["box"]
        assert json.loads(kept["meta"])["rewrite"]["errors"]
    assert json.loads(good["meta"])["rewrite"]["model"] == "scripted"
    assert records["r005"]["status"] == "rejected"
    assert metrics["outcomes"] == {"fallback:invalid_json": 1, "fallback:request_failed": 1, "ok": 2, "repaired": 1,
                                   "skipped_rejected": 1}
    assert metrics["requests_sent"] == 7 and metrics["cache_hits"] == 0 and metrics["request_errors"] == 1
    assert metrics_again["cache_hits"] == 6 and metrics_again["requests_sent"] == 1
    assert {k: v["rewrite_status"] for k, v in records_again.items()} == statuses


def test_endpoint_down_fails_the_stage_clearly_and_writes_nothing(tmp_path, capsys):
    import typer

    with pytest.raises(typer.Exit) as info:
        _run(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    assert info.value.exit_code == 2
    assert "not reachable" in capsys.readouterr().err
    assert not (tmp_path / "rewrite/records").exists() and not (tmp_path / "metrics/rewrite.json").exists()
    with pytest.raises(MLLMError, match="not reachable"):  # the library call raises the error itself
        rewrite.run(rewrite.RewriteParams(ClientConfig(backend="openai", endpoint=f"http://127.0.0.1:{free_port()}/v1")),
                    tmp_path / "ingest/records", tmp_path / "out", tmp_path / "ingest/images")


def test_tiny_qwen_garbage_falls_back_end_to_end(tmp_path):
    from tests.support.tiny.qwen_vl import build_tiny_qwen2_5_vl

    model = build_tiny_qwen2_5_vl(tmp_path / "tiny-qwen")
    records, metrics = _run(tmp_path, "", backend="transformers", model=str(model), max_tokens=8,
                            max_pixels=56 * 56, max_concurrency=4)
    assert metrics["model"] == str(model) and metrics["requests_sent"] == 10  # 5 prompts + 5 repairs
    ok = [r for r in records.values() if r["status"] == "ok"]
    assert len(ok) == 5
    for record in ok:
        assert record["rewrite_status"].startswith("fallback:")
        assert record["instruction_refined"] == record["instruction"] and record["edit_type"] == "recolor"
    assert sum(v for k, v in metrics["outcomes"].items() if k.startswith("fallback:")) == 5
