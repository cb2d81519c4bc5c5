"""`editkit train ...`: post-train an editing model with region-regularized RL (GRPO or DiffusionNFT)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from editkit.cli_app import command_group

app = command_group(help="Post-train FLUX.1-Kontext, FLUX.2, Qwen-Image-Edit or Qwen-Image 2.1 (LoRA) with GRPO or "
                    "DiffusionNFT and the CoCoEdit region regularizer; the miniature ablation. Multi-GPU: "
                    "`accelerate launch -m train --config ...` (the same options as `editkit train run`).")


@app.command("run")
def run_command(
    config: Optional[str] = typer.Option(None, "--config", help="YAML config, e.g. train/configs/tiny_kontext.yaml"),
    resume: Optional[str] = typer.Option(None, "--resume",
                                         help="'auto' (newest complete checkpoint) or a checkpoint directory"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key.sub=value"),
) -> None:
    """Run (or resume) a training run in this process."""
    from train.main import run

    run(config, list(overrides or []), resume)


@app.command("export")
def export_command(
    config: str = typer.Option(..., "--config", help="the run's training YAML (base model, recipe, dataset)"),
    out: str = typer.Option(..., "--out", help="folder to write the LoRA, the model card and (--merge) transformer"),
    run: Optional[str] = typer.Option(None, "--run", help="the run's output folder (default: the config's)"),
    merge: bool = typer.Option(False, "--merge", help="also save the base transformer with the LoRA fused in"),
    benchmark: Optional[str] = typer.Option(None, "--benchmark", help="a `benchmarks evaluate` JSON for the card"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key.sub=value"),
) -> None:
    """Publish a trained LoRA: diffusers format (`load_lora_weights`), optional merged transformer, model card."""
    from train.config import load_config
    from train.export import export

    typer.echo(f"wrote {export(load_config(config, list(overrides or [])), out, run, merge=merge, benchmark=benchmark)}")


@app.command("show-config")
def show_config(
    config: Optional[str] = typer.Option(None, "--config", help="YAML config to resolve"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key.sub=value"),
) -> None:
    """Print the fully resolved config (defaults + file + overrides) as YAML."""
    import yaml

    from train.config import load_config, to_dict

    typer.echo(yaml.safe_dump(to_dict(load_config(config, list(overrides or []))), sort_keys=False))


@app.command("pretrain")
def pretrain_command(
    config: Optional[str] = typer.Option(None, "--config", help="YAML, e.g. train/configs/ablation_base.yaml"),
    overrides: Optional[List[str]] = typer.Argument(None, help="config overrides key.sub=value"),
) -> None:
    """Train the miniature ablation's base editor from scratch (VAE, then flow matching of a small
    FLUX.1-Kontext transformer) on the exported dataset; writes a pipeline dir and pretrain.json (reused when the
    config is unchanged)."""
    from train.experiment.pretrain import load_pretrain_config, pretrain

    pretrain(load_pretrain_config(config, list(overrides or [])))


@app.command("init-model")
def init_model_command(
    out: str = typer.Option("runs/tiny_kontext_model", "--out", help="directory to write the pipeline into"),
    layers: int = typer.Option(1, help="dual-stream transformer blocks (single-stream blocks: the same number)"),
    seed: int = typer.Option(0, help="initialisation seed"),
) -> None:
    """Write a small, randomly initialised FLUX.1-Kontext pipeline (loads with FluxKontextPipeline.from_pretrained):
    the model `train/configs/tiny_kontext.yaml` trains, for trying the trainer on a CPU in seconds."""
    from train.experiment.small_kontext import build_small_kontext

    path = build_small_kontext(out, num_layers=layers, num_single_layers=layers, seed=seed)
    typer.echo(f"wrote {path}")


@app.command("ablation")
def ablation_command(
    config: str = typer.Option("train/configs/ablation.yaml", "--config",
                               help="ablation YAML (train/configs/ablation.yaml: CPU size; ablation_gpu.yaml: larger)"),
    smoke: bool = typer.Option(False, "--smoke",
                               help="apply the config's `smoke:` section: a couple of steps per arm, one seed (CI)"),
    out: Optional[str] = typer.Option(None, "--out", help="output dir for the table and plot (default: the config's)"),
    work_dir: Optional[str] = typer.Option(None, "--work-dir",
                                           help="where the base model and runs go (default: the config's)"),
) -> None:
    """Miniature CPU reproduction of the region-regularization ablation: pretrain a small FLUX.1-Kontext-architecture
    editor on the exported sample, then run the same RL budget per arm (edit reward only / + pixel-consistency reward
    / + region regularizer / region advantages / region noise) and seed; write held-out masked PSNR/SSIM of the
    non-edited region and the edit reward as table.md/table.json, and the reward curves as curves.png."""
    from train.experiment.ablation import load_ablation_config, run_ablation

    ablation = load_ablation_config(config, smoke=smoke)
    if work_dir:
        ablation.work_dir = work_dir
    run_ablation(ablation, Path(out or ablation.output_dir))
