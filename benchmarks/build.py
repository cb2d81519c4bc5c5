"""Build a masked benchmark: read the public release, propose masks, write records + images (one DVC stage each).

Output (``data/bench/<bench>/``): ``records/`` and ``images/`` shards (see :mod:`benchmarks.items`). Every item of
the release is kept: unreadable ones are rejected records with a reason. Masks are proposals until reviewed: the
review merge (`editkit annotate merge`) turns ``needs_review`` items into ``mask_source="human"`` records.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Optional

import numpy as np

from benchmarks import imgedit, proposals
from benchmarks.items import BenchItem, to_record, write_benchmark
from benchmarks.reader import BenchmarkReader, reader_check
from curate.masks.grounded import GroundingParams
from editkit import schema, store
from editkit.mllm.config import ClientConfig
from editkit.registry import Registry
from editkit.safe_paths import UnsafePath, read_inside
from editkit.config_meta import Range

# bench name -> its module's reader, a benchmarks.reader.BenchmarkReader (modules load on first lookup)
READERS: Registry[BenchmarkReader] = Registry("benchmark", lazy={
    "gedit": "benchmarks.gedit:read", "imgedit": "benchmarks.imgedit:read", "compbench": "benchmarks.compbench:read"},
    check=reader_check)
LAYOUTS = ("public", "cocoedit")  # cocoedit: CoCoEdit's masked GEdit/ImgEdit release (benchmarks.cocoedit_masked)


@dataclass
class JudgeParams:
    """``bench.judge``: the MLLM judge of `bench evaluate` (its prompts are pinned in :mod:`benchmarks.judge`)."""

    client: ClientConfig = field(default_factory=ClientConfig)
    """the MLLM judge client of `bench evaluate`; backend none = no judge scores"""


@dataclass
class MetricsParams:
    convention: Literal["standard", "cocoedit"] = "standard"
    """masked PSNR/SSIM: "standard" (ours) | "cocoedit" (CoCoEdit's released scorer)"""


@dataclass
class BenchParams:
    """``params.yaml`` section ``bench`` (see docs/benchmarks.md)."""

    gedit_path: str = "data/bench_fixture/gedit"
    """a local GEdit-Bench copy (the built-in fixture by default)"""
    imgedit_path: str = "data/bench_fixture/imgedit"
    """a local ImgEdit-Bench copy (the built-in fixture by default)"""
    compbench_path: str = "data/compbench"
    """a CompBench copy written by its download_from_hf.py (tasks/...)"""
    gedit_languages: list[Literal["en", "cn", "both"]] = field(default_factory=lambda: ["en"])
    """GEdit instruction languages read: en, cn or both (= all)"""
    gedit_source_image: Literal["input_image", "input_image_raw"] = "input_image"
    """what GEdit's scorer compares against; or input_image_raw"""
    imgedit_image_root: str | None = None
    """folder ImgEdit's image paths are relative to (null: the copy's own folder)"""
    imgedit_suite: Literal["basic", "uge"] = "basic"
    """basic (basic_edit.json / singleturn.json) | uge (UGE_edit.json)"""
    imgedit_prompts: str | None = None
    """ImgEdit's Benchmark/Basic/prompts.json when the copy does not have it"""
    masks_dir: dict[str, str] = field(default_factory=dict)
    """bench -> folder of known masks (<key>.png)"""
    grounding: Optional[GroundingParams] = None
    """the grounded masker (as masks.grounding); {} or null = none"""
    fixture_items: Annotated[int, Range(ge=1)] = 4
    """items per benchmark in the generated fixture (`editkit bench make-fixture`)"""
    judge: JudgeParams = field(default_factory=JudgeParams)
    """the MLLM judge of `bench evaluate`"""
    metrics: MetricsParams = field(default_factory=MetricsParams)
    """how masked PSNR/SSIM are computed"""
    layout: Literal["public", "cocoedit"] = "public"
    """"public": the benchmark's own release; "cocoedit": CoCoEdit's masked release"""
    allow_outside_root: bool = False
    """True: image paths in the release may point outside its folder"""


def read_items(bench: str, path: Path | str, params: BenchParams) -> Iterator[tuple[BenchItem, str | None]]:
    if params.layout not in LAYOUTS:
        raise ValueError(f"bench.layout must be one of {', '.join(LAYOUTS)}, got {params.layout!r}")
    if params.layout == "cocoedit":
        from benchmarks import cocoedit_masked

        return cocoedit_masked.read(bench, path, params)
    return READERS.get(bench)(path, params)


def build(bench: str, path: Path | str, out_dir: Path | str, params: BenchParams | None = None,
          masks_dir: Path | str | None = None, progress: bool = True) -> dict[str, Any]:
    """Read ``path``, propose masks, write ``out_dir``; returns the build statistics (also the DVC metrics)."""
    from tqdm.auto import tqdm

    params = params or BenchParams()
    READERS.get(bench)  # an unknown benchmark fails here, listing the choices
    if masks_dir is None and params.masks_dir.get(bench):
        masks_dir = params.masks_dir[bench]
        if Path(path).exists() and not Path(masks_dir).is_dir():  # a missing copy: the reader says so first
            raise FileNotFoundError(f"bench.masks_dir.{bench}: {masks_dir} does not exist (a folder of <key>.png "
                                    "masks, white = should change)")
    elif masks_dir is not None and not Path(masks_dir).is_dir():
        raise FileNotFoundError(f"--masks: {masks_dir} does not exist (a folder of <key>.png masks)")
    if bench == "gedit":
        from benchmarks import gedit

        gedit.check_languages(params.gedit_languages)  # a bad value fails before any model loads
    masker = proposals.load_masker(params.grounding)
    foreground = masker.params.foreground_prompt if masker is not None else "main subject"
    chunk = masker.params.batch_size if masker is not None else 64
    started = time.perf_counter()
    stats: dict[str, Any] = {"bench": bench, "items": 0, "rejected": {}, "mask_source": {}, "needs_review": 0}

    def finish(batch: list[tuple[BenchItem, dict[str, Any], bytes]]) -> Iterator[tuple[dict[str, Any], bytes]]:
        ok = [(item, record, store.decode_rgb(data)) for item, record, data in batch if schema.is_ok(record)]
        for _, record, _ in ok:
            record["target_phrases"] = proposals.grounding_phrases(record, foreground)
        proposals.propose([r for _, r, _ in ok], [image for _, _, image in ok], masker)
        for item, record, _ in ok:
            if item.mask is not None:  # the release's own mask: ground truth, over any proposal
                proposals.apply_known_mask(record, item.mask)
        if masks_dir is not None:
            for item, record, _ in ok:
                _apply_mask_file(record, Path(masks_dir), f"{item.key}.png")
        for _, record, data in batch:
            _count(stats, record)
            yield record, data

    def records() -> Iterator[tuple[dict[str, Any], bytes]]:
        batch: list[tuple[BenchItem, dict[str, Any], bytes]] = []
        for item, edit_type in tqdm(read_items(bench, path, params), desc=f"build {bench}", disable=not progress):
            batch.append((item, *to_record(item, edit_type)))
            if len(batch) == chunk:
                yield from finish(batch)
                batch = []
        yield from finish(batch)

    prompts = _judge_prompts(bench, path, params)
    info = {"bench": bench, "source": str(path), "layout": params.layout, "judge_prompts": prompts}
    if bench == "imgedit":
        stats["judge_prompts"] = "found" if prompts else \
            "not found: the judge uses the built-in rubric (set bench.imgedit_prompts)"
    write_benchmark(out_dir, records(), info)
    stats["seconds"] = round(time.perf_counter() - started, 3)
    return stats


def _judge_prompts(bench: str, path: Path | str, params: BenchParams) -> dict[str, str] | None:
    """ImgEdit's per-type judge rubrics: from the release read, or for CoCoEdit's masked release (which does not ship
    them) from the public ImgEdit release at ``bench.imgedit_path`` when there is one."""
    if bench != "imgedit":
        return None
    if params.layout != "cocoedit":
        return imgedit.find_prompts(path, params.imgedit_prompts)
    try:
        return imgedit.find_prompts(params.imgedit_path, params.imgedit_prompts) if params.imgedit_path else None
    except FileNotFoundError:
        return None


def _apply_mask_file(record: dict[str, Any], masks_dir: Path, name: str) -> None:
    """Apply ``masks_dir/name`` when it exists; the name comes from the item key (data), so it must stay inside."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_inside(masks_dir, name)
    except FileNotFoundError:
        return
    except UnsafePath as refused:
        schema.reject(record, "bench_build", f"unsafe mask path: {refused}")
        return
    try:
        with Image.open(io.BytesIO(data)) as image:
            mask = np.asarray(image.convert("L")) >= 128
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError) as error:
        schema.reject(record, "bench_build", f"corrupt mask file {name}: {type(error).__name__}")
        return
    proposals.apply_known_mask(record, mask)


def _count(stats: dict[str, Any], record: dict[str, Any]) -> None:
    stats["items"] += 1
    if not schema.is_ok(record):
        reason = record["reject_reason"].split(":")[0]
        stats["rejected"][reason] = stats["rejected"].get(reason, 0) + 1
        return
    source = record["mask_source"]
    stats["mask_source"][source] = stats["mask_source"].get(source, 0) + 1
    stats["needs_review"] += proposals.NEEDS_REVIEW in record["flags"]
