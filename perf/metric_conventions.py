"""How far apart our masked PSNR/SSIM ("standard") and CoCoEdit's ("cocoedit") are on the same images.

Three images bundled with scikit-image (no download), each degraded four ways, measured on the non-edited region
of a central-box edit mask (the box itself recoloured). Prints a table and writes
``perf/results/metric_conventions.json``.
    python perf/metric_conventions.py [--out FILE] [--smoke]
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402


def degradations(image: np.ndarray, rng) -> dict[str, np.ndarray]:
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=75)
    noisy = np.clip(image.astype(np.float64) + rng.normal(0, 0.02 * 255, image.shape), 0, 255)
    shifted = np.clip(image.astype(np.int16) + 6, 0, 255)
    return {"noise σ=0.02": noisy.round().astype(np.uint8),
            "JPEG q75": np.asarray(Image.open(buffer).convert("RGB")),
            "blur σ=1": np.asarray(pil.filter(ImageFilter.GaussianBlur(1))),
            "brightness +6/255": shifted.astype(np.uint8)}


def main() -> None:
    from skimage import data

    from editkit.metrics import metric_pair

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    harness.add_options(parser, "metric_conventions")
    args = parser.parse_args()
    provenance = harness.Provenance(args.smoke)
    side = 64 if args.smoke else 512
    rng = np.random.default_rng(0)
    rows = []
    for name in ("astronaut",) if args.smoke else ("astronaut", "chelsea", "coffee"):
        source = np.asarray(Image.fromarray(getattr(data, name)()).resize((side, side), Image.LANCZOS))
        edit = np.zeros(source.shape[:2], bool)
        edit[side * 5 // 16:side * 11 // 16, side * 5 // 16:side * 11 // 16] = True  # 160:352 at 512
        for kind, degraded in degradations(source, rng).items():
            output = degraded.copy()
            output[edit] = 255 - output[edit]  # the edit itself: not measured
            row = {"image": name, "degradation": kind}
            for convention in ("standard", "cocoedit"):
                psnr, ssim = metric_pair(convention)
                row[f"psnr_{convention}"] = float(psnr(source, output, ~edit))
                row[f"ssim_{convention}"] = float(ssim(source, output, ~edit))
            rows.append(row)
    header = f"{'image':<10} {'degradation':<18} {'PSNR ours':>9} {'PSNR coco':>9} {'Δ dB':>6} {'SSIM ours':>9} " \
             f"{'SSIM coco':>9}"
    print(header)
    for r in rows:
        print(f"{r['image']:<10} {r['degradation']:<18} {r['psnr_standard']:9.2f} {r['psnr_cocoedit']:9.2f} "
              f"{r['psnr_standard'] - r['psnr_cocoedit']:6.2f} {r['ssim_standard']:9.4f} {r['ssim_cocoedit']:9.4f}")
    harness.write_result(harness.out_path(args, "metric_conventions"), {
        "size": side, "edit_box": "central, 3/8 of each side", "rows": rows}, provenance)


if __name__ == "__main__":
    main()
