"""Which records a review session is about, and where its images, reviews file and project are.

One Label Studio project and one reviews file per dataset. The dataset's name comes from its records folder:
``data/masks/records`` -> ``masks``, ``data/bench/gedit/records`` -> ``bench_gedit``. The configured records
(``annotate.records``) keep ``annotate.project_title`` / ``annotate.reviews`` / ``annotate.images``; any other
records folder gets ``"<project_title>: <name>"``, ``reviews/<name>.json`` and, when it exists, the ``images``
folder beside the records (``data/bench/gedit/images``), so the benchmark review needs only ``--records``; merge writes
``<records parent>_reviewed/records`` and ``metrics/<name>_review.json`` (what the benchmark review stages use).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotate.settings import AnnotateParams


@dataclass(frozen=True)
class Dataset:
    name: str
    records: str
    images: str
    reviews: str
    project_title: str
    out: str  # merged records
    metrics: str

    @property
    def slug(self) -> str:
        """File-name form of the project title (raw exports, drafts)."""
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in self.project_title)


def dataset_name(records: str | Path) -> str:
    parts = [p for p in Path(records).parts if p not in (".", "")]
    if parts and parts[-1] == "records":
        parts = parts[:-1]
    if parts and parts[0] == "data":
        parts = parts[1:]
    name = "_".join(parts) or "records"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def resolve(params: AnnotateParams, records: str | None = None, images: str | None = None,
            reviews: str | None = None, project: str | None = None) -> Dataset:
    """The dataset for these command-line choices (None: the defaults described above)."""
    records = records or params.records
    name = dataset_name(records)
    configured = Path(records).resolve() == Path(params.records).resolve()
    if images is None:
        beside = Path(records).parent / "images"
        images = params.images if configured or not beside.is_dir() else str(beside)
    if reviews is None:
        reviews = params.reviews if configured else str(Path(params.reviews).parent / f"{name}.json")
    if project is None:
        project = params.project_title if configured else f"{params.project_title}: {name}"
    if not project.strip():
        raise ValueError("--project must not be empty")
    out = params.out if configured else str(Path(f"{Path(records).parent}_reviewed") / "records")
    metrics = params.metrics if configured else str(Path(params.metrics).parent / f"{name}_review.json")
    return Dataset(name=name, records=str(records), images=str(images), reviews=str(reviews), project_title=project,
                   out=out, metrics=metrics)
