"""Cost of recording the attention-concentration reward's maps during a rollout.

    .venv/bin/python perf/attention_overhead.py [--size 64] [--steps 4] [--batch 4] [--repeats 5]

A small FLUX.1-Kontext (``train.experiment.small_kontext``, 2+2 blocks, 4 heads x 32) on CPU rolls out ``--batch``
edits with the deterministic ODE in three modes: the plain model, the recorder installed but idle, and recording the
target phrase's attention (``train.rollout.attention.AttentionRecorder``). Modes are interleaved and the fastest
repeat of each is reported (other jobs on a shared machine only ever add time). Prints a table, writes
``perf/results/attention_overhead.json``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402

PROMPTS = ["make the red car blue", "remove the dog on the left", "add a hat to the man", "turn the sky orange"]
PHRASES = [["the red car"], ["the dog"], ["the man"], ["the sky"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (tokens = (size/2)^2)")
    parser.add_argument("--steps", type=int, default=4, help="ODE steps per rollout")
    parser.add_argument("--batch", type=int, default=4, help="edits per rollout (<= 4)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args, provenance = harness.parse(parser, "attention_overhead", smoke={"size": 32, "steps": 1, "batch": 1,
                                                                           "repeats": 1})

    import torch

    from train.experiment.small_kontext import build_small_kontext
    from train.adapters import build_adapter
    from train.rollout.attention import AttentionRecorder
    from train.config import ModelConfig
    from train.rollout.sampler import rollout

    torch.set_num_threads(args.threads)
    batch, size = min(args.batch, len(PROMPTS)), args.size
    with tempfile.TemporaryDirectory() as tmp:
        path = build_small_kontext(Path(tmp) / "kontext", num_layers=2, num_single_layers=2, attention_head_dim=32,
                                  num_attention_heads=4)
        adapter = build_adapter(ModelConfig(path=str(path), max_sequence_length=32), torch.device("cpu"),
                                torch.float32)
    sources = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    cond = adapter.condition(PROMPTS[:batch], sources)
    sigmas = adapter.sigmas(args.steps, size, size)
    noise = adapter.noise(batch, size, size, torch.Generator().manual_seed(1))
    tokens = noise.shape[1]
    phrase_mask = adapter.phrase_token_mask(PROMPTS[:batch], PHRASES[:batch])

    def run() -> torch.Tensor:
        return rollout(adapter, adapter.transformer, cond, noise.clone(), sigmas, sde="flow_sde", noise_level=0.0,
                       window=(0, 0), generators=[], autocast=nullcontext).final

    def plain() -> None:
        run()

    recorder: AttentionRecorder | None = None

    def recording() -> None:
        with recorder.recording(phrase_mask, tokens):
            run()
        recorder.take()

    times: dict[str, list[float]] = {"plain": [], "recorder installed, idle": [], "recording": []}
    reference = run()
    for _ in range(args.repeats):
        if recorder is not None:
            recorder.remove()
            recorder = None
        began = time.perf_counter()
        plain()
        times["plain"].append(time.perf_counter() - began)
        recorder = AttentionRecorder(adapter.transformer)
        began = time.perf_counter()
        plain()
        times["recorder installed, idle"].append(time.perf_counter() - began)
        began = time.perf_counter()
        recording()
        times["recording"].append(time.perf_counter() - began)
    with recorder.recording(phrase_mask, tokens):
        same = bool(torch.equal(run(), reference))
    recorder.take()

    base = min(times["plain"])
    rows = [{"mode": mode, "best_s": min(values), "median_s": sorted(values)[len(values) // 2],
             "overhead": min(values) / base - 1} for mode, values in times.items()]
    setup = {"model": "Kontext 2+2 blocks, 4 heads x 32", "size": size, "target_tokens": tokens,
             "sequence": tokens * 2 + phrase_mask.shape[1], "ode_steps": args.steps, "batch": batch,
             "threads": args.threads, "repeats": args.repeats, "outputs_identical_while_recording": same}
    print(" ".join(f"{k}={v}" for k, v in setup.items()))
    print(f"{'mode':>26} | {'best (s)':>9} | {'median (s)':>10} | overhead")
    for row in rows:
        print(f"{row['mode']:>26} | {row['best_s']:9.3f} | {row['median_s']:10.3f} | {100 * row['overhead']:+6.1f} %")
    harness.write_result(harness.out_path(args, "attention_overhead"), {**setup, "rows": rows}, provenance)


if __name__ == "__main__":
    main()
