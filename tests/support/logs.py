"""Every log record of a test, at DEBUG level, in a file: to grep it for what must never be logged."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def debug_log(path: Path) -> Iterator[Path]:
    """Every logger (httpx and httpcore included) at DEBUG into ``path`` while the block runs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield path
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
