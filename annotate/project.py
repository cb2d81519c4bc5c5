"""The review project: labeling config, idempotent push of records (tasks + mask predictions), pull of reviews.

Push exports each record's images as PNG under ``<data_root>/labelstudio/images/`` (served by a LocalFiles storage,
never synced: tasks come only from push) and imports tasks in chunks with the pipeline's mask as a prediction.
A sample-id -> task map (``tasks-<project id>.json``) makes pushing again safe: known samples are not imported again;
their prediction is updated when the mask changed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from annotate.rle import mask_to_rle, rle_to_mask
from annotate.settings import AnnotateParams
from editkit import rle, schema, store

BRUSH, CHOICES, COMMENT, IMAGE = "mask", "review", "comment", "source"
BRUSH_LABEL = "edit region"

LABEL_CONFIG = f"""<View>
  <Header value="$instruction"/>
  <View style="display: flex; gap: 12px">
    <View style="flex: 1">
      <Header value="Source: paint the pixels that should change" size="5"/>
      <Image name="{IMAGE}" value="$source_image" zoom="true" zoomControl="true"/>
    </View>
    <View style="flex: 1">
      <Header value="$edited_caption" size="5"/>
      <Image name="edited" value="$edited_image"/>
    </View>
  </View>
  <BrushLabels name="{BRUSH}" toName="{IMAGE}">
    <Label value="{BRUSH_LABEL}" background="#ff0066"/>
  </BrushLabels>
  <Choices name="{CHOICES}" toName="{IMAGE}" choice="single" required="true" showInline="true">
    <Choice value="accept" hint="the mask is right"/>
    <Choice value="fixed" hint="I corrected the mask"/>
    <Choice value="reject" hint="unusable sample (edit failed, wrong instruction, ...)"/>
  </Choices>
  <TextArea name="{COMMENT}" toName="{IMAGE}" placeholder="comment (optional)" maxSubmissions="1" editable="true"/>
</View>
"""


def brush_result(mask_rle: dict[str, Any]) -> dict[str, Any]:
    """A COCO-RLE mask as one Label Studio brush region on the source image."""
    height, width = (int(v) for v in mask_rle["size"])
    return {"from_name": BRUSH, "to_name": IMAGE, "type": "brushlabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(rle.decode(mask_rle)), "brushlabels": [BRUSH_LABEL]}}


def get_or_create_project(ls, params: AnnotateParams) -> int:
    for project in ls.projects.list():
        if project.title == params.project_title:
            return int(project.id)
    project = ls.projects.create(title=params.project_title, label_config=LABEL_CONFIG, model_version=params.model_version,
                                 description="editkit: review the pipeline's edit masks")
    images = (params.state_dir / "images").resolve()
    images.mkdir(parents=True, exist_ok=True)
    # Only for permission to serve files under this folder; never synced (tasks come from push).
    ls.import_storage.local.create(project=project.id, path=str(images), title="editkit images", use_blob_urls=False)
    return int(project.id)


def _mask_digest(mask_rle: dict[str, Any] | None) -> str:
    return hashlib.sha1(json.dumps(mask_rle, sort_keys=True).encode()).hexdigest()[:16]


def _task_map_path(params: AnnotateParams, project_id: int) -> Path:
    return params.state_dir / f"tasks-{project_id}.json"


def _local_url(path: Path, params: AnnotateParams) -> str:
    return "/data/local-files/?d=" + str(path.resolve().relative_to(Path(params.data_root).resolve()))


def _task(record: dict[str, Any], images: store.ImageStore, params: AnnotateParams) -> dict[str, Any]:
    folder = params.state_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    shard = images.shard(record["image_shard"])
    source = folder / f"{record['id']}_source.png"
    source.write_bytes(store.encode_png(shard.source(record["id"])))
    edited_pixels = shard.edited(record["id"])
    edited = source
    if edited_pixels is not None:
        edited = folder / f"{record['id']}_edited.png"
        edited.write_bytes(store.encode_png(edited_pixels))
    # Not "$source": Label Studio resolves that name to the task itself.
    data = {"sample_id": record["id"], "source_image": _local_url(source, params), "edited_image": _local_url(edited, params),
            "edited_caption": "Edited" if edited_pixels is not None else "No edited image (benchmark item): source",
            "instruction": record.get("instruction_refined") or record.get("instruction") or "",
            "edit_type": record.get("edit_type") or ""}
    task: dict[str, Any] = {"data": data}
    if record.get("mask") is not None:
        task["predictions"] = [{"model_version": params.model_version, "result": [brush_result(record["mask"])]}]
    return task


def push(ls, params: AnnotateParams, records: Iterable[dict[str, Any]], images: store.ImageStore) -> dict[str, int]:
    """Create tasks for new samples, update predictions of changed masks. Returns counts."""
    from tqdm.auto import tqdm

    project_id = get_or_create_project(ls, params)
    map_path = _task_map_path(params, project_id)
    task_map: dict[str, dict[str, Any]] = json.loads(map_path.read_text()) if map_path.exists() else {}
    counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped_rejected": 0}
    pending: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        response = ls.projects.import_tasks(id=project_id, request=[task for _, task in pending], return_task_ids=True)
        for (record, _), task_id in zip(pending, response.task_ids):
            task_map[record["id"]] = {"task": int(task_id), "mask": _mask_digest(record.get("mask"))}
        counts["created"] += len(pending)
        pending.clear()
        store.write_json(map_path, task_map)  # after each chunk: an interrupted push never duplicates

    for record in tqdm(records, desc="push", unit="rec"):
        if not schema.is_ok(record):
            counts["skipped_rejected"] += 1
            continue
        known = task_map.get(record["id"])
        if known is None:
            pending.append((record, _task(record, images, params)))
            if len(pending) >= params.chunk_size:
                flush()
        elif known["mask"] == _mask_digest(record.get("mask")):
            counts["unchanged"] += 1
        else:
            _replace_prediction(ls, params, known["task"], record.get("mask"))
            known["mask"] = _mask_digest(record.get("mask"))
            counts["updated"] += 1
    flush()
    store.write_json(map_path, task_map)
    return counts


def _replace_prediction(ls, params: AnnotateParams, task_id: int, mask_rle: dict[str, Any] | None) -> None:
    for prediction in ls.predictions.list(task=task_id):
        if prediction.model_version == params.model_version:
            ls.predictions.delete(id=prediction.id)
    if mask_rle is not None:
        ls.predictions.create(task=task_id, result=[brush_result(mask_rle)], model_version=params.model_version)


def pull(ls, params: AnnotateParams, export_path: Path) -> list[dict[str, Any]]:
    """Export the project (export API), keep the raw JSON at ``export_path``, return the reviews (compact form)."""
    project_id = get_or_create_project(ls, params)
    exported = ls.projects.exports.as_json(project_id)
    store.write_json(export_path, exported)
    return [r for r in (review_from_task(task) for task in exported) if r is not None]


def review_from_task(task: dict[str, Any]) -> dict[str, Any] | None:
    """The latest submitted annotation of an exported task -> ``{"sample_id", "choice", "comment", "mask", ...}``."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    latest = max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))
    choice, comment, mask = None, "", None
    for result in latest.get("result") or []:
        value = result.get("value") or {}
        if result.get("from_name") == CHOICES:
            choice = (value.get("choices") or [None])[0]
        elif result.get("from_name") == COMMENT:
            comment = " ".join(value.get("text") or [])
        elif result.get("from_name") == BRUSH and value.get("format") == "rle":
            region = rle_to_mask(value["rle"], int(result["original_height"]), int(result["original_width"]))
            mask = region if mask is None else (mask | region)  # several strokes/regions: their union
    return {"sample_id": task["data"]["sample_id"], "task_id": task["id"], "annotation_id": latest.get("id"),
            "choice": choice, "comment": comment, "mask": None if mask is None else rle.encode(mask),
            "updated_at": latest.get("updated_at")}
