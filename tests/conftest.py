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


# Tiny random models that several test packages build: one build per session (they are built offline from fixed
# seeds, and no test writes into their directories).
@pytest.fixture(scope="session")
def tiny_kontext_dir(tmp_path_factory):
    """The tiny FLUX.1-Kontext pipeline (train.experiment.small_kontext), for the train and benchmark tests."""
    from train.experiment.small_kontext import build_small_kontext

    return build_small_kontext(tmp_path_factory.mktemp("tiny_kontext"))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory):
    """The tiny open-clip model (tests.support.tiny.clip) for CLIP scores, rewards and CompBench."""
    import torch

    from tests.support.tiny.clip import build_clip

    threads = torch.get_num_threads()  # tiny ops on a shared 2-core machine: one thread avoids oversubscription
    torch.set_num_threads(1)
    try:
        return build_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sam2_dir(tmp_path_factory):
    """The tiny SAM2 (tests.support.tiny.sam2) for grounding, the ML backend and benchmark proposals."""
    from tests.support.tiny.sam2 import build_tiny_sam2

    return build_tiny_sam2(tmp_path_factory.mktemp("tiny_sam2") / "sam2")
