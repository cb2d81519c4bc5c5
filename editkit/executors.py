"""Where a stage's shards run: in this process (``local``) or on a Ray cluster (``ray``), same outputs either way.

A stage hands :func:`editkit.pipeline.run_stage` a *step factory* (a picklable callable that builds the step, e.g.
``functools.partial(build_step, params)``). The local executor builds the step once and runs the shards in order;
the Ray executor runs them with Ray Data's ``map_batches`` over an actor pool, one shard per call, so a step that
holds a model (Grounding-DINO + SAM2, a transformers MLLM, CLIP) loads it once per actor, and every actor asks for
the stage's resources (``num_gpus: 1`` puts one actor on each GPU of every node). Each call reads its shard from
the stage input and writes the output shard into the stage's temporary output directory, which therefore must be
on storage every node sees (a shared filesystem); the output is committed only when every shard is done.

Failures: a worker process that dies (killed, out of memory, node lost) is restarted by Ray and its shard runs
again (``max_restarts``); a step that raises (a bug, or an input that crashes a model) is not retried: the stage
stops with the shard's name and the error, as the local executor does, and the previous output stays in place.

Configured by the ``executor`` section of ``params.yaml`` (see :class:`ExecutorConfig`) or ``--executor`` on a
stage's command.
"""
from __future__ import annotations

import functools
import json
import os
import traceback
from collections import Counter
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Literal, Optional

from editkit import schema, store
from editkit.config_meta import Range

Step = Callable[[list[dict[str, Any]], Optional["store.ImageShard"]], list[dict[str, Any]]]
StepFactory = Callable[[], Step]


@dataclass
class StageResources:
    """What one actor of a stage asks Ray for."""

    num_cpus: Annotated[float, Range(gt=0)] = 0.5
    """CPUs per actor; fractional values help on small machines, where whole-CPU actors starve Ray Data's own tasks"""
    num_gpus: Annotated[float, Range(ge=0)] = 0.0
    """GPUs per actor; 1 = one actor per GPU (the step's models then see that GPU as cuda:0)"""
    concurrency: Annotated[int, Range(ge=1)] = 2
    """actors in the pool (the most shards in flight at once)"""
    max_restarts: Annotated[int, Range(ge=0)] = 3
    """restarts of an actor whose process died; its shard is retried on the new one"""


@dataclass
class ExecutorConfig:
    """The ``executor`` section of params.yaml."""

    kind: Literal["local", "ray"] = "local"
    """where record stages run: local (this process) or ray (a Ray Data pipeline)"""
    address: str = ""
    """"" = start a local Ray instance on 127.0.0.1; "auto" = join the running cluster; ray://h:p"""
    stages: dict[str, StageResources] = field(default_factory=dict)
    """per stage name, the Ray resources of its actors; a missing stage gets the defaults"""

    def resources(self, stage: str) -> StageResources:
        return self.stages.get(stage) or StageResources()


def load_executor_config(params_path: Path | str = "params.yaml", kind: str | None = None) -> ExecutorConfig:
    """The ``executor`` section (absent = local); ``kind`` (from ``--executor``) overrides its ``kind``."""
    from editkit.config import from_dict, read_params

    path = Path(params_path)
    section = dict((read_params(path).get("executor") or {}) if path.exists() else {})
    if kind is not None:
        section["kind"] = kind
    return from_dict(ExecutorConfig, section, "executor", file=str(path))


@dataclass
class ShardResult:
    """What running one shard reports back to the stage."""

    shard: str
    records_in: int
    records_out: int
    rejected_here: dict[str, int]
    counters: dict[str, int]  # the step's own ``counters`` (ints, e.g. requests sent), this shard's increase
    facts: dict[str, str] = field(default_factory=dict)  # the step's ``facts`` (e.g. the served model's id)


def run_shard(stage: str, step: Step, input_dir: Path, images_dir: Optional[Path], shard: str,
              out_dir: Path) -> ShardResult:
    """Read one shard, apply the step, check nothing was dropped, write the output shard."""
    records = store.read_records(input_dir, shard)
    was_ok = {r["id"] for r in records if schema.is_ok(r)}
    image_shard = store.ImageStore(images_dir).shard(shard) if images_dir is not None else None
    before = Counter(getattr(step, "counters", None) or {})
    out = step(records, image_shard)
    check_nothing_lost(stage, shard, records, out)
    rejected: Counter = Counter()
    for record in out:  # charged to this stage only if it was ok on the way in and this stage rejected it
        if record["id"] in was_ok and not schema.is_ok(record) and record.get("reject_stage") == stage:
            rejected[record.get("reject_reason") or "unknown"] += 1
    store.write_records(out_dir, shard, out)
    counters = Counter(getattr(step, "counters", None) or {})
    counters.subtract(before)
    facts = {k: str(v) for k, v in (getattr(step, "facts", None) or {}).items()}
    return ShardResult(shard, len(records), len(out), dict(rejected), {k: v for k, v in counters.items() if v}, facts)


def check_nothing_lost(stage: str, shard: str, before: list[dict], after: list[dict]) -> None:
    missing = {r["id"] for r in before} - {r["id"] for r in after}
    if missing or len(after) < len(before):  # the count also catches a dropped record whose id was not unique
        raise RuntimeError(f"{stage}: step dropped {max(len(missing), len(before) - len(after))} record(s) in {shard} "
                           f"(e.g. {sorted(missing)[:3]}); "
                           "steps must return every record, marking rejects with editkit.schema.reject")


class LocalExecutor:
    """Shards one after another in this process; the step is built once."""

    kind = "local"

    def map_shards(self, stage: str, build: StepFactory, input_dir: Path, images_dir: Optional[Path],
                   shards: list[str], out_dir: Path) -> Iterator[ShardResult]:
        step = build()
        try:
            for shard in shards:
                yield run_shard(stage, step, input_dir, images_dir, shard, out_dir)
        finally:
            if hasattr(step, "close"):
                step.close()


class RayExecutor:
    """Shards on a Ray Data actor pool (see the module docstring)."""

    kind = "ray"

    def __init__(self, config: ExecutorConfig):
        self.config = config

    def map_shards(self, stage: str, build: StepFactory, input_dir: Path, images_dir: Optional[Path],
                   shards: list[str], out_dir: Path) -> Iterator[ShardResult]:
        ray = connect(self.config.address)
        import ray.data  # noqa: F811  (the submodule; ``ray`` stays the connected module)

        resources = self.config.resources(stage)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the stage draws its own bar
        dataset = ray.data.from_items([{"shard": s} for s in shards], override_num_blocks=max(1, len(shards)))
        dataset = dataset.map_batches(
            ShardActor,
            fn_constructor_kwargs=dict(stage=stage, build=build, input_dir=str(input_dir),
                                       images_dir=None if images_dir is None else str(images_dir),
                                       out_dir=str(out_dir)),
            batch_size=1,
            batch_format="pandas",
            # one shard in flight per actor: an actor that starts first must not queue shards an idle one could run
            compute=ray.data.ActorPoolStrategy(size=max(1, min(resources.concurrency, len(shards))),
                                               max_tasks_in_flight_per_actor=1),
            num_cpus=resources.num_cpus,
            num_gpus=resources.num_gpus,
            # restart an actor whose process died and retry its call (system failures only, never a step's exception)
            ray_remote_args_fn=functools.partial(dict, max_restarts=resources.max_restarts, max_task_retries=-1),
        )
        for row in dataset.iter_rows():
            if row["error"]:
                raise RuntimeError(f"{stage}: shard {row['shard']} failed on a Ray worker:\n{row['error']}")
            yield ShardResult(row["shard"], int(row["records_in"]), int(row["records_out"]),
                              json.loads(row["rejected_here"]), json.loads(row["counters"]),
                              json.loads(row["facts"]))


class ShardActor:
    """One actor of a Ray stage: builds the step once (models load here), then runs one shard per call."""

    def __init__(self, stage: str, build: StepFactory, input_dir: str, images_dir: Optional[str], out_dir: str):
        self.stage, self.input_dir, self.out_dir = stage, Path(input_dir), Path(out_dir)
        self.images_dir = None if images_dir is None else Path(images_dir)
        global _INLINE_RECORDS
        _INLINE_RECORDS = True  # the actor pool is the parallelism: a step's RecordPool runs inline here
        self.step = build()

    def __call__(self, batch):
        import pandas as pd

        rows = []
        for shard in batch["shard"]:
            try:
                result = run_shard(self.stage, self.step, self.input_dir, self.images_dir, shard, self.out_dir)
                rows.append({"shard": shard, "records_in": result.records_in, "records_out": result.records_out,
                             "rejected_here": json.dumps(result.rejected_here), "counters": json.dumps(result.counters),
                             "facts": json.dumps(result.facts), "error": ""})
            except Exception:  # a step's own failure: reported to the driver, which stops the stage
                rows.append({"shard": shard, "records_in": 0, "records_out": 0, "rejected_here": "{}",
                             "counters": "{}", "facts": "{}", "error": traceback.format_exc(limit=8)})
        return pd.DataFrame(rows)


def connect(address: str):
    """Ray, initialised once per process: a local instance bound to 127.0.0.1, or the cluster at ``address``."""
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": _worker_env()})
        else:  # a private local instance; never listens beyond the loopback interface
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                     num_cpus=os.cpu_count(), runtime_env={"env_vars": _worker_env()})
    return ray


def _worker_env() -> dict[str, str]:
    """Workers import the same code as the driver: its PYTHONPATH and working directory (a checkout run in place)."""
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p] + [os.getcwd()]
    return {"PYTHONPATH": os.pathsep.join(dict.fromkeys(parts))}


_INLINE_RECORDS = False  # set in a Ray actor (ShardActor): its stage's per-record work stays in the actor process


class RecordImages:
    """One record's encoded images, picklable: what a worker process gets in place of the shard's
    :class:`editkit.store.ImageShard` (the same ``source``/``edited``/``in`` interface, for that one id)."""

    def __init__(self, record_id: str, source: Optional[bytes], edited: Optional[bytes], present: bool = True):
        self.record_id, self._source, self._edited, self.present = record_id, source, edited, present

    def __contains__(self, record_id: str) -> bool:
        return self.present and record_id == self.record_id

    def source_bytes(self, record_id: str) -> bytes:
        return self._source

    def edited_bytes(self, record_id: str) -> Optional[bytes]:
        return self._edited

    def source(self, record_id: str):
        return store.decode_rgb(self._source)

    def edited(self, record_id: str):
        return None if self._edited is None else store.decode_rgb(self._edited)


def _run_record(item: tuple[Callable, dict[str, Any], Any]) -> dict[str, Any]:
    work, record, images = item
    work(record, images)
    return record


def _quiet_worker() -> None:
    """Each worker process is one of ``workers`` parallel streams: no library thread pools of its own on top."""
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover - OpenCV is a core dependency
        pass


class RecordPool:
    """Per-record pixel work of a stage on ``workers`` processes (0: one per available core; 1: inline).

    Records are independent and the work is CPU-bound Python + numpy, which threads cannot overlap (the GIL), so
    it runs in worker processes (started once per process, :func:`_shared_pool`; ``preload``: modules the
    workers import before the first record), given each record with only its own encoded images
    (:class:`RecordImages`), in chunks. ``work(record, images)`` changes ``record`` in place; :meth:`map` puts
    the changed records back into the list it was given, so results are the same for any worker count. Shards
    smaller than ``min_records`` run inline (shipping them to processes would cost more than it saves).
    """

    def __init__(self, workers: int = 0, min_records: int = 32, preload: tuple[str, ...] = ()):
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = cores if workers <= 0 else workers  # (editkit.pipeline.available_cores; it imports us)
        self.min_records, self.preload = min_records, tuple(preload)
        self._pool = None

    def map(self, work: Callable[[dict[str, Any], Any], Any], records: list[dict[str, Any]], images: Any) -> None:
        if self.workers == 1 or len(records) < max(2, self.min_records) or _INLINE_RECORDS:
            for record in records:
                work(record, images)
            return
        items = []
        for record in records:
            rid = record["id"]
            present = images is not None and rid in images
            items.append((work, record, RecordImages(rid, images.source_bytes(rid) if present else None,
                                                     images.edited_bytes(rid) if present else None, present)))
        chunk = max(1, -(-len(items) // (4 * self.workers)))
        try:
            results = list(self._executor().map(_run_record, items, chunksize=chunk))
        except BrokenProcessPool as error:  # e.g. a script without a __main__ guard: its workers cannot start
            _POOLS.pop(self.workers, None)
            self._pool, self.workers = None, 1
            import warnings

            warnings.warn(f"per-record worker processes failed ({error}); running this stage's records inline",
                          RuntimeWarning, stacklevel=2)
            return self.map(work, records, images)
        for record, done in zip(records, results):  # applied only once every record is done
            record.clear()
            record.update(done)

    def _executor(self):
        if self._pool is None:
            self._pool = _shared_pool(self.workers, self.preload)
        return self._pool

    def close(self) -> None:
        """Detach from the worker processes (they stay up for the next stage of this process; see _shared_pool)."""
        self._pool = None


_POOLS: dict[int, Any] = {}


def _shared_pool(workers: int, preload: tuple[str, ...] = ()):
    """The process's pool of ``workers`` worker processes, started once and shared by every stage it runs (a stage
    command is one process; the tests and perf scripts run several stages in one), shut down at exit.

    Not a plain fork of this process: its library thread pools (OpenCV's, Arrow's) would be copied mid-state and
    can deadlock the child. The fork server is a fresh process, started once with the heavy imports done
    (``preload``: the stage's own modules), so each worker is a cheap fork of a thread-free parent."""
    pool = _POOLS.get(workers)
    if pool is None:
        import atexit
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["numpy", "cv2", "PIL.Image", "editkit.store", "editkit.rle",
                                            *preload])
        else:
            context = multiprocessing.get_context("spawn")
        pool = _POOLS[workers] = ProcessPoolExecutor(workers, mp_context=context, initializer=_quiet_worker)
        atexit.register(pool.shutdown, wait=False, cancel_futures=True)
    return pool


def make_executor(config: ExecutorConfig):
    return RayExecutor(config) if config.kind == "ray" else LocalExecutor()


def stage_executor(params_path: Path | str = "params.yaml", kind: str | None = None):
    """The executor a stage command runs on: params.yaml's ``executor`` section, ``--executor`` overriding its kind."""
    kind = kind if isinstance(kind, str) else None  # a stage's main() called from Python keeps typer's defaults
    return make_executor(load_executor_config(params_path, kind))
