"""The shipped configs of FLUX.2 [klein] 4B / 9B, FLUX.2 [dev], Qwen-Image-Edit-2511 and Qwen-Image 2.1 load and run
one training step as shipped on their tiny twins: only the model path, the judge endpoint and the sizes are
overridden (and [dev]'s FSDP2 sharding, which needs several processes)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.support.tiny.flux2 import cached_tiny_flux2
from tests.support.tiny.qwen_image_21 import cached_tiny_qwen_image_21
from train.config import load_config

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {  # config -> (tiny twin, resolution, adapter)
    "flux2_klein_4b": ("klein", 64, "flux2"),
    "flux2_klein_9b": ("klein", 64, "flux2"),
    "flux2_dev": ("dev", 64, "flux2"),
    "qwen_image_edit_2511": ("qwen_2511", 32, "qwen_image_edit"),
    "qwen_image_21": ("qwen21", 64, "qwen_image_21"),
}


@pytest.fixture(scope="module")
def tiny_2511(tiny_qwen_dir, tmp_path_factory):
    """A tiny QwenImageEditPlusPipeline whose transformer has zero_cond_t, as Qwen-Image-Edit-2511's."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline, QwenImageTransformer2DModel

    pipe = QwenImageEditPipeline.from_pretrained(tiny_qwen_dir)
    torch.manual_seed(0)
    transformer = QwenImageTransformer2DModel.from_config({**pipe.transformer.config, "zero_cond_t": True})
    path = tmp_path_factory.mktemp("tiny_2511") / "pipe"
    QwenImageEditPlusPipeline(**{**pipe.components, "transformer": transformer}).save_pretrained(path)
    return path


def _twin(name, tiny_2511):
    return {"klein": lambda: cached_tiny_flux2("klein"), "dev": lambda: cached_tiny_flux2("dev"),
            "qwen_2511": lambda: tiny_2511, "qwen21": cached_tiny_qwen_image_21}[name]()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_runs_a_step_on_its_tiny_twin(name, tiny_2511, edit_dataset_dir, tmp_path):
    from tests.support.scripted_server import ScriptedServer
    from train.main import run

    twin, size, adapter = CONFIGS[name]
    config_path = REPO / "train" / "configs" / f"{name}.yaml"
    config = load_config(config_path)
    assert config.model.adapter == adapter and config.objective.name == "nft"
    assert config.objective.regularizer.enabled
    judge = yaml.safe_load(config_path.read_text())["rewards"]["options"]["mllm"]["client"]["model"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices on a shared 2-core machine
    try:
        with ScriptedServer(lambda request: str(2 + request.index % 7), models=(judge,)) as server:
            out = tmp_path / "run"
            run(str(config_path), [
                f"model.path={_twin(twin, tiny_2511)}", f"rewards.options.mllm.client.endpoint={server.url}",
                f"output_dir={out}", f"data.dataset={edit_dataset_dir}", f"data.resolution=[{size}, {size}]",
                "data.eval_size=2", "lora.rank=4", "lora.alpha=4", "sampler.num_steps=2", "sampler.sde_window=[0, 2]",
                "sampler.train_steps=1", "train.max_steps=1", "train.groups_per_step=1", "train.group_size=2",
                "train.micro_batch_size=2", "train.seed=1", "train.parallelism=ddp", "model.max_sequence_length=224",
                "eval.every=0", "checkpoint.every=0", "logging.progress=false", "logging.tensorboard=false"])
    finally:
        torch.set_num_threads(threads)
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["reward_mllm"]) and "regularizer" in metrics
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()
