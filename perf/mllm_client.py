"""MLLM client throughput against the local scripted chat-completions server (a stand-in for vLLM).

The server answers every request after a fixed delay (default 50 ms, like a short generation), so the numbers
show what the client's concurrency buys (requests/s with N workers vs sequential) and what the on-disk cache
costs: the per-request time of a fully cached rerun, and the extra time of writing each fresh answer.
Every request carries one 256x256 PNG (hashed for the cache key, base64-encoded for the wire).

    .venv/bin/python perf/mllm_client.py [--requests 200] [--delay-ms 50] [--workers 1 4 16 32]
"""
from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from editkit.mllm.client import Client  # noqa: E402
from editkit.mllm.config import ClientConfig  # noqa: E402
from editkit.mllm.messages import Request, user  # noqa: E402
from perf import harness  # noqa: E402
from tests.support.scripted_server import Reply, ScriptedServer, completion  # noqa: E402


def make_requests(n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    return [Request((user(f"rate edit {seed}-{i}", image),), prompt_version="perf") for i in range(n)]


def timed(config: ClientConfig, requests: list[Request]) -> tuple[float, Client]:
    client = Client(config)
    started = time.perf_counter()
    responses = client.generate(requests)
    seconds = time.perf_counter() - started
    client.close()
    assert all(r.ok for r in responses), [r.error for r in responses if not r.ok][:3]
    return seconds, client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 16, 32])
    harness.add_options(parser, "mllm_client")
    args = parser.parse_args()
    if args.smoke:
        args.requests, args.delay_ms, args.workers = 8, 1.0, [1, 4]
    provenance = harness.Provenance(args.smoke)

    reply = Reply(body=completion('{"score": 7}'), delay_s=args.delay_ms / 1000)
    rows = []
    workdir = Path(tempfile.mkdtemp(prefix="editkit-mllm-perf-"))
    try:
        with ScriptedServer(lambda request: reply) as server:
            base = dict(backend="openai", endpoint=server.url, timeout_s=30)
            sequential = None
            for seed, workers in enumerate(args.workers):
                requests = make_requests(args.requests, seed)
                cache_dir = workdir / f"cache-{workers}"
                cold, _ = timed(ClientConfig(**base, max_concurrency=workers, cache_dir=str(cache_dir)), requests)
                warm, client = timed(ClientConfig(**base, max_concurrency=workers, cache_dir=str(cache_dir)), requests)
                assert client.stats["cache_hits"] == len(requests)
                no_cache, _ = timed(ClientConfig(**base, max_concurrency=workers, cache_dir=""),
                                    make_requests(args.requests, 1000 + seed))
                sequential = sequential or no_cache
                rows.append({
                    "workers": workers,
                    "requests": len(requests),
                    "req_per_s_no_cache": round(len(requests) / no_cache, 1),
                    "speedup_vs_sequential": round(sequential / no_cache, 2),
                    "req_per_s_cold_cache": round(len(requests) / cold, 1),
                    "cache_write_ms_per_req": round(1000 * (cold - no_cache) / len(requests), 2),
                    "cache_hit_ms_per_req": round(1000 * warm / len(requests), 3),
                    "server_max_in_flight": server.max_in_flight,
                })
                server.max_in_flight = 0
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    header = list(rows[0])
    print(f"MLLM client vs scripted server ({args.delay_ms:.0f} ms per answer, {args.requests} requests, "
          "one 256x256 PNG each)")
    print(" | ".join(f"{h:>22}" for h in header))
    for row in rows:
        print(" | ".join(f"{row[h]:>22}" for h in header))
    result = {"delay_ms": args.delay_ms, "requests": args.requests, "machine": platform.machine(),
              "cpu_count": __import__("os").cpu_count(), "rows": rows,
              "note": "cache_write_ms_per_req = (cold run with cache - run without cache) / requests; can be "
                      "negative within noise"}
    harness.write_result(harness.out_path(args, "mllm_client"), result, provenance)


if __name__ == "__main__":
    main()
