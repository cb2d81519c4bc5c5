"""Entry point shared by ``python -m train``, ``accelerate launch -m train`` and ``editkit train run``."""
from __future__ import annotations

import argparse

from train.config import load_config


def run(config_path: str | None, overrides: list[str], resume: str | None = None) -> None:
    from train.trainers import TRAINERS

    config = load_config(config_path, overrides)
    trainer = TRAINERS.get(config.objective.name)(config)
    trainer.fit(resume=resume)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description="Region-regularized RL post-training (GRPO / DiffusionNFT) of an editing model with LoRA. "
        "Multi-process: `accelerate launch --num_processes N -m train --config ...`.")
    parser.add_argument("--config", help="YAML config (see train/configs/); omitted keys take the defaults")
    parser.add_argument("--resume", default=None,
                        help="'auto' = newest complete checkpoint in <output_dir>/checkpoints (fresh start if none), "
                        "or a checkpoint directory")
    parser.add_argument("overrides", nargs="*", help="config overrides key.sub=value (value parsed as YAML)")
    args = parser.parse_args(argv)
    from editkit.errors import EXIT_USER_ERROR, UserError

    try:
        run(args.config, args.overrides, args.resume)
    except UserError as error:  # a user's situation (a bad checkpoint, a bad setting), not a bug: one line, exit 2
        parser.exit(EXIT_USER_ERROR, f"error: {error}\n")

