"""The miniature ablation: the edit_region reward against numpy, and the whole command at --smoke size (CI)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.numerics import assert_close
from tests.train.conftest import build_edit_dataset

ROOT = Path(__file__).resolve().parents[2]


def reference_edit_reward(image: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """clip(PSNR over the mask's pixels and all channels / 40, 0, 1), written out in numpy."""
    if not mask.any():
        return float("nan")
    mse = ((image - target) ** 2)[:, mask].mean()
    return 1.0 if mse == 0 else float(np.clip(10 * np.log10(1.0 / mse) / 40.0, 0, 1))


def reward_inputs(images, sources, masks, targets):
    from train.rewards import RewardInputs

    return RewardInputs(images, sources, masks, ["p"] * len(images), ["recolor"] * len(images), targets=targets)


def test_edit_region_reward_matches_numpy_and_ignores_the_background():
    from train.rewards import REWARDS, WeightedRewards

    WeightedRewards({"edit_region": 1.0})  # registers the built-ins
    reward = REWARDS["edit_region"]()
    rng = np.random.default_rng(0)
    count, size = 6, 20
    targets = torch.from_numpy(rng.random((count, 3, size, size)))
    images = (targets + torch.from_numpy(rng.normal(0, 0.05, targets.shape))).clamp(0, 1)
    masks = torch.from_numpy(rng.random((count, size, size)) < 0.3)
    masks[4] = False  # empty edit region -> NaN
    images[5] = targets[5]  # identical edit region -> 1
    sources = torch.from_numpy(rng.random(targets.shape))
    value = reward(reward_inputs(images, sources, masks, targets))
    expected = [reference_edit_reward(images[i].numpy(), targets[i].numpy(), masks[i].numpy()) for i in range(count)]
    assert math.isnan(value[4]) and math.isnan(expected[4]) and value[5] == 1.0
    finite = [i for i in range(count) if i != 4]
    assert_close(value[finite], np.array(expected)[finite], dtype=torch.float64, accumulations=3 * size * size,
                 growth="linear", why="float64 means over up to 3 × 20 × 20 values, another formula than numpy's")
    # change only the background (and the sources): the reward must not move
    repainted = torch.where(masks[:, None], images, torch.from_numpy(rng.random(images.shape)))
    again = reward(reward_inputs(repainted, torch.zeros_like(sources), masks, targets))
    assert_close(again[finite], value[finite], dtype=torch.float64, accumulations=3 * size * size,
                 why="the same edit-region values; only values outside it (multiplied by 0) changed")
    # and the edit region does move it
    worse = images.clone()
    worse[0][:, masks[0]] = 1 - worse[0][:, masks[0]]
    assert reward(reward_inputs(worse, sources, masks, targets))[0] < value[0]


def test_edit_region_reward_needs_targets():
    from train.rewards import REWARDS, WeightedRewards

    WeightedRewards({"edit_region": 1.0})
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="ground-truth edited images"):
        REWARDS["edit_region"]()(reward_inputs(images, images, torch.ones(2, 8, 8, dtype=torch.bool), None))


def test_ablation_smoke_writes_a_well_formed_table(tmp_path):
    from train.experiment.ablation import deep_merge, load_ablation_config, run_ablation

    dataset = build_edit_dataset(tmp_path / "dataset", count=14, size=40)
    config = load_ablation_config(ROOT / "train/configs/ablation.yaml", smoke=True)
    config.base_config = str(ROOT / config.base_config)
    config.base = deep_merge(config.base, {"data": {"dataset": str(dataset)}})
    config.work_dir = str(tmp_path / "work")
    out = tmp_path / "results"
    report = run_ablation(config, out)

    table = json.loads((out / "table.json").read_text())
    assert (out / "curves.png").stat().st_size > 1000 and (out / "pareto.png").stat().st_size > 1000
    markdown = (out / "table.md").read_text()
    assert {"base_model", "copy_source", "vae_round_trip_of_ground_truth"} <= set(table["base"])
    assert table["heldout_rows"] == 3 and table["seeds"] == [0]
    names = [arm.name for arm in config.arms]
    assert [arm["name"] for arm in table["arms"]] == names
    ran = [arm for arm in table["arms"] if "unavailable" not in arm]
    assert {"a_edit_only", "c9_kontext_mix", "c_cocoedit", "g_grpo", "g_guard"} <= {a["name"] for a in ran}
    for arm in ran:
        assert math.isfinite(arm["bg_psnr"][0]) and 0 <= arm["edit_reward"][0] <= 1
        assert arm["bg_psnr"][1] == 0.0  # one seed: std 0
        assert len(arm["curves"]["0"]["train"]["edit_region"]) == 2  # one training-batch value per RL step
        curve = arm["curves"]["0"]["heldout"]
        assert curve["step"] == [1, 2]  # eval_every 1 in the smoke section, and after the last step
        # the curves are on the validation rows; the run's result is one evaluation of the test rows after it
        assert curve["edit_reward"][-1] == arm["validation"]["0"]["edit_reward"]
        assert arm["per_seed"]["0"]["edit_reward"] == arm["edit_reward"][0]
        assert f"| {arm['family']} | {arm['name']}" in markdown
    assert table["validation_rows"] == 2 and table["base"]["validation"].keys() == table["base"]["base_model"].keys()
    # the paired table: c_cocoedit against a_edit_only, seed by seed (here one seed: no interval)
    c, a = (next(x for x in ran if x["name"] == n) for n in ("c_cocoedit", "a_edit_only"))
    delta = c["per_seed"]["0"]["edit_reward"] - a["per_seed"]["0"]["edit_reward"]
    assert f"| NFT | c_cocoedit | a_edit_only | {delta:+.4f} [n/a, n/a] (n/a) |" in markdown
    for arm in table["arms"]:
        if "unavailable" in arm:
            assert "not available" in markdown and arm["unavailable"]
    # the full-mask row and the corrupt row are recorded, not silently dropped
    excluded = json.loads((tmp_path / "work/base/data/excluded.json").read_text())
    assert len(excluded) == 2 and any("global edit" in v for v in excluded.values())
    assert report["total_seconds"] > 0
    # the runs above ran two at a time in spawned processes (workers 2); in this process one after another, two of
    # the arms (one per family) give the same numbers: nothing a run computes depends on where or beside what it ran
    assert config.workers == 2 and table["workers"] == 2
    config.workers, config.arms = 1, [arm for arm in config.arms if arm.name in ("c_cocoedit", "g_guard")]
    again = run_ablation(config, tmp_path / "in_process")
    assert table["base"] == again["base"]
    for arm in again["arms"]:
        first = next(a for a in table["arms"] if a["name"] == arm["name"])
        for key in ("per_seed", "validation", "curves", "optimizer"):
            assert arm[key] == first[key], (arm["name"], key)
    guard = next(a for a in table["arms"] if a["name"] == "g_guard")
    assert guard["optimizer"]["0"]["ratio"] and "| GRPO | g_guard | " in markdown
    # same base config -> the saved base editor is reused, not retrained; a changed config retrains
    from train.experiment.ablation import base_config
    from train.experiment.pretrain import config_hash, pretrain

    base = base_config(config)
    stamp = (tmp_path / "work/base/pretrain.json").stat().st_mtime_ns
    pretrain(base)
    assert (tmp_path / "work/base/pretrain.json").stat().st_mtime_ns == stamp
    from train.experiment.pretrain import vae_hash

    saved_vae = json.loads((tmp_path / "work/base/vae/vae.json").read_text())["vae_hash"]
    assert vae_hash(base) == saved_vae
    base.transformer.steps += 1
    assert config_hash(base) != json.loads((tmp_path / "work/base/pretrain.json").read_text())["config_hash"]
    assert vae_hash(base) == saved_vae  # a transformer change keeps the fitted VAE ...
    base.vae.steps += 1
    assert vae_hash(base) != saved_vae  # ... a VAE change does not
    # the base editor is a full pipeline directory that diffusers loads
    from diffusers import FluxKontextPipeline

    pipe = FluxKontextPipeline.from_pretrained(tmp_path / "work/base/model")
    assert pipe.vae_scale_factor == 2


def test_fit_vae_learns_and_normalises_the_latents():
    from train.experiment.pretrain import (
        ArchitectureConfig,
        PretrainConfig,
        StageConfig,
        build_vae,
        fit_vae,
    )

    config = PretrainConfig(vae=StageConfig(steps=40, batch_size=8, learning_rate=3e-3), progress=False)
    vae = build_vae(ArchitectureConfig(), seed=0)
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(16, 3, 4, 4, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    curve = fit_vae(vae, images, config)
    assert np.mean(curve[-5:]) < 0.5 * np.mean(curve[:5])
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mode()
    scaled = (latents - vae.config.shift_factor) * vae.config.scaling_factor  # what the pipeline feeds the model
    # the shift and scale are the latents' own mean and std: float32 sums over every latent value
    assert_close(scaled.mean(), 0.0, dtype=torch.float32, accumulations=scaled.numel(), growth="linear", scale=1.0,
                 why="a float32 mean over every latent value, minus the shift estimated from them")
    assert_close(scaled.std(), 1.0, dtype=torch.float32, accumulations=scaled.numel(), growth="linear",
                 why="a float32 std over every latent value, times the scale estimated from them")


def test_editkit_train_ablation_passes_its_options(tmp_path, monkeypatch):
    """`editkit train ablation` loads the YAML (with --smoke: its smoke section), applies --work-dir and --out."""
    from typer.testing import CliRunner

    import train.experiment.ablation as ablation
    from editkit.cli import app

    calls = []
    monkeypatch.setattr(ablation, "run_ablation", lambda config, out: calls.append((config, out)))
    result = CliRunner().invoke(app, ["train", "ablation", "--config", str(ROOT / "train/configs/ablation.yaml"),
                                      "--smoke", "--work-dir", str(tmp_path / "w"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    ((config, out),) = calls
    full = ablation.load_ablation_config(ROOT / "train/configs/ablation.yaml")
    assert config.seeds == [0] != full.seeds  # the smoke section applied
    assert config.work_dir == str(tmp_path / "w") and out == tmp_path / "o"


def test_token_loss_weights_follow_the_edit_coverage_of_each_token():
    from train.data import Example
    from train.experiment.pretrain import token_loss_weights

    class Grid:  # the adapter's token grid: 2x2 tokens for a 4x4 image
        def token_grid(self, height, width):
            return height // 2, width // 2

    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = True  # 3 of the 4 pixels of token (0, 0)
    mask[2:, 2:] = True  # all of token (1, 1)
    example = Example(row=0, source=torch.zeros(3, 4, 4), edit_mask=mask, prompt="p", edit_type="recolor")
    weights = token_loss_weights(Grid(), [example], edit_weight=5.0)
    # 1 + (5 − 1) · coverage, tokens in row-major order
    assert_close(weights, torch.tensor([[1 + 4 * 0.75, 1.0, 1.0, 5.0]]), accumulations=4,
                 why="a coverage mean over 4 pixels, then 1 + 4 · coverage")
    assert torch.equal(token_loss_weights(Grid(), [example], edit_weight=1.0), torch.ones(1, 4))


def test_edit_types_filter_keeps_only_the_listed_types_and_records_the_rest(tmp_path):
    import datasets

    from train.experiment.ablation_data import AblationDataConfig, prepare_splits

    built = datasets.load_from_disk(str(build_edit_dataset(tmp_path / "built", count=14, size=40)))
    table = built.map(lambda kind, i: {"edit_type": "remove" if i % 2 else kind}, input_columns="edit_type",
                      with_indices=True)  # only that column is read: the fixture's corrupt image stays undecoded
    table.save_to_disk(str(tmp_path / "dataset"))
    dataset, types, keep = tmp_path / "dataset", table["edit_type"], ["remove"]
    paths = prepare_splits(AblationDataConfig(dataset=str(dataset), resolution=16, heldout=1, edit_types=keep),
                           tmp_path / "splits")
    kept = [t for name in ("train", "heldout") for t in datasets.load_from_disk(str(paths[name]))["edit_type"]]
    assert kept and set(kept) == set(keep)
    excluded = json.loads((tmp_path / "splits/excluded.json").read_text())
    assert sum("not in data.edit_types" in v for v in excluded.values()) == sum(t not in keep for t in types)


def test_shipped_base_editor_is_verified_byte_for_byte(tmp_path):
    """ship copies the model and writes a SHA-256 per file; verify refuses a changed, missing or extra file."""
    import hashlib

    from train.experiment.base_editor import BaseEditorError, ship, verify

    pretrained = tmp_path / "base"
    (pretrained / "model" / "transformer").mkdir(parents=True)
    (pretrained / "model" / "model_index.json").write_text("{}")
    weights = pretrained / "model" / "transformer" / "weights.safetensors"
    weights.write_bytes(bytes(range(256)) * 4)
    (pretrained / "pretrain.json").write_text(json.dumps({"config_hash": "abc", "config": {}, "rows": {},
                                                          "seconds": {"total_training": 1.0}}))
    dest = ship(pretrained, tmp_path / "shipped")
    sums = dict(line.split("  ")[::-1] for line in (dest / "SHA256SUMS").read_text().splitlines())
    assert sums == {"model/model_index.json": hashlib.sha256(b"{}").hexdigest(),
                    "model/transformer/weights.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    assert verify(dest) == dest / "model"
    assert json.loads((dest / "base_editor.json").read_text())["config_hash"] == "abc"
    shipped = dest / "model" / "transformer" / "weights.safetensors"
    original = shipped.read_bytes()
    shipped.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one flipped bit
    with pytest.raises(BaseEditorError, match="differs from SHA256SUMS"):
        verify(dest)
    shipped.write_bytes(original)
    (dest / "model" / "extra.bin").write_bytes(b"x")
    with pytest.raises(BaseEditorError, match="extra.bin"):
        verify(dest)
    (dest / "model" / "extra.bin").unlink()
    (dest / "model" / "model_index.json").unlink()
    with pytest.raises(BaseEditorError, match="model_index.json"):
        verify(dest)
    with pytest.raises(BaseEditorError, match="not a shipped base editor"):
        verify(pretrained)


def test_region_sde_rollout_moves_only_the_chosen_tokens_stochastically():
    """sde_tokens all False gives the ODE rollout, all True the plain SDE rollout, a mix takes each token's step."""
    from contextlib import nullcontext

    from train.rollout.sampler import rollout

    class Linear:  # velocity = x @ W + t: every token sees only itself, so each token's path can be checked
        def velocity(self, model, x, t, cond):
            return x @ model + t[:, None, None]

    weight = torch.eye(3) * 0.3
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(0))
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])

    def run(tokens=None, eta=0.7):
        generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
        return rollout(Linear(), weight, None, x.clone(), sigmas, sde="flow_sde", noise_level=eta, window=(0, 3),
                       generators=generators, autocast=nullcontext, sde_tokens=tokens).final

    ode, sde = run(eta=0.0), run()
    assert not torch.equal(ode, sde)
    assert torch.equal(run(torch.zeros(2, 4, dtype=torch.bool)), ode)
    assert torch.equal(run(torch.ones(2, 4, dtype=torch.bool)), sde)
    mixed = torch.tensor([[True, False, True, False], [False, False, True, True]])
    assert torch.equal(run(mixed), torch.where(mixed[..., None], sde, ode))


def test_paired_statistics_power_and_pareto_front():
    """The table's t interval, the power formula (t quantiles from tables), the within-group centring of the
    diagnosis and the Pareto front of the plot."""
    from train.experiment.ablation_report import detectable_effect, pareto_front, seed_stats
    from train.experiment.diagnose import _within_group

    st = seed_stats([1.0, 2.0, 3.0, 4.0])  # mean 2.5, std sqrt(5/3), se std/2, t(0.975, 3) = 3.18245
    se = (5 / 3) ** 0.5 / 2
    assert_close(torch.tensor([st["mean"], st["se"], st["hi"] - st["mean"], st["z"]], dtype=torch.float64),
                 torch.tensor([2.5, se, 3.182446 * se, 2.5 / se], dtype=torch.float64), dtype=torch.float32,
                 accumulations=4, why="a 4-value mean and std; the t quantile to the 7 digits of the table")
    # (t(0.975, 3) + t(0.8, 3)) / sqrt(4) = (3.182446 + 0.978472) / 2
    assert_close(torch.tensor(detectable_effect(1.0, 4)), torch.tensor(2.080459), dtype=torch.float32,
                 accumulations=2, why="two tabulated t quantiles to 6 digits")
    assert seed_stats([]).get("n") == 0 and math.isnan(seed_stats([0.3])["lo"])
    centred = _within_group(torch.tensor([1.0, 3.0, 10.0, 20.0]), torch.tensor([0, 0, 1, 1]))
    assert torch.equal(centred, torch.tensor([-1.0, 1.0, -5.0, 5.0]))
    assert pareto_front([(0.1, 3.0), (0.2, 2.0), (0.15, 1.0), (0.05, 3.0)]) == [(0.1, 3.0), (0.2, 2.0)]
