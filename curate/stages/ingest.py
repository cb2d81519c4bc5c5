"""The `ingest` stage (placeholder: being written)."""
from __future__ import annotations


def main() -> None:
    """Not implemented yet."""
    raise NotImplementedError("the ingest stage is not implemented yet")
