"""Parameters of the review workflow (``params.yaml`` section ``annotate``), shared by the server, push, pull, merge."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from editkit.config import load_section


@dataclass
class AnnotateParams:
    # server
    port: int = 8765  # bound to 127.0.0.1 only
    label_studio_version: str = "1.23.2"
    venv: str = ".venv-labelstudio"  # Label Studio pins its own SDK and Django: it lives in its own virtualenv
    data_root: str = "data"  # the only folder Label Studio may serve local files from
    start_timeout_s: float = 240.0  # the first start runs ~60 s of migrations
    # project
    project_title: str = "editkit mask review"
    records: str = "data/masks/records"  # what `push` sends for review
    images: str = "data/ingest/images"
    model_version: str = "editkit-masks"  # the prediction's model version shown in Label Studio
    chunk_size: int = 200  # tasks per import request
    # sync back
    reviews: str = "reviews/masks.json"  # committed; written by `pull`, read by the `review` DVC stage
    out: str = "data/review/records"
    metrics: str = "metrics/review.json"
    # SAM2-assisted review: `editkit annotate serve --ml-backend` (annotate/ml_backend), bound to 127.0.0.1
    ml_backend_port: int = 8766
    ml_backend_model: str = "facebook/sam2.1-hiera-large"  # hub id or local HF-format directory
    ml_backend_device: str = "auto"  # auto | cpu | cuda | cuda:N
    ml_backend_local_files_only: bool = False
    ml_backend_start_timeout_s: float = 300.0  # loading SAM2 large takes a while on CPU

    @property
    def state_dir(self) -> Path:
        """Label Studio's database, our credentials, task maps, exported images: all under the data folder."""
        return Path(self.data_root) / "labelstudio"


def load_params(path: str | Path = "params.yaml") -> AnnotateParams:
    return load_section(AnnotateParams, "annotate", path)
