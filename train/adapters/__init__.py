"""Model adapters; importing this package registers the built-in ones."""
from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, build_adapter, register_adapter
from train.adapters import flux_kontext  # noqa: F401  (registers "flux_kontext")
from train.adapters import qwen_image_edit  # noqa: F401  (registers "qwen_image_edit")

__all__ = ["ADAPTERS", "Conditioning", "EditModelAdapter", "build_adapter", "register_adapter"]
