"""CompBench (code ``comp-bench/CompBench``, data ``BohanJia/CompBench``): its local-edit tasks, read from the local
layout its download script writes, and its metrics.

Layout read (``download_from_hf.py`` / ``eval_all.py`` of its repository)::

    tasks/<task>/metadata.json            [{"image_path": "001ca3cb/0/00003.png", "instruction": ..., "caption": ...}]
    tasks/<task>/input_image/<image_path> tasks/<task>/mask/<image_path>   tasks/<task>/edited_image/<image_path>

for the local tasks ``add``, ``remove``, ``replace`` (the other tasks use other layouts and are not read). Masks:
pixel > 0 = edit region (our convention already). The ground-truth edited image stays in the release; its path is
kept in the record's meta.

Metrics (:class:`CompBenchScorer`, as its ``eval_all.py`` computes them): source, output and ground truth resized to
512×512 (bicubic; mask nearest); background = image × (1 − mask) for output and source, then PSNR (data range 1),
SSIM (11-tap Gaussian σ 1.5) and LPIPS (SqueezeNet) over the whole 512² image. The local CLIP scores use a
transformers CLIP through its own ``CLIPProcessor`` (:class:`editkit.clip.TransformersClip`), on the crop of the
512² images to the box of the mask's pixels (> 0): ``(left, top, right, bottom)`` = the min/max column and row,
cropped the way PIL crops (right/bottom exclusive, so the last row and column of the region fall outside):
LC-T = 100·max(cos(CLIP(output crop), CLIP(caption)), 0) (the caption " " when there is none), LC-I = cos(CLIP(output
crop), CLIP(ground-truth crop)). A region without a box of positive size — an empty mask, or one whose pixels lie
in a single row or a single column — scores LC-T = LC-I = 0 (counted in the means), as the benchmark's code does;
without a ground-truth image LC-I is absent (the benchmark writes NaN and leaves it out of the mean). LPIPS weights
are given by path; the CLIP is a local folder (nothing is downloaded).
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from benchmarks.items import BenchItem
from editkit.safe_paths import UnsafePath, resolve_inside

TASKS = ("add", "remove", "replace")
SIZE = 512
MAX_BYTES = 64 * 1024 * 1024


def read_compbench(path: Path | str, tasks: tuple[str, ...] = TASKS) -> Iterator[BenchItem]:
    root = Path(path)
    tasks_dir = root / "tasks" if (root / "tasks").is_dir() else root
    found = [t for t in tasks if (tasks_dir / t / "metadata.json").is_file()]
    if not found:
        raise FileNotFoundError(f"no tasks/<{'|'.join(tasks)}>/metadata.json under {root}: point the path at a "
                                "CompBench copy written by its download_from_hf.py")
    for task in found:
        entries = json.loads((tasks_dir / task / "metadata.json").read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"{tasks_dir / task / 'metadata.json'}: expected a JSON list of entries")
        for index, entry in enumerate(entries):
            yield _item(tasks_dir / task, task, index, entry)


def _item(task_dir: Path, task: str, index: int, entry: Any) -> BenchItem:
    item = BenchItem(origin="compbench", key=f"{task}/{index}", instruction="", category=task, image_bytes=None)
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in ("image_path", "instruction")):
        item.error = "malformed metadata entry: needs image_path and instruction strings"
        return item
    relative = entry["image_path"]
    item.key, item.instruction = f"{task}/{relative}", entry["instruction"]
    item.extra = {"task": task, "image_path": relative, "caption": str(entry.get("caption") or "")}
    try:
        item.image_bytes = resolve_inside(task_dir / "input_image", relative, max_bytes=MAX_BYTES).read_bytes()
        mask_bytes = resolve_inside(task_dir / "mask", relative, max_bytes=MAX_BYTES).read_bytes()
        try:
            item.extra["gt_path"] = str(resolve_inside(task_dir / "edited_image", relative, max_bytes=MAX_BYTES))
        except FileNotFoundError:
            item.extra["gt_path"] = None  # no ground truth: no LC-I for this item
        from PIL import Image

        with Image.open(io.BytesIO(mask_bytes)) as mask:
            item.mask = np.asarray(mask.convert("L")) > 0
    except (UnsafePath, FileNotFoundError) as error:
        item.error = f"missing file: {error}"
    except (OSError, ValueError) as error:
        item.error = f"unreadable mask: {type(error).__name__}: {error}"
    return item


def edit_type(category: str) -> str | None:
    return category if category in TASKS else None


def read(path: Path | str, params: Any) -> Iterator[tuple[BenchItem, str | None]]:
    """The ``compbench`` entry of :data:`benchmarks.build.READERS`."""
    for item in read_compbench(path):
        yield item, edit_type(item.category)


# ---------------------------------------------------------------- metrics
def load_lpips(weights: str | Path | None = None, random_init: bool = False):
    """LPIPS (SqueezeNet) from the ``lpips`` package: its linear heads ship with the package; the backbone weights
    (a torchvision squeezenet1_1 state dict, or a whole LPIPS state dict) come from ``weights``. ``random_init``
    (tests) keeps a random backbone. Never downloads."""
    import lpips
    import torch

    if weights is None and not random_init:
        raise ValueError("CompBench LPIPS needs backbone weights by path (nothing can be downloaded): pass "
                         "--lpips-weights <squeezenet1_1 state dict>")
    model = lpips.LPIPS(net="squeeze", pretrained=True, pnet_rand=True, verbose=False)
    if weights is not None:
        state = torch.load(str(weights), map_location="cpu", weights_only=True)
        if any(k.startswith("net.") for k in state):
            model.load_state_dict(state)
        else:  # a torchvision squeezenet1_1 state dict: features.<i>.* -> the LPIPS slices
            slices = {i: f"slice{s}" for s, (a, b) in enumerate([(0, 2), (2, 5), (5, 8), (8, 10), (10, 11),
                                                                  (11, 12), (12, 13)], start=1) for i in range(a, b)}
            mapped = {f"net.{slices[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v for k, v in state.items()
                      if k.startswith("features.")}
            missing = model.load_state_dict(mapped, strict=False).missing_keys
            if [k for k in missing if k.startswith("net.")]:
                raise ValueError(f"{weights} does not hold squeezenet1_1 features: missing {missing[:3]}")
    return model.eval()


def _resized(image: np.ndarray, nearest: bool = False) -> np.ndarray:
    from PIL import Image

    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(image).resize((SIZE, SIZE), resample))


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` = min/max column and row of the mask's pixels (inclusive values), or None."""
    ys, xs = np.nonzero(mask)
    return None if not len(xs) else (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def local_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """The box CompBench crops for LC-T/LC-I (PIL ``crop`` semantics: right/bottom exclusive), or None where it
    scores 0: no mask pixel, or all of them in one row or one column (a box of zero width or height)."""
    box = bbox(mask)
    if box is None or not (box[2] > box[0] and box[3] > box[1]):
        return None
    return box


class CompBenchScorer:
    """``scorer(source, output, mask, caption, gt) -> {cb_psnr, cb_ssim, cb_lpips, lc_t, lc_i}`` (uint8 HWC
    arrays, bool mask = edit region); ``clip`` is an :class:`editkit.clip.TransformersClip` or None (no LC
    scores)."""

    def __init__(self, lpips_model, clip=None):
        self.lpips, self.clip = lpips_model, clip

    def __call__(self, source: np.ndarray, output: np.ndarray, mask: np.ndarray, caption: str,
                 gt: np.ndarray | None) -> dict[str, float]:
        import torch
        from skimage.metrics import structural_similarity

        src, out = _resized(source) / 255.0, _resized(output) / 255.0
        keep = 1.0 - _resized(mask.astype(np.uint8) * 255, nearest=True)[..., None] / 255.0
        bg_src, bg_out = src * keep, out * keep
        mse = float(np.mean((bg_out - bg_src) ** 2))
        scores = {"cb_psnr": float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse)),
                  "cb_ssim": float(structural_similarity(bg_out, bg_src, data_range=1.0, channel_axis=2,
                                                         gaussian_weights=True, sigma=1.5,
                                                         use_sample_covariance=False))}
        with torch.no_grad():
            to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() * 2 - 1  # noqa: E731
            scores["cb_lpips"] = float(self.lpips(to_tensor(bg_out), to_tensor(bg_src)))
        if self.clip is not None:
            scores.update(self.local_clip(output, mask, caption, gt))
        return scores

    def local_clip(self, output: np.ndarray, mask: np.ndarray, caption: str | list[str],
                   gt: np.ndarray | None) -> dict[str, float]:
        """LC-T (mean over the captions, " " when none) and LC-I on the 512² crops, 0 for a region without a box."""
        from PIL import Image

        captions = [c for c in ([caption] if isinstance(caption, str) else list(caption)) if c] or [" "]
        box = local_box(_resized(mask.astype(np.uint8) * 255, nearest=True) > 0)
        if box is None:
            return {"lc_t": 0.0, "lc_i": 0.0}
        crop = Image.fromarray(_resized(output)).crop(box)
        scores = {"lc_t": float(np.mean([self.clip.text_score(crop, text) for text in captions]))}
        if gt is not None:
            scores["lc_i"] = self.clip.image_similarity(crop, Image.fromarray(_resized(gt)).crop(box))
        return scores
