"""Edit-R1-style reasoning reward model (RRM): a Qwen2.5-VL verifier that splits an edit instruction into keep /
follow / quality principles, checks each against the edited image and gives a final score.

Trained by supervised fine-tuning on teacher trajectories (:mod:`train.rrm.sft`), then by Group Contrastive
Preference Optimization on pairwise preferences (:mod:`train.rrm.gcpo`, :mod:`train.rrm.gcpo_trainer`); used as the
``verifier`` reward with ``protocol: rrm`` (:mod:`train.rewards.rrm_verifier`). Both trainers run on the trainers' runtime
(:mod:`train.runtime`: loop, config loader, checkpoints and exact resume, logging, errors); this package
holds what is specific to a reward model: its data, output format, model, GCPO math, scoring and teacher.
"""
