"""Where the miniature's background fidelity goes: measurements on the base editor's rollouts, no training.

``python -m train.experiment.diagnose --config train/configs/ablation.yaml --steps 4 [--out FILE]`` draws the RL
trainer's own batches (the ablation's ``rl`` settings, seed 0) under several rollout samplers and reports, per
sampler, over all samples:

- ``bg_psnr``: the rollouts' background PSNR vs the source (what NFT regresses onto), against ``ode_bg_psnr``, the
  same rows edited by the deterministic ODE from the same initial noise (what the evaluation measures);
- ``edit_std`` / ``pixel_std``: the within-group std of the edit reward and of the pixel-consistency reward (the
  spread GRPO and NFT learn from), ``bg_psnr_std`` the within-group std of the background PSNR;
- ``pixel_share``: the share of the within-group variance of the mixed reward (0.8 edit / 0.2 pixel) that the pixel
  term carries, and ``edit_pixel_corr``, the within-group correlation of the two rewards.

Every number comes from the trainer's code path (``make_batch``, ``sample``, ``score``), so it is what RL sees.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

SAMPLERS = {
    "sde_eta0.7": {"nft_sde": True, "noise_level": 0.7},
    "sde_eta0.3": {"nft_sde": True, "noise_level": 0.3},
    "ode": {"nft_sde": False},
    "sde_eta0.7_region_noise": {"nft_sde": True, "noise_level": 0.7, "region_noise": True},
    "sde_eta0.7_region_sde": {"nft_sde": True, "noise_level": 0.7, "region_noise": True, "region_sde": True},
}


def _within_group(values: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Values minus their group's mean."""
    centred = values.clone()
    for g in groups.unique():
        members = groups == g
        centred[members] = values[members] - values[members].mean()
    return centred


def rollout_stats(trainer, steps: int, pixel_weight: float = 0.2) -> dict[str, float]:
    """Sample ``steps`` iterations with the trainer (no update) and measure its rollouts against ODE edits."""
    from editkit.metrics import masked_psnr
    from train.rollout.sampler import rollout

    rows: dict[str, list] = {"bg": [], "ode_bg": [], "edit": [], "pixel": [], "groups": []}
    for step in range(1, steps + 1):
        batch = trainer.make_batch(step)
        trainer.sample(batch, step)
        _, parts = trainer.score(batch)
        images = batch.samples.images
        with torch.no_grad():
            noise, generators = trainer.rollout_noise(batch, step)
            ode = rollout(trainer.adapter, trainer.adapter.transformer, batch.cond, noise, trainer.sigmas,
                          sde="flow_sde", noise_level=0.0, window=(0, 0), generators=generators,
                          autocast=trainer.accelerator.autocast)
            ode_images = trainer.adapter.decode(ode.final, trainer.height, trainer.width).float().cpu()
        background = ~batch.masks
        rows["bg"].append(torch.as_tensor(masked_psnr(images.double().clamp(0, 1), batch.sources.double(),
                                                      background)).reshape(-1))
        rows["ode_bg"].append(torch.as_tensor(masked_psnr(ode_images.double().clamp(0, 1), batch.sources.double(),
                                                          background)).reshape(-1))
        rows["edit"].append(parts["edit_region"].double().cpu())
        rows["pixel"].append(parts["pixel_consistency"].double().cpu())
        rows["groups"].append(batch.group_ids.cpu() + 1000 * step)
    bg, ode_bg, edit, pixel, groups = (torch.cat(rows[k]) for k in ("bg", "ode_bg", "edit", "pixel", "groups"))
    edit_c, pixel_c, bg_c = (_within_group(v, groups) for v in (edit, pixel, bg))
    mixed = (1 - pixel_weight) * edit_c + pixel_weight * pixel_c
    share = float(((pixel_weight * pixel_c) ** 2).sum() / (mixed ** 2).sum().clamp_min(1e-30))
    corr = float((edit_c * pixel_c).sum() / ((edit_c ** 2).sum() * (pixel_c ** 2).sum()).sqrt().clamp_min(1e-30))
    size = int((groups == groups[0]).sum())
    correction = math.sqrt(size / (size - 1)) if size > 1 else 1.0  # within-group std, unbiased
    return {"samples": len(bg), "bg_psnr": float(bg.mean()), "ode_bg_psnr": float(ode_bg.mean()),
            "bg_psnr_std": float(bg_c.std(correction=0)) * correction,
            "edit_reward": float(edit.mean()), "edit_std": float(edit_c.std(correction=0)) * correction,
            "pixel_reward": float(pixel.mean()), "pixel_std": float(pixel_c.std(correction=0)) * correction,
            "pixel_share": share, "edit_pixel_corr": corr}


def plot_pilots(runs: dict[str, Path], base: dict[str, float], path: Path) -> None:
    """Validation edit reward and background PSNR against the RL step of pilot runs (``name -> metrics.jsonl``),
    the base editor's validation values at step 0."""
    from train.experiment.ablation_report import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    for axis, (metric, title) in zip(axes, (("edit_reward", "validation edit reward ↑"),
                                            ("bg_psnr", "validation background PSNR (dB) ↑"))):
        for name, metrics in runs.items():
            rows = [json.loads(line) for line in Path(metrics).read_text().splitlines()]
            rows = [r for r in rows if f"heldout_{metric}" in r]
            axis.plot([0] + [r["step"] for r in rows], [base[metric]] + [r[f"heldout_{metric}"] for r in rows],
                      marker="o", markersize=3, label=name)
        axis.axhline(base[metric], color="black", linewidth=0.8, linestyle=":", label="base editor")
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("RL step")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle("Pilot runs (seed 0, validation rows)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    from train.experiment.ablation import ArmConfig, arm_train_config, base_config, load_ablation_config
    from train.experiment.pretrain import set_threads
    from train.trainers import TRAINERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="train/configs/ablation.yaml")
    parser.add_argument("--steps", type=int, default=4, help="sampled iterations per sampler")
    parser.add_argument("--samplers", nargs="*", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--work-dir", default=None, help="the ablation's work_dir (base editor and splits)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args(argv)
    config = load_ablation_config(args.config)
    if args.work_dir:
        config.work_dir = args.work_dir
    set_threads(config.cpu_threads)
    base = base_config(config)
    results = {}
    for name in args.samplers:
        arm = ArmConfig(name=f"diagnose-{name}", family="NFT",
                        overrides={"rewards": {"weights": {"edit_region": 0.8, "pixel_consistency": 0.2}},
                                   "sampler": SAMPLERS[name], "logging": {"progress": False}})
        train_config = arm_train_config(config, arm, 0, base)
        trainer = TRAINERS.get(train_config.objective.name)(train_config)
        results[name] = rollout_stats(trainer, args.steps)
        trainer.close()
        print(name, json.dumps({k: round(v, 4) for k, v in results[name].items()}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
