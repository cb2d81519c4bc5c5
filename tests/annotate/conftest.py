"""A real Label Studio server, started once per test session on a free localhost port, stopped by PID at the end."""
from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ls_params(tmp_path_factory):
    from annotate.settings import AnnotateParams

    root = tmp_path_factory.mktemp("project")
    return AnnotateParams(port=_free_port(), venv=str(REPO / ".venv-labelstudio"), data_root=str(root / "data"),
                          reviews=str(root / "reviews" / "masks.json"), records=str(root / "data/masks/records"),
                          images=str(root / "data/ingest/images"), out=str(root / "data/review/records"),
                          metrics=str(root / "metrics/review.json"), chunk_size=2)


@pytest.fixture(scope="session")
def ls_server(ls_params):
    from annotate import server

    started = time.perf_counter()
    server.start(ls_params)  # installs the venv first if it is absent
    print(f"\nLabel Studio ready in {time.perf_counter() - started:.1f} s")
    yield ls_params
    server.stop(ls_params)

