"""Fixtures of the RRM tests: one tiny Qwen2.5-VL per session, small RGB images."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_vl_dir(tmp_path_factory):
    from tests.support.tiny.qwen_vl import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen_vl") / "model")


def image(seed: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
