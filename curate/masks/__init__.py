"""Edit masks (pixels that SHOULD change): pixel difference (:mod:`.diff`), shared morphology (:mod:`.refine`),
Grounding-DINO -> SAM2 (:mod:`.grounded`, :mod:`.grounded_step`) and their fusion (:mod:`.fusion`)."""
