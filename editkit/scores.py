"""Names of the scores written into ``record["scores"]`` (export flattens them to ``score_<name>`` columns)."""

MASK_AREA = "mask_area"  # fraction of the image inside the edit mask
MASK_COMPONENTS = "mask_components"  # 8-connected components of the edit mask
MASK_COMPACTNESS = "mask_compactness"  # isoperimetric quotient 4*pi*area/perimeter^2 of the mask (1 = disc)
BG_PSNR = "bg_psnr"  # PSNR of source vs edited on the NON-edited region (dB, capped)
BG_SSIM = "bg_ssim"  # SSIM of source vs edited averaged over the NON-edited region
CLIP_IMAGE_SIM = "clip_image_sim"  # cosine(CLIP(source), CLIP(edited))
CLIP_DIRECTION = "clip_direction"  # cosine(CLIP(edited) - CLIP(source), CLIP_text(instruction))
INSTRUCTION_CLARITY = "instruction_clarity"  # MLLM judge 0-10: the instruction says unambiguously what to change
MASK_ACCURACY = "mask_accuracy"  # MLLM judge 0-10: the drawn edit mask covers exactly the region that changes
TARGET_PROMINENCE = "target_prominence"  # MLLM judge 0-10: the edited target is clearly visible, not tiny/occluded

# Stored scores are rounded to this many significant digits. The last bits of a float score depend on the CPU
# (OpenCV and numpy pick SIMD kernels per CPU: AVX2 and AVX-512 sum in different orders, ~1e-13 relative apart
# in float64), so unrounded values would make the score shards, and dvc.lock, differ from machine to machine.
STORED_DIGITS = 6


def stored(value: float | None) -> float | None:
    """``value`` as stored: rounded to :data:`STORED_DIGITS` significant digits (correctly rounded decimal, so
    the same on every machine); None, NaN and infinities unchanged."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return value
    return float(f"{float(value):.{STORED_DIGITS}g}")


def finite_or_none(value) -> float | None:
    """``value`` as a float when it is a finite number, else None (JSON has no NaN or infinity)."""
    import math

    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
