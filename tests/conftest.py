"""Fixtures shared by every test package."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (start-up costs seconds), bound to 127.0.0.1 and stopped
    at the end by this fixture, which started it."""
    ray = pytest.importorskip("ray")
    from editkit.executors import connect

    started = not ray.is_initialized()
    connect("")
    yield ray
    if started:
        ray.shutdown()
