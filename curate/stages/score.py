"""The `score` stage (placeholder: being written)."""
from __future__ import annotations


def main() -> None:
    """Not implemented yet."""
    raise NotImplementedError("the score stage is not implemented yet")
