"""The memory plan's counts and arithmetic: meta counts equal real ones, the LoRA count equals peft's, FSDP2 shards
the base, and the script runs on the real configs (meta device, seconds) with sane totals."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from perf import gpu_check, memory_plan as mp  # noqa: E402
from tests.support.numerics import assert_close  # noqa: E402

# Tiny variants of every real config (same classes, shrunk dims), for building real models on CPU.
TINY = {
    "t5_v1_1_xxl_encoder.json": dict(d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, num_decoder_layers=2,
                                     vocab_size=100),
    "clip_l_text.json": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                             projection_dim=32, vocab_size=100),
    "qwen2_5_vl_7b_instruct.json": dict(hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                        num_key_value_heads=2, num_hidden_layers=2, max_window_layers=2,
                                        vocab_size=152064 // 64,
                                        rope_scaling={"mrope_section": [2, 3, 3], "rope_type": "default",
                                                      "type": "default"},
                                        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2,
                                                           out_hidden_size=64, fullatt_block_indexes=[1],
                                                           in_channels=3, patch_size=14, spatial_merge_size=2,
                                                           temporal_patch_size=2, window_size=112,
                                                           hidden_act="silu", model_type="qwen2_5_vl")),
    "flux_vae.json": dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                          up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4, layers_per_block=1),
    "qwen_image_vae.json": dict(base_dim=8, dim_mult=[1, 2], num_res_blocks=1, temperal_downsample=[False], z_dim=4,
                                latents_mean=[0.0] * 4, latents_std=[1.0] * 4),
    "flux2_vae.json": dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                           up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=4, layers_per_block=1,
                           latent_channels=4),
    "qwen_image_21_vae.json": dict(base_dim=4, decoder_base_dim=4, dim_mult=[1, 1], num_res_blocks=1,
                                   temperal_downsample=[False], z_dim=4, latents_mean=[0.0] * 4,
                                   latents_std=[1.0] * 4),
    "qwen3_4b.json": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, vocab_size=100),
    "qwen3_8b.json": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=8, vocab_size=100),
    "mistral_small_3_1_24b.json": dict(
        text_config=dict(model_type="mistral", vocab_size=100, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
        vision_config=dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, head_dim=8, patch_size=14, image_size=56)),
    "qwen3_vl_8b_instruct.json": dict(
        text_config=dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                          "mrope_interleaved": True}),
        vision_config=dict(depth=2, hidden_size=16, intermediate_size=32, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=32, num_position_embeddings=64,
                           deepstack_visual_indexes=[1])),
}


def tiny_config(file: str) -> tuple[str, dict]:
    class_name, config, _ = mp.load_config(file)
    if class_name in ("FluxTransformer2DModel", "QwenImageTransformer2DModel", "Flux2Transformer2DModel",
                      "QwenImage21Transformer2DModel"):
        return class_name, gpu_check.shrink(class_name, config)
    return class_name, {**config, **TINY[file]}


ALL_CONFIGS = sorted(p.name for p in mp.CONFIG_DIR.glob("*.json"))


def test_every_config_names_its_source():
    assert len(ALL_CONFIGS) == 17
    for file in ALL_CONFIGS:
        _, _, source = mp.load_config(file)
        assert source.get("hub") and source.get("file") and source.get("note"), file


@pytest.mark.parametrize("file", ALL_CONFIGS)
def test_meta_count_equals_real_tiny_model(file):
    class_name, config = tiny_config(file)
    on_meta = mp.build_model(class_name, config, device="meta")
    real = mp.build_model(class_name, config, device="cpu")
    assert next(on_meta.parameters()).is_meta and not next(real.parameters()).is_meta
    assert mp.count_parameters(on_meta) == mp.count_parameters(real) > 0


@pytest.mark.parametrize("file", ["flux_kontext_transformer.json", "qwen_image_edit_2509_transformer.json"])
def test_lora_count_equals_peft(file):
    from peft import LoraConfig

    class_name, config = tiny_config(file)
    expected = mp.lora_parameter_count(mp.build_model(class_name, config, device="meta"), rank=32)
    model = mp.build_model(class_name, config, device="cpu")
    model.add_adapter(LoraConfig(r=32, lora_alpha=32, target_modules=list(mp.LORA_TARGETS)))
    created = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert created == expected > 0


def _plan(gpus, strategy, text_encoders="replicated"):
    return mp.plan(base_params=12_000_000_000, lora_params=37_000_000, text_encoder_params=4_900_000_000,
                   vae_params=84_000_000, largest_block_params=340_000_000, activations=1 << 30, gpus=gpus,
                   strategy=strategy, text_encoders=text_encoders)


def test_fsdp2_halves_base_from_one_to_two_gpus():
    one, two = _plan(1, "fsdp2")["bytes"], _plan(2, "fsdp2")["bytes"]
    assert two["base"] * 2 == one["base"] == 24_000_000_000
    assert two["lora_adamw"] * 2 == one["lora_adamw"] == 37_000_000 * 16
    assert two["text_encoders"] == one["text_encoders"] and two["vae"] == one["vae"]  # replicated
    assert two["comm_buffers"] == 2 * 340_000_000 * 2 and one["comm_buffers"] == 0
    assert _plan(2, "ddp")["bytes"]["base"] == one["base"]  # DDP replicates
    assert _plan(2, "fsdp2", "offloaded")["bytes"]["text_encoders"] == 0


def test_token_and_activation_arithmetic():
    assert mp.image_tokens(512) == 1024
    assert mp.sequence_length(512, 512) == 2560
    blocks = [(19, mp.K_FLUX_DOUBLE), (38, mp.K_FLUX_SINGLE)]
    unit = 2560 * 3072 * 2
    plain = mp.activation_bytes(2560, 3072, blocks, checkpointing=False)
    ckpt = mp.activation_bytes(2560, 3072, blocks, checkpointing=True)
    assert plain == int((19 * 15.0 + 38 * 14.1 + 4 + 1) * unit)
    assert ckpt == int((57 + 15.0 + 4 + 1) * unit)
    assert ckpt < plain / 5


def test_block_factors_match_the_measured_saved_tensors():
    """The plan's k_block constants are what autograd actually saves per block (real block types, real head size)."""
    flux = gpu_check.block_factors("FluxTransformer2DModel")
    qwen = gpu_check.block_factors("QwenImageTransformer2DModel")
    why = "the plan's k_block constants are rounded summaries of the measured saved tensors: within 5 %"
    assert_close(flux["transformer_blocks"], mp.K_FLUX_DOUBLE, rtol=0.05, why=why)
    assert_close(flux["single_transformer_blocks"], mp.K_FLUX_SINGLE, rtol=0.05, why=why)
    assert_close(qwen["transformer_blocks"], mp.K_QWEN_IMAGE, rtol=0.05, why=why)


def test_script_on_real_configs(tmp_path, capsys):
    out = tmp_path / "plan.json"
    mp.main(["--out", str(out)])
    assert "fits 80GB" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert set(result) == {"assumptions", "pipelines"}
    by_name = {p["pipeline"]: p for p in result["pipelines"]}
    assert set(by_name) == {"FLUX.1-Kontext-dev", "Qwen-Image-Edit-2509", "Qwen-Image-Edit-2511", "FLUX.2-klein-4B",
                            "FLUX.2-klein-9B", "FLUX.2-dev", "Qwen-Image-2.1"}
    for p in by_name.values():
        assert {"transformer", "text_encoders", "vae", "activations", "settings", "sequence"} <= set(p)
        assert len(p["settings"]) == 2 * 5 * 2 * 2
        assert {"strategy", "gpus", "text_encoders", "gradient_checkpointing", "bytes", "total",
                "fits_80gb"} <= set(p["settings"][0])
        assert p["transformer"]["source"]["hub"] and "_source" not in p["transformer"]["source"]
    flux, qwen = by_name["FLUX.1-Kontext-dev"], by_name["Qwen-Image-Edit-2509"]
    why = "published parameter counts are rounded (12B, 20B, ...): within 5 %"
    assert_close(flux["transformer"]["params"], 12e9, rtol=0.05, why=why)
    assert_close(qwen["transformer"]["params"], 20e9, rtol=0.05, why=why)
    assert_close(flux["text_encoders"][0]["params"], 4.76e9, rtol=0.05, why=why)  # T5-XXL encoder, embedding once
    assert_close(qwen["text_encoders"][0]["params"], 8.3e9, rtol=0.05, why=why)  # Qwen2.5-VL-7B incl. vision
    assert flux["sequence"] == 2560
    for name, billions in (("FLUX.2-klein-4B", 4e9), ("FLUX.2-klein-9B", 9e9), ("FLUX.2-dev", 32e9)):
        assert_close(by_name[name]["transformer"]["params"], billions, rtol=0.05, why=why)
    assert_close(by_name["FLUX.2-dev"]["text_encoders"][0]["params"], 24e9, rtol=0.05, why=why)  # Mistral-Small


def test_requirements_name_the_fewest_gpus_and_mark_plan_only_rows():
    rows = mp.requirements((512,), gpu_counts=(1, 2, 4))
    assert {r["pipeline"] for r in rows} == {p.name for p in mp.PIPELINES}
    dev = next(r["minimum"] for r in rows if r["pipeline"] == "FLUX.2-dev")
    # the 24B text encoder never sits on a GPU when the 32B transformer barely fits one
    assert dev["text_encoders"] == "offloaded" and dev["gpus"] == 1 and not dev["plan_only"]
    tight = mp.requirements((512,), gpu_counts=(1, 2, 4), capacity_gib=40.0)
    dev_40 = next(r["minimum"] for r in tight if r["pipeline"] == "FLUX.2-dev")
    assert dev_40["gpus"] > 1 and dev_40["plan_only"] and dev_40["strategy"] == "fsdp2"
    assert "plan-only" in mp.requirements_table(tight)
