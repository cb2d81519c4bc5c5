"""masks + score vs a naive per-record loop computing the same outputs, at 128 and 512 px; optionally peak RSS.

    .venv/bin/python perf/masks_score.py [--sizes 128,512] [--records 300,60] [--rounds 3] [--rss 1000,10000]

Records are generated (a bundled photo with a random coloured ellipse; every third edited image a JPEG, every fourth
with a brightness/contrast jitter the alignment must undo) straight into record and image shards.

* **ours**: the masks and score stages (``curate.stages.masks.run`` then ``curate.stages.score.run``, default
  params) over all records of one size, Parquet in and out, on this process's executor.
* **naive**: a plain PIL + NumPy + scikit-image loop (:func:`naive_record`) that computes the same outputs per
  record: decode, the same photometric alignment (robust quadratic per channel on the same pixel sample), CIELAB
  ΔE with blur and texture normalisation, the same threshold and whole-image rules, the same morphology (closing,
  bounded hole filling, small components), the mask's RLE and IoU vs the ground truth, then the scores: area,
  components, compactness, background PSNR and SSIM (skimage's Gaussian SSIM map), and the three pHashes. It
  does not write Parquet.

Rounds interleave the two (naive, ours, naive, ours, ...); the table reports medians of wall-clock time; the JSON
also has each round's CPU seconds (ours: this process plus the stages' worker processes), which other jobs on the
machine change far less. The outputs are compared record
by record (mask IoU between the two, largest score difference), and with those of the stages before their
optimisation (``--previous``, a git revision, run once, untimed). ``--rss`` runs both stages over N records at 128 px in
a fresh subprocess per N and reports peak RSS. Prints a table and writes ``perf/results/masks_score.json``.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perf import harness  # noqa: E402

GOALS = {128: 2.0, 512: 5.0}  # speed-up of ours over the naive loop
# the stages as they were before their optimisation (OpenCV decoding, float32 SSIM, table-applied curve): our
# outputs are compared with theirs (--previous; git must be able to read this repository)
PREVIOUS = "574e2a2"


def generate(directory: Path, n: int, size: int, shard_size: int = 1000) -> None:
    from PIL import Image
    from skimage import data

    from editkit import rle, schema, store

    base = np.asarray(Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    source_png = store.encode_png(base)
    for first in range(0, n, shard_size):
        shard = store.shard_name(first // shard_size)
        records, rows = [], []
        for i in range(first, min(n, first + shard_size)):
            cy, cx, ry, rx = rng.uniform(0.2, 0.8, 2).tolist() + rng.uniform(0.05, 0.2, 2).tolist()
            region = ((yy / size - cy) / ry) ** 2 + ((xx / size - cx) / rx) ** 2 <= 1
            edited = base.copy()
            edited[region] = rng.integers(0, 256, 3)
            if i % 4 == 1:  # photometric jitter of the whole edited image (what the alignment is for)
                edited = np.clip(edited.astype(np.float32) * 1.04 + 3, 0, 255).astype(np.uint8)
            if i % 3 == 0:
                buffer = io.BytesIO()
                Image.fromarray(edited).save(buffer, format="JPEG", quality=85)
                edited_bytes = buffer.getvalue()
            else:
                edited_bytes = store.encode_png(edited)
            rid = f"perf-{i:07d}"
            records.append(schema.new_record(id=rid, origin="sample", image_shard=shard, width=size, height=size,
                                             has_edited=True, edit_type="recolor", gt_mask=rle.encode(region)))
            rows.append({"id": rid, "source": source_png, "edited": edited_bytes})
        store.write_records(directory / "records", shard, records)
        store.write_image_shard(directory / "images", shard, rows)


# ------------------------------------------------------------------------------------------------- the naive loop
def _naive_delta_e(a_rgb: np.ndarray, b_rgb: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return np.sqrt(((rgb2lab(a_rgb) - rgb2lab(b_rgb)) ** 2).sum(-1))


def _naive_inliers(residual, inliers, iterations, tolerance):
    for _ in range(iterations):
        if not inliers.any():
            break
        updated = residual <= max(3.0 * float(np.median(residual[inliers])), tolerance)
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    return inliers


def naive_align(src: np.ndarray, edt: np.ndarray, p) -> tuple[np.ndarray, float, float]:
    """The diff masker's photometric alignment, written plainly: (aligned edited image, shift, noise)."""
    h, w, _ = src.shape
    pick = np.random.default_rng(0).choice(h * w, size=min(p.align_sample, h * w), replace=False)
    s, e = src.reshape(-1, 3)[pick], edt.reshape(-1, 3)[pick]
    residual = identity_residual = np.abs(s - e).max(1)
    identity_explained = float((residual <= p.explained_tolerance).mean())
    inliers = residual < 0.15
    curves = [np.array([0.0, 1.0, 0.0])] * 3  # np.polyfit order: c2, c1, c0
    for _ in range(p.align_iterations):
        if inliers.sum() < 64:
            break
        curves = [np.polyfit(e[inliers, c], s[inliers, c], 2) for c in range(3)]
        fitted = np.stack([np.polyval(curves[c], e[:, c]) for c in range(3)], 1)
        residual = np.abs(fitted - s).max(1)
        updated = _naive_inliers(residual, inliers, p.align_iterations, p.explained_tolerance)
        if np.array_equal(updated, inliers):
            break
        inliers = updated
    if float((residual <= p.explained_tolerance).mean()) <= identity_explained:
        inliers = _naive_inliers(identity_residual, identity_residual < 0.15, p.align_iterations,
                                 p.explained_tolerance)
        noise = float(np.median(_naive_delta_e(s[inliers][None], e[inliers][None]))) if inliers.any() else 0.0
        return edt, 0.0, noise
    aligned = np.clip(np.stack([np.polyval(curves[c], edt[..., c]) for c in range(3)], -1), 0, 1)
    fitted = np.clip(np.stack([np.polyval(curves[c], e[:, c]) for c in range(3)], 1), 0, 1)
    noise = float(np.median(_naive_delta_e(s[inliers][None], fitted[inliers][None])))
    return aligned, float(np.abs(aligned - edt).mean()), noise


def naive_mask(src: np.ndarray, edt: np.ndarray, p) -> tuple[np.ndarray, bool]:
    """The diff mask with skimage/scipy: distance, threshold, whole-image rules, morphology."""
    from scipy import ndimage
    from skimage.color import rgb2lab
    from skimage.filters import gaussian
    from skimage.morphology import closing, disk, remove_small_objects

    aligned, shift, noise = naive_align(src, edt, p) if p.align else (edt, 0.0, 0.0)
    if noise <= p.exact_noise:
        a, b, threshold, texture = src, aligned, p.exact_threshold, 0.0
    else:
        a = gaussian(src, sigma=p.blur_sigma, channel_axis=-1, mode="reflect", truncate=4.0)
        b = gaussian(aligned, sigma=p.blur_sigma, channel_axis=-1, mode="reflect", truncate=4.0)
        threshold, texture = max(p.threshold, p.noise_factor * noise), p.texture_weight
    lab_a, lab_b = rgb2lab(a), rgb2lab(b)
    delta = lab_a - lab_b
    delta[..., 0] *= p.lightness_weight
    distance = np.sqrt((delta ** 2).sum(-1))
    if texture > 0:
        light = lab_a[..., 0]
        mean = gaussian(light, sigma=p.texture_sigma, mode="reflect", truncate=4.0)
        mean_sq = gaussian(light * light, sigma=p.texture_sigma, mode="reflect", truncate=4.0)
        distance = np.maximum(distance - texture * np.sqrt(np.maximum(mean_sq - mean * mean, 0)), 0)
    raw = distance > threshold
    whole = np.ones(raw.shape, bool)
    if raw.mean() >= p.whole_fraction or shift > p.max_photometric_shift or noise > p.max_noise:
        return whole, True
    r = p.refine
    mask = closing(np.pad(raw, r.close_px), disk(r.close_px))[r.close_px:-r.close_px or None,
                                                              r.close_px:-r.close_px or None] if r.close_px else raw
    if r.fill_holes:
        labels, count = ndimage.label(~mask)  # 4-connected background regions
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        hole = sizes <= (mask.size if r.max_hole_fraction is None else int(r.max_hole_fraction * mask.size))
        hole[0] = False
        hole[border] = False
        mask = mask | hole[labels]
    if r.min_component_fraction > 0:
        smallest = max(1, int(math.ceil(r.min_component_fraction * mask.size)))  # kept: >= smallest pixels
        mask = remove_small_objects(mask, max_size=smallest - 1, connectivity=2)
    if mask.mean() >= p.whole_fraction:
        return whole, True
    return mask, False


def _naive_phash(gray: np.ndarray) -> int:
    from PIL import Image
    from scipy.fft import dctn

    small = np.asarray(Image.fromarray(gray.astype(np.float32), mode="F").resize((32, 32), Image.Resampling.BOX))
    low = dctn(small.astype(np.float64), norm="ortho")[:8, :8].ravel()
    return int("".join("1" if bit else "0" for bit in low > np.median(low)), 2)


def naive_record(source_bytes: bytes, edited_bytes: bytes, gt: dict, p) -> dict:
    """Everything the two stages compute for one record, the plain way (see the module docstring)."""
    from PIL import Image
    from pycocotools import mask as coco
    from skimage.measure import label, perimeter
    from skimage.metrics import structural_similarity

    a = np.asarray(Image.open(io.BytesIO(source_bytes)).convert("RGB"))
    b = np.asarray(Image.open(io.BytesIO(edited_bytes)).convert("RGB"))
    src, edt = a / 255.0, b / 255.0
    mask, whole = naive_mask(src, edt, p)
    encoded = coco.encode(np.asfortranarray(mask.astype(np.uint8)))
    gt_rle = {"size": gt["size"], "counts": gt["counts"].encode() if isinstance(gt["counts"], str) else gt["counts"]}
    iou = float(coco.iou([encoded], [gt_rle], [0])[0, 0])
    area = float(mask.mean())
    scores = {"mask_area": area, "mask_components": float(label(mask, connectivity=2).max()), "diff_gt_iou": iou}
    if area:
        edge = perimeter(mask, neighborhood=4)
        scores["mask_compactness"] = min(1.0, 4 * math.pi * mask.sum() / edge ** 2) if edge > 0 else 1.0
    region = ~mask
    if region.any():
        mse = float(((src - edt) ** 2)[region].mean())
        scores["bg_psnr"] = min(10 * math.log10(1 / mse), 100.0) if mse > 0 else 100.0
        _, ssim_map = structural_similarity(src, edt, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                            data_range=1.0, channel_axis=2, full=True)
        scores["bg_ssim"] = float(ssim_map[region].mean())
    luma = np.array([0.299, 0.587, 0.114])
    change = np.sqrt(((b.astype(np.float64) - a) ** 2).sum(-1))
    hashes = {"source": _naive_phash(a @ luma), "edited": _naive_phash(b @ luma), "change": _naive_phash(change)}
    return {"mask": mask, "whole": whole, "scores": scores, "phash": hashes}


def naive(directory: Path) -> dict[str, dict]:
    """The naive loop over every record of ``directory``: {id: outputs}."""
    from curate.masks.diff import DiffParams
    from editkit import store

    params = DiffParams()
    out = {}
    for shard in store.list_shards(directory / "records"):
        images = store.ImageShard(directory / "images" / f"{shard}.parquet")
        for record in store.read_records(directory / "records", shard):
            out[record["id"]] = naive_record(images.source_bytes(record["id"]), images.edited_bytes(record["id"]),
                                             record["gt_mask"], params)
    return out


# ------------------------------------------------------------------------------------------------- ours
def _workers_cpu_s() -> float:
    """CPU seconds (user + system) used so far by the stages' worker processes (editkit.executors' shared pools;
    Linux /proc; 0 where unreadable)."""
    import os

    from editkit import executors

    ticks, total = os.sysconf("SC_CLK_TCK"), 0.0
    for pool in list(executors._POOLS.values()):
        for pid in list(getattr(pool, "_processes", None) or {}):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
    return total


def run_stages(directory: Path, tag: str = "ours") -> dict:
    from curate.stages import masks, score

    started, cpu, workers_cpu = time.perf_counter(), time.process_time(), _workers_cpu_s()
    m = masks.run(masks.MasksParams(), directory / "records", directory / "images", directory / f"masks-{tag}")
    s = score.run(score.ScoreParams(), directory / f"masks-{tag}", directory / "images", directory / f"score-{tag}")
    return {"seconds": time.perf_counter() - started, "masks_mean_iou": m["mean_iou"], "records": m["records_in"],
            "cpu_s": time.process_time() - cpu + _workers_cpu_s() - workers_cpu,
            "masks_records_per_s": m["records_per_s"], "score_records_per_s": s["records_per_s"]}


_PREVIOUS_RUN = '''
import sys
from pathlib import Path
from curate.stages import masks, score
d = Path(sys.argv[1])
masks.run(masks.MasksParams(workers=1), d / "records", d / "images", d / "masks-previous")
score.run(score.ScoreParams(workers=1), d / "masks-previous", d / "images", d / "score-previous")
'''


def previous(directory: Path, revision: str) -> dict[str, dict]:
    """The stages at ``revision`` (curate/ and editkit/ from git, in a fresh process) over ``directory``:
    {id: outputs} as :func:`naive` gives them, for :func:`compare`."""
    import os

    from editkit import rle, store

    with tempfile.TemporaryDirectory() as code:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "curate", "editkit"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", code], input=archive, check=True)
        env = {**os.environ, "PYTHONPATH": code}
        subprocess.run([sys.executable, "-c", _PREVIOUS_RUN, str(directory)], check=True, capture_output=True,
                       cwd=code, env=env)
    out = {}
    for shard in store.list_shards(directory / "score-previous"):
        for record in store.read_records(directory / "score-previous", shard):
            out[record["id"]] = {"mask": rle.decode(record["mask"]), "scores": record.get("scores") or {},
                                 "phash": {k: int(v) for k, v in (record.get("phash") or {}).items()}}
    return out


def compare(directory: Path, tag: str, reference: dict[str, dict]) -> dict:
    """Our stage outputs vs the naive loop's, record by record."""
    from editkit import rle, store

    ious, diffs, hash_bits = [], {}, 0
    for shard in store.list_shards(directory / f"score-{tag}"):
        for record in store.read_records(directory / f"score-{tag}", shard):
            ref = reference[record["id"]]
            mask = rle.decode(record["mask"])
            union = np.logical_or(mask, ref["mask"]).sum()
            ious.append(float(np.logical_and(mask, ref["mask"]).sum() / union) if union else 1.0)
            for name in ("mask_area", "mask_components", "mask_compactness", "bg_psnr", "bg_ssim", "diff_gt_iou"):
                ours, theirs = (record.get("scores") or {}).get(name), ref["scores"].get(name)
                if ours is not None and theirs is not None:
                    diffs[name] = max(diffs.get(name, 0.0), abs(float(ours) - float(theirs)))
            hash_bits = max(hash_bits, max(bin(int(record["phash"][k]) ^ ref["phash"][k]).count("1")
                                           for k in ("source", "edited", "change")))
    return {"mask_iou_vs_naive_min": min(ious), "mask_iou_vs_naive_mean": float(np.mean(ious)),
            "score_max_abs_diff_by_name": diffs, "phash_max_bits_differing": hash_bits}


# ------------------------------------------------------------------------------------------------- RSS
def child(directory: str) -> None:
    result = run_stages(Path(directory), "rss")
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def rss_run(tmp: Path, n: int) -> dict:
    directory = tmp / f"rss{n}"
    generate(directory, n, 128)
    out = subprocess.run([sys.executable, __file__, "--child", str(directory)], check=True, capture_output=True,
                         text=True, cwd=ROOT)
    stage = json.loads(out.stdout.strip().splitlines()[-1])
    stage["records_per_s"] = n / stage["seconds"]
    return stage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="128,512", help="image sides (px), comma-separated")
    parser.add_argument("--records", default="300,60", help="records per size, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (naive, ours) per size")
    parser.add_argument("--rss", default="", help="e.g. 1000,10000: peak RSS of both stages at these record counts")
    parser.add_argument("--previous", default=PREVIOUS,
                        help="git revision whose stages our outputs are compared with ('' skips; not timed)")
    harness.add_options(parser, "masks_score")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    if args.smoke:
        args.sizes, args.records, args.rounds, args.rss, args.previous = "64", "6", 1, "", ""
    provenance = harness.Provenance(args.smoke)
    sizes = [int(s) for s in args.sizes.split(",")]
    counts = [int(n) for n in args.records.split(",")]
    result: dict = {"sizes": sizes, "rounds": args.rounds, "by_size": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size, n in zip(sizes, counts):
            directory = Path(tmp) / f"s{size}"
            generate(directory, n, size)
            naive_s, ours_s, naive_cpu_s, ours_cpu_s, reference, stage = [], [], [], [], None, None
            warm = Path(tmp) / f"warm{size}"  # imports, caches and worker start-up stay out of the timed rounds
            generate(warm, 2, size)
            naive(warm)
            warm_pool = Path(tmp) / f"warm-pool{size}"  # enough records for the stages' worker processes to start
            generate(warm_pool, min(n, 32), size)
            run_stages(warm_pool, "warm")
            for index in range(args.rounds):
                began, cpu = time.perf_counter(), time.process_time()
                reference = naive(directory)
                naive_s.append(time.perf_counter() - began)
                naive_cpu_s.append(time.process_time() - cpu)
                stage = run_stages(directory, f"r{index}")
                ours_s.append(stage["seconds"])
                ours_cpu_s.append(stage["cpu_s"])
            same = compare(directory, f"r{args.rounds - 1}", reference)
            row = {"records": n, "naive_s": naive_s, "ours_s": ours_s, "naive_median_s": statistics.median(naive_s),
                   "ours_median_s": statistics.median(ours_s), "goal": GOALS.get(size, 1.0),
                   "masks_mean_iou_vs_gt": stage["masks_mean_iou"], **same,
                   "score_max_abs_diff": max(same["score_max_abs_diff_by_name"].values(), default=0.0)}
            row["speedup"] = row["naive_median_s"] / row["ours_median_s"]
            # CPU seconds (ours: this process and its worker processes): what the work costs, whatever the load
            row.update({"naive_cpu_s": naive_cpu_s, "ours_cpu_s": ours_cpu_s,
                        "cpu_ratio": statistics.median(naive_cpu_s) / statistics.median(ours_cpu_s)})
            if args.previous:  # the same records through the stages before their optimisation
                before = compare(directory, f"r{args.rounds - 1}", previous(directory, args.previous))
                row.update({"previous_revision": args.previous,
                            "mask_iou_vs_previous_min": before["mask_iou_vs_naive_min"],
                            "mask_iou_vs_previous_mean": before["mask_iou_vs_naive_mean"],
                            "score_max_abs_diff_vs_previous_by_name": before["score_max_abs_diff_by_name"],
                            "phash_max_bits_differing_vs_previous": before["phash_max_bits_differing"]})
                print(f"  vs the stages at {args.previous}: mask IoU min {row['mask_iou_vs_previous_min']:.4f}, "
                      f"score diffs {before['score_max_abs_diff_by_name']}")
            result["by_size"][str(size)] = row
            print(f"{size} px, {n} records: naive {row['naive_median_s']:.2f} s, ours {row['ours_median_s']:.2f} s "
                  f"(medians of {args.rounds}) -> {row['speedup']:.2f}x (goal >= {row['goal']:g}x); mask IoU vs "
                  f"naive min {row['mask_iou_vs_naive_min']:.4f}; max score diff {row['score_max_abs_diff']:.2e}; "
                  f"CPU seconds naive / ours {row['cpu_ratio']:.2f}x")
        if args.rss:
            small, large = (rss_run(Path(tmp), int(n)) for n in args.rss.split(","))
            result["rss"] = {"small": small, "large": large, "ratio": large["peak_rss_mb"] / small["peak_rss_mb"]}
            print(f"peak RSS {small['records']} / {large['records']} records: {small['peak_rss_mb']:.0f} / "
                  f"{large['peak_rss_mb']:.0f} MB ({result['rss']['ratio']:.2f}x, goal <= 1.2x)")
    harness.write_result(harness.out_path(args, "masks_score"), result, provenance)


if __name__ == "__main__":
    main()
