"""The `score` stage: per-pair scores for selection.

Reads ``data/review/records`` (the masks after human review) + ``data/ingest/images``, writes
``data/score/records`` and ``metrics/score.json``.
Scores (``record["scores"]``, see :mod:`curate.scoring`): mask area / components / compactness, PSNR and SSIM of
source vs edited on the NON-edited region, three 64-bit pHashes (``record["phash"]``) for near-duplicate removal,
and, when enabled, CLIP image-image and directional similarity. CLIP is off by default because no weights can be
downloaded here: set ``score.clip.enabled: true`` with a model you have locally. With ``score.quality`` enabled and
an MLLM configured, an MLLM judge adds instruction clarity, mask accuracy and target prominence
(:mod:`curate.scoring.quality`); off by default.
"""
from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from curate.scoring.pair import NEEDS as PAIR_NEEDS
from curate.scoring.quality import QualityJudge, QualityParams
from editkit.config_meta import Range, check_fields

STAGE = "score"


@dataclass
class ClipParams:
    enabled: bool = False
    """off by default: needs CLIP weights you have locally (a hub tag downloads them)"""
    model: str = "ViT-B-32"
    """open-clip name, or "hf-hub:org/repo", or "local-dir:/path/to/folder\""""
    pretrained: Optional[str] = "laion2b_s34b_b79k"
    """tag or local checkpoint file (ignored for hf-hub:/local-dir:)"""
    batch_size: Annotated[int, Range(ge=1)] = 32
    """images per CLIP forward"""
    cache_dir: Optional[str] = "data/cache/clip"
    """embeddings cached by model fingerprint + image bytes; null = off"""


@dataclass
class ScoreParams:
    device: str = "auto"
    """where the CLIP model runs: auto, cpu, cuda or cuda:N"""
    clip: ClipParams = field(default_factory=ClipParams)
    """CLIP image and direction similarity scores"""
    quality: QualityParams = field(default_factory=QualityParams)
    """MLLM quality scores; off without an MLLM"""
    workers: Annotated[int, Range(ge=0)] = 0
    """worker processes for the per-record pixel scores; 0 = one per available CPU core (same results)"""

    def __post_init__(self) -> None:
        check_fields(self)


class ScoreStep:
    """The batch -> batch step: pixel scores, then CLIP, then the MLLM quality judge (models loaded once, here).

    ``counters`` reports the CLIP embedding cache's hits and misses and the judge's requests (summed over workers
    by the executor)."""

    needs = PAIR_NEEDS | QualityJudge.needs  # the record fields its parts read (checked at stage start)

    def __init__(self, params: ScoreParams):
        from editkit.executors import RecordPool

        self.params, self.clip, self.quality = params, None, None
        # worker processes for the pixel scores (the process's shared pool; they import these modules once)
        self.pool = RecordPool(params.workers, preload=("curate.stages.score", "curate.scoring.pair"))
        if params.clip.enabled:
            from editkit.clip import ClipScorer

            self.clip = ClipScorer(params.clip.model, params.clip.pretrained, params.device, params.clip.batch_size,
                                   params.clip.cache_dir)
        if params.quality.active:
            from curate.scoring.quality import QualityJudge

            self.quality = QualityJudge(params.quality)  # probes the endpoint / loads the model: fails fast

    @property
    def counters(self) -> dict[str, int]:
        counters = dict(self.quality.counters) if self.quality is not None else {}
        if self.clip is not None:
            counters.update(clip_cache_hits=self.clip.cache.hits, clip_cache_misses=self.clip.cache.misses)
        return counters

    @property
    def facts(self) -> dict[str, str]:
        return {"quality_model": self.quality.client.backend.model_id} if self.quality is not None else {}

    def __call__(self, records: list[dict[str, Any]], images) -> list[dict[str, Any]]:
        from curate.scoring.pair import score_pairs

        from editkit.scores import stored

        records = score_pairs(records, images, self.params.workers, self.pool)
        if self.clip is not None:
            records = self.clip(records, images)
        if self.quality is not None:
            records = self.quality(records, images)
        for record in records:  # machine-independent values: see editkit.scores.STORED_DIGITS
            record["scores"] = {name: stored(value) for name, value in (record.get("scores") or {}).items()}
        return records

    def close(self) -> None:
        self.pool.close()
        if self.quality is not None:
            self.quality.close()


class ScoreMeans:
    """Running count and mean of each score per edit type over the ok records (fed batch by batch, no second pass)."""

    def __init__(self) -> None:
        self.sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, records: list[dict[str, Any]]) -> None:
        from editkit import schema

        for record in records:
            if not schema.is_ok(record):
                continue
            for key in (record.get("edit_type") or "unknown", "all"):
                self.counts[key]["records"] += 1
                for name, value in (record.get("scores") or {}).items():
                    if value is not None and not math.isnan(value):
                        self.sums[key][name] += value
                        self.counts[key][name] += 1

    def as_dict(self) -> dict[str, Any]:
        out = {}
        for key in sorted(self.counts):
            means = {f"mean_{n}": round(s / self.counts[key][n], 4) for n, s in sorted(self.sums[key].items())}
            out[key] = {"records": self.counts[key]["records"], **means}
        return out


def run(params: ScoreParams, input_dir: Path, images_dir: Path, output_dir: Path, executor: Any = None,
        metrics_file: Path | None = None) -> dict[str, Any]:
    """Run the stage and return its metrics (with ``metrics_file``: also written with the records, atomically)."""
    from editkit import store
    from editkit.pipeline import Deferred, run_stage

    started = time.perf_counter()

    def summarize(stats, records_dir: Path) -> dict[str, Any]:
        means = ScoreMeans()
        for _, records in store.iter_records(records_dir):  # from the output, so every executor reports the same
            means.add(records)
        metrics: dict[str, Any] = {
            **stats.as_dict(),
            "clip_enabled": params.clip.enabled,
            "clip_model": f"{params.clip.model} ({params.clip.pretrained})" if params.clip.enabled else None,
            "by_edit_type": means.as_dict(),
            "seconds": round(time.perf_counter() - started, 3),
        }
        if params.clip.enabled:
            from editkit.clip import resolve_device

            metrics["clip_device"] = resolve_device(params.device)
            metrics["clip_cache"] = {"hits": stats.counters.get("clip_cache_hits", 0),
                                     "misses": stats.counters.get("clip_cache_misses", 0)}
        else:
            metrics["note"] = ("CLIP scores off (score.clip.enabled: false): no CLIP weights configured; "
                               "the CLIP filters in select are skipped")
        metrics.update(quality_metrics(params.quality, stats))
        return metrics

    stats = run_stage(STAGE, input_dir, output_dir, Deferred(ScoreStep, params), images_dir=images_dir,
                      executor=executor, metrics_file=metrics_file, summarize=summarize)
    return {**stats.metrics, "seconds": round(time.perf_counter() - started, 3)}


def quality_metrics(quality: QualityParams, stats: Any) -> dict[str, Any]:
    """Whether the MLLM quality judge ran, on what, and its request counts; or why it was off."""
    if not quality.active:
        why = ("score.quality.enabled: false" if not quality.enabled else
               "score.quality.enabled but score.quality.client.backend: none (no MLLM configured)")
        return {"quality_enabled": False,
                "quality_note": f"MLLM quality scores off ({why}); the quality filters in select are skipped"}
    requests = {k[len("quality_"):]: v for k, v in stats.counters.items() if k.startswith("quality_")}
    return {"quality_enabled": True, "quality_model": stats.facts.get("quality_model"),
            "quality_prompt_version": quality.prompt_version, "quality_requests": requests}


def main(
    params_file: Path = typer.Option(Path("params.yaml"), "--params", help="params file (section `score`)"),
    input_dir: Path = typer.Option(Path("data/review/records"), "--input",
                                   help="record shards written by the review stage (masks after human review)"),
    images_dir: Path = typer.Option(Path("data/ingest/images"), "--images", help="image shards written by ingest"),
    output_dir: Path = typer.Option(Path("data/score/records"), "--out", help="where to write the scored records"),
    metrics_file: Path = typer.Option(Path("metrics/score.json"), "--metrics", help="score means per edit type"),
    executor: Optional[str] = typer.Option(None, "--executor", help="local | ray (default: params.yaml `executor`)"),
) -> None:
    """Score every pair: mask geometry, background PSNR/SSIM outside the mask, pHashes, CLIP (when enabled).

    CLIP needs weights (params.yaml `score.clip`): an open-clip name + pretrained tag/file, `hf-hub:org/repo` or
    `local-dir:/folder`; it is off by default because nothing can be downloaded here. Embeddings are cached on disk.
    """
    from editkit import config
    from editkit.executors import stage_executor
    from editkit.mllm.backends import MLLMError

    params = config.load_section(ScoreParams, STAGE, params_file)
    try:
        metrics = run(params, input_dir, images_dir, output_dir, stage_executor(params_file, executor),
                      metrics_file=metrics_file)  # committed with the records (one atomic step)
    except MLLMError as error:  # the quality judge's endpoint down, model missing, key unset: say what to do
        typer.echo(f"score: score.quality: {error}", err=True)
        raise typer.Exit(code=2) from None
    overall = metrics["by_edit_type"].get("all", {})
    typer.echo(f"score: {metrics['records_in']} records, rejected here {metrics['rejected_here']}, "
               f"mean bg_psnr={overall.get('mean_bg_psnr')} bg_ssim={overall.get('mean_bg_ssim')}, "
               f"CLIP {'on' if params.clip.enabled else 'off (no weights configured)'}, "
               f"MLLM quality {'on' if metrics['quality_enabled'] else 'off (no MLLM configured)'}")
