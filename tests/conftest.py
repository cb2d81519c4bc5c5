"""Fixtures shared by every test package, and the grouping that lets ``make test`` run on two pytest workers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# Under pytest-xdist (`-n 2 --dist loadgroup`) the tests that share one costly session resource run on one worker,
# so it starts once: the Label Studio server and the browser, the manual's demo repository, the local Ray instance.
# Each worker runs its torch ops on one thread, so two workers do not fight over two cores.
_GROUPS = (("label-studio", ("tests/annotate/",), ("ls_server", "ls_params", "browser")),
           ("manual", ("tests/test_docs_commands.py", "tests/test_docs.py"), ("manual",)),
           ("ray", ("tests/curate/test_ray_", ), ("ray_session",)))


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ.setdefault("OMP_NUM_THREADS", "1")  # for the subprocesses the tests start
        torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).relative_to(root).as_posix() if str(item.path).startswith(str(root)) else ""
        fixtures = set(getattr(item, "fixturenames", ()))
        for name, prefixes, needs in _GROUPS:
            if where.startswith(prefixes) or fixtures & set(needs):
                item.add_marker(pytest.mark.xdist_group(name))
                break


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
