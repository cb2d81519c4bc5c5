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
        # each image pair appears twice, once scored 3 and once 7: the model learns one fixed structure (valid
        # replies) and a genuinely uncertain score (sampled trajectories disagree, so GCPO's advantages are not 0)
        k = i // 2
        Image.fromarray(image(2 * k)).save(directory / "img" / f"s{k}.png")
        Image.fromarray(image(2 * k + 1)).save(directory / "img" / f"e{k}.png")
        trajectory = render_trajectory({"keep": ["bg"], "follow": ["red"], "quality": []},
                                       [{"group": "keep", "principle": "bg", "satisfied": "yes"},
                                        {"group": "follow", "principle": "red", "satisfied": "yes"}], 3 + 4 * (i % 2))
        lines.append({"source": f"img/s{k}.png", "instruction": f"make it red {k}", "edited": f"img/e{k}.png",
                      "trajectory": trajectory})
    if extra_bad:
        lines += [{**lines[0], "source": "../outside.png"}, {**lines[0], "trajectory": "score 5"},
                  {**lines[0], "edited": "/etc/passwd"}]
    path = directory / "sft.jsonl"
    path.write_text("".join(json.dumps(l) + "\n" for l in lines) + "not json\n")
    return path


def write_pairs_jsonl(directory, count: int = 4):
    """A rating-study export: (source, instruction, image_a, image_b, winner), PNGs beside it, plus bad lines."""
    import json
    from pathlib import Path

    from PIL import Image

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        for name, seed in (("s", 3 * i), ("a", 3 * i + 1), ("b", 3 * i + 2)):
            Image.fromarray(image(100 + seed)).save(directory / f"{name}{i}.png")
        lines.append({"source": f"s{i}.png", "instruction": f"make it red {i}", "image_a": f"a{i}.png",
                      "image_b": f"b{i}.png", "winner": "AB"[i % 2]})
    lines += [{**lines[0], "winner": "tie"}, {**lines[0], "winner": "C"}, {**lines[0], "image_b": "../b.png"}]
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps(l) + "\n" for l in lines))
    return path


@pytest.fixture(scope="session")
def trained_rrm_dir(tmp_path_factory):
    """The small RRM (format phrases in its vocabulary) after a short SFT: it writes valid trajectories."""
    from editkit.config import load_file
    from train.rrm.config import SFTRunConfig
    from train.rrm.data import load_sft
    from train.rrm.format import PROMPT_DIR
    from train.rrm.sft import SFTTrainer
    from train.rrm.small_model import build_small_rrm, format_phrases

    root = tmp_path_factory.mktemp("trained_rrm")
    data = write_sft_jsonl(root / "data", count=8, extra_bad=False)
    records, _ = load_sft(data)
    phrases = format_phrases((PROMPT_DIR / "rrm_v1.txt").read_text(), [r.trajectory for r in records])
    base = build_small_rrm(root / "base", phrases=phrases)
    config = load_file(SFTRunConfig, None, [
        f"model.path={base}", "model.device=cpu", f"data.path={data}", f"output_dir={root / 'sft'}",
        "lora.enabled=false", "optim.learning_rate=0.003", "train.batch_size=4", "train.micro_batch_size=4",
        "train.max_steps=160", "checkpoint.every=160",
        "logging.tensorboard=false", "logging.progress=false"])
    return SFTTrainer(config).fit()


def metrics(out) -> list[dict]:
    import json

    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_identical_checkpoints(a, b) -> None:
    """Two checkpoints hold bit-identical trained weights, optimizer and LR-scheduler state, RNG states and trainer
    state (exact: every tensor ``torch.equal``, every other value ``==``)."""
    import torch
    from safetensors.torch import load_file

    from train.checkpoint import load_state
    from train.rrm.trainer import WEIGHTS_FILE

    def same(x, y, where):
        assert type(x) is type(y), where
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), where
        elif isinstance(x, dict):
            assert list(x) == list(y), where
            for key in x:
                same(x[key], y[key], f"{where}.{key}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y)):
                same(u, v, f"{where}[{i}]")
        elif isinstance(x, np.ndarray):
            assert np.array_equal(x, y), where
        else:
            assert x == y or (x != x and y != y), where  # NaN == NaN here: a value, compared exactly

    weights_a, weights_b = load_file(str(a / WEIGHTS_FILE)), load_file(str(b / WEIGHTS_FILE))
    assert weights_a and sorted(weights_a) == sorted(weights_b)
    for name in weights_a:
        assert torch.equal(weights_a[name], weights_b[name]), name
    state_a = load_state(a, "state")
    assert state_a["optimizer"]["state"], "no optimizer moments saved"
    same(state_a, load_state(b, "state"), "state")
    same(load_state(a, "rng"), load_state(b, "rng"), "rng")
