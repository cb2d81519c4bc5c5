"""Grounded masks: the batched GroundedMasker vs a per-image loop (Grounded-SAM-2's demo: one image, one forward of
each model at a time, at full resolution) on the same images and phrases. Prints a table, writes
``perf/results/grounded_masks.json``.

    .venv/bin/python perf/grounded_masks.py                  # CPU, tiny random models (any machine)
    .venv/bin/python perf/grounded_masks.py --full           # GPU: random-init grounding-dino-base + sam2.1-hiera-large
                                                             # built from the real configs, bf16 autocast, 1024 px

``--full`` needs a CUDA GPU (none in the development session: the option exists and is untested there). Weights are
random (nothing can be downloaded), so the masks are meaningless but the compute is the real models'.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.masks.grounded import GroundedMasker, GroundingParams  # noqa: E402
from curate.masks.phrases import detector_prompt  # noqa: E402
from perf import harness  # noqa: E402

PHRASES = [["cat"], ["red car", "dog"], ["hat"], ["person"], ["cup", "bottle"], ["tree"]]


def per_image_loop(masker: GroundedMasker, images: list[np.ndarray], phrases: list[list[str]]) -> list[np.ndarray]:
    """The demo's way: for each image, detector forward, then SAM2 forward with that image's boxes."""
    import torch
    from PIL import Image

    p = masker.params
    masks = []
    for image, words in zip(images, phrases):
        pil = Image.fromarray(image)
        size = [(image.shape[0], image.shape[1])]
        inputs = masker.detector_processor(images=pil, text=detector_prompt(words), return_tensors="pt")
        inputs = inputs.to(masker.device)
        with torch.inference_mode(), masker._autocast():
            out = masker.detector(**inputs)
        out.logits, out.pred_boxes = out.logits.float(), out.pred_boxes.float()
        post = masker.detector_processor.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=p.box_threshold, text_threshold=p.text_threshold, target_sizes=size)[0]
        boxes = post["boxes"][post["scores"].argsort(descending=True)][: p.max_boxes].cpu().tolist()
        if not boxes:
            masks.append(np.zeros(image.shape[:2], bool))
            continue
        sam_in = masker.segmenter_processor(images=pil, input_boxes=[boxes], return_tensors="pt").to(masker.device)
        with torch.inference_mode(), masker._autocast():
            sam = masker.segmenter(pixel_values=sam_in["pixel_values"], input_boxes=sam_in["input_boxes"],
                                   multimask_output=True)
        best = sam.iou_scores.float().argmax(-1)[0]
        chosen = sam.pred_masks.float()[0, torch.arange(len(boxes)), best][:, None]
        full = masker.segmenter_processor.post_process_masks([chosen.cpu()], size)[0]
        masks.append(full.any(dim=0)[0].numpy())
    return masks


def timed(fn, repeats: int, device) -> list[float]:
    import torch

    seconds = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full-size random models, bf16, 1024 px (needs a GPU)")
    parser.add_argument("--images", type=int, default=None, help="number of images (default 32 tiny / 64 full)")
    parser.add_argument("--size", type=int, default=None, help="image side in px (default 256 tiny / 1024 full)")
    parser.add_argument("--batch-sizes", default=None, help="comma-separated (default 4,16 tiny / 8,16 full)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    harness.add_options(parser, "grounded_masks")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.size, args.batch_sizes, args.repeats = 2, 64, "2", 1
    provenance = harness.Provenance(args.smoke)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.full and not torch.cuda.is_available():
        parser.error("--full needs a CUDA GPU (random-init grounding-dino-base + sam2.1-hiera-large in bf16)")
    n = args.images or (64 if args.full else 32)
    side = args.size or (1024 if args.full else 256)
    batch_sizes = [int(b) for b in (args.batch_sizes or ("8,16" if args.full else "4,16")).split(",")]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (side * 3 // 4, side, 3), dtype=np.uint8) for _ in range(n)]
    phrases = [PHRASES[i % len(PHRASES)] for i in range(n)]

    with tempfile.TemporaryDirectory() as tmp:
        if args.full:
            from tests.support.tiny.grounding_dino import build_grounding_dino_base
            from tests.support.tiny.sam2 import build_sam2_hiera_large

            detector, segmenter = build_grounding_dino_base(Path(tmp) / "gd"), build_sam2_hiera_large(Path(tmp) / "sam")
        else:
            from tests.support.tiny.grounding_dino import build_tiny_grounding_dino
            from tests.support.tiny.sam2 import build_tiny_sam2

            detector, segmenter = build_tiny_grounding_dino(Path(tmp) / "gd"), build_tiny_sam2(Path(tmp) / "sam")
        # box threshold 0 with random weights: every image gets max_boxes boxes, so SAM2 always runs (worst case)
        params = GroundingParams(detector=str(detector), segmenter=str(segmenter), box_threshold=0.0,
                                 text_threshold=0.0, max_side=side, progress=False)
        masker = GroundedMasker(params)
        per_image_loop(masker, images[:2], phrases[:2])  # warm-up
        rows = []
        loop_s = timed(lambda: per_image_loop(masker, images, phrases), args.repeats, masker.device)
        rows.append({"path": "per-image loop (demo)", "batch_size": 1, "seconds": statistics.median(loop_s)})
        for batch_size in batch_sizes:
            masker.params.batch_size = batch_size
            list(masker.ground(zip(images[:batch_size], phrases[:batch_size])))  # warm-up at this shape
            s = timed(lambda: list(masker.ground(zip(images, phrases))), args.repeats, masker.device)
            rows.append({"path": "batched GroundedMasker", "batch_size": batch_size, "seconds": statistics.median(s)})

    base = rows[0]["seconds"]
    for row in rows:
        row["images_per_s"] = round(n / row["seconds"], 2)
        row["speedup"] = round(base / row["seconds"], 2)
        row["seconds"] = round(row["seconds"], 3)
    threads = torch.get_num_threads()
    device = torch.cuda.get_device_name() if masker.device.type == "cuda" else f"cpu ({threads} threads)"
    result = {"models": "full-size random (grounding-dino-base, sam2.1-hiera-large)" if args.full else "tiny random",
              "device": device, "dtype": "bf16 autocast" if masker.autocast_dtype is not None else "fp32",
              "images": n, "image_size": [side * 3 // 4, side], "max_boxes": params.max_boxes, "rows": rows}
    print(f"grounded masks: {result['models']}, {device}, {result['dtype']}, {n} images of "
          f"{side * 3 // 4}x{side}, {params.max_boxes} boxes each (median of {args.repeats})")
    print(f"{'path':<24} {'batch':>5} {'seconds':>8} {'images/s':>9} {'speedup':>8}")
    for row in rows:
        print(f"{row['path']:<24} {row['batch_size']:>5} {row['seconds']:>8.3f} {row['images_per_s']:>9.2f} "
              f"{row['speedup']:>7.2f}x")
    harness.write_result(harness.out_path(args, "grounded_masks"), result, provenance,
                         gpu=device if masker.device.type == "cuda" else None)
    return result


if __name__ == "__main__":
    main()
