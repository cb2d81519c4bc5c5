"""Tiny randomly initialised models built offline (config -> save_pretrained -> from_pretrained).

Used by the test-suite and the CPU demos, because no weights can be downloaded here. One module per model family;
each exposes ``build_<name>(directory) -> Path`` that saves a loadable checkpoint and returns its path.
"""
