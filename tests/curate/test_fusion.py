"""Fusion rules on constructed masks (exact expected outputs for every edit type), and the phrase heuristic."""
import numpy as np
import pytest

from editkit import taxonomy
from curate.masks import fusion
from curate.masks.phrases import detector_prompt, phrases_from_instruction, record_phrases
from tests.support.numerics import assert_close

SHAPE = (8, 10)


def box(y0, y1, x0, x1):
    mask = np.zeros(SHAPE, dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


SOURCE_OBJ = box(1, 4, 1, 4)  # 9 px: the object before the edit
EDITED_OBJ = box(2, 6, 2, 6)  # 16 px: the object after the edit
UNION = SOURCE_OBJ | EDITED_OBJ  # 9 + 16 - 4 = 21 px
EXPECTED_REGION = {
    "edited": EDITED_OBJ,
    "source": SOURCE_OBJ,
    "union": UNION,
    "complement": ~UNION,
    "whole": np.ones(SHAPE, dtype=bool),
}


@pytest.mark.parametrize("edit_type", sorted(taxonomy.EDIT_TYPES))
def test_every_edit_type_gets_its_rule_region(edit_type):
    rule = taxonomy.get(edit_type).mask_rule
    wanted = fusion.images_to_ground(rule, has_edited=True)
    grounded = {name: {"source": SOURCE_OBJ, "edited": EDITED_OBJ}[name] for name in wanted}
    # The diff equals the expected region: grounding agrees perfectly, so the fused mask is exactly that region.
    expected = EXPECTED_REGION[rule]
    out = fusion.fuse(rule, grounded, expected.copy(), SHAPE, min_iou=0.5)
    np.testing.assert_array_equal(out.mask, expected)
    if rule == "whole":
        assert out.mask_source == "whole" and out.flags == [] and out.scores == {}
    else:
        assert out.mask_source == "fused" and out.flags == []
        assert_close(out.scores[fusion.IOU_SCORE], 1.0, accumulations=1, why="IoU: one division of pixel counts")


def test_images_to_ground_per_rule_and_benchmark_items():
    assert fusion.images_to_ground("edited", True) == ("edited",)
    assert fusion.images_to_ground("source", True) == ("source",)
    assert fusion.images_to_ground("union", True) == ("source", "edited")
    assert fusion.images_to_ground("complement", True) == ("source", "edited")
    assert fusion.images_to_ground("whole", True) == ()
    # benchmark items have no edited image: only the source can be grounded
    assert fusion.images_to_ground("union", False) == ("source",)
    assert fusion.images_to_ground("edited", False) == ()
    with pytest.raises(ValueError, match="unknown mask rule"):
        fusion.images_to_ground("sideways", True)


def test_fused_is_grounded_union_diff_when_they_agree():
    diff = box(1, 4, 1, 5)  # the object plus a one-column shadow
    out = fusion.fuse("source", {"source": SOURCE_OBJ}, diff, SHAPE, min_iou=0.5)
    np.testing.assert_array_equal(out.mask, SOURCE_OBJ | diff)
    assert out.mask_source == "fused"
    assert_close(out.scores[fusion.IOU_SCORE], 9 / 12, accumulations=1, why="IoU: one division of pixel counts")


def test_disagreement_keeps_diff_and_flags_with_iou():
    diff = box(5, 8, 6, 10)  # elsewhere entirely
    diff[3, 3] = True  # one pixel of overlap with the grounded object
    out = fusion.fuse("union", {"source": SOURCE_OBJ, "edited": EDITED_OBJ}, diff, SHAPE, min_iou=0.2)
    np.testing.assert_array_equal(out.mask, diff)
    assert out.mask_source == "diff" and out.flags == ["grounding_disagrees"]
    expected_iou = 1 / (21 + 13 - 1)
    assert_close(out.scores[fusion.IOU_SCORE], expected_iou, accumulations=1,
                 why="IoU: one division of pixel counts")
    # exactly at the threshold it counts as agreement
    at_threshold = fusion.fuse("union", {"source": SOURCE_OBJ, "edited": EDITED_OBJ}, diff, SHAPE, expected_iou)
    assert at_threshold.mask_source == "fused"


@pytest.mark.parametrize("rule", ["edited", "source", "union", "complement"])
def test_empty_grounding_keeps_diff_and_flags(rule):
    diff = box(0, 2, 0, 2)
    empty = {name: np.zeros(SHAPE, bool) for name in fusion.images_to_ground(rule, True)}
    out = fusion.fuse(rule, empty, diff, SHAPE, min_iou=0.1)
    np.testing.assert_array_equal(out.mask, diff)
    assert out.mask_source == "diff" and out.flags == ["grounding_empty"] and out.scores == {}


def test_benchmark_items_use_grounding_alone():
    out = fusion.fuse("union", {"source": SOURCE_OBJ}, None, SHAPE, min_iou=0.9)
    np.testing.assert_array_equal(out.mask, SOURCE_OBJ)
    assert out.mask_source == "grounded" and out.flags == [] and out.scores == {}
    background = fusion.fuse("complement", {"source": SOURCE_OBJ}, None, SHAPE, min_iou=0.9)
    np.testing.assert_array_equal(background.mask, ~SOURCE_OBJ)
    nothing = fusion.fuse("source", {"source": np.zeros(SHAPE, bool)}, None, SHAPE, min_iou=0.9)
    assert nothing.mask is None and nothing.mask_source == "none" and nothing.flags == ["grounding_empty"]


def test_fusion_matches_set_formula_on_random_masks():
    """Independent reference: the decision table written as plain set algebra, on random masks."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        src, edt, diff = (rng.random(SHAPE) > 0.6 for _ in range(3))
        threshold = rng.random()
        out = fusion.fuse("union", {"source": src, "edited": edt}, diff, SHAPE, threshold)
        region = src | edt
        iou = (region & diff).sum() / max((region | diff).sum(), 1)
        if not region.any():
            np.testing.assert_array_equal(out.mask, diff)
        elif iou < threshold:
            assert out.mask_source == "diff"
            np.testing.assert_array_equal(out.mask, diff)
        else:
            assert out.mask_source == "fused"
            np.testing.assert_array_equal(out.mask, region | diff)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="grounded mask has shape"):
        fusion.fuse("source", {"source": np.zeros((3, 3), bool)}, None, SHAPE, 0.1)
    with pytest.raises(ValueError, match="diff mask has shape"):
        fusion.fuse("source", {"source": SOURCE_OBJ}, np.zeros((3, 3), bool), SHAPE, 0.1)


@pytest.mark.parametrize("instruction, expected", [
    ("Replace the cat with a small dog.", ["cat", "small dog"]),
    ("Add a red hat to the man", ["red hat"]),
    ("Remove the car from the street", ["car"]),
    ("Change the color of the car to blue", ["car"]),
    ("make the shirt green", ["shirt"]),
    ("Turn the apple into an orange", ["apple", "orange"]),
    ("Put sunglasses on the woman", ["sunglasses"]),
    ("get rid of the trash can", ["trash can"]),
    ("The sky should be purple", ["sky"]),
    ("make it look like a painting", []),
    ("", []),
])
def test_phrases_from_instruction(instruction, expected):
    assert phrases_from_instruction(instruction) == expected


def test_record_phrases_prefer_target_phrases_and_prompt_format():
    assert record_phrases({"target_phrases": ["Red Car", " "], "instruction": "remove the dog"}) == ["Red Car"]
    assert record_phrases({"target_phrases": [], "instruction": "remove the dog"}) == ["dog"]
    assert record_phrases({"instruction_refined": "remove the cat", "instruction": "remove the dog"}) == ["cat"]
    assert detector_prompt(["Red Car", "a dog.", ""]) == "red car. a dog."
