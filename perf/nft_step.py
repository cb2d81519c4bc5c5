"""The DiffusionNFT trainer step with v_old fused into the update's forward (``objective.nft.fuse_old_forward``)
against our own unfused step, on the tiny FLUX.1-Kontext: G = 4 ODE rollouts over 8 steps, decode, pixel reward,
then flow matching at 2 trained steps with the reference term and the region regularizer, one LoRA r8 update.

    unfused: before the update, one forward of the sampling policy per trained step and micro-batch gives v_old;
             the update then runs the same forward again, with gradients
    fused:   the update's forward gives v_old too (detached): the same numbers when the sampling policy is the
             current one and the iteration makes one update, so one forward less per trained step and micro-batch

Both take the same steps (same batches, noise, LoRA initialisation and rewards), interleaved round by round; the
medians, their ratio, the per-round ratios' median and the process's CPU seconds are reported, with whether each
step's loss and the first update's gradients are bit-identical.

    .venv/bin/python perf/nft_step.py                  # 2+2 blocks, 2 heads x 16
    .venv/bin/python perf/nft_step.py --heads 4 --head-dim 32 --out perf/results/nft_step_heads4.json
    .venv/bin/python perf/nft_step.py --smoke          # seconds: checks the script runs
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from perf import harness  # noqa: E402


def build_trainer(workdir: Path, model: Path, dataset: Path, fuse: str, args):
    from train.config import load_config
    from train.trainers import TRAINERS

    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml", [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={workdir / ('out-' + fuse)}",
        f"data.resolution=[{args.resolution}, {args.resolution}]", "objective.name=nft",
        "objective.regularizer.enabled=true", "objective.nft.ref_weight=0.0001",
        f"objective.nft.fuse_old_forward={fuse}", f"lora.rank={args.rank}", f"lora.alpha={args.rank}",
        f"sampler.num_steps={args.steps}", f"sampler.sde_window=[0, {args.steps}]",
        f"sampler.train_steps={args.trained}", "train.groups_per_step=1", "train.group_size=4",
        "train.micro_batch_size=4", "train.seed=0", "optim.gradient_accumulation=0", "logging.progress=false",
        "logging.tensorboard=false", "eval.every=0", "checkpoint.every=0", "rewards.overlap=false"])
    return TRAINERS.get("nft")(config)


def run(args) -> dict:
    from perf.peer_step import record_first_grads, tiny_model_and_rows

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, dataset = tiny_model_and_rows(workdir, args)
        trainers = {mode: build_trainer(workdir, model, dataset, mode, args) for mode in ("on", "off")}
        grads = {mode: record_first_grads(trainer) for mode, trainer in trainers.items()}
        logs: dict[str, list[dict]] = {mode: [] for mode in trainers}
        cpu: dict[str, list[float]] = {mode: [] for mode in trainers}

        def candidate(mode):
            def step():
                began = time.process_time()
                logs[mode].append(trainers[mode].step(len(logs[mode]) + 1))
                cpu[mode].append(time.process_time() - began)
            return step

        warmup = 0 if args.smoke else 1
        times = harness.interleaved({mode: candidate(mode) for mode in trainers}, rounds=args.rounds, warmup=warmup)
        cpu = {mode: values[warmup:] for mode, values in cpu.items()}
        for trainer in trainers.values():
            trainer.close()
    on, off = harness.median(times["on"]), harness.median(times["off"])
    same_grads = grads["on"].keys() == grads["off"].keys() and all(
        torch.equal(grads["on"][k], grads["off"][k]) for k in grads["off"])
    return {"model": f"tiny FLUX.1-Kontext (2+2 layers, {args.heads} heads x {args.head_dim}), LoRA r{args.rank}",
            "smoke": bool(args.smoke), "resolution": args.resolution, "group_size": 4, "sampling_steps": args.steps,
            "trained_steps": args.trained, "rounds": args.rounds, "threads": args.threads,
            "fused_median_s": on, "unfused_median_s": off, "speedup": off / on,
            "paired_speedup_median": harness.median([b / a for a, b in zip(times["on"], times["off"])]),
            "fused_cpu_median_s": harness.median(cpu["on"]), "unfused_cpu_median_s": harness.median(cpu["off"]),
            "cpu_speedup": harness.median(cpu["off"]) / harness.median(cpu["on"]),
            "fused_fraction": min(log["fused_old_forward"] for log in logs["on"]),
            "losses_equal": all(a["loss"] == b["loss"] for a, b in zip(logs["on"], logs["off"])),
            "first_update_grads_equal": same_grads,
            "fused_s": times["on"], "unfused_s": times["off"], "fused_cpu_s": cpu["on"], "unfused_cpu_s": cpu["off"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (after one warm-up round)")
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8, help="sampling steps (ODE)")
    parser.add_argument("--trained", type=int, default=2, help="trained steps per iteration")
    parser.add_argument("--threads", type=int, default=2)
    harness.add_options(parser, "nft_step")
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.resolution, args.steps, args.trained = 1, 32, 2, 1
    provenance = harness.Provenance(args.smoke)
    result = run(args)
    print(f"{'':<9} {'median s':>9} {'CPU s':>7}")
    print(f"{'fused':<9} {result['fused_median_s']:>9.3f} {result['fused_cpu_median_s']:>7.3f}")
    print(f"{'unfused':<9} {result['unfused_median_s']:>9.3f} {result['unfused_cpu_median_s']:>7.3f}")
    print(f"unfused / fused = {result['speedup']:.3f}x (per-round median {result['paired_speedup_median']:.3f}x, "
          f"CPU {result['cpu_speedup']:.3f}x); losses equal: {result['losses_equal']}; first update's gradients "
          f"bit-identical: {result['first_update_grads_equal']}")
    harness.write_result(harness.out_path(args, "nft_step"), result, provenance)


if __name__ == "__main__":
    main()
