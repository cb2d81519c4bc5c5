"""The mask-review labeling config and the brush regions it reads and writes.

Choices: ``accept`` (the mask is right), ``fixed`` (I corrected it), ``empty`` (nothing should change: the edit region
is empty), ``reject`` (unusable sample). What they mean once merged is in :mod:`annotate.merge`; a painted mask that
differs from the prediction is a correction whichever was ticked.
"""
from __future__ import annotations

from typing import Any

from annotate.rle import mask_to_rle
from editkit import rle

BRUSH, CHOICES, COMMENT, IMAGE = "mask", "review", "comment", "source"
BRUSH_LABEL = "edit region"
DEFAULT_OVERLAY = "#ff0066"
# Label Studio draws brush regions at a fixed opacity of 0.6 (neither the tag nor the colour's alpha changes it): the
# source shows through; the colour (annotate.brush_colour, else the palette's most contrasting) keeps it readable.
CHOICE_VALUES = ("accept", "fixed", "empty", "reject")

_TEMPLATE = """<View>
  <Header value="$instruction"/>
  <View style="display: flex; gap: 12px">
    <View style="flex: 1">
      <Header value="Source: paint the pixels that should change (select the region first to erase)" size="5"/>
      <Image name="{image}" value="$source_image" zoom="true" zoomControl="true"/>
    </View>
    <View style="flex: 1">
      <Header value="$edited_caption" size="5"/>
      <Image name="edited" value="$edited_image"/>
    </View>
  </View>
  <BrushLabels name="{brush}" toName="{image}">
    <Label value="{label}" background="{colour}"/>
  </BrushLabels>
{smart}  <Choices name="{choices}" toName="{image}" choice="single" required="true" showInline="true">
    <Choice value="accept" hint="the mask is right"/>
    <Choice value="fixed" hint="I corrected the mask (any painted change counts as a correction)"/>
    <Choice value="empty" hint="the edit region is empty: nothing should change"/>
    <Choice value="reject" hint="unusable sample (edit failed, wrong instruction, ...)"/>
  </Choices>
  <TextArea name="{comment}" toName="{image}" placeholder="comment (optional)" maxSubmissions="1" editable="true"/>
</View>
"""


# SAM2-assisted review (annotate/ml_backend): a click or a box on the source asks the ML backend for a brush mask.
SMART_POINT, SMART_BOX = "sam_point", "sam_box"
# Each tool has its own name (the brush label, the SAM2 click, the SAM2 box): three chips, three names.
SMART_POINT_LABEL, SMART_BOX_LABEL = "SAM2: click a point", "SAM2: draw a box"
_SMART = """  <KeyPointLabels name="{point}" toName="{image}" smart="true" smartOnly="true">
    <Label value="{point_label}" smart="true" background="{colour}" showInline="true"/>
  </KeyPointLabels>
  <RectangleLabels name="{box}" toName="{image}" smart="true" smartOnly="true">
    <Label value="{box_label}" smart="true" background="{colour}" showInline="true"/>
  </RectangleLabels>
"""


def label_config(overlay: str = DEFAULT_OVERLAY, smart: bool = False) -> str:
    """The labeling config with the brush drawn in ``overlay`` (a ``#rrggbb`` colour); ``smart`` adds SAM2 tools."""
    if len(overlay) != 7 or overlay[0] != "#" or any(c not in "0123456789abcdefABCDEF" for c in overlay[1:]):
        raise ValueError(f"overlay colour must look like #rrggbb, got {overlay!r}")
    tools = _SMART.format(point=SMART_POINT, box=SMART_BOX, image=IMAGE, point_label=SMART_POINT_LABEL,
                          box_label=SMART_BOX_LABEL, colour=overlay)
    return _TEMPLATE.format(image=IMAGE, brush=BRUSH, label=BRUSH_LABEL, colour=overlay, choices=CHOICES,
                            comment=COMMENT, smart=tools if smart else "")


def overlay_of(config: str) -> str:
    """The brush colour of an existing config (the default when it has none)."""
    import re

    found = re.search(r'background="(#[0-9a-fA-F]{6})"', config or "")
    return found.group(1) if found else DEFAULT_OVERLAY


LABEL_CONFIG = label_config()


def brush_result(mask_rle: dict[str, Any]) -> dict[str, Any]:
    """A COCO-RLE mask as one Label Studio brush region on the source image."""
    height, width = (int(v) for v in mask_rle["size"])
    return {"from_name": BRUSH, "to_name": IMAGE, "type": "brushlabels", "original_width": width,
            "original_height": height, "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(rle.decode(mask_rle)), "brushlabels": [BRUSH_LABEL]}}
