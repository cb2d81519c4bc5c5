"""The column contract of the exported training dataset: written by ``curate``'s export, read by ``train``'s loader.

One place names every column, so the writer and the reader cannot drift apart. The export writes a Hugging Face
``datasets`` dataset (``save_to_disk``) with these columns; the trainer's defaults (``train.config.DataConfig``) point
at them.

Provenance columns let every row be traced back to the public dataset it came from: ``dataset`` + ``split`` +
``origin_key`` name the source row (``origin`` is the pipeline's own name of the source, e.g. ``preset:magicbrush``),
``instruction_variants`` holds every instruction the dataset ships, ``meta`` the source's own fields (JSON),
``licence`` the dataset's licence (``unknown`` when the source did not say).

``mask_source`` says which mask a row carries, in precedence order: ``reviewed`` (a person accepted or painted it),
``shipped`` (the dataset's own mask), ``fused`` (the shipped mask united with the pipeline's), ``derived`` (the
pipeline's: pixel difference, grounded, whole image) or ``none``. ``mask_method`` keeps the record's finer name.
"""
from __future__ import annotations

import json
from typing import Any

# images
SOURCE_IMAGE = "source_image"
EDITED_IMAGE = "edited_image"  # None for prompt sets (no edited image, e.g. CoCoEdit-40K)
# masks: COCO RLE {size: [h, w], counts}, 1 = pixels that should change
MASK = "mask"
MASK_IMAGE = "mask_image"  # optional PNG of MASK (255 = change)
SHIPPED_MASK = "gt_mask"  # the dataset's own mask, as shipped (None when it has none)
MASK_SOURCE = "mask_source"
MASK_METHOD = "mask_method"
# instruction
INSTRUCTION = "instruction"
INSTRUCTION_REFINED = "instruction_refined"
INSTRUCTION_COLUMNS = (INSTRUCTION_REFINED, INSTRUCTION)  # the trainer takes the first non-empty one
INSTRUCTION_VARIANTS = "instruction_variants"
EDIT_TYPE = "edit_type"
TARGET_PHRASES = "target_phrases"
# provenance
ID = "id"
ORIGIN = "origin"
DATASET = "dataset"
SPLIT = "split"
ORIGIN_KEY = "origin_key"
LICENCE = "licence"
FLAGS = "flags"
META = "meta"
REVIEW_STATUS = "review_status"
SCORE_PREFIX = "score_"  # score_<name> per score in the records' scores map

TEXT_COLUMNS = (ID, ORIGIN, DATASET, SPLIT, ORIGIN_KEY, INSTRUCTION, INSTRUCTION_REFINED, EDIT_TYPE, "scope",
                MASK_SOURCE, MASK_METHOD, LICENCE, REVIEW_STATUS, META)
LIST_COLUMNS = (TARGET_PHRASES, INSTRUCTION_VARIANTS, FLAGS)
RLE_COLUMNS = (MASK, SHIPPED_MASK)
IMAGE_COLUMNS = (SOURCE_IMAGE, EDITED_IMAGE)

MASK_PROVENANCE = ("reviewed", "shipped", "fused", "derived", "none")
UNKNOWN_LICENCE = "unknown"
SHIPPED_METHODS = ("gt",)  # record mask_source values that are the dataset's own mask
FUSED_METHODS = ("gt_fused",)  # the shipped mask united with the derived one (masks.source_policy: fuse)
REVIEWED_STATUSES = ("accept", "fixed", "empty")


def mask_provenance(mask_source: str | None, review_status: str | None = None) -> str:
    """The export's ``mask_source`` of a record: reviewed > shipped > fused > derived (or none without a mask)."""
    if mask_source in (None, "none"):
        return "none"
    if mask_source == "human" or review_status in REVIEWED_STATUSES:
        return "reviewed"
    if mask_source in SHIPPED_METHODS:
        return "shipped"
    if mask_source in FUSED_METHODS:
        return "fused"
    return "derived"


def parse_meta(text: str | None) -> dict[str, Any]:
    """A record's ``meta`` JSON as a dict ({} when empty or not an object)."""
    try:
        meta = json.loads(text or "{}")
    except (TypeError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def dataset_name(record: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """The public dataset a record came from: ``meta.dataset`` when the source says, else the origin's name
    (``preset:magicbrush`` -> ``magicbrush``, ``hf:osunlp/MagicBrush`` -> ``osunlp/MagicBrush``)."""
    named = (parse_meta(record.get("meta")) if meta is None else meta).get("dataset")
    if isinstance(named, str) and named:
        return named
    origin = record.get("origin") or UNKNOWN_LICENCE
    return origin.split(":", 1)[1] if ":" in origin else origin


def split_name(record: dict[str, Any], meta: dict[str, Any] | None = None) -> str | None:
    split = (parse_meta(record.get("meta")) if meta is None else meta).get("split")
    return str(split) if split not in (None, "") else None


def licence_of(record: dict[str, Any], meta: dict[str, Any] | None = None) -> str:
    """The record's licence as its source recorded it (a ``licence`` field or ``meta.licence``/``meta.license``);
    ``unknown`` when none did."""
    value = record.get("licence")
    if not value:
        meta = parse_meta(record.get("meta")) if meta is None else meta
        value = meta.get("licence") or meta.get("license")
    return str(value).strip() if value else UNKNOWN_LICENCE


NON_COMMERCIAL = "non-commercial"
NO_DERIVATIVES = "no-derivatives"


def licence_key(licence: str) -> str:
    """A licence name compared loosely: lower case, runs of spaces/underscores/dots as one hyphen
    (``CC BY-NC 4.0`` == ``cc-by-nc-4.0``)."""
    import re

    return re.sub(r"[\s_.\-]+", "-", licence.strip().lower()).strip("-")


def licence_restrictions(licence: str) -> list[str]:
    """What a licence forbids that a training set needs: ``non-commercial`` (CC ``NC``, "non-commercial",
    "research only") and ``no-derivatives`` (CC ``ND``). Empty for permissive and ``unknown`` licences."""
    key = licence_key(licence)
    tokens = set(key.split("-"))
    joined = key.replace("-", "")
    found = []
    if "nc" in tokens or "noncommercial" in joined or "researchonly" in joined:
        found.append(NON_COMMERCIAL)
    if "nd" in tokens or "noderiv" in joined:
        found.append(NO_DERIVATIVES)
    return found
