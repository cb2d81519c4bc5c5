"""Publish a trained LoRA: ``editkit train export``.

Writes, into one folder:

* ``pytorch_lora_weights.safetensors``: the run's LoRA in diffusers' format, which the base model's own pipeline loads
  with ``pipe.load_lora_weights(folder)`` (checked before anything is written: the file must hold ``transformer.``
  LoRA weights);
* ``transformer/`` (with ``--merge``): the base transformer with the LoRA fused in, saved with ``save_pretrained`` so
  it replaces the pipeline's transformer (``from_pretrained(base, transformer=...)``);
* ``README.md``: a model card: base model and pipeline, the training recipe (objective, rewards, region terms, LoRA,
  sampler, steps trained and the last logged rewards), data provenance and licences (counted from the training
  dataset's ``dataset`` / ``licence`` columns) and benchmark results (a ``benchmarks evaluate`` JSON, if given).
"""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from editkit.errors import UserError

LORA_FILE = "pytorch_lora_weights.safetensors"
PIPELINE_OF_ADAPTER = {"flux_kontext": "FluxKontextPipeline", "qwen_image_edit": "QwenImageEditPlusPipeline",
                       "flux2": "Flux2KleinPipeline or Flux2Pipeline", "qwen_image_21": "QwenImage21Pipeline"}


class ExportError(UserError):
    """A run folder without a LoRA, or a LoRA file that is not in diffusers' format."""


def export(config, out: str | Path, run_dir: str | Path | None = None, *, merge: bool = False,
           benchmark: str | Path | None = None, dtype: str = "float32") -> Path:
    """Export ``run_dir``'s LoRA (default: ``config.output_dir``) trained with ``config`` into ``out``."""
    run_dir = Path(run_dir or config.output_dir)
    source = run_dir / "lora" / LORA_FILE
    if not source.is_file():
        source = run_dir / LORA_FILE
    if not source.is_file():
        raise ExportError(f"no LoRA in {run_dir}: expected lora/{LORA_FILE} (written when a training run ends)")
    _check_diffusers_lora(source)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / LORA_FILE)
    pipeline = _pipeline_class(config.model.path) or PIPELINE_OF_ADAPTER.get(config.model.adapter, "?")
    if merge:
        pipeline = _merge(config.model.path, out, dtype)
    card = model_card(config, pipeline, run_dir, benchmark=_read_benchmark(benchmark), merged=merge)
    (out / "README.md").write_text(card)
    return out


def _check_diffusers_lora(path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        keys = list(handle.keys())
    if not keys or not all(k.startswith("transformer.") and "lora_" in k for k in keys):
        raise ExportError(f"{path} is not a diffusers transformer LoRA (keys 'transformer.*lora_*'), e.g. "
                          f"{keys[:2]}")


def _pipeline_class(path: str) -> str | None:
    index = Path(path) / "model_index.json"
    if index.is_file():
        return json.loads(index.read_text()).get("_class_name")
    return None


def _merge(base: str, out: Path, dtype: str) -> str:
    """Fuse the LoRA into the base transformer and save it under ``out/transformer``; returns the pipeline class."""
    import torch
    from diffusers import DiffusionPipeline

    try:
        pipe = DiffusionPipeline.from_pretrained(base, dtype=getattr(torch, dtype))
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot load the base model {base!r} to merge into: {error}") from error
    pipe.load_lora_weights(str(out))
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.transformer.save_pretrained(str(out / "transformer"))
    return type(pipe).__name__


def _read_benchmark(path: str | Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read benchmark results {path}: {error}") from error


def _numbers(value: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Every numeric leaf of a JSON value, as (dotted key, number)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [(prefix, float(value))]
    if isinstance(value, dict):
        return [item for key, sub in value.items() for item in _numbers(sub, f"{prefix}.{key}" if prefix else key)]
    return []


def data_provenance(dataset: str) -> dict[str, Any]:
    """Rows per (source dataset, licence) of the training dataset, from its ``dataset`` and ``licence`` columns."""
    try:
        import datasets

        data = datasets.load_from_disk(dataset)
    except Exception as error:  # a missing or foreign dataset: the card says so instead of failing the export
        return {"error": f"{type(error).__name__}: {error}"}
    if isinstance(data, datasets.DatasetDict):
        data = data[next(iter(data))]
    columns = set(data.column_names)
    names = data["dataset"] if "dataset" in columns else ["unknown"] * len(data)
    licences = data["licence"] if "licence" in columns else ["unknown"] * len(data)
    counts = Counter(zip(names, licences))
    return {"rows": len(data), "by_source": [{"dataset": d, "licence": lic, "rows": n}
                                             for (d, lic), n in sorted(counts.items())]}


def _last_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def model_card(config, pipeline: str, run_dir: Path, *, benchmark: dict | None = None, merged: bool = False) -> str:
    """The README.md of an exported LoRA."""
    model, objective, rewards = config.model, config.objective, config.rewards
    last = _last_metrics(run_dir)
    provenance = data_provenance(config.data.dataset)
    tags = ["lora", "diffusers", "image-editing", "editkit", model.adapter]
    lines = ["---", f"base_model: {model.path}", "library_name: diffusers", "pipeline_tag: image-to-image",
             "tags:", *[f"- {t}" for t in tags], "---", "",
             f"# Content-consistent editing LoRA for {model.path}", "",
             f"A LoRA (rank {config.lora.rank}, alpha {config.lora.alpha}) for the transformer of `{model.path}` "
             f"({pipeline}), post-trained with {objective.name.upper()} and region-aware rewards.", "",
             "## Use", "", "```python", "import torch",
             f"from diffusers import {pipeline.split(' ')[0]}", "",
             f"pipe = {pipeline.split(' ')[0]}.from_pretrained({model.path!r}, dtype=torch.bfloat16)",
             "pipe.load_lora_weights(\"<this folder>\")", "```", ""]
    if merged:
        lines += ["`transformer/` holds the base transformer with this LoRA fused in.", ""]
    regularizer = objective.regularizer
    lines += ["## Training recipe", "",
              "| setting | value |", "|---|---|",
              f"| adapter | {model.adapter} |", f"| objective | {objective.name} |",
              f"| rewards | {', '.join(f'{k} × {v}' for k, v in rewards.weights.items())} |",
              f"| region regularizer | {'λ_bg ' + str(regularizer.lambda_background) + ', λ_ed ' + str(regularizer.lambda_edit) + ', ' + regularizer.grid + ' grid' if regularizer.enabled else 'off'} |",  # noqa: E501
              f"| region advantages | {'on' if config.region_advantages.enabled else 'off'} |",
              f"| region noise | {'on' if config.sampler.region_noise else 'off'} |",
              f"| LoRA targets | {', '.join(config.lora.target_modules)} |",
              f"| resolution | {config.data.resolution[0]}×{config.data.resolution[1]} |",
              f"| sampler | {config.sampler.num_steps} steps ({config.sampler.solver}) |",
              f"| groups × group size per step | {config.train.groups_per_step} × {config.train.group_size} |",
              f"| steps trained | {last.get('step', 'unknown')} |"]
    for key in sorted(k for k in last if k.startswith("reward_")):
        lines.append(f"| last {key} | {last[key]:.4f} |")
    lines += ["", "## Training data: provenance and licences", "", f"Dataset: `{config.data.dataset}`.", ""]
    if "error" in provenance:
        lines += [f"Not readable at export time ({provenance['error']}): check its licences before publishing.", ""]
    else:
        lines += [f"{provenance['rows']} rows.", "", "| source dataset | licence | rows |", "|---|---|---:|"]
        lines += [f"| {r['dataset']} | {r['licence']} | {r['rows']} |" for r in provenance["by_source"]]
        lines += ["", "The LoRA is a derivative of these sources and of the base model: its use is bound by their "
                  "licences (non-commercial or no-derivatives sources restrict it accordingly).", ""]
    lines += ["## Benchmark results", ""]
    numbers = _numbers(benchmark) if benchmark else []
    if numbers:
        lines += ["| metric | value |", "|---|---:|", *[f"| {k} | {v:.4g} |" for k, v in numbers], ""]
    else:
        lines += ["None given (`editkit train export --benchmark <benchmarks evaluate JSON>` adds them).", ""]
    return "\n".join(lines)
