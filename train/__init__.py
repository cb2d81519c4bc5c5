"""Region-regularized RL post-training of editing models (DiffusionNFT / Flow-GRPO with LoRA).

Run ``python -m train --config train/configs/tiny_kontext.yaml`` (or ``accelerate launch -m train ...``); see the
README's "Post-training" section. Pure math lives in small modules without model I/O (``sde``, ``advantages``,
``objectives``, ``regularizer``); models sit behind ``adapters``; ``trainers`` hold the loop.
"""
