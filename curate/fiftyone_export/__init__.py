"""`editkit export fiftyone <stage>`: a FiftyOne dataset of a stage's records or of the exported dataset.

FiftyOne runs in its own virtualenv (:mod:`curate.fiftyone_export.venv`); our process never imports it. We write a
self-contained interchange (:mod:`curate.fiftyone_export.interchange`: a JSON manifest, one JSON line per record,
the images and masks as files, CLIP embeddings as ``.npy``) and run :mod:`curate.fiftyone_export.builder` with the
virtualenv's python. The dataset is grouped (``source`` / ``edited`` slices), with masks as segmentation fields,
scores as ``score_<name>`` fields, flags and reject reasons as tags, the record's provenance as fields, and our own
CLIP embeddings (score.clip's model, from its embedding cache; no model is downloaded) indexed for similarity.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

from editkit import store
from editkit.errors import UserError

from curate.fiftyone_export import interchange, venv
from curate.fiftyone_export.settings import FiftyOneParams, load_params

__all__ = ["FiftyOneParams", "build", "load_params", "read_back"]

BUILDER = Path(__file__).with_name("builder.py")
READBACK = Path(__file__).with_name("readback.py")
EXPORT = "export"  # the stage name that means the exported dataset (data/export/dataset)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def _source(stage: str, data_dir: Path, images: Optional[Path]):
    """(items, total, where) of a stage's records or of the exported dataset."""
    if stage == EXPORT:
        dataset_dir = data_dir / "export" / "dataset"
        if not (dataset_dir / "dataset_info.json").exists():
            raise UserError(f"no exported dataset at {dataset_dir}: run the pipeline first (dvc repro)")
        from datasets import load_from_disk

        return interchange.export_items(dataset_dir), load_from_disk(str(dataset_dir)).num_rows, str(dataset_dir)
    records_dir = data_dir / stage / "records"
    if not store.list_shards(records_dir):
        stages = sorted(p.parent.name for p in data_dir.glob("*/records") if store.list_shards(p))
        raise UserError(f"no records at {records_dir}: run the pipeline first (dvc repro)"
                        + (f"; stages with records: {', '.join(stages + [EXPORT])}" if stages else ""))
    images = images if images is not None else data_dir / "ingest" / "images"
    return interchange.stage_items(records_dir, images), store.count_records(records_dir), str(records_dir)


def embedder(clip: Any, device: str = "auto") -> tuple[Callable[[list[bytes]], Any], str]:
    """score.clip's model as ``encoded images -> vectors`` (its embedding cache shared with the score stage)."""
    from editkit.clip import ClipScorer

    scorer = ClipScorer(clip.model, clip.pretrained, device, clip.batch_size, clip.cache_dir)
    return scorer.embed_images, f"{clip.model} ({clip.pretrained})" if clip.pretrained else clip.model


def _run(params: FiftyOneParams, script: Path, argument: str, *, progress: bool = False, desc: str = "",
         mongod: Optional[Path] = None) -> dict:
    """Run one of our scripts with FiftyOne's python, our ``mongod`` running meanwhile; its ``RESULT`` line."""
    mongod = mongod or venv.check(params)
    with venv.database(params, mongod) as uri:
        return _run_script(params, script, argument, uri, progress, desc)


def _run_script(params: FiftyOneParams, script: Path, argument: str, uri: str, progress: bool, desc: str) -> dict:
    from tqdm.auto import tqdm

    python = venv.python_of(params)
    tail: list[str] = []
    result = None
    bar = None
    try:
        process = subprocess.Popen([str(python), str(script), argument], env=venv.env(params, uri),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
            elif line.startswith("PROGRESS "):
                done, total = (int(x) for x in line.split()[1:3])
                if bar is None:
                    bar = tqdm(total=total, desc=desc, unit="rec", disable=not progress)
                bar.update(done - bar.n)
            else:
                tail = (tail + [line.rstrip()])[-30:]
        code = process.wait()
    except OSError as error:
        raise venv.FiftyOneUnavailable(f"the FiftyOne virtualenv's python does not run ({error}): delete "
                                       f"{python.parents[1]} and run again to reinstall it") from None
    finally:
        if bar is not None:
            bar.close()
    if code != 0 or result is None:
        detail = "\n".join(tail[-15:])
        raise RuntimeError(f"FiftyOne's {script.stem} failed (exit code {code}):\n{detail}")
    return result


def build(stage: str, data_dir: Path | str = "data", params: Optional[FiftyOneParams] = None, *,
          name: Optional[str] = None, images: Path | str | None = None, clip: Any = None, device: str = "auto",
          params_file: Path | str = "params.yaml", progress: bool = True) -> dict[str, Any]:
    """Build (or rebuild) the FiftyOne dataset of ``<data_dir>/<stage>/records`` (``stage="export"``: the exported
    dataset). ``clip`` is a ``score.clip`` section (default: params.yaml's); embeddings are skipped when it is
    disabled or ``params.embeddings`` is off. Returns the builder's result plus ``interchange`` and ``note``."""
    params = params if params is not None else load_params(params_file)
    name = name or f"{params.name_prefix}-{stage}"
    if not _NAME.fullmatch(name):
        raise UserError(f"dataset name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    items, total, origin = _source(stage, Path(data_dir), Path(images) if images is not None else None)
    venv.ensure_installed(params)
    mongod = venv.check(params)  # before the embeddings are computed: a broken install fails in seconds
    note = None
    embed = model = None
    if params.embeddings:
        if clip is None:
            from editkit import config

            from curate.stages.score import ScoreParams

            score = config.load_section(ScoreParams, "score", params_file)
            clip, device = score.clip, score.device
        if clip.enabled:
            embed, model = embedder(clip, device)
        else:
            note = "no CLIP embeddings (score.clip.enabled is false): similarity views need them"
    started = time.perf_counter()
    folder = Path(params.dir) / name
    manifest = interchange.write(items, folder, name=name, stage=stage, origin=origin, total=total, embed=embed,
                                 embedding_model=model, batch_size=params.batch_size, progress=progress)
    if progress:
        print(f"fiftyone {stage}: starting FiftyOne and its database", file=sys.stderr, flush=True)
    result = _run(params, BUILDER, str(folder.resolve()), progress=progress, desc=f"fiftyone {stage}: dataset",
                  mongod=mongod)
    result.update(interchange=str(folder), note=note, seconds=round(time.perf_counter() - started, 1),
                  embeddings=manifest["embeddings"] is not None)
    return result


def read_back(params: FiftyOneParams, name: str) -> dict[str, Any]:
    """The dataset as FiftyOne reads it (see :mod:`curate.fiftyone_export.readback`)."""
    return _run(params, READBACK, name)


def command(stage: str, data_dir: str = "data", name: Optional[str] = None, images: Optional[str] = None,
            params_file: str = "params.yaml", embeddings: bool = True, progress: bool = True) -> None:
    """The command: build, then say how to open it."""
    params = load_params(params_file)
    if not embeddings:
        params.embeddings = False
    result = build(stage, data_dir, params, name=name, images=images, params_file=params_file, progress=progress)
    if result["note"]:
        print(f"note: {result['note']}", file=sys.stderr)
    print(f"FiftyOne dataset {result['name']!r}: {result['groups']} records, slices "
          f"{', '.join(result['slices'])}, similarity index: {', '.join(result['brain_keys']) or 'none'} "
          f"(database {Path(params.dir).resolve() / 'db'}, media {Path(result['interchange']).resolve()})")
    extra = "" if params_file == "params.yaml" else f" --params {params_file}"
    print(f"open it: editkit export fiftyone-app {result['name']}{extra}")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def app(name: str, port: int = 5151, params_file: str = "params.yaml") -> None:
    """Serve the FiftyOne App on 127.0.0.1:<port> for dataset ``name`` until Ctrl-C or SIGTERM; then the App's
    server and our database server stop."""
    params = load_params(params_file)
    mongod = venv.check(params)
    python = venv.python_of(params)
    with venv.database(params, mongod) as uri:
        child = subprocess.Popen([str(python), str(Path(__file__).with_name("app.py")), name, str(port)],
                                 env=venv.env(params, uri))
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            child.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the App too (one process group); SIGTERM is passed on
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        finally:
            signal.signal(signal.SIGTERM, previous)
