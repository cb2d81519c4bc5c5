"""Parameters of the review workflow (``params.yaml`` section ``annotate``), shared by the server, push, pull, merge."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from editkit.config import load_section
from typing import Annotated
from editkit.config_meta import Help, Range

from annotate.reviewers import ReviewPolicy


@dataclass
class AnnotateParams:
    port: Annotated[int, Help("Label Studio's port, bound to 127.0.0.1 only"), Range(ge=1, le=65535)] = 8765
    label_studio_version: Annotated[
        str,
        Help("the Label Studio release installed into its own virtualenv"),
    ] = "1.23.2"
    venv: Annotated[
        str,
        Help("Label Studio pins its own SDK and Django: it lives in its own virtualenv"),
    ] = ".venv-labelstudio"
    data_root: Annotated[str, Help("the only folder Label Studio may serve local files from")] = "data"
    start_timeout_s: Annotated[
        float,
        Help("seconds to wait for Label Studio to start (the first start runs its database migrations first)"),
        Range(gt=0),
    ] = 240.0
    project_title: Annotated[str, Help("title of the Label Studio review project")] = "editkit mask review"
    records: Annotated[str, Help("what `push` sends for review")] = "data/masks/records"
    images: Annotated[str, Help("the ingest image shards the review tasks show")] = "data/ingest/images"
    model_version: Annotated[str, Help("the prediction's model version shown in Label Studio")] = "editkit-masks"
    chunk_size: Annotated[int, Help("tasks per import request"), Range(ge=1)] = 200
    reviews: Annotated[
        str,
        Help("committed review results: written by `pull`, read by the `review` DVC stage"),
    ] = "reviews/masks.json"
    out: Annotated[str, Help("where the review stage writes the records with reviewed masks")] = "data/review/records"
    metrics: Annotated[str, Help("where the review stage writes its metrics JSON")] = "metrics/review.json"
    ml_backend_port: Annotated[
        int,
        Help("port of the SAM2-assisted review backend (`annotate serve --ml-backend` starts it), bound to 127.0.0.1"),
        Range(ge=1, le=65535),
    ] = 8766
    ml_backend_model: Annotated[
        str,
        Help("SAM2 checkpoint of the review backend: hub id or local HF-format directory"),
    ] = "facebook/sam2.1-hiera-large"
    ml_backend_device: Annotated[
        str,
        Help("where the review backend's SAM2 runs: auto, cpu, cuda or cuda:N"),
    ] = "auto"
    ml_backend_local_files_only: Annotated[
        bool,
        Help("never contact the hub for the review backend's weights (offline machines)"),
    ] = False
    ml_backend_start_timeout_s: Annotated[
        float,
        Help("seconds to wait for the review backend to start (loading SAM2 large takes a while on CPU)"),
        Range(gt=0),
    ] = 300.0

    review: Annotated[
        ReviewPolicy,
        Help("several reviewers of one task: how their reviews become one, and when they agree"),
    ] = field(default_factory=ReviewPolicy)
    brush_colour: Annotated[
        str,
        Help("the brush colour (#rrggbb) of the review projects (a push applies a changed one); empty: the palette "
             "colour that contrasts most with the first images pushed"),
    ] = ""

    @property
    def state_dir(self) -> Path:
        """Label Studio's database, our credentials, task maps, exported images: all under the data folder."""
        return Path(self.data_root) / "labelstudio"


def load_params(path: str | Path = "params.yaml") -> AnnotateParams:
    return load_section(AnnotateParams, "annotate", path)
