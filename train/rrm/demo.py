"""`editkit rrm demo`: does the RRM learn from preferences? A synthetic task, CPU, minutes.

Task: the source is a smooth random image, the instruction "paint the square red" (the centre square). A candidate
edit paints the square with colour (1, 1-α, 1-α) — white at α = 0, pure red at α = 1 — and adds background noise
of std σ. The ground truth is the
source with a pure red square; of two candidates the **winner is the one closer to the ground truth** (mean squared
error), so both a weak edit and a noisy background lose.

The SFT teacher is deliberately weak: its trajectories judge the square (score = round(9·α), follow verdict) and
never notice the background (keep verdict always "yes") — a teacher's blind spot that only the preference labels
reveal. Per seed: a small random Qwen2.5-VL (:mod:`train.rrm.small_model`) → SFT on teacher trajectories → GCPO on
training pairs; pairwise accuracy on held-out pairs (new sources) before SFT, after SFT and after GCPO, scored
through the MLLM client's transformers backend exactly as the reward does (greedy, log-prob expected score).
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from train.rrm.format import PROMPT_DIR, FormatConfig, render_trajectory

INSTRUCTION = "paint the square red"
FORMAT = FormatConfig(score_min=0, score_max=9)
SIZE, BOX = 56, slice(18, 38)


@dataclass
class DemoSizes:
    sft_records: int = 192
    sft_steps: int = 150
    train_pairs: int = 64
    gcpo_steps: int = 40
    heldout_pairs: int = 64
    pairs_per_step: int = 4
    trajectories: int = 4


QUICK = DemoSizes(sft_records=8, sft_steps=30, train_pairs=4, gcpo_steps=2, heldout_pairs=4, pairs_per_step=2,
                  trajectories=2)


def source_image(rng) -> np.ndarray:
    from PIL import Image

    base = (rng.random((4, 4, 3)) * 200 + 28).astype(np.uint8)
    return np.asarray(Image.fromarray(base).resize((SIZE, SIZE), Image.BILINEAR)).astype(np.float64) / 255


def candidate(source: np.ndarray, alpha: float, sigma: float, rng) -> np.ndarray:
    edited = source.copy()
    red = np.array([1.0, 0.0, 0.0])
    edited[BOX, BOX] = alpha * red + (1 - alpha) * np.ones(3)  # white -> red: strength visible on its own
    background = np.ones((SIZE, SIZE), dtype=bool)
    background[BOX, BOX] = False
    edited[background] += rng.normal(0, sigma, (int(background.sum()), 3))
    return np.clip(edited, 0, 1)


def ground_truth(source: np.ndarray) -> np.ndarray:
    return candidate(source, 1.0, 0.0, np.random.default_rng(0))


def teacher_trajectory(alpha: float) -> str:
    follow = "yes" if alpha >= 0.5 else "no"
    return render_trajectory({"keep": ["background unchanged"], "follow": ["square is red"], "quality": ["clean"]},
                             [{"group": "keep", "principle": "background unchanged", "satisfied": "yes"},
                              {"group": "follow", "principle": "square is red", "satisfied": follow},
                              {"group": "quality", "principle": "clean", "satisfied": "yes"}],
                             int(round(9 * alpha)))


def default_phrases() -> list[str]:
    from train.rrm.small_model import format_phrases

    examples = [teacher_trajectory(a) for a in (0.0, 1.0)]
    examples.append(examples[0].replace('"satisfied":"yes"', '"satisfied":"no"'))
    return format_phrases((PROMPT_DIR / f"rrm_{FORMAT.prompt_version}.txt").read_text(), examples) + [
        INSTRUCTION]


def _save(folder: Path, name: str, array: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray((array * 255).round().astype(np.uint8)).save(folder / name)
    return name


def make_task(folder: Path, sizes: DemoSizes, seed: int) -> dict[str, Path]:
    """Write sft.jsonl, pairs.jsonl (GCPO) and heldout.jsonl; returns their paths and the teacher's accuracy."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sft = []
    for i in range(sizes.sft_records):
        source = source_image(rng)
        alpha, sigma = rng.uniform(0, 1), rng.uniform(0, 0.25)
        sft.append({"source": _save(folder, f"sft{i}_s.png", source), "instruction": INSTRUCTION,
                    "edited": _save(folder, f"sft{i}_e.png", candidate(source, alpha, sigma, rng)),
                    "trajectory": teacher_trajectory(alpha)})
    paths = {"sft": folder / "sft.jsonl", "pairs": folder / "pairs.jsonl", "heldout": folder / "heldout.jsonl"}
    paths["sft"].write_text("".join(json.dumps(r) + "\n" for r in sft))
    teacher_right = []
    for split, count in (("pairs", sizes.train_pairs), ("heldout", sizes.heldout_pairs)):
        rows = []
        while len(rows) < count:
            source = source_image(rng)
            truth = ground_truth(source)
            params = [(rng.uniform(0, 1), rng.uniform(0, 0.25)) for _ in range(2)]
            images = [candidate(source, a, s, rng) for a, s in params]
            errors = [float(((image - truth) ** 2).mean()) for image in images]
            if abs(errors[0] - errors[1]) < 0.05 * max(errors):  # near-ties: no clear winner
                continue
            k = len(rows)
            rows.append({"source": _save(folder, f"{split}{k}_s.png", source), "instruction": INSTRUCTION,
                         "image_a": _save(folder, f"{split}{k}_a.png", images[0]),
                         "image_b": _save(folder, f"{split}{k}_b.png", images[1]),
                         "winner": "A" if errors[0] < errors[1] else "B"})
            if split == "heldout":
                scores = [round(9 * a) for a, _ in params]
                truth_a = errors[0] < errors[1]
                teacher_right.append(0.5 if scores[0] == scores[1] else float((scores[0] > scores[1]) == truth_a))
        paths[split].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {**paths, "teacher_accuracy": sum(teacher_right) / len(teacher_right)}


def heldout_accuracy(model_dir: Path, heldout: Path) -> dict:
    from editkit.mllm import Client, ClientConfig
    from train.rrm.data import load_pairs
    from train.rrm.scoring import pairwise_accuracy

    pairs, _ = load_pairs(heldout)
    client = Client(ClientConfig(backend="transformers", model=str(model_dir), device="cpu", cache_dir="",
                                 max_concurrency=32, temperature=0.0, max_tokens=64))
    try:
        return pairwise_accuracy(client, pairs, FORMAT, top_logprobs=10, max_tokens=64)
    finally:
        client.close()


def run_seed(root: Path, sizes: DemoSizes, seed: int) -> dict:
    from editkit.config import load_file
    from train.rrm.config import GCPORunConfig, SFTRunConfig
    from train.rrm.gcpo_trainer import GCPOTrainer
    from train.rrm.sft import SFTTrainer
    from train.rrm.small_model import build_small_rrm

    task = make_task(root / "data", sizes, seed)
    base = build_small_rrm(root / "base", phrases=default_phrases(), seed=seed, max_pixels=SIZE * SIZE)
    common = ["model.device=cpu", f"model.max_pixels={SIZE * SIZE}", "lora.enabled=false", "lora.train_vision=true",
              f"format.score_max={FORMAT.score_max}", f"train.seed={seed}", "checkpoint.every=0",
              "logging.tensorboard=false", "logging.progress=false"]
    result = {"seed": seed, "teacher": task["teacher_accuracy"], "before_sft": heldout_accuracy(base, task["heldout"])}
    sft = load_file(SFTRunConfig, None, common + [
        f"model.path={base}", f"data.path={task['sft']}", f"output_dir={root / 'sft'}",
        "optim.learning_rate=0.003", "train.batch_size=8", "train.micro_batch_size=8",
        f"train.max_steps={sizes.sft_steps}"])
    sft_model = SFTTrainer(sft).fit()
    result["after_sft"] = heldout_accuracy(sft_model, task["heldout"])
    gcpo = load_file(GCPORunConfig, None, common + [
        f"model.path={sft_model}", f"data.path={task['pairs']}", f"output_dir={root / 'gcpo'}",
        "optim.learning_rate=0.0003", f"train.batch_size={sizes.pairs_per_step}", "train.micro_batch_size=32",
        f"train.max_steps={sizes.gcpo_steps}", f"gcpo.num_trajectories={sizes.trajectories}",
        "gcpo.max_new_tokens=40", "gcpo.temperature=1.0", "gcpo.updates_per_batch=2"])
    result["after_gcpo"] = heldout_accuracy(GCPOTrainer(gcpo).fit(), task["heldout"])
    return result


STAGES = (("before_sft", "before SFT (random init)"), ("after_sft", "after SFT"), ("after_gcpo", "after SFT + GCPO"))


def summarise(runs: list[dict]) -> dict:
    def stat(values):
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    summary = {key: stat([r[key]["accuracy"] for r in runs]) for key, _ in STAGES}
    summary["teacher"] = stat([r["teacher"] for r in runs])
    summary["valid_fraction"] = {key: stat([r[key]["valid_fraction"] for r in runs]) for key, _ in STAGES}
    return summary


def table_markdown(summary: dict, runs: list[dict], seconds: float, cpu_seconds: float) -> str:
    lines = ["| RRM | held-out pairwise accuracy (mean ± std) | per seed | valid replies |", "|---|---|---|---|"]
    for key, label in STAGES:
        s, v = summary[key], summary["valid_fraction"][key]
        lines.append(f"| {label} | {s['mean']:.3f} ± {s['std']:.3f} | "
                     f"{', '.join(f'{x:.3f}' for x in s['values'])} | {v['mean']:.2f} |")
    t = summary["teacher"]
    lines.append(f"| SFT teacher's own scores (reference) | {t['mean']:.3f} ± {t['std']:.3f} | "
                 f"{', '.join(f'{x:.3f}' for x in t['values'])} | 1.00 |")
    pairs = runs[0]["after_sft"]["pairs"]
    lines.append(f"\n{len(runs)} seeds, {pairs} held-out pairs per seed; ties and unreadable replies count 0.5; "
                 f"wall time {seconds / 60:.1f} min, CPU time {cpu_seconds / 60:.1f} min (one thread).")
    return "\n".join(lines)


def run_demo(out: str | Path, results: str | Path, seeds: int = 3, quick: bool = False) -> str:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the demo's numbers are for one thread; restored at the end
    try:
        return _run_demo(Path(out), Path(results), seeds, QUICK if quick else DemoSizes())
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, results: Path, seeds: int, sizes: DemoSizes) -> str:
    if out.exists():
        shutil.rmtree(out)
    began, cpu_began = time.perf_counter(), time.process_time()
    runs = [run_seed(out / f"seed{seed}", sizes, seed) for seed in range(seeds)]
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu_began
    summary = summarise(runs)
    table = table_markdown(summary, runs, seconds, cpu_seconds)
    results.mkdir(parents=True, exist_ok=True)
    (results / "table.md").write_text(table + "\n")
    (results / "table.json").write_text(json.dumps({"summary": summary, "runs": runs, "seconds": seconds,
                                                    "cpu_seconds": cpu_seconds,
                                                    "sizes": sizes.__dict__, "quick": sizes == QUICK}, indent=2)
                                       + "\n")
    return table
