"""Edit masks: pixel-difference masks, morphology refinement, grounded masks (Grounding-DINO -> SAM2) and fusion.

Modules: ``diff`` and ``refine`` (pixel-difference masks and their clean-up), ``phrases`` (what to ground),
``grounded`` (the batched :class:`~curate.masks.grounded.GroundedMasker`), ``fusion`` (per-edit-type rules, pure numpy),
``grounded_step`` (the shard step the ``masks`` stage runs in ``mode: grounded``). Heavy imports (torch,
transformers) happen inside functions, so importing this package is cheap.
"""
