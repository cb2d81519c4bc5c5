"""The edit-type taxonomy shared by every stage, with the mappings from the public benchmarks.

Each type says its scope (local edits change a region; global edits change the whole image) and which image the
grounded mask is taken from (see the fusion table in docs/data-pipeline.md):

* ``edited``     ground the target in the edited image (the object exists only after the edit)
* ``source``     ground in the source image (the object exists only before)
* ``union``      ground in both and take the union (the object changes in place)
* ``complement`` ground the kept foreground and take its complement (background changes)
* ``whole``      the whole image is the edit region (style, tone, extraction)
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EditType:
    name: str
    scope: str  # "local" | "global"
    mask_rule: str  # "edited" | "source" | "union" | "complement" | "whole"
    pixel_aligned: bool = True  # False: output is not aligned with the source (masked PSNR is meaningless)
    description: str = ""


EDIT_TYPES: dict[str, EditType] = {
    t.name: t
    for t in [
        EditType("add", "local", "edited", description="add an object or element"),
        EditType("remove", "local", "source", description="remove an object"),
        EditType("replace", "local", "union", description="replace one object with another"),
        EditType("recolor", "local", "union", description="change an object's colour"),
        EditType("material", "local", "union", description="change an object's material or texture"),
        EditType("action", "local", "union", description="change a pose, motion or expression"),
        EditType("adjust", "local", "union", description="adjust an attribute (size, shape, count) in place"),
        EditType("portrait", "local", "union", description="retouch a person (face, body, make-up)"),
        EditType("text", "local", "union", description="add or change text or a sticker"),
        EditType("compose", "local", "union", description="several local edits at once"),
        EditType("background", "local", "complement", description="replace the background, keep the subject"),
        EditType("style", "global", "whole", description="restyle the whole image"),
        EditType("tone", "global", "whole", description="change global tone, lighting, season or weather"),
        EditType("extract", "global", "whole", pixel_aligned=False, description="extract a subject onto a plain canvas"),
    ]
}

# GEdit-Bench (Step1X-Edit) task_type -> our type. All 11 types are covered.
GEDIT_TO_EDIT_TYPE = {
    "background_change": "background",
    "color_alter": "recolor",
    "material_alter": "material",
    "motion_change": "action",
    "ps_human": "portrait",
    "style_change": "style",
    "subject-add": "add",
    "subject-remove": "remove",
    "subject-replace": "replace",
    "text_change": "text",
    "tone_transfer": "tone",
}

# ImgEdit-Bench (Benchmark/Basic) edit_type -> our type. All 9 categories are covered.
IMGEDIT_TO_EDIT_TYPE = {
    "add": "add",
    "remove": "remove",
    "replace": "replace",
    "adjust": "adjust",
    "action": "action",
    "background": "background",
    "style": "style",
    "extract": "extract",
    "compose": "compose",
}


def get(name: str) -> EditType:
    try:
        return EDIT_TYPES[name]
    except KeyError:
        raise KeyError(f"unknown edit type {name!r}; known: {sorted(EDIT_TYPES)}") from None
