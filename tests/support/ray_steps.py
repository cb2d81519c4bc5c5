"""Steps for the Ray executor tests; importable by Ray's worker processes (module-level, picklable)."""
from __future__ import annotations

import os
from pathlib import Path


def dying_once_step(marker: str, shard_to_die_on: str, inner):
    """Runs ``inner()``'s step, but the first time it meets ``shard_to_die_on`` its worker process dies (as an
    OOM-killed or preempted worker would). ``marker`` records that it already died once."""
    step = inner()
    import editkit.store  # noqa: F401  (loaded before the kill, so the retry is not an import race)

    def run(records, images):
        if records and records[0]["image_shard"] == shard_to_die_on and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(137)
        return step(records, images)

    return run


def failing_step(shard_to_fail_on: str, inner):
    """``inner()``'s step, raising (a deterministic bug) on one shard."""
    step = inner()

    def run(records, images):
        if records and records[0]["image_shard"] == shard_to_fail_on:
            raise ZeroDivisionError("a deterministic bug in the step")
        return step(records, images)

    return run
