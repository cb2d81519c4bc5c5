"""Parameters of the review workflow (``params.yaml`` section ``annotate``), shared by the server, push, pull, merge."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from editkit.config import load_section
from typing import Annotated
from editkit.config_meta import Range

from annotate.reviewers import ReviewPolicy


@dataclass
class AnnotateParams:
    port: Annotated[int, Range(ge=1, le=65535)] = 8765
    """Label Studio's port, bound to 127.0.0.1 only"""
    label_studio_version: str = "1.23.2"
    """the Label Studio release installed into its own virtualenv"""
    venv: str = ".venv-labelstudio"
    """Label Studio pins its own SDK and Django: it lives in its own virtualenv"""
    data_root: str = "data"
    """the only folder Label Studio may serve local files from"""
    start_timeout_s: Annotated[float, Range(gt=0)] = 240.0
    """seconds to wait for Label Studio to start (the first start runs its database migrations first)"""
    project_title: str = "editkit mask review"
    """title of the Label Studio review project"""
    records: str = "data/masks/records"
    """what `push` sends for review"""
    images: str = "data/ingest/images"
    """the ingest image shards the review tasks show"""
    model_version: str = "editkit-masks"
    """the prediction's model version shown in Label Studio"""
    chunk_size: Annotated[int, Range(ge=1)] = 200
    """tasks per import request"""
    reviews: str = "reviews/masks.json"
    """committed review results: written by `pull`, read by the `review` DVC stage"""
    out: str = "data/review/records"
    """where the review stage writes the records with reviewed masks"""
    metrics: str = "metrics/review.json"
    """where the review stage writes its metrics JSON"""
    ml_backend_port: Annotated[int, Range(ge=1, le=65535)] = 8766
    """port of the SAM2-assisted review backend (`annotate serve --ml-backend` starts it), bound to 127.0.0.1"""
    ml_backend_model: str = "facebook/sam2.1-hiera-large"
    """SAM2 checkpoint of the review backend: hub id or local HF-format directory"""
    ml_backend_device: str = "auto"
    """where the review backend's SAM2 runs: auto, cpu, cuda or cuda:N"""
    ml_backend_local_files_only: bool = False
    """never contact the hub for the review backend's weights (offline machines)"""
    ml_backend_start_timeout_s: Annotated[float, Range(gt=0)] = 300.0
    """seconds to wait for the review backend to start (loading SAM2 large takes a while on CPU)"""

    review: ReviewPolicy = field(default_factory=ReviewPolicy)
    """several reviewers of one task: how their reviews become one, and when they agree"""
    brush_colour: str = ""
    """the brush colour (#rrggbb) of the review projects (a push applies a changed one); empty: the palette colour that
    contrasts most with the first images pushed"""

    @property
    def state_dir(self) -> Path:
        """Label Studio's database, our credentials, task maps, exported images: all under the data folder."""
        return Path(self.data_root) / "labelstudio"


def load_params(path: str | Path = "params.yaml") -> AnnotateParams:
    return load_section(AnnotateParams, "annotate", path)
