"""Shared curate fixtures: a small ingested built-in sample that every curate test can read."""
from __future__ import annotations

import pytest

SAMPLE_N = 24
SAMPLE_SIZE = 128


@pytest.fixture(scope="session")
def sample_ingest_dir(tmp_path_factory):
    """Ingest 24 built-in sample pairs at 128 px into a temp dir; returns the ingest output directory
    (``<dir>/records/shard-*.parquet``, ``<dir>/images/shard-*.parquet``). Session-scoped: built once."""
    from curate.sources.sample import SampleParams, SampleSource
    from curate.stages.ingest import IngestParams, run_ingest

    out = tmp_path_factory.mktemp("sample_ingest") / "ingest"
    run_ingest(SampleSource(SampleParams(n=SAMPLE_N, size=SAMPLE_SIZE, seed=0)), out, IngestParams(), progress=False)
    return out
