"""Policy objectives as pure loss functions on tensors: Flow-GRPO (``grpo``) and DiffusionNFT (``nft``)."""
