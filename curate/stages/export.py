"""The `export` stage (placeholder: being written)."""
from __future__ import annotations


def main() -> None:
    """Not implemented yet."""
    raise NotImplementedError("the export stage is not implemented yet")
