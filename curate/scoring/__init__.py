"""Scores for edit pairs and the selection of the training set from them.

The batch contract (read this before adding a scorer)
-----------------------------------------------------
Every scorer is a *pure batch -> batch function*: ``scorer(records, images) -> records`` over one batch (here: one
shard of ~1,000 records; ``images`` gives the encoded source/edited bytes of those ids, see
:class:`editkit.store.ImageShard`). A scorer

* reads only its inputs (no global state, no files other than a content-addressed cache whose hits equal misses),
* returns every record it was given (rejects marked with :func:`editkit.schema.reject`, never dropped),
* adds its values under ``record["scores"]`` (and ``record["phash"]``), and may be called with batches of any size.

Stateless scorers are plain functions (:func:`curate.scoring.pair.score_pairs`); scorers that hold a model are
classes whose ``__init__`` loads it once and whose ``__call__`` is the batch function
(:class:`editkit.clip.ClipScorer`). That is exactly the shape Ray Data's
``Dataset.map_batches(fn_or_class, concurrency=..., num_gpus=...)`` expects (functions for tasks, classes for actor
pools holding GPU models), so a distributed engine can run these unchanged; the ``score`` stage runs them shard by
shard through :func:`editkit.pipeline.run_stage`.

Modules: :mod:`pair` (mask geometry + background PSNR/SSIM), :mod:`phash` (perceptual hashes), :mod:`clip`
(open-clip similarities with an on-disk embedding cache, :mod:`cache`), and the selection side: :mod:`filters`,
:mod:`dedupe`, :mod:`balance`, :mod:`funnel`.
"""
