"""Tokens/s of RRM trajectory sampling: batched generation (left padding) vs one request at a time.

    PYTHONPATH=. OMP_NUM_THREADS=1 python perf/rrm_sampling.py [--model DIR] [--trajectories 32] [--batch 16]

Without --model it builds the small CPU RRM (:mod:`train.rrm.small_model`); on a GPU pass a real checkpoint
(e.g. Qwen/Qwen2.5-VL-3B-Instruct or a local copy). Sampling at temperature 1 with a fixed token budget
(EOS disabled), so both modes generate exactly the same number of tokens. Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default=None)
    parser.add_argument("--trajectories", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    harness.add_options(parser, "rrm_sampling")
    args = parser.parse_args()
    if args.smoke:
        args.trajectories, args.batch, args.new_tokens = 2, 2, 2
    provenance = harness.Provenance(args.smoke)

    from train.rrm.demo import INSTRUCTION, default_phrases
    from train.rrm.format import build_request
    from train.rrm.model import ModelConfig, generate, load_rrm
    from train.rrm.small_model import build_small_rrm

    path = args.model or str(build_small_rrm(Path(tempfile.mkdtemp()) / "rrm", phrases=default_phrases()))
    model, processor = load_rrm(ModelConfig(path=path))
    model.eval()
    model.generation_config.eos_token_id = None  # fixed budget: every trajectory has exactly new_tokens tokens
    device = str(model.device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (56, 56, 3), dtype=np.uint8) for _ in range(2)]
    requests = [build_request(INSTRUCTION, *images)] * args.trajectories

    def run(batch: int) -> float:
        torch.manual_seed(0)
        began = time.perf_counter()
        for start in range(0, len(requests), batch):
            generate(model, processor, requests[start:start + batch], args.new_tokens, 1.0, device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - began

    run(args.batch)  # warm-up
    rows = []
    for label, batch in (("one at a time", 1), (f"batched ({args.batch})", args.batch)):
        seconds = run(batch)
        rows.append({"mode": label, "batch": batch, "seconds": seconds,
                     "tokens_per_s": args.trajectories * args.new_tokens / seconds})
    speedup = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    hardware = torch.cuda.get_device_name() if device.startswith("cuda") else \
        f"{torch.get_num_threads()}-thread {platform.machine()} CPU"
    print(f"model: {args.model or 'small CPU RRM'}; {args.trajectories} trajectories x {args.new_tokens} tokens; "
          f"{hardware}")
    print("| mode | seconds | tokens/s |\n|---|---|---|")
    for row in rows:
        print(f"| {row['mode']} | {row['seconds']:.2f} | {row['tokens_per_s']:.0f} |")
    print(f"speed-up from batching: {speedup:.1f}x")
    harness.write_result(harness.out_path(args, "rrm_sampling"), {
        "model": args.model or "small CPU RRM", "hardware": hardware, "threads": torch.get_num_threads(),
        "rows": rows, "speedup": speedup, "trajectories": args.trajectories, "new_tokens": args.new_tokens},
        provenance, gpu=hardware if device.startswith("cuda") else None)


if __name__ == "__main__":
    main()
