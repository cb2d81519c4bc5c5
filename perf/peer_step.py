"""The GRPO trainer step with and without rollout-graph reuse (``train.reuse_rollout_graph``), on the tiny
FLUX.1-Kontext: G = 4 Flow-SDE rollouts over 4 steps with log-probs, decode, pixel reward, one LoRA update over all
4 transitions.

    reuse on:  the rollout runs the trained steps' forwards with gradients; the update back-propagates through them
    reuse off: the rollout runs without gradients; the update recomputes those forwards

Two trainers with the same config except that option take the same steps (the same batches), interleaved round by
round; the medians, their ratio and the median of the per-round ratios (robust to load bursts) are reported, with
whether each step's rewards are equal (bit for bit) and the largest relative difference of the two trainers'
gradient norms (equal gradients up to float32 rounding).

    .venv/bin/python perf/peer_step.py                 # ours: reuse vs recompute
    .venv/bin/python perf/peer_step.py --heads 4 --head-dim 32
    .venv/bin/python perf/peer_step.py --smoke         # seconds: checks the script runs (ours only)

``--peer PATH`` (a local clone of flow_grpo, whose Kontext functions would be imported from that clone, never
copied here) is not implemented: the script stops with a one-line message saying so.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "train"))  # the test-suite's exported-dataset builder

from perf import harness  # noqa: E402


def build_trainer(workdir: Path, model: Path, dataset: Path, reuse: str, args):
    from train.config import load_config
    from train.trainers import TRAINERS

    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml", [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={workdir / ('out-' + reuse)}",
        f"data.resolution=[{args.resolution}, {args.resolution}]", "objective.name=grpo",
        "objective.regularizer.enabled=false", f"lora.rank={args.rank}", f"lora.alpha={args.rank}",
        "sampler.num_steps=4", "sampler.sde_window=[0, 4]", "sampler.train_steps=0",
        "train.groups_per_step=1", "train.group_size=4", "train.micro_batch_size=4", "train.seed=0",
        f"train.reuse_rollout_graph={reuse}", "optim.gradient_accumulation=0", "logging.progress=false",
        "logging.tensorboard=false", "eval.every=0", "checkpoint.every=0", "rewards.overlap=false"])
    return TRAINERS.get("grpo")(config)


def same(a: float, b: float) -> bool:
    """Bit-equal, NaN equal to NaN (a step whose rewards are all non-finite logs NaN means on both sides)."""
    return a == b or (math.isnan(a) and math.isnan(b))


def run(args) -> dict:
    from conftest import build_edit_dataset

    from train.experiment.small_kontext import build_small_kontext

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model = build_small_kontext(workdir / "model", num_layers=2, num_single_layers=2,
                                    num_attention_heads=args.heads, attention_head_dim=args.head_dim)
        dataset = build_edit_dataset(workdir / "dataset", count=8, size=args.resolution, corrupt=False)
        trainers = {mode: build_trainer(workdir, model, dataset, mode, args) for mode in ("on", "off")}
        logs: dict[str, list[dict]] = {mode: [] for mode in trainers}

        def stepper(mode):
            def step():
                trainer = trainers[mode]
                logs[mode].append(trainer.step(len(logs[mode]) + 1))
            return step

        times = harness.interleaved({mode: stepper(mode) for mode in trainers}, rounds=args.rounds,
                                     warmup=0 if args.smoke else 1)
        for trainer in trainers.values():
            trainer.close()
    on, off = harness.median(times["on"]), harness.median(times["off"])
    rewards_equal = all(same(a[k], b[k]) for a, b in zip(logs["on"], logs["off"]) for k in a if k.startswith("reward"))
    grad_diff = max(abs(a["grad_norm"] - b["grad_norm"]) / max(abs(b["grad_norm"]), 1e-30)
                    for a, b in zip(logs["on"], logs["off"]))
    return {"model": f"tiny FLUX.1-Kontext (2+2 layers, {args.heads} heads x {args.head_dim}), LoRA r{args.rank}",
            "smoke": bool(args.smoke), "resolution": args.resolution, "group_size": 4, "sampling_steps": 4,
            "trained_steps": 4, "rounds": args.rounds, "threads": args.threads,
            "reuse_median_s": on, "recompute_median_s": off, "reuse_over_recompute": on / off,
            "speedup": off / on,
            "paired_ratio_median": harness.median([a / b for a, b in zip(times["on"], times["off"])]),
            "reused_fraction": min(log["reused"] for log in logs["on"]),
            "rewards_equal": rewards_equal, "grad_norm_max_rel_diff": grad_diff,
            "reuse_s": times["on"], "recompute_s": times["off"], "peer": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", type=Path, default=None, help="a local clone of flow_grpo (not implemented)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds (after one warm-up round)")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    harness.add_options(parser, "peer_step")
    args = parser.parse_args()
    if args.peer is not None:
        sys.exit("peer_step.py: --peer is not implemented (the comparison against flow_grpo's Kontext functions is "
                 "missing); run without --peer for our step with and without rollout-graph reuse")
    if args.smoke:
        args.rounds, args.resolution = 1, 32
    provenance = harness.Provenance(args.smoke)
    result = run(args)
    print(f"{'':<10} {'median s':>9}")
    print(f"{'reuse':<10} {result['reuse_median_s']:>9.3f}")
    print(f"{'recompute':<10} {result['recompute_median_s']:>9.3f}")
    print(f"reuse / recompute = {result['reuse_over_recompute']:.3f} (per-round median "
          f"{result['paired_ratio_median']:.3f}); rewards equal: {result['rewards_equal']}; "
          f"grad norm max rel diff {result['grad_norm_max_rel_diff']:.2e}")
    harness.write_result(harness.out_path(args, "peer_step"), result, provenance)


if __name__ == "__main__":
    main()
