"""Reads a built FiftyOne dataset back as JSON, to check it against the records it was built from.

Runs inside FiftyOne's own virtualenv, as ``<venv>/bin/python readback.py <dataset name>``: FiftyOne, numpy and the
standard library only. Prints one line, ``RESULT <json>``: the dataset's slices, mask targets and brain runs, and per
record (``record_id``) and slice its tags, scalar fields, masks (shape + base64 of the packed bits, read through
FiftyOne's ``Segmentation.get_mask``) and embedding; plus the three nearest neighbours FiftyOne's similarity index
returns for the first source image.
"""
import base64
import json
import sys


def _mask(label, np):
    mask = label.get_mask() > 0
    return {"shape": list(mask.shape), "bits": base64.b64encode(np.packbits(mask.ravel())).decode("ascii")}


def read(name):
    import numpy as np

    import fiftyone as fo

    dataset = fo.load_dataset(name)
    masks = [f for f, v in dataset.get_field_schema().items()
             if getattr(v, "document_type", None) is fo.Segmentation]
    flat = dataset.select_group_slices()
    groups = {}
    for sample in flat:
        entry = {"filepath": sample.filepath, "tags": list(sample.tags), "fields": {}, "masks": {}}
        for key, value in sample.to_dict().items():
            if isinstance(value, (str, int, float, bool, list)) and not key.startswith("_") and key != "tags":
                entry["fields"][key] = value
        for field in masks:
            if sample[field] is not None:
                entry["masks"][field] = _mask(sample[field], np)
        vector = sample["clip_embedding"] if dataset.has_field("clip_embedding") else None
        entry["embedding"] = None if vector is None else [float(x) for x in vector]
        groups.setdefault(sample.record_id, {})[sample.group.name] = entry
    nearest = None
    if "clip_sim" in dataset.list_brain_runs():
        query = dataset.select_group_slices("source").first()
        view = flat.sort_by_similarity(query.id, k=3, brain_key="clip_sim")
        nearest = {"query": query.record_id, "nearest": [[s.record_id, s.group.name] for s in view]}
    return {"name": dataset.name, "slices": dataset.group_slices, "default_slice": dataset.default_group_slice,
            "mask_targets": {k: {str(v): t for v, t in m.items()} for k, m in dataset.mask_targets.items()},
            "brain_runs": dataset.list_brain_runs(), "info": dataset.info, "groups": groups, "similar": nearest}


if __name__ == "__main__":
    print("RESULT " + json.dumps(read(sys.argv[1])), flush=True)
