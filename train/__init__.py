"""Region-regularized RL post-training of editing models (DiffusionNFT / Flow-GRPO with LoRA).

Run ``editkit train run --config train/configs/tiny_kontext.yaml`` (multi-process: ``accelerate launch -m train
...``, the same options). Pure math lives in ``algorithms`` (no model I/O); ``rollout`` samples the policy;
``rewards`` score the edits; models sit behind ``adapters``; ``trainers`` hold the loop; ``experiment`` is the
miniature ablation. The layout, one line per module: ``docs/training-layout.md``.
"""
