"""Builds a FiftyOne dataset from an interchange folder (:mod:`curate.fiftyone_export.interchange`).

Runs inside FiftyOne's own virtualenv, as ``<venv>/bin/python builder.py <interchange folder>``: it imports FiftyOne,
numpy and the standard library only, never our packages. Reports on stdout, one line each: ``PROGRESS <done>
<total>`` while adding groups, then ``RESULT <json>``.

The dataset is grouped: one group per record, a ``source`` and an ``edited`` slice (``source`` shown first). Each
slice's sample carries the record's fields (provenance, instruction, status, reject stage and reason), its scores as
``score_<name>`` float fields, its masks as segmentation fields (``mask``, ``gt_mask``, ...; 255 = edit), its flags
and reject reason as tags, and its own image's CLIP embedding in ``clip_embedding``. A similarity index over the
embeddings of both slices (brain key ``clip_sim``, scikit-learn backend: nothing downloaded) serves FiftyOne's "sort
by similarity" and ``sort_by_similarity``.
"""
import json
import os
import sys


def _load(folder):
    with open(os.path.join(folder, "manifest.json")) as handle:
        manifest = json.load(handle)
    if manifest.get("format") != "editkit-fiftyone/1":
        raise SystemExit(f"{folder}: not an editkit FiftyOne interchange (format {manifest.get('format')!r})")
    return manifest


def _samples(fo, np, folder, manifest, line, vectors, reserved):
    group = fo.Group()
    masks = {field: fo.Segmentation(mask_path=os.path.join(folder, rel)) for field, rel in line["masks"].items()}
    clash = reserved & set(line["fields"])
    if clash:
        raise SystemExit(f"record {line['record_id']}: field names FiftyOne reserves: {sorted(clash)}")
    out = []
    for slice_name, entry in line["slices"].items():
        sample = fo.Sample(filepath=os.path.join(folder, entry["filepath"]), group=group.element(slice_name))
        sample.tags = list(line["tags"])
        for key, value in line["fields"].items():
            if value is not None:
                sample[key] = value
        for field, label in masks.items():
            sample[field] = label.copy()
        if vectors is not None and "embedding" in entry:
            sample[manifest["embeddings"]["field"]] = np.asarray(vectors[entry["embedding"]], dtype=np.float32)
        out.append(sample)
    return out


def build(folder):
    import numpy as np

    import fiftyone as fo

    manifest = _load(folder)
    emb = manifest.get("embeddings")
    vectors = np.load(os.path.join(folder, emb["file"]), mmap_mode="r", allow_pickle=False) if emb else None
    dataset = fo.Dataset(manifest["name"], overwrite=True, persistent=True)
    dataset.add_group_field("group", default=manifest["default_slice"])
    # typed up front: a field that is None in the first batch would otherwise be declared on first sight
    for name in manifest["score_fields"]:
        dataset.add_sample_field(name, fo.FloatField)
    reserved = set(dir(fo.Sample)) | {"id", "filepath", "tags", "metadata", "media_type", "group", "created_at",
                                      "last_modified_at"}
    total, done, batch = manifest["records"], 0, []
    with open(os.path.join(folder, manifest["samples"])) as lines:
        for text in lines:
            batch.extend(_samples(fo, np, folder, manifest, json.loads(text), vectors, reserved))
            done += 1
            if done % manifest["batch_size"] == 0:
                dataset.add_samples(batch, progress=False)
                batch = []
                print(f"PROGRESS {done} {total}", flush=True)
    if batch:
        dataset.add_samples(batch, progress=False)
    print(f"PROGRESS {done} {total}", flush=True)
    target = {int(value): label for value, label in manifest["mask_targets"].items()}
    dataset.mask_targets = {field: target for field in manifest["mask_fields"]}
    dataset.info = {"editkit": {k: manifest[k] for k in ("stage", "origin", "records", "format")},
                    "embedding_model": emb and emb["model"]}
    dataset.description = f"editkit {manifest['stage']}: {manifest['origin']}"
    dataset.save()
    brain_keys = []
    if emb and done:
        import fiftyone.brain as fob

        fob.compute_similarity(dataset.select_group_slices(), embeddings=emb["field"], brain_key=emb["brain_key"],
                               backend="sklearn", progress=False)
        brain_keys.append(emb["brain_key"])
    result = {"name": dataset.name, "groups": done, "samples": len(dataset.select_group_slices()),
              "slices": dataset.group_slices, "brain_keys": brain_keys}
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    build(sys.argv[1])
