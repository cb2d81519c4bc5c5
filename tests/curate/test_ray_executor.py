"""Record stages on a real local Ray instance produce exactly the local executor's shards."""
from __future__ import annotations

import json

import pytest

from editkit import executors, store
from editkit.pipeline import Deferred, run_stage

ray = pytest.importorskip("ray")


N, SHARD_SIZE = 12, 4


@pytest.fixture(scope="module")
def sharded_ingest(tmp_path_factory):
    """12 built-in sample pairs at 64 px in 3 shards."""
    from curate.sources.sample import SampleParams, SampleSource
    from curate.stages.ingest import IngestParams, run_ingest

    out = tmp_path_factory.mktemp("ray_ingest") / "ingest"
    run_ingest(SampleSource(SampleParams(n=N, size=64, seed=1)), out, IngestParams(shard_size=SHARD_SIZE),
               progress=False)
    assert len(store.list_shards(out / "records")) == 3
    return out


def _ray_executor(**resources):
    stages = {name: executors.StageResources(num_cpus=0.25, concurrency=2, **resources)
              for name in ("masks", "score", "rewrite", "review", "test")}
    return executors.RayExecutor(executors.ExecutorConfig(kind="ray", stages=stages))


def _records(directory):
    return [(shard, record) for shard, records in store.iter_records(directory) for record in records]


def _assert_same(local_dir, ray_dir, timing=("seconds",)):
    local, distributed = _records(local_dir), _records(ray_dir)
    assert [s for s, _ in local] == [s for s, _ in distributed]  # same shards, same order
    assert [r for _, r in local] == [r for _, r in distributed]  # field for field


def test_masks_score_and_review_on_ray_equal_local(sharded_ingest, tmp_path, ray_session):
    from annotate.merge import merge_step
    from curate.stages import masks, rewrite, score

    records, images = sharded_ingest / "records", sharded_ingest / "images"
    out = {kind: tmp_path / kind for kind in ("local", "ray")}
    for kind, executor in (("local", None), ("ray", _ray_executor())):
        base = out[kind]
        rewrite_metrics = rewrite.run(rewrite.RewriteParams(), records, base / "rewrite", images, executor=executor)
        masks_metrics = masks.run(masks.MasksParams(workers=1), base / "rewrite", images, base / "masks",
                                  executor=executor)
        score_metrics = score.run(score.ScoreParams(workers=1), base / "masks", images, base / "score",
                                  executor=executor)
        run_stage("review", base / "score", base / "review", Deferred(merge_step, {}), executor=executor)
        (base / "metrics.json").write_text(json.dumps(
            [{k: v for k, v in m.items() if k not in ("seconds", "records_per_s")}
             for m in (rewrite_metrics, masks_metrics, score_metrics)], sort_keys=True))
    for stage in ("rewrite", "masks", "score", "review"):
        _assert_same(out["local"] / stage, out["ray"] / stage)
    assert (out["local"] / "metrics.json").read_text() == (out["ray"] / "metrics.json").read_text()


def test_rewrite_with_a_served_model_on_ray_equals_local(sharded_ingest, tmp_path, ray_session):
    from curate.stages import rewrite
    from editkit.mllm.config import ClientConfig
    from tests.support.scripted_server import ScriptedServer

    answer = '{"instruction": "Make it blue", "edit_type": "recolor", "target_phrases": ["box"], "scope": "local"}'
    with ScriptedServer(lambda request: answer) as server:
        for kind, executor in (("local", None), ("ray", _ray_executor())):
            params = rewrite.RewriteParams(client=ClientConfig(backend="openai", endpoint=server.url, cache_dir=None,
                                                               retries=0))
            metrics = rewrite.run(params, sharded_ingest / "records", tmp_path / kind, sharded_ingest / "images",
                                  executor=executor)
            assert metrics["requests_sent"] == N and metrics["outcomes"] == {"ok": N}, (kind, metrics)
    _assert_same(tmp_path / "local", tmp_path / "ray")


def test_a_killed_worker_is_retried_and_the_output_is_the_same(sharded_ingest, tmp_path, ray_session):
    from curate.stages.masks import MasksParams, build_step
    from tests.support.ray_steps import dying_once_step

    records, images = sharded_ingest / "records", sharded_ingest / "images"
    inner = Deferred(build_step, MasksParams(workers=1))
    run_stage("test", records, tmp_path / "local", inner, images_dir=images, progress=False)
    marker = tmp_path / "died-once"
    step = Deferred(dying_once_step, str(marker), "shard-00001", inner)
    stats = run_stage("test", records, tmp_path / "ray", step, images_dir=images, progress=False,
                      executor=_ray_executor())
    assert marker.exists(), "the worker never died: the test did not test anything"
    assert stats.records_in == stats.records_out == N
    _assert_same(tmp_path / "local", tmp_path / "ray")


def test_a_step_that_raises_stops_the_stage_naming_the_shard_and_keeps_the_old_output(
        sharded_ingest, tmp_path, ray_session):
    from curate.stages.masks import MasksParams, build_step
    from tests.support.ray_steps import failing_step

    records, images = sharded_ingest / "records", sharded_ingest / "images"
    out = tmp_path / "masks"
    inner = Deferred(build_step, MasksParams(workers=1))
    run_stage("test", records, out, inner, images_dir=images, progress=False)
    before = _records(out)
    with pytest.raises(RuntimeError, match=r"(?s)shard shard-00002 failed.*ZeroDivisionError"):
        run_stage("test", records, out, Deferred(failing_step, "shard-00002", inner), images_dir=images,
                  progress=False, executor=_ray_executor())
    assert _records(out) == before  # nothing committed
    assert not [p for p in tmp_path.iterdir() if p.name != "masks"], "temporary output left behind"


def test_a_plain_closure_is_refused_on_ray(sharded_ingest, tmp_path):
    with pytest.raises(ValueError, match="not a pipeline.Deferred"):
        run_stage("test", sharded_ingest / "records", tmp_path / "x", lambda r, i: r,
                  executor=executors.RayExecutor(executors.ExecutorConfig(kind="ray")))


def test_executor_section_is_typed(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("executor:\n  kind: ray\n  stages:\n    masks: {num_gpus: 1, concurrency: 8}\n")
    config = executors.load_executor_config(params)
    assert config.kind == "ray" and config.resources("masks").num_gpus == 1
    assert config.resources("score") == executors.StageResources()
    assert executors.load_executor_config(params, "local").kind == "local"
    params.write_text("executor:\n  kind: ray\n  stages:\n    masks: {gpus: 1}\n")
    with pytest.raises(ValueError, match=r"params.yaml: unknown key executor.stages.masks.gpus"):
        executors.load_executor_config(params)
    params.write_text("executor:\n  kind: spark\n")
    with pytest.raises(ValueError, match=r"executor.kind: expected one of \['local', 'ray'\]"):
        executors.load_executor_config(params)
    assert executors.load_executor_config(tmp_path / "missing.yaml").kind == "local"
