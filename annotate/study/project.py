"""A blinded pairwise rating study in Label Studio: two editors' outputs on a benchmark, left/right randomised.

Each benchmark item becomes one task: the instruction, the source, and the two edited images as "left" and
"right". Which editor is left is drawn per item from ``seed`` and recorded only in the study file (committed next to
the reviews; never in the task, whose data every rater can see in the data manager). The project asks for
``raters`` annotations per task (Label Studio's overlap), so several raters judge every pair. Push is idempotent
against the server (tasks are matched by item id).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from annotate.project import saved_by
from editkit import schema, store

CHOICE = "preference"
STUDY_CONFIG = f"""<View>
  <Header value="$instruction"/>
  <View style="display: flex; gap: 12px">
    <View style="flex: 1"><Header value="Source" size="5"/><Image name="source" value="$source_image"/></View>
    <View style="flex: 1"><Header value="Left" size="5"/><Image name="left" value="$left_image"/></View>
    <View style="flex: 1"><Header value="Right" size="5"/><Image name="right" value="$right_image"/></View>
  </View>
  <Header value="Which edit follows the instruction better while keeping everything else unchanged?" size="5"/>
  <Choices name="{CHOICE}" toName="source" choice="single" required="true" showInline="true">
    <Choice value="left"/>
    <Choice value="tie" hint="equally good or equally bad"/>
    <Choice value="right"/>
  </Choices>
</View>
"""


def output_path(folder: Path, item_id: str) -> Path | None:
    """An editor's image for an item: ``<folder>/outputs/<id>.png`` (what `bench evaluate` writes) or ``<folder>/<id>.png``."""
    for candidate in (folder / "outputs" / f"{item_id}.png", folder / f"{item_id}.png"):
        if candidate.is_file():
            return candidate
    return None


def left_is(seed: int, item_id: str) -> str:
    """"A" or "B": which editor is shown left for this item (a pure function of seed and id)."""
    digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
    return "A" if digest[0] % 2 == 0 else "B"


def plan(records: Iterable[dict[str, Any]], images: store.ImageStore, a_dir: Path, b_dir: Path, image_dir: Path,
         seed: int) -> dict[str, dict[str, Any]]:
    """item id -> what the study shows and records: paths of source/A/B, instruction, category, left editor."""
    image_dir.mkdir(parents=True, exist_ok=True)
    items: dict[str, dict[str, Any]] = {}
    for record in records:
        if not schema.is_ok(record):
            continue
        a, b = output_path(a_dir, record["id"]), output_path(b_dir, record["id"])
        if a is None or b is None:
            continue  # an editor without an output for this item: not comparable
        stem = hashlib.sha1(record["id"].encode()).hexdigest()[:16]  # file names carry no editor and no raw id
        source = image_dir / f"{stem}_source.png"
        if not source.exists():
            source.write_bytes(store.encode_png(images.shard(record["image_shard"]).source(record["id"])))
        left = left_is(seed, record["id"])
        for side, path in (("left", a if left == "A" else b), ("right", b if left == "A" else a)):
            target = image_dir / f"{stem}_{side}.png"
            target.write_bytes(store.encode_png(store.decode_rgb(path.read_bytes())))
        items[record["id"]] = {"left": left, "source": str(source), "A": str(a), "B": str(b), "stem": stem,
                               "instruction": record.get("instruction_refined") or record.get("instruction") or "",
                               "category": record.get("edit_type") or "unknown"}
    return items


def get_or_create(ls, title: str, raters: int, image_root: Path) -> int:
    """The study project called ``title``; ``raters`` annotations per task (1 in a rater's own project)."""
    for project in ls.projects.list():
        if project.title == title:
            return int(project.id)
    project = ls.projects.create(title=title, label_config=STUDY_CONFIG, maximum_annotations=raters,
                                 show_overlap_first=raters > 1, overlap_cohort_percentage=100,
                                 description="editkit: blinded pairwise comparison of two editors")
    ls.import_storage.local.create(project=project.id, path=str(image_root.resolve()), title="editkit study images",
                                   use_blob_urls=False)
    return int(project.id)


def push(ls, project_id: int, items: dict[str, dict[str, Any]], image_dir: Path, data_root: Path,
         chunk_size: int = 200) -> dict[str, int]:
    known = {t.data.get("study_item") for t in ls.tasks.list(project=project_id)}
    root = data_root.resolve()

    def url(path: Path) -> str:
        return "/data/local-files/?d=" + str(path.resolve().relative_to(root))

    new = [{"data": {"study_item": item_id, "instruction": item["instruction"],
                     "source_image": url(Path(item["source"])),
                     "left_image": url(image_dir / f"{item['stem']}_left.png"),
                     "right_image": url(image_dir / f"{item['stem']}_right.png")}}
           for item_id, item in sorted(items.items()) if item_id not in known]
    for start in range(0, len(new), chunk_size):
        ls.projects.import_tasks(id=project_id, request=new[start : start + chunk_size], return_task_ids=True)
    return {"created": len(new), "unchanged": len(items) - len(new)}


def rater_titles(title: str, raters: int) -> list[str]:
    """One project per rater: whatever path a rater takes in the UI (the labeling stream, a task opened from the data
    manager, Update on an earlier answer, Skip), only their own judgments live in their project."""
    return [f"{title} - rater {k}" for k in range(1, raters + 1)]


def ratings_from_export(exported: list[dict[str, Any]], items: dict[str, dict[str, Any]], slot: int | None = None,
                        users: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """One rating per (item, rater), the rater's latest annotation; "left"/"right" mapped back to "A"/"B".

    The rater is who saved the annotation last (Label Studio lets anyone update anyone's annotation); with ``slot``
    (the rater project's number) the rater reads ``rater <slot>: <login>``."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for task in exported:
        item_id = (task.get("data") or {}).get("study_item")
        if item_id not in items:
            continue
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            choice = next(((r.get("value") or {}).get("choices") or [None]
                           for r in annotation.get("result") or [] if r.get("from_name") == CHOICE), [None])[0]
            if choice not in ("left", "right", "tie"):
                continue
            rater = saved_by(annotation)
            rater = rater.get("id") if isinstance(rater, dict) else rater
            rater = str(users.get(int(rater), rater) if users and rater is not None else rater)
            if slot is not None:
                rater = f"rater {slot}: {rater}"
            left = items[item_id]["left"]
            winner = "tie" if choice == "tie" else (left if choice == "left" else ("B" if left == "A" else "A"))
            rating = {"item": item_id, "rater": rater, "winner": winner, "choice": choice,
                      "category": items[item_id]["category"], "annotation_id": annotation.get("id"),
                      "updated_at": annotation.get("updated_at") or ""}
            key = (item_id, rater)
            if key not in latest or (rating["updated_at"], rating["annotation_id"] or 0) > (
                    latest[key]["updated_at"], latest[key]["annotation_id"] or 0):
                latest[key] = rating
    return sorted(latest.values(), key=lambda r: (r["item"], r["rater"]))


def side_balance(items: dict[str, dict[str, Any]]) -> float:
    """Share of items with A on the left (about 0.5 when randomised)."""
    return float(np.mean([item["left"] == "A" for item in items.values()])) if items else float("nan")
