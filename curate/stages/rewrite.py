"""The `rewrite` stage (placeholder: being written)."""
from __future__ import annotations


def main() -> None:
    """Not implemented yet."""
    raise NotImplementedError("the rewrite stage is not implemented yet")
