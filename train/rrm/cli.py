"""`editkit rrm ...`: train Edit-R1's reasoning reward model (SFT cold start, GCPO) and check that it learns.

Multi-GPU: `accelerate launch -m train.rrm sft --config ...` (same commands, DDP over the processes).
"""
from __future__ import annotations

from typing import List, Optional

import typer

from editkit.cli_app import command_group

app = command_group(help="Reasoning reward model: SFT cold start on teacher trajectories, GCPO on pairwise "
                  "preferences, then `rewards.weights.verifier` with `protocol: rrm`.")

CONFIG = typer.Option(None, "--config", help="YAML config (omitted keys take the defaults)")
RESUME = typer.Option(None, "--resume", help="'auto' (newest complete checkpoint) or a checkpoint directory")
OVERRIDES = typer.Argument(None, help="config overrides key.sub=value")


def _train(trainer_class, config_class, config: Optional[str], resume: Optional[str], overrides) -> None:
    """Load the config (the trainers' loader: YAML + overrides), train, print where the model is. User errors
    below any command are reported in one line (exit code 2) by the command group."""
    from editkit.config import load_file

    path = trainer_class(load_file(config_class, config, list(overrides or []))).fit(resume)
    typer.echo(f"wrote {path}")


@app.command("sft")
def sft_command(config: Optional[str] = CONFIG, resume: Optional[str] = RESUME,
                overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Supervised cold start on (source, instruction, edited, trajectory) records; writes <output_dir>/model."""
    from train.rrm.config import SFTRunConfig
    from train.rrm.sft import SFTTrainer

    _train(SFTTrainer, SFTRunConfig, config, resume, overrides)


@app.command("gcpo")
def gcpo_command(config: Optional[str] = CONFIG, resume: Optional[str] = RESUME,
                 overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Group Contrastive Preference Optimization on pairwise preferences; writes <output_dir>/model."""
    from train.rrm.config import GCPORunConfig
    from train.rrm.gcpo_trainer import GCPOTrainer

    _train(GCPOTrainer, GCPORunConfig, config, resume, overrides)


@app.command("make-sft-data")
def make_sft_data_command(config: Optional[str] = CONFIG, overrides: Optional[List[str]] = OVERRIDES) -> None:
    """Teacher trajectories through the MLLM client, filtered by a judge; dropped records with reasons."""
    from train.rrm.teacher import load_make_sft_config, make_sft_data

    counts = make_sft_data(load_make_sft_config(config, list(overrides or [])))
    typer.echo(f"kept {counts['kept']} of {counts['read']} records ({counts['dropped']} dropped, see dropped.jsonl)")


@app.command("init-model")
def init_model_command(out: str = typer.Option("runs/rrm_small_model", "--out"),
                       hidden_size: int = typer.Option(64), layers: int = typer.Option(2),
                       seed: int = typer.Option(0)) -> None:
    """Write a small random Qwen2.5-VL with the RRM format's phrases in its vocabulary (CPU experiments)."""
    from train.rrm.demo import default_phrases
    from train.rrm.small_model import build_small_rrm

    path = build_small_rrm(out, hidden_size=hidden_size, num_layers=layers, phrases=default_phrases(), seed=seed)
    typer.echo(f"wrote {path}")


@app.command("demo")
def demo_command(out: str = typer.Option("runs/rrm_demo", "--out", help="working directory"),
                 results: str = typer.Option("results/rrm", "--results", help="where table.md/.json go"),
                 seeds: int = typer.Option(3), quick: bool = typer.Option(False, help="tiny sizes (tests)")) -> None:
    """Does it learn? Synthetic preferences; pairwise accuracy before SFT, after SFT, after GCPO (mean ± std)."""
    from train.rrm.demo import run_demo

    table = run_demo(out, results, seeds=seeds, quick=quick)
    typer.echo(table)
