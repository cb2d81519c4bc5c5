"""The algorithms as pure functions on tensors, without model I/O: SDE transitions (``sde``), group advantages
(``advantages``), the Flow-GRPO (``grpo``) and DiffusionNFT (``nft``) losses, CoCoEdit's region regularizer
(``regularizer``), region-specific advantages (``region_advantages``) and region-decoupled noise (``region_noise``)."""
