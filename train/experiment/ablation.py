"""The miniature region-regularization ablation, one command: base editor, then the same RL budget per arm × seed.

``editkit train ablation --config train/configs/ablation.yaml [--smoke] [--out DIR]``

1. Pretrain the base editor (:mod:`train.experiment.pretrain`), or reuse it when its config hash matches.
2. For every arm and seed, run the RL trainer from the base model with the arm's overrides on top of the shared
   ``rl`` settings (same steps, groups, group size, learning rate: the same budget); ``workers`` runs execute at once,
   each in a spawned process with ``cpu_threads`` torch threads (every run is seeded by its own config, so the
   numbers do not depend on ``workers``). An arm whose config the trainers reject (e.g. a technique not implemented
   for that objective) is reported as unavailable with the reason, not run.
3. Every ``eval_every`` RL steps (and after the last) evaluate the run on the held-out rows with the same noise as
   the base editor's evaluation (:mod:`train.experiment.edit_metrics`): the curves show the model, not the prompts
   of that step's batch, and the last evaluation is the run's result. Write ``table.md``, ``table.json``,
   ``curves.png`` (held-out curves, mean ± std over seeds) and ``pareto.png`` (background PSNR against edit reward
   per arm and seed) into the output dir (:mod:`train.experiment.ablation_report`).

Arms are grouped in *families* by objective: the region regularizer exists only for DiffusionNFT and the
region-specific advantages only for GRPO, so a technique is compared with its own family's baseline.
"""
from __future__ import annotations

import copy
import gc
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from train.experiment.edit_metrics import METRICS
from editkit.config_meta import Range


@dataclass
class ArmConfig:
    name: str
    """the arm's name in tables, plots and run folders"""
    family: str
    """arms are compared within a family (same objective)"""
    description: str = ""
    """what the arm changes, shown in the results table"""
    overrides: dict[str, Any] = field(default_factory=dict)
    """nested TrainConfig values on top of `rl`"""
    compare_to: str = ""
    """the arm this one adds a technique to: the table pairs them seed by seed"""


@dataclass
class AblationConfig:
    output_dir: str = "results/ablation"
    """where the results go: table.md, table.json, curves.png"""
    work_dir: str = "runs/ablation"
    """scratch: base/ (model, data splits) and runs/<arm>-seed<k>/"""
    base_config: str = "train/configs/ablation_base.yaml"
    """the base editor's pretrain config (train/experiment/pretrain.py)"""
    base: dict[str, Any] = field(default_factory=dict)
    """nested overrides of the base config"""
    seeds: Annotated[list[int], Range(ge=0)] = field(default_factory=lambda: [0, 1])
    """every arm is run once per seed"""
    rl: dict[str, Any] = field(default_factory=dict)
    """TrainConfig values shared by every arm (the budget)"""
    arms: list[ArmConfig] = field(default_factory=list)
    """the compared runs: each a name, family and TrainConfig overrides"""
    cpu_threads: Annotated[int, Range(ge=0)] = 1
    """torch CPU threads per run process (0 = torch's default)"""
    workers: Annotated[int, Range(ge=1)] = 2
    """how many (arm, seed) RL runs execute at once, each in its own spawned process (1: in this process, one after
    another); the results do not depend on it"""
    eval_every: Annotated[int, Range(ge=1)] = 4
    """RL steps between evaluations on the validation rows (and always after the last step)"""
    read_test: bool = True
    """false (pilot runs, choosing settings): the table reports the validation rows and the test rows stay unread"""
    base_editor: str = ""
    """a shipped base editor (model/ + SHA256SUMS, train/experiment/base_editor.py), checked before use; empty:
    pretrain one from base_config"""


def deep_merge(base: dict, extra: dict) -> dict:
    """``extra`` merged into a copy of ``base`` (nested dicts merged, everything else replaced)."""
    merged = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_ablation_config(path: str | Path, smoke: bool = False) -> AblationConfig:
    """The YAML's values; with ``smoke``, its ``smoke:`` section merged on top (a tiny end-to-end run)."""
    from editkit.config import from_dict, load_yaml

    values = load_yaml(path)
    smoke_values = values.pop("smoke", {})
    if smoke:
        values = deep_merge(values, smoke_values)
    values["arms"] = [from_dict(ArmConfig, arm, f"arms[{i}]") for i, arm in enumerate(values.get("arms", []))]
    names = {arm.name: arm for arm in values["arms"]}
    for arm in values["arms"]:
        if arm.compare_to and (arm.compare_to not in names or names[arm.compare_to].family != arm.family):
            raise ValueError(f"arm {arm.name}: compare_to {arm.compare_to!r} is not an arm of family {arm.family}")
    return from_dict(AblationConfig, values, f"ablation config {path}")


def base_config(config: AblationConfig):
    from editkit.config import from_dict, load_yaml
    from train.experiment.pretrain import PretrainConfig

    values = load_yaml(config.base_config)
    values = deep_merge(values, config.base)
    values["output_dir"] = str(Path(config.work_dir) / "base")
    values["cpu_threads"] = config.cpu_threads
    return from_dict(PretrainConfig, values, f"base config {config.base_config}")


def model_dir(config: AblationConfig, base) -> Path:
    """The base editor every run starts from: the shipped one when ``base_editor`` is set, else the pretrained one."""
    return Path(config.base_editor) / "model" if config.base_editor else Path(base.output_dir) / "model"


def arm_train_config(config: AblationConfig, arm: ArmConfig, seed: int, base) -> Any:
    """The arm's TrainConfig: shared budget + arm overrides + what every run must share (model, data, seed)."""
    from editkit.config import from_dict
    from train.config import TrainConfig

    base_dir = Path(base.output_dir)
    fixed = {"output_dir": str(Path(config.work_dir) / "runs" / f"{arm.name}-seed{seed}"),
             "model": {"path": str(model_dir(config, base)), "guidance_scale": base.guidance_scale,
                       "max_sequence_length": base.max_sequence_length},
             "data": {"dataset": str(base_dir / "data" / ("rl" if base.data.rl else "train")), "eval_size": 0,
                      "resolution": [base.data.resolution, base.data.resolution]},
             "train": {"seed": seed}, "eval": {"every": config.eval_every}, "checkpoint": {"every": 0}}
    values = deep_merge(deep_merge(config.rl, arm.overrides), fixed)
    return from_dict(TrainConfig, values, f"arm {arm.name}").validate()


def read_curves(run_dir: Path) -> dict[str, dict[str, list]]:
    """From the run's metrics.jsonl: ``train`` (step -> each logged training-batch reward component) and
    ``heldout`` (the steps evaluated, and each held-out metric there)."""
    train: dict[str, list] = {}
    heldout: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key, value in row.items():
            if key.startswith("reward_") and key not in ("reward_mean", "reward_std"):
                train.setdefault(key.removeprefix("reward_"), []).append(value)
        if any(key.startswith("heldout_") for key in row):
            heldout.setdefault("step", []).append(row["step"])
            for name in METRICS:
                heldout.setdefault(name, []).append(row[f"heldout_{name}"])
    return {"train": train, "heldout": heldout}


def heldout_trainer(trainer_cls, heldout, base):
    """The trainer, with its periodic evaluation replaced by the ablation's: every metric on the ablation's
    held-out rows with the same noise as the base editor's evaluation (so a curve shows the model, not the prompts
    of that step's batch)."""
    from train.experiment.edit_metrics import evaluate_model

    class HeldoutTrainer(trainer_cls):
        def evaluate(self, step: int) -> dict[str, float]:
            metrics = evaluate_model(self.adapter, heldout, base.eval_steps, base.eval_seed)
            return {f"heldout_{name}": value for name, value in metrics.items()}

    return HeldoutTrainer


def run_arm(config: AblationConfig, arm: ArmConfig, seed: int, base, validation, test) -> dict:
    """One RL run: curves on the validation rows every ``eval_every`` steps, then the test rows, once."""
    from train.experiment.edit_metrics import evaluate_model
    from train.trainers import TRAINERS

    try:
        train_config = arm_train_config(config, arm, seed, base)
    except ValueError as error:
        return {"unavailable": str(error)}
    run_dir = Path(train_config.output_dir)
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a fresh run every time: the table never mixes old and new runs
    began = time.perf_counter()
    trainer = heldout_trainer(TRAINERS.get(train_config.objective.name), validation, base)(train_config)
    trainer.fit()
    seconds = time.perf_counter() - began
    curves = read_curves(run_dir)
    # the trainer always evaluates after its last step: the validation values there, the test values once here
    validation_metrics = {name: curves["heldout"][name][-1] for name in METRICS}
    metrics = evaluate_model(trainer.adapter, test, base.eval_steps, base.eval_seed) if config.read_test \
        else validation_metrics
    del trainer
    gc.collect()  # many runs in one process: free each model before the next
    return {"metrics": metrics, "validation": validation_metrics, "seconds": round(seconds, 1), "curves": curves,
            "optimizer": optimizer_stats(run_dir)}


def optimizer_stats(run_dir: Path) -> dict[str, list[float]]:
    """Per RL step, what the objective logged about its updates (GRPO: the policy ratio's mean and clip fraction;
    every objective: the gradient norm), for the table's reading of each arm."""
    logged: dict[str, list[float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        for key in ("ratio", "ratio_first", "clip_fraction", "grad_norm"):
            if key in row:
                logged.setdefault(key, []).append(row[key])
    return logged


_WORKER: dict[str, Any] = {}


def _start_worker(config: AblationConfig, split_paths: dict[str, str], resolution: int) -> None:
    """A spawned run process: its torch threads, and the validation and test rows loaded once for all its runs."""
    from train.experiment.pretrain import load_examples, set_threads

    set_threads(config.cpu_threads)
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()  # one line per finished run, printed by the parent
    transformers.utils.logging.disable_progress_bar()
    config.rl = deep_merge(config.rl, {"logging": {"progress": False}})
    _WORKER["config"] = config
    _WORKER["base"] = base_config(config)
    rows = {name: load_examples(Path(path), resolution) for name, path in split_paths.items()}
    _WORKER["validation"], _WORKER["test"] = rows["validation"], rows.get("test", rows["validation"])


def _worker_run(arm: ArmConfig, seed: int) -> dict:
    return run_arm(_WORKER["config"], arm, seed, _WORKER["base"], _WORKER["validation"], _WORKER["test"])


def run_all(config: AblationConfig, arms: list[ArmConfig], base, validation, test, split_paths: dict[str, str],
            on_result) -> None:
    """Every (arm, seed) run of ``arms``, ``config.workers`` at a time; ``on_result(arm, seed, result)`` as each
    finishes (in the order they finish)."""
    jobs = [(arm, seed) for arm in arms for seed in config.seeds]
    if config.workers == 1:
        for arm, seed in jobs:
            on_result(arm, seed, run_arm(config, arm, seed, base, validation, test))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=config.workers, mp_context=context, initializer=_start_worker,
                             initargs=(config, split_paths, base.data.resolution)) as pool:
        futures = {pool.submit(_worker_run, arm, seed): (arm, seed) for arm, seed in jobs}
        for future in as_completed(futures):
            arm, seed = futures[future]
            on_result(arm, seed, future.result())


def mean_std(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    std = (sum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) ** 0.5 if len(finite) > 1 else 0.0
    return mean, std


def run_ablation(config: AblationConfig, out_dir: Path) -> dict:
    from train.experiment.pretrain import load_examples, pretrain, set_threads

    began = time.perf_counter()
    set_threads(config.cpu_threads)
    base = base_config(config)
    if config.base_editor:
        from train.experiment.ablation_data import prepare_splits
        from train.experiment.base_editor import verify

        verify(Path(config.base_editor))
        shipped = json.loads((Path(config.base_editor) / "base_editor.json").read_text())
        splits = prepare_splits(base.data, Path(base.output_dir) / "data")
        base_seconds = shipped["seconds"]
    else:
        base_dir = pretrain(base)
        splits = {name: base_dir / "data" / name for name in ("train", "heldout", "validation")}
        base_seconds = json.loads((base_dir / "pretrain.json").read_text())["seconds"]
    validation_path = splits["validation" if base.data.validation else "heldout"]
    validation = load_examples(validation_path, base.data.resolution)
    test = load_examples(splits["heldout"], base.data.resolution) if config.read_test else validation
    split_paths = {"validation": str(validation_path), **({"test": str(splits["heldout"])} if config.read_test else {})}
    base_metrics = base_editor_metrics(config, base, validation, test)
    load_before = os.getloadavg()
    # an arm whose config the trainers reject is reported with the reason and not run
    available, unavailable = [], {}
    for arm in config.arms:
        try:
            arm_train_config(config, arm, config.seeds[0], base)
            available.append(arm)
        except ValueError as error:
            unavailable[arm.name] = str(error)
            print(f"arm {arm.name}: unavailable ({error})", flush=True)
    results: dict[str, dict[int, dict]] = {arm.name: {} for arm in available}
    written: set[str] = set()

    def summaries() -> list[dict]:
        arms = []
        for arm in config.arms:
            summary = {"name": arm.name, "family": arm.family, "description": arm.description,
                       "overrides": arm.overrides, "compare_to": arm.compare_to}
            if arm.name in unavailable:
                arms.append({**summary, "seeds": [], "unavailable": unavailable[arm.name]})
                continue
            runs = results[arm.name]
            if len(runs) < len(config.seeds):
                continue  # unfinished: an interrupted run still leaves its finished arms
            runs = {seed: runs[seed] for seed in config.seeds}
            summary.update({m: mean_std([r["metrics"][m] for r in runs.values()]) for m in METRICS},
                           seeds=list(runs), per_seed={s: r["metrics"] for s, r in runs.items()},
                           validation={s: r["validation"] for s, r in runs.items()},
                           seconds=[r["seconds"] for r in runs.values()],
                           optimizer={s: r["optimizer"] for s, r in runs.items()},
                           curves={s: r["curves"] for s, r in runs.items()})
            arms.append(summary)
        return arms

    def finished(arm: ArmConfig, seed: int, result: dict) -> None:
        results[arm.name][seed] = result
        done = sum(len(r) for r in results.values())
        print(f"[{done}/{len(available) * len(config.seeds)}] arm {arm.name} seed {seed} ({result['seconds']} s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in result["metrics"].items()), flush=True)
        if len(results[arm.name]) == len(config.seeds) and arm.name not in written:
            written.add(arm.name)
            write_outputs(partial_report(config, base_metrics, base_seconds, test, validation, summaries(), began,
                                         load_before), out_dir, quiet=True)

    run_all(config, available, base, validation, test, split_paths, finished)
    write_outputs(partial_report(config, base_metrics, base_seconds, test, validation, summaries(), began,
                                 load_before), out_dir)
    return json.loads((out_dir / "table.json").read_text())


def partial_report(config: AblationConfig, base_metrics: dict, base_seconds, test, validation, arms: list,
                   began: float, load_before: tuple[float, ...] = ()) -> dict:
    base = base_config(config)
    load = {"before_runs": [round(v, 2) for v in load_before], "at_write": [round(v, 2) for v in os.getloadavg()]}
    return {"base": base_metrics, "base_seconds": base_seconds, "heldout_rows": len(test),
            "table_rows": "test" if config.read_test else "validation (pilot: the test rows unread)",
            "validation_rows": len(validation) if base.data.validation else 0,
            "base_editor": config.base_editor or "pretrained by this run", "seeds": config.seeds,
            "rl": config.rl, "arms": arms, "hardware": hardware(), "workers": config.workers,
            "load_average_1_5_15_min": load, "total_seconds": round(time.perf_counter() - began, 1)}


def base_editor_metrics(config: AblationConfig, base, validation, test) -> dict[str, dict[str, float]]:
    """The base editor on the test rows (``base_model``, and the references: copy the source, the VAE round trip of
    the ground truth) and on the validation rows (``validation``), with the evaluation noise every run gets."""
    import torch

    from train.adapters.flux_kontext import FluxKontextAdapter
    from train.experiment.edit_metrics import evaluate_model
    from train.experiment.pretrain import device, model_config, reference_metrics

    adapter = FluxKontextAdapter(model_config(base, model_dir(config, base)), device(), torch.float32)
    metrics = {"base_model": evaluate_model(adapter, test, base.eval_steps, base.eval_seed),
               **reference_metrics(adapter, test),
               "validation": evaluate_model(adapter, validation, base.eval_steps, base.eval_seed)}
    del adapter
    gc.collect()
    return metrics


def hardware() -> dict[str, Any]:
    """What the numbers were computed on: CPU model, cores, torch's CPU capability and threads."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "ATEN_CPU_CAPABILITY": os.environ.get("ATEN_CPU_CAPABILITY", ""), "threads": torch.get_num_threads()}


def write_outputs(report: dict, out_dir: Path, quiet: bool = False) -> None:
    from editkit.store import write_json
    from train.experiment.ablation_report import markdown_table, plot_curves, plot_pareto

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "table.json", report)
    (out_dir / "table.md").write_text(markdown_table(report))
    plot_curves(report, out_dir / "curves.png")
    plot_pareto(report, out_dir / "pareto.png")
    if not quiet:
        print((out_dir / "table.md").read_text())
