"""Scores for edit pairs and the selection of the training set from them.

The batch contract (read this before adding a scorer)
-----------------------------------------------------
Every scorer is a *pure batch -> batch function*: ``scorer(records, images) -> records`` over one batch (here: one
shard of ~1,000 records; ``images`` gives the encoded source/edited bytes of those ids, see
:class:`curate.store.ImageShard`). A scorer

* reads only its inputs (no global state, no files other than a content-addressed cache whose hits equal misses),
* returns every record it was given (rejects marked with :func:`curate.schema.reject`, never dropped),
* adds its values under ``record["scores"]`` (and ``record["phash"]``), and may be called with batches of any size.

Stateless scorers are plain functions (:func:`curate.scoring.pair.score_pairs`); scorers that hold a model are
classes whose ``__init__`` loads it once and whose ``__call__`` is the batch function
(:class:`curate.scoring.clip.ClipScorer`). That is exactly the shape Ray Data's
``Dataset.map_batches(fn_or_class, concurrency=..., num_gpus=...)`` expects (functions for tasks, classes for actor
pools holding GPU models), so a distributed engine can run these unchanged; the ``score`` stage runs them shard by
shard through :func:`curate.pipeline.run_stage`.

Modules: :mod:`pair` (mask geometry + background PSNR/SSIM), :mod:`phash` (perceptual hashes), :mod:`clip`
(open-clip similarities with an on-disk embedding cache, :mod:`cache`), and the selection side: :mod:`filters`,
:mod:`dedupe`, :mod:`balance`, :mod:`funnel`.
"""

# Score names written into record["scores"] (export flattens them to score_<name> columns).
MASK_AREA = "mask_area"  # fraction of the image inside the edit mask
MASK_COMPONENTS = "mask_components"  # 8-connected components of the edit mask
MASK_COMPACTNESS = "mask_compactness"  # isoperimetric quotient 4*pi*area/perimeter^2 of the mask (1 = disc)
BG_PSNR = "bg_psnr"  # PSNR of source vs edited on the NON-edited region (dB, capped)
BG_SSIM = "bg_ssim"  # SSIM of source vs edited averaged over the NON-edited region
CLIP_IMAGE_SIM = "clip_image_sim"  # cosine(CLIP(source), CLIP(edited))
CLIP_DIRECTION = "clip_direction"  # cosine(CLIP(edited) - CLIP(source), CLIP_text(instruction))
