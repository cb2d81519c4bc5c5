"""Reward calls overlapped with rollout: GRPO step time with an MLLM judge that answers after a fixed delay,
``rewards.overlap = true`` (each micro-batch scored on the reward thread while the next one rolls out) vs ``false``
(the whole batch scored after the rollout).

The judge is the local :class:`tests.support.scripted_server.ScriptedServer` with ``--capacity`` request slots (a served
judge's batch slots: more concurrent requests queue), each request taking ``--delay`` seconds. With the whole
batch scored at once, N requests cost about ``ceil(N / capacity) · delay``; overlapped, only the last micro-batch's
requests are not hidden behind a rollout, as long as one micro-batch's rollout takes longer than its judging.
The policy is the tiny FLUX.1-Kontext (CPU), several micro-batches per step, the same steps and seeds in both
modes (interleaved; minimum over repeats, because on a shared machine other jobs only ever add time).

    .venv/bin/python perf/reward_overlap.py                    # delay 0.2 s, capacity 2
    .venv/bin/python perf/reward_overlap.py --delay 0.5 --steps 4
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "train"))  # the test-suite's exported-dataset builder

from perf import harness  # noqa: E402


def slow_judge(delay_s: float, capacity: int):
    """A judge serving ``capacity`` requests at a time, each after ``delay_s``; it always says 7."""
    slots = threading.Semaphore(capacity)

    def handler(request):
        with slots:
            time.sleep(delay_s)
        return "7"

    return handler


def build_trainer(workdir: Path, url: str, args):
    from conftest import build_edit_dataset

    from train.experiment.small_kontext import build_small_kontext
    from train.config import load_config
    from train.trainers.grpo import GRPOTrainer

    model = build_small_kontext(workdir / "model")
    dataset = build_edit_dataset(workdir / "dataset", count=12, size=args.resolution, corrupt=False)
    config = load_config(REPO / "train" / "configs" / "tiny_kontext.yaml", [
        f"model.path={model}", f"data.dataset={dataset}", f"output_dir={workdir / 'out'}",
        f"data.resolution=[{args.resolution}, {args.resolution}]", "objective.name=grpo",
        "objective.regularizer.enabled=false", f"sampler.num_steps={args.num_steps}",
        f"sampler.sde_window=[0, {min(3, args.num_steps)}]", "train.groups_per_step=2", "train.group_size=4",
        f"train.micro_batch_size={args.micro_batch_size}", "logging.progress=false", "logging.tensorboard=false",
        "eval.every=0", "checkpoint.every=0", "rewards.weights={pixel_consistency: 1.0, mllm: 1.0}",
        f"rewards.options={{mllm: {{client: {{backend: openai, endpoint: '{url}', retries: 0, timeout_s: 60, "
        "max_concurrency: 8, max_tokens: 8, temperature: 0.0}}}"])
    return GRPOTrainer(config)


def timed_step(trainer, step: int) -> dict[str, float]:
    """One full iteration, with the rollout (incl. decode), the wait in score() and the whole step timed."""
    from train.algorithms.advantages import gathered_advantages

    began = time.perf_counter()
    batch = trainer.make_batch(step)
    sampled = time.perf_counter()
    trainer.sample(batch, step)
    scored = time.perf_counter()
    rewards, _ = trainer.score(batch)
    waited = time.perf_counter()
    advantages = gathered_advantages(trainer.accelerator, rewards, batch.group_ids, trainer.config.advantages)
    trainer.optimize(batch, advantages, step)
    ended = time.perf_counter()
    if not torch.isfinite(rewards).any():
        raise RuntimeError("every reward is NaN: the judge did not answer")
    return {"step_s": ended - began, "sample_s": scored - sampled, "score_s": waited - scored}


def run(args) -> dict:
    from tests.support.scripted_server import ScriptedServer
    from train.rollout.reward_thread import RewardScheduler

    torch.set_num_threads(args.threads)
    times: dict[bool, list[dict]] = {True: [], False: []}
    with ScriptedServer(slow_judge(args.delay, args.capacity)) as server, tempfile.TemporaryDirectory() as tmp:
        trainer = build_trainer(Path(tmp), server.url, args)
        schedulers = {mode: RewardScheduler(trainer.rewards, overlap=mode) for mode in (True, False)}
        micro_batches = len(trainer.micro_batches(8))
        try:
            for repeat in range(args.steps + 1):  # repeat 0 warms up (lazy inits, allocator, HTTP connections)
                start = trainer.sampler.state_dict()
                for mode in (True, False):  # the same rows, seeds and weights in both modes
                    trainer.sampler.load_state_dict(start)
                    trainer.reward_scheduler = schedulers[mode]
                    state = {k: v.detach().clone() for k, v in trainer.model.state_dict().items() if "lora" in k}
                    result = timed_step(trainer, repeat + 1)
                    trainer.model.load_state_dict(state, strict=False)  # undo the update: next mode, same policy
                    if repeat:
                        times[mode].append(result)
        finally:
            for scheduler in schedulers.values():
                scheduler.close()
        requests = server.count
    rows = []
    for mode in (False, True):
        row = {"mode": "overlapped" if mode else "sequential"}
        for key in ("step_s", "sample_s", "score_s"):
            values = [t[key] for t in times[mode]]
            row[key] = min(values)
            row[key.replace("_s", "_median_s")] = statistics.median(values)
        rows.append(row)
    return {"model": "tiny Kontext (1+1 blocks, head 16), GRPO", "device": "cpu", "threads": args.threads,
            "resolution": args.resolution, "sampling_steps": args.num_steps, "samples_per_step": 8,
            "micro_batch_size": args.micro_batch_size, "micro_batches_per_step": micro_batches,
            "judge_delay_s": args.delay, "judge_capacity": args.capacity, "timed_steps": args.steps,
            "judge_requests": requests, "rows": rows,
            "speedup": rows[0]["step_s"] / rows[1]["step_s"],
            "saved_s_per_step": rows[0]["step_s"] - rows[1]["step_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the judge takes per request")
    parser.add_argument("--capacity", type=int, default=2, help="requests the judge serves at once")
    parser.add_argument("--steps", type=int, default=3, help="timed iterations per mode (after one warm-up)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-steps", type=int, default=8, help="denoising steps per rollout")
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args, provenance = harness.parse(parser, "reward_overlap", smoke={"delay": 0.01, "steps": 1, "num_steps": 2,
                                                                       "resolution": 32})
    result = run(args)
    print(" ".join(f"{k}={v}" for k, v in result.items() if k not in ("rows", "speedup", "saved_s_per_step")))
    header = ["mode", "step_s", "sample_s", "score_s", "step_median_s"]
    print(" | ".join(f"{h:>13}" for h in header))
    for row in result["rows"]:
        print(" | ".join(f"{row[h]:>13.3f}" if isinstance(row[h], float) else f"{row[h]:>13}" for h in header))
    print(f"speedup {result['speedup']:.2f}x, {result['saved_s_per_step']:.3f} s saved per step")
    harness.write_result(harness.out_path(args, "reward_overlap"), result, provenance)


if __name__ == "__main__":
    main()
