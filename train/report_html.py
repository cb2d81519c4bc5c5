"""A training run's page, ``<output_dir>/report/index.html``: the curves of every logged scalar over the steps
(inline SVG, drawn here: no plotting or JS library) and, per evaluation step, the grid of held-out samples (source,
edit mask over it, the model's edit, the difference from the source, with each sample's rewards and background PSNR).

The page is rewritten after each evaluation and at the end of the run. It opens from disk and needs nothing online;
the ``report`` folder holds it, ``samples.jsonl`` (what each evaluation showed) and the thumbnails (``thumbs/``,
content-hashed by :mod:`editkit.thumbs`), so it can be copied anywhere. The curves are read from ``metrics.jsonl``.

Samples are recorded while the trainer evaluates: :meth:`TrainReport.capture` wraps the runtime's ``rewards``
callable for the duration of the evaluation, so every :class:`~train.rewards.RewardInputs` the evaluation scores (and
the rewards it gets) are drawn, whatever the trainer. A runtime without image rewards (the reward model's) gets the
curves only.
"""
from __future__ import annotations

import html
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from editkit import store, thumbs
from editkit.scores import finite_or_none

FIRST = ("reward_mean", "eval_reward_mean", "eval_bg_psnr", "loss")  # curves shown first, in this order
CHART_W, CHART_H, PAD = 300, 150, 52
MAX_POINTS = 600  # a longer curve is thinned to its per-bucket extremes


_finite = finite_or_none


class _Recording:
    """Stands in for the runtime's ``rewards`` during an evaluation: scores through it and hands each call's inputs
    and results to ``sink``. Everything else (its weights, names) is the wrapped object's."""

    def __init__(self, rewards: Any, sink) -> None:
        self._rewards, self._sink = rewards, sink

    def __call__(self, inputs, *args, **kwargs):
        result = self._rewards(inputs, *args, **kwargs)
        try:
            self._sink(inputs, result)
        except Exception as error:  # the page is a view: drawing it must never end a training run
            print(f"report: could not record evaluation samples ({type(error).__name__}: {error})")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rewards, name)


class TrainReport:
    """``<output_dir>/report/``: :meth:`capture` records an evaluation's samples, :meth:`write` draws the page."""

    def __init__(self, output_dir: Path | str, metrics_path: Path | str | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.dir = self.output_dir / "report"
        self.metrics_path = Path(metrics_path) if metrics_path else self.output_dir / "metrics.jsonl"
        self.samples_path = self.dir / "samples.jsonl"
        self.thumbs = thumbs.ThumbDir(self.dir)

    # ------------------------------------------------------------------ recording
    def truncate_after(self, step: int) -> None:
        """Forget the samples of steps after ``step`` (a resumed run evaluates them again)."""
        if self.samples_path.exists():
            kept = [line for line in self.samples_path.read_text().splitlines()
                    if line and json.loads(line)["step"] <= step]
            store.atomic_write_text(self.samples_path, "".join(line + "\n" for line in kept))

    @contextmanager
    def capture(self, runtime: Any, step: int) -> Iterator[None]:
        """While the body runs (the runtime's evaluation), record what ``runtime.rewards`` scores at ``step``."""
        rewards = getattr(runtime, "rewards", None)
        if rewards is None or not callable(rewards):
            yield
            return
        rows: list[dict[str, Any]] = []
        runtime.rewards = _Recording(rewards, lambda inputs, result: rows.extend(self._samples(inputs, result)))
        try:
            yield
        finally:
            runtime.rewards = rewards
        if rows:
            self.dir.mkdir(parents=True, exist_ok=True)
            with self.samples_path.open("a") as handle:
                handle.write(json.dumps({"step": step, "samples": rows}, allow_nan=False) + "\n")

    def _samples(self, inputs: Any, result: Any) -> list[dict[str, Any]]:
        images = getattr(inputs, "images", None)
        sources = getattr(inputs, "sources", None)
        masks = getattr(inputs, "edit_masks", None)
        if images is None or sources is None or getattr(images, "ndim", 0) != 4:
            return []
        from editkit.metrics import masked_psnr

        total, parts = result if isinstance(result, tuple) and len(result) == 2 else (result, {})
        out_arrays = _uint8(images)
        src_arrays = _uint8(sources)
        mask_arrays = masks.detach().cpu().numpy().astype(bool) if masks is not None else None
        psnr = None
        if masks is not None:
            psnr = np.asarray(masked_psnr(images.detach().float().cpu(), sources.detach().float().cpu(),
                                          ~masks.detach().cpu()), dtype=np.float64).reshape(-1)
        prompts = list(getattr(inputs, "prompts", None) or [])
        rows = []
        for i in range(len(out_arrays)):
            src_key = thumbs.digest("source", _raw(src_arrays[i]))
            out_key = thumbs.digest("output", _raw(out_arrays[i]))
            keys = {"source": src_key, "output": out_key, "diff": thumbs.digest("diff", src_key, out_key)}
            mask = mask_arrays[i] if mask_arrays is not None else None
            if mask is not None:
                keys["mask"] = thumbs.digest("mask", src_key, _raw(mask.astype(np.uint8)))
            missing = {name for name, key in keys.items() if not self.thumbs.has(key)}
            drawn = _draw(src_arrays[i], out_arrays[i], mask, missing) if missing else {}
            paths = {name: self.thumbs.put(key, drawn.get(name)) for name, key in keys.items()}
            rewards = {name: _finite(_at(values, i)) for name, values in (parts or {}).items()}
            rows.append({"prompt": prompts[i] if i < len(prompts) else "", "reward": _finite(_at(total, i)),
                         "rewards": rewards, "bg_psnr": _finite(psnr[i]) if psnr is not None else None,
                         "thumbs": paths})
        return rows

    # ------------------------------------------------------------------ the page
    def write(self) -> Path:
        """Draw ``report/index.html`` from ``metrics.jsonl`` and the recorded samples; returns its path."""
        metrics = _jsonl(self.metrics_path)
        evaluations = _jsonl(self.samples_path)
        page = self.dir / "index.html"
        store.atomic_write_text(page, render(self.output_dir.name, metrics, evaluations))
        return page


def _draw(source: np.ndarray, output: np.ndarray, mask: np.ndarray | None, missing: set[str]) -> dict[str, Any]:
    """The thumbnails named in ``missing`` of one sample (PIL images)."""
    src, out = thumbs.shrink(source), thumbs.shrink(output)
    images = {"source": src, "output": out}
    if "diff" in missing:
        images["diff"] = thumbs.difference(src, out)
    if "mask" in missing and mask is not None:
        images["mask"] = thumbs.mask_over(src, mask)
    return {k: v for k, v in images.items() if k in missing}


def _uint8(batch: Any) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    array = batch.detach().float().cpu().clamp(0, 1).numpy()
    return (array.transpose(0, 2, 3, 1) * 255.0).round().astype(np.uint8)


def _raw(array: np.ndarray) -> bytes:
    return str(array.shape).encode() + np.ascontiguousarray(array).tobytes()


def _at(values: Any, i: int) -> Any:
    try:
        return float(values[i])
    except (TypeError, IndexError, ValueError):
        return None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------- rendering (no JS needed)
def _series(metrics: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for row in metrics:
        for key, value in row.items():
            if key != "step" and (number := _finite(value)) is not None:
                series.setdefault(key, []).append((int(row["step"]), number))
    order = [k for k in FIRST if k in series] + sorted(k for k in series if k not in FIRST and k.startswith("reward"))
    order += sorted(k for k in series if k not in order)
    return {k: series[k] for k in order}


def _labels(low: float, high: float) -> tuple[str, str]:
    """The axis' ends with as few significant digits as tell them apart (up to 8)."""
    for digits in range(3, 9):
        a, b = f"{low:.{digits}g}", f"{high:.{digits}g}"
        if a != b:
            return a, b
    return a, b


def thin(points: list[tuple[int, float]], limit: int = MAX_POINTS) -> list[tuple[int, float]]:
    """At most about ``limit`` points of a long curve: per bucket of consecutive steps its lowest and highest point
    (in step order), so spikes stay visible while the page stays small."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / (limit // 2))
    out: list[tuple[int, float]] = []
    for start in range(0, len(points), size):
        bucket = points[start : start + size]
        low, high = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        out += sorted({low, high})
    return out


def chart(key: str, points: list[tuple[int, float]]) -> str:
    """One curve as an inline SVG: the line (and its points), the step and value ranges on the axes. ``data-points``
    is the number of values logged; a long curve is drawn from :func:`thin`'s points."""
    logged, points = len(points), thin(points)
    steps = [s for s, _ in points]
    values = [v for _, v in points]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(values), max(values)
    if y1 == y0:  # a constant: a band around it
        half = abs(y0) * 0.1 or 0.5
        y0, y1 = y0 - half, y1 + half
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    w, h = CHART_W - PAD - 8, CHART_H - 2 * 16

    def xy(step: int, value: float) -> str:
        return f"{PAD + (step - x0) / (x1 - x0) * w:.1f},{16 + (1 - (value - y0) / (y1 - y0)) * h:.1f}"

    coords = " ".join(xy(s, v) for s, v in points)
    dots = "".join(f'<circle cx="{xy(s, v).split(",")[0]}" cy="{xy(s, v).split(",")[1]}" r="2"/>'
                   for s, v in points) if len(points) <= 60 else ""
    last = points[-1]
    name = html.escape(key)
    low, high = _labels(y0, y1)
    return (f'<figure class="curve" data-key="{name}" data-points="{logged}">'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{CHART_H}" role="img" '
            f'aria-label="{name} over steps">'
            f'<rect x="{PAD}" y="16" width="{w}" height="{h}" class="frame"/>'
            f'<text x="{PAD - 3}" y="22" class="ax" text-anchor="end">{high}</text>'
            f'<text x="{PAD - 3}" y="{16 + h}" class="ax" text-anchor="end">{low}</text>'
            f'<text x="{PAD}" y="{CHART_H - 3}" class="ax">{x0}</text>'
            f'<text x="{PAD + w}" y="{CHART_H - 3}" class="ax" text-anchor="end">step {x1}</text>'
            f'<polyline points="{coords}" class="line"/><g class="dots">{dots}</g></svg>'
            f'<figcaption>{name} <span class="last">{_fmt(last[1])} @ {last[0]}</span></figcaption></figure>')


def _grid(evaluation: dict[str, Any], open_: bool) -> str:
    samples = evaluation["samples"]
    step = int(evaluation["step"])
    head = "".join(f'<th title="{html.escape(s["prompt"])}">{html.escape(_short(s["prompt"]))}</th>' for s in samples)
    rows = []
    for name, label in (("source", "source"), ("mask", "edit mask"), ("output", "edit"), ("diff", "difference")):
        if not any(name in s["thumbs"] for s in samples):
            continue
        cells = "".join(f'<td><img src="{html.escape(s["thumbs"][name])}" alt="{label}" loading="lazy"></td>'
                        if name in s["thumbs"] else "<td></td>" for s in samples)
        rows.append(f'<tr class="row-{name}"><th>{label}</th>{cells}</tr>')
    scores = []
    for s in samples:
        parts = [f'reward <b class="reward">{_fmt(s["reward"])}</b>']
        parts += [f"{html.escape(k)} {_fmt(v)}" for k, v in s["rewards"].items()]
        if s.get("bg_psnr") is not None:
            parts.append(f"bg PSNR {_fmt(s['bg_psnr'])} dB")
        scores.append("<td>" + "<br>".join(parts) + "</td>")
    rows.append(f'<tr class="row-scores"><th>scores</th>{"".join(scores)}</tr>')
    mean = [s["reward"] for s in samples if s["reward"] is not None]
    summary = f"step {step}: {len(samples)} samples" + (f", mean reward {_fmt(sum(mean) / len(mean))}" if mean else "")
    return (f'<details class="evaluation" data-step="{step}"{" open" if open_ else ""}><summary>{summary}</summary>'
            f'<table class="grid"><tr><th></th>{head}</tr>{"".join(rows)}</table></details>')


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


def render(run: str, metrics: list[dict[str, Any]], evaluations: list[dict[str, Any]]) -> str:
    series = _series(metrics)
    last_step = max((int(m["step"]) for m in metrics), default=0)
    main = [k for k in series if k in FIRST or k.startswith(("reward", "eval_"))]
    curves = "".join(chart(k, series[k]) for k in main) or "<p>no steps logged yet</p>"
    others = "".join(chart(k, v) for k, v in series.items() if k not in main)
    by_step: dict[int, dict[str, Any]] = {}
    for evaluation in evaluations:  # a step evaluated twice (a resumed run) shows its last evaluation
        by_step[int(evaluation["step"])] = evaluation
    grids = "".join(_grid(by_step[s], i == 0) for i, s in enumerate(sorted(by_step, reverse=True)))
    return TEMPLATE.format(title=html.escape(f"training report: {run}"), run=html.escape(run), steps=last_step,
                           evaluations=len(by_step), curves=curves,
                           others=f"<details id=\"other-curves\"><summary>other scalars</summary>"
                                  f"<div class=\"curves\">{others}</div></details>" if others else "",
                           grids=grids or "<p>no evaluation samples yet</p>")


TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self'; style-src 'unsafe-inline'">
<title>{title}</title>
<style>
body {{ font: 13px/1.4 system-ui, sans-serif; margin: 0; background: #f4f4f6; color: #222; }}
header {{ background: #fff; padding: 10px 16px; border-bottom: 1px solid #ddd; }}
h1 {{ font-size: 17px; margin: 0; }}
h2 {{ font-size: 14px; margin: 14px 16px 6px; }}
.curves {{ display: flex; flex-wrap: wrap; gap: 8px; padding: 0 16px; }}
.curve {{ margin: 0; background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 4px; }}
.curve figcaption {{ font-size: 12px; text-align: center; }}
.curve .last {{ color: #777; }}
.frame {{ fill: none; stroke: #ccc; }}
.line {{ fill: none; stroke: #3a6fb0; stroke-width: 1.5; }}
.dots circle {{ fill: #3a6fb0; }}
.ax {{ font-size: 10px; fill: #666; }}
#samples, #others {{ padding: 0 16px; }}
#others details {{ margin-top: 8px; }}
details {{ background: #fff; border: 1px solid #ddd; border-radius: 4px; margin-bottom: 8px; padding: 4px 8px; }}
summary {{ cursor: pointer; font-weight: 600; }}
.grid {{ border-collapse: collapse; margin-top: 6px; }}
.grid th, .grid td {{ border: 1px solid #eee; padding: 3px; font-size: 11px; vertical-align: top; }}
.grid th {{ font-weight: normal; color: #555; max-width: 140px; }}
.grid img {{ display: block; height: 112px; max-width: 160px; object-fit: contain; background: #ddd; }}
</style>
</head>
<body>
<header><h1>{title}</h1><div>{steps} steps logged, {evaluations} evaluations</div></header>
<h2>Curves</h2>
<section id="curves" class="curves">{curves}</section>
<section id="others">{others}</section>
<h2>Evaluation samples (newest first)</h2>
<section id="samples">{grids}</section>
</body>
</html>
"""
