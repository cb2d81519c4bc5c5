"""Shared fixtures for the trainer tests: one tiny FLUX.1-Kontext pipeline per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_kontext_dir(tmp_path_factory):
    from curate.tiny.kontext import build_tiny_kontext

    return build_tiny_kontext(tmp_path_factory.mktemp("tiny_kontext"))


@pytest.fixture(scope="session")
def tiny_kontext_pipe(tiny_kontext_dir):
    from diffusers import FluxKontextPipeline

    return FluxKontextPipeline.from_pretrained(tiny_kontext_dir)
