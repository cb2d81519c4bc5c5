"""The review project: push records (tasks + mask predictions) idempotently against the server, pull reviews.

Push exports each record's images as PNG under ``<data_root>/labelstudio/images/`` (served by a LocalFiles storage,
never synced: tasks come only from push) and imports tasks in chunks with the pipeline's mask as a prediction.
Idempotency is checked against the server itself, never a local file: before creating anything, push lists the
project's tasks (each task's data holds ``sample_id`` and ``mask_digest``). A known sample with the same mask is left
alone; a known sample whose mask changed upstream gets its prediction replaced (and its digest updated); only
unknown samples become tasks. So a re-push after the local state is lost creates nothing. The sample-id -> task
map written to ``tasks-<project id>.json`` is a convenience copy for people, never read back.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any, Iterable

from annotate import overlay
from annotate.labeling import (BRUSH, BRUSH_LABEL, CHOICES, COMMENT, IMAGE, LABEL_CONFIG, SMART_POINT,  # noqa: F401
                               brush_result, label_config, overlay_of)
from annotate.rle import rle_to_mask
from annotate.settings import AnnotateParams
from editkit import rle, schema, store
from editkit.errors import ConfigError, UserError

_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


def find_project(ls, title: str) -> int | None:
    for project in ls.projects.list():
        if project.title == title:
            return int(project.id)
    return None


def get_or_create_project(ls, params: AnnotateParams, title: str | None = None, overlay_colour: str | None = None) -> int:
    """The project called ``title`` (default ``params.project_title``); an older config gains the new choices."""
    title = title or params.project_title
    project_id = find_project(ls, title)
    if project_id is not None:
        config = ls.projects.get(id=project_id).label_config or ""
        colour = params.brush_colour or overlay_of(config)  # a colour set in annotate.brush_colour wins
        fresh = label_config(colour, SMART_POINT in config)
        if fresh != config:  # older configs (no "empty" choice, an opaque brush) or another brush colour
            ls.projects.update(id=project_id, label_config=fresh)
        return project_id
    project = ls.projects.create(title=title, label_config=label_config(params.brush_colour or overlay_colour
                                                                        or overlay.PALETTE[0]),
                                 model_version=params.model_version,
                                 description="editkit: review the pipeline's edit masks")
    images = (params.state_dir / "images").resolve()
    images.mkdir(parents=True, exist_ok=True)
    # Only for permission to serve files under this folder; never synced (tasks come from push).
    ls.import_storage.local.create(project=project.id, path=str(images), title="editkit images", use_blob_urls=False)
    return int(project.id)


def mask_digest(mask_rle: dict[str, Any] | None) -> str:
    return hashlib.sha1(json.dumps(mask_rle, sort_keys=True).encode()).hexdigest()[:16]


def server_tasks(ls, project_id: int) -> dict[str, list[dict[str, Any]]]:
    """sample_id -> the project's tasks for it on the server (``{"task", "mask"}``), oldest first."""
    known: dict[str, list[dict[str, Any]]] = {}
    for task in ls.tasks.list(project=project_id):
        data = task.data or {}
        if isinstance(data.get("sample_id"), str):
            known.setdefault(data["sample_id"], []).append({"task": int(task.id), "mask": data.get("mask_digest"),
                                                            "data": data})
    for tasks in known.values():
        tasks.sort(key=lambda t: t["task"])
    return known


def _file_stem(record_id: str) -> str:
    """Record ids are untrusted: ones that are not plain names become a hash (never a path)."""
    return record_id if _SAFE_ID.match(record_id) and record_id not in (".", "..") else mask_digest({"id": record_id})


def _local_url(path: Path, params: AnnotateParams) -> str:
    return "/data/local-files/?d=" + str(path.resolve().relative_to(Path(params.data_root).resolve()))


def _write_images(record: dict[str, Any], images: store.ImageStore, params: AnnotateParams) -> dict[str, Any]:
    """Write the record's source (and edited) PNG where the server serves them; their URLs and content hashes."""
    folder = params.state_dir / "images"
    folder.mkdir(parents=True, exist_ok=True)
    shard = images.shard(record["image_shard"])
    stem = _file_stem(record["id"])
    source = folder / f"{stem}_source.png"
    source_png = store.encode_png(shard.source(record["id"]))
    source.write_bytes(source_png)
    edited_pixels = shard.edited(record["id"])
    edited, edited_png = source, source_png
    if edited_pixels is not None:
        edited = folder / f"{stem}_edited.png"
        edited_png = store.encode_png(edited_pixels)
        edited.write_bytes(edited_png)
    return {"source_image": _local_url(source, params), "edited_image": _local_url(edited, params),
            "edited_caption": "Edited" if edited_pixels is not None else "No edited image (benchmark item): source",
            "image_sha1": {"source_image": _sha1(source_png), "edited_image": _sha1(edited_png)}}


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _served_path(url: str, params: AnnotateParams) -> Path | None:
    """The file a task's local-files URL points at, or None when it is not one of ours (outside the data folder)."""
    prefix = "/data/local-files/?d="
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    root = Path(params.data_root).resolve()
    path = (root / url[len(prefix):]).resolve()
    return path if path.is_relative_to(root) else None


def images_intact(data: dict[str, Any], params: AnnotateParams) -> bool:
    """Whether the files a task shows exist and (where push recorded it) still have the content hash it served."""
    hashes = data.get("image_sha1") or {}
    for key in ("source_image", "edited_image"):
        path = _served_path(data.get(key), params)
        if path is None or not path.is_file():
            return False
        if key in hashes and _sha1(path.read_bytes()) != hashes[key]:
            return False
    return True


def _task(record: dict[str, Any], images: store.ImageStore, params: AnnotateParams) -> dict[str, Any]:
    # Not "$source": Label Studio resolves that name to the task itself.
    data = {"sample_id": record["id"], **_write_images(record, images, params),
            "instruction": record.get("instruction_refined") or record.get("instruction") or "",
            "edit_type": record.get("edit_type") or "", "mask_digest": mask_digest(record.get("mask"))}
    task: dict[str, Any] = {"data": data}
    if record.get("mask") is not None:
        task["predictions"] = [{"model_version": params.model_version, "result": [brush_result(record["mask"])]}]
    return task


def _first_sources(records: list[dict[str, Any]], images: store.ImageStore) -> list:
    out = []
    for record in records:
        try:
            out.append(images.shard(record["image_shard"]).source(record["id"]))
        except (KeyError, FileNotFoundError):
            continue
    return out


def push(ls, params: AnnotateParams, records: Iterable[dict[str, Any]], images: store.ImageStore,
         title: str | None = None) -> dict[str, int]:
    """Create tasks for samples the server does not have, update predictions of changed masks. Returns counts."""
    from tqdm.auto import tqdm

    records = iter(records)
    head = [r for r in itertools.islice(records, 16)]
    title = title or params.project_title
    if params.brush_colour:
        try:
            label_config(params.brush_colour)
        except ValueError as error:
            raise ConfigError(f"annotate.brush_colour: {error}") from None
    colour = None if params.brush_colour or find_project(ls, title) is not None else overlay.choose(
        _first_sources(head, images))
    project_id = get_or_create_project(ls, params, title, colour)
    known = server_tasks(ls, project_id)
    counts = {"created": 0, "updated": 0, "unchanged": 0, "skipped_rejected": 0, "repaired_images": 0}
    duplicates = sum(len(t) - 1 for t in known.values())  # left by older versions; pull keeps the latest review
    if duplicates:
        counts["duplicates_on_server"] = duplicates
    pending: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def flush() -> None:
        if not pending:
            return
        response = ls.projects.import_tasks(id=project_id, request=[task for _, task in pending], return_task_ids=True)
        for (record, task), task_id in zip(pending, response.task_ids):
            known[record["id"]] = [{"task": int(task_id), "mask": task["data"]["mask_digest"], "data": task["data"]}]
        counts["created"] += len(pending)
        pending.clear()

    for record in tqdm(itertools.chain(head, records), desc="push", unit="rec"):
        if not schema.is_ok(record):
            counts["skipped_rejected"] += 1
            continue
        tasks = known.get(record["id"])
        digest = mask_digest(record.get("mask"))
        if tasks is None:
            pending.append((record, _task(record, images, params)))
            known[record["id"]] = []  # the same id twice in the input: one task
            if len(pending) >= params.chunk_size:
                flush()
        else:
            repaired = any([_repair_images(ls, params, task, record, images) for task in tasks])
            counts["repaired_images"] += repaired
            if not tasks or all(t["mask"] == digest for t in tasks):
                counts["unchanged"] += 1
            else:
                for task in tasks:
                    _replace_prediction(ls, params, task, record.get("mask"), digest)
                counts["updated"] += 1
    flush()
    store.write_json(params.state_dir / f"tasks-{project_id}.json",
                     {sid: {"task": t[0]["task"], "mask": t[0]["mask"]} for sid, t in sorted(known.items()) if t})
    return counts


class ImagesMissing(UserError, FileNotFoundError):
    """A pushed task's image is gone or changed and the image shards cannot rebuild it."""


def _repair_images(ls, params: AnnotateParams, task: dict[str, Any], record: dict[str, Any],
                   images: store.ImageStore) -> bool:
    """Re-push verifies what each task serves: a missing or changed image file is rewritten from the image shards
    (True), or push refuses in one line when the shards cannot rebuild it."""
    if images_intact(task["data"], params):
        return False
    try:
        fresh = _write_images(record, images, params)
    except (KeyError, FileNotFoundError, OSError) as error:
        raise ImagesMissing(f"task {task['task']} ({record['id']}) shows {task['data'].get('source_image')}, which is "
                            f"missing or changed, and the image shards cannot rebuild it ({error}); restore the images "
                            "or pass --images") from None
    task["data"] = {**task["data"], **fresh}
    ls.tasks.update(id=task["task"], data=task["data"])
    return True


def _replace_prediction(ls, params: AnnotateParams, task: dict[str, Any], mask_rle: dict[str, Any] | None,
                        digest: str) -> None:
    for prediction in ls.predictions.list(task=task["task"]):
        if prediction.model_version == params.model_version:
            ls.predictions.delete(id=prediction.id)
    if mask_rle is not None:
        ls.predictions.create(task=task["task"], result=[brush_result(mask_rle)], model_version=params.model_version)
    task["data"] = {**task["data"], "mask_digest": digest}
    ls.tasks.update(id=task["task"], data=task["data"])
    task["mask"] = digest


def export(ls, project_id: int, export_path: Path) -> list[dict[str, Any]]:
    """Every task of the project with annotations and drafts (export API); the raw JSON is kept at export_path."""
    exported = ls.projects.exports.as_json(project_id)
    if not isinstance(exported, list):
        raise RuntimeError(f"Label Studio's export of project {project_id} is not a task list")
    store.write_json(export_path, exported)
    return exported


def pull(ls, params: AnnotateParams, export_path: Path, title: str | None = None,
         previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Export the project and return its reviews: every reviewer's submitted annotations, none replacing another
    (``previous``: the reviews pulled before, whose versions overwritten by another reviewer are kept)."""
    project_id = get_or_create_project(ls, params, title)
    return with_earlier(previous or [], reviews_from_export(export(ls, project_id, export_path), user_names(ls)))


def user_names(ls) -> dict[int, str]:
    """Label Studio user id -> login (email), to name the reviewers in the reviews file."""
    return {int(user.id): str(user.email or user.username or user.id) for user in ls.users.list()}


def reviewer_name(completed_by: Any, users: dict[int, str] | None = None) -> str:
    """An annotation's author: the export gives a user id (or, in some forms, the user)."""
    if isinstance(completed_by, dict):
        return str(completed_by.get("email") or completed_by.get("username") or completed_by.get("id"))
    if completed_by is None:
        return "unknown"
    try:
        return (users or {}).get(int(completed_by)) or f"user {int(completed_by)}"
    except (TypeError, ValueError):
        return str(completed_by)


def saved_by(annotation: dict[str, Any]) -> Any:
    """Who made this version of an annotation. Label Studio lets any user update anyone's annotation in place: after
    an update (saved later than created) it is the updater's work; at creation ``updated_by`` is whoever sent the
    request (an admin may create annotations on a reviewer's behalf), so the author counts."""
    from datetime import datetime

    updater, author = annotation.get("updated_by"), annotation.get("completed_by")
    if updater is None or updater == author:
        return author
    try:
        created = datetime.fromisoformat(str(annotation.get("created_at")).replace("Z", "+00:00"))
        updated = datetime.fromisoformat(str(annotation.get("updated_at")).replace("Z", "+00:00"))
    except ValueError:
        return author
    return updater if (updated - created).total_seconds() > 1.0 else author


def reviews_from_export(exported: list[dict[str, Any]], users: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """Every submitted (not skipped) annotation as a review with its ``reviewer`` and times, ordered by sample,
    then time. Nothing is dropped: the merge's policy decides between reviewers (:mod:`annotate.reviewers`)."""
    reviews = []
    for task in exported:
        for annotation in task.get("annotations") or []:
            if annotation.get("was_cancelled"):
                continue
            review = _review(task, annotation)
            if review is None:
                continue
            author = reviewer_name(annotation.get("completed_by"), users)
            editor = reviewer_name(saved_by(annotation), users)
            review = {**review, "reviewer": editor, "created_at": annotation.get("created_at")}
            if editor != author:
                review["edited_over"] = author  # another reviewer's annotation, updated in place
            reviews.append(review)
    return _ordered(reviews)


def _ordered(reviews: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(reviews, key=lambda r: (r["sample_id"], r.get("updated_at") or "", r.get("annotation_id") or 0,
                                          str(r.get("reviewer"))))


def with_earlier(previous: list[dict[str, Any]], current: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pulled reviews plus earlier pulled versions the server no longer has because ANOTHER reviewer updated that
    annotation in place: each reviewer's last version of each annotation is kept, none replaces another's."""
    present = {(r.get("annotation_id"), r.get("reviewer")) for r in current}
    annotations = {r.get("annotation_id") for r in current}
    kept = [r for r in previous if r.get("annotation_id") in annotations and (r.get("annotation_id"),
                                                                                r.get("reviewer")) not in present]
    return _ordered(current + kept)


def drafts_from_export(exported: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unsubmitted work (Label Studio's autosaved drafts), in the review form plus ``draft_id``. Never merged."""
    out = []
    for task in exported:
        for draft in task.get("drafts") or []:
            review = _review(task, draft, draft=True)
            if review is not None:
                out.append({**review, "annotation_id": draft.get("annotation"), "draft_id": draft.get("id"),
                            "draft": True, "reviewer": str(draft.get("created_username") or draft.get("user")
                                                           or "unknown")})
    return out


def review_from_task(task: dict[str, Any]) -> dict[str, Any] | None:
    """The latest submitted annotation of an exported task (by ``updated_at``, then id) -> compact review."""
    annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if not annotations:
        return None
    return _review(task, max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0)))


def _review(task: dict[str, Any], annotation: dict[str, Any], draft: bool = False) -> dict[str, Any] | None:
    sample_id = (task.get("data") or {}).get("sample_id")
    if not isinstance(sample_id, str):
        return None  # not one of ours
    choice, comment, mask, problem, strokes = None, "", None, None, 0
    for result in annotation.get("result") or []:
        value = result.get("value") or {}
        if result.get("from_name") == CHOICES:
            choice = (value.get("choices") or [None])[0]
        elif result.get("from_name") == COMMENT:
            comment = " ".join(str(t) for t in value.get("text") or [])
        elif draft and result.get("from_name") == BRUSH and value.get("touches") and not value.get("rle"):
            strokes += len(value["touches"])  # a draft's brush strokes, not yet rasterised: Submit does that
        elif result.get("from_name") == BRUSH and value.get("format") == "rle":
            try:
                region = rle_to_mask(value["rle"], int(result["original_height"]), int(result["original_width"]))
                if mask is not None and mask.shape != region.shape:
                    raise ValueError(f"brush regions of sizes {mask.shape} and {region.shape}")
            except (KeyError, TypeError, ValueError) as error:
                problem = f"unreadable brush region: {error}"
                continue
            mask = region if mask is None else (mask | region)  # several strokes/regions: their union
    review = {"sample_id": sample_id, "task_id": task.get("id"), "annotation_id": annotation.get("id"),
              "choice": choice, "comment": comment, "mask": None if mask is None else rle.encode(mask),
              "updated_at": annotation.get("updated_at")}
    if problem:
        review["invalid"] = problem  # merge flags the record review_invalid instead of guessing
    if strokes:
        review["draft_strokes"] = strokes
    return review


def unsaved_work(ls, export_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Project title -> its drafts (autosaved, unsubmitted work: ``sample_id``, ``reviewer``, ``updated_at``), for
    every project that has some."""
    found = {}
    for project in ls.projects.list():
        exported = export(ls, int(project.id), export_dir / f"before-stop-{int(project.id)}.json")
        drafts = [{"sample_id": (task.get("data") or {}).get("sample_id") or f"task {task.get('id')}",
                   "reviewer": str(draft.get("created_username") or draft.get("user") or "unknown"),
                   "updated_at": draft.get("updated_at")}
                  for task in exported for draft in task.get("drafts") or []]
        if drafts:
            found[project.title] = drafts
    return found
