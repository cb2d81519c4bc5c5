"""Rollouts: the denoising loop (``sampler``), the per-micro-batch loop around it (``micro_batches``) with its
background reward thread (``reward_thread``), and the phrase-attention recording (``attention``, ``phrases``)."""
