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


def write_sft_jsonl(directory, count: int = 4, extra_bad: bool = True):
    """SFT records (source, instruction, edited, trajectory) with PNGs beside the jsonl; plus rejected lines."""
    import json
    from pathlib import Path

    from PIL import Image

    from train.rrm.format import render_trajectory

    directory = Path(directory)
    (directory / "img").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        Image.fromarray(image(2 * i)).save(directory / "img" / f"s{i}.png")
        Image.fromarray(image(2 * i + 1)).save(directory / "img" / f"e{i}.png")
        ok = "yes" if i % 2 else "no"
        trajectory = render_trajectory({"keep": ["bg"], "follow": ["red"], "quality": []},
                                       [{"group": "keep", "principle": "bg", "satisfied": "yes"},
                                        {"group": "follow", "principle": "red", "satisfied": ok}], 3 + 4 * (i % 2))
        lines.append({"source": f"img/s{i}.png", "instruction": f"make it red {i}", "edited": f"img/e{i}.png",
                      "trajectory": trajectory})
    if extra_bad:
        lines += [{**lines[0], "source": "../outside.png"}, {**lines[0], "trajectory": "score 5"},
                  {**lines[0], "edited": "/etc/passwd"}]
    path = directory / "sft.jsonl"
    path.write_text("".join(json.dumps(l) + "\n" for l in lines) + "not json\n")
    return path
