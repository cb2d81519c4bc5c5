"""Model adapters, in the :data:`ADAPTERS` registry (the built-ins load on first lookup)."""
from train.adapters.base import ADAPTERS, Conditioning, EditModelAdapter, build_adapter

__all__ = ["ADAPTERS", "Conditioning", "EditModelAdapter", "build_adapter"]
