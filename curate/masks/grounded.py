"""Grounded masks: target phrases -> boxes (Grounding-DINO, or an MLLM) -> SAM2 masks, batched and device-aware.

We use transformers' ``GroundingDinoForObjectDetection`` and ``Sam2Model`` (the IDEA-Research / Meta weights in HF
format) because groundingdino-py 0.4.0 is broken with transformers 5.x. :class:`GroundedMasker` loads both models once
and runs many images per forward:

1. each image is decoded and resized ONCE to ``max_side`` (longest side); both processors get that copy;
2. Grounding-DINO sees the whole batch with one prompt per image (lowercase phrases ending with a period), boxes are
   kept above ``box_threshold`` (label tokens above ``text_threshold``), at most ``max_boxes`` per image;
3. SAM2 sees the images that have boxes as one batch, all boxes of an image as prompts (padded by repeating a box,
   because SAM2 cannot pad box prompts), keeps the best of its 3 masks per box by predicted IoU, and unions the boxes'
   masks, upsampled straight to the ORIGINAL image size.

On cuda the forwards run under bf16 autocast (as Grounded-SAM-2's demo does); on CPU in fp32.

``detector: mllm`` replaces step 2 by an MLLM asked for the boxes as JSON (:mod:`curate.masks.mllm_boxes`, one
request per image, the working copy resized to what Qwen2.5-VL sees); SAM2 is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from curate.masks.mllm_boxes import MLLMGroundingParams
from curate.masks.phrases import detector_prompt
from curate.masks.refine import RefineParams
from editkit.config_meta import Range

DETECTORS = ("grounding_dino", "mllm")
DEFAULT_GROUNDING_DINO = "IDEA-Research/grounding-dino-base"


@dataclass
class GroundingParams:
    """``masks: grounding:`` in params.yaml."""

    detector: str = "grounding_dino"
    """box detector: grounding_dino or mllm; any other value is read as a Grounding-DINO checkpoint (the older spelling
    of detector_model)"""
    detector_model: str = DEFAULT_GROUNDING_DINO
    """Grounding-DINO hub id or local dir (HF format)"""
    mllm: MLLMGroundingParams = field(default_factory=MLLMGroundingParams)
    """the MLLM box detector, used by detector: mllm"""
    segmenter: str = "facebook/sam2.1-hiera-large"
    """SAM2 checkpoint: hub id or local dir (HF format)"""
    box_threshold: Annotated[float, Range(ge=0, le=1)] = 0.35
    """minimum box score kept (Grounded-SAM-2 demo default)"""
    text_threshold: Annotated[float, Range(ge=0, le=1)] = 0.25
    """minimum text-token score of a box's phrase (Grounded-SAM-2 demo default)"""
    max_boxes: Annotated[int, Range(ge=1)] = 8
    """boxes kept per image, highest scores first"""
    max_side: Annotated[int, Range(ge=1)] = 1024
    """images are resized once to this longest side before both models"""
    batch_size: Annotated[int, Range(ge=1)] = 8
    """images per forward"""
    device: str = "auto"
    """auto (cuda when available) | cpu | cuda | cuda:N"""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """auto (bf16 autocast on cuda, fp32 on cpu) | bfloat16 | float32"""
    min_iou: Annotated[float, Range(ge=0, le=1)] = 0.1
    """grounded vs diff IoU below this: keep the diff mask, flag grounding_disagrees"""
    foreground_prompt: str = "main subject"
    """what background edits ground (then complement) without target phrases"""
    refine: RefineParams = field(default_factory=RefineParams)
    """clean-up of each grounded mask before fusion ({} = the RefineParams defaults)"""
    local_files_only: bool = False
    """never contact the hub: only local dirs and the HF cache (offline machines)"""
    progress: bool = True
    """show a progress bar of the grounding batches"""

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:  # a checkpoint given as `detector`: a Grounding-DINO run
            self.detector, self.detector_model = "grounding_dino", self.detector


@dataclass
class Grounding:
    """One image's grounding: the union mask at the original size and the boxes it came from."""

    mask: np.ndarray  # bool (H, W), all False when nothing was found
    boxes: list[list[float]] = field(default_factory=list)  # xyxy in original pixels
    scores: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    dropped_boxes: int = 0  # non-finite or degenerate boxes from the detector (malformed output)
    dropped_reasons: list[str] = field(default_factory=list)  # why each one was dropped (MLLM detector)
    detector_status: str = ""  # MLLM detector: ok | repaired | fallback:<reason>; "" for Grounding-DINO
    detector_errors: list[str] = field(default_factory=list)  # MLLM detector: why its reply was not usable


class WeightsUnavailableError(RuntimeError):
    """The configured detector/segmenter weights cannot be loaded."""


class GroundedMasker:
    """The box detector (Grounding-DINO or an MLLM) + SAM2 loaded once; :meth:`ground` runs batches of
    (image, phrases)."""

    def __init__(self, params: GroundingParams | None = None):
        import torch
        from transformers import AutoProcessor, GroundingDinoForObjectDetection, Sam2Model, Sam2Processor

        self.params = params = params or GroundingParams()
        self.device = torch.device(_resolve_device(params.device))
        self.autocast_dtype = _resolve_autocast(params.dtype, self.device)
        local_only = params.local_files_only
        self.boxer = self.detector = self.detector_processor = None
        if params.detector == "mllm":
            from curate.masks.mllm_boxes import MLLMBoxDetector

            self.boxer = MLLMBoxDetector(params.mllm)
        else:
            self.detector_processor = _load("detector", params.detector_model, AutoProcessor, local_only)
            self.detector = _load("detector", params.detector_model, GroundingDinoForObjectDetection, local_only)
            self.detector.to(self.device).eval()
        self.segmenter_processor = _load("segmenter", params.segmenter, Sam2Processor, local_only)
        self.segmenter = _load("segmenter", params.segmenter, Sam2Model, local_only)
        self.segmenter.to(self.device).eval()

    @property
    def counters(self) -> dict[str, int]:
        """The MLLM detector's request counts (sent, cache hits, errors); empty for Grounding-DINO."""
        return dict(self.boxer.stats) if self.boxer is not None else {}

    def close(self) -> None:
        if self.boxer is not None:
            self.boxer.close()

    # ------------------------------------------------------------------ public
    def ground(self, items: Iterable[tuple[np.ndarray, list[str]]], total: int | None = None) -> Iterator[Grounding]:
        """Yield one :class:`Grounding` per ``(HxWx3 uint8 image, phrases)``, in order, ``batch_size`` per forward."""
        from tqdm.auto import tqdm

        with tqdm(total=total, desc="grounding", unit="img", disable=not self.params.progress) as bar:
            for batch in _batches(items, self.params.batch_size):
                yield from self.ground_batch([image for image, _ in batch], [phrases for _, phrases in batch])
                bar.update(len(batch))

    def ground_batch(self, images: Sequence[np.ndarray], phrases: Sequence[list[str]]) -> list[Grounding]:
        """One detector forward and one segmenter forward for the whole batch."""
        for image in images:
            _check_image(image)
        sizes = [image.shape[:2] for image in images]
        results = [Grounding(mask=np.zeros(size, dtype=bool)) for size in sizes]
        todo = [i for i, p in enumerate(phrases) if detector_prompt(p)]
        if not todo:
            return results
        work = {i: _resize_longest(images[i], self.params.max_side) for i in todo}
        if self.boxer is not None:
            detections = self._detect_mllm([work[i] for i in todo], [phrases[i] for i in todo],
                                           [results[i] for i in todo])
        else:
            detections = self._detect([work[i] for i in todo], [detector_prompt(phrases[i]) for i in todo])
        work_boxes = {}
        for i, (boxes, scores, labels, dropped) in zip(todo, detections):
            scale = np.array([sizes[i][1] / work[i].width, sizes[i][0] / work[i].height] * 2)
            results[i].boxes = (boxes * scale).round(2).tolist()  # reported in original pixels
            results[i].scores, results[i].labels, results[i].dropped_boxes = scores, labels, dropped
            work_boxes[i] = boxes.tolist()  # SAM2 gets them in the working image's pixels
        with_boxes = [i for i in todo if work_boxes[i]]
        if with_boxes:
            masks = self._segment([work[i] for i in with_boxes], [work_boxes[i] for i in with_boxes],
                                  [sizes[i] for i in with_boxes])
            for i, mask in zip(with_boxes, masks):
                results[i].mask = mask
        return results

    # ------------------------------------------------------------------ models
    def _autocast(self):
        import contextlib

        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def _detect(self, images: list[Any], prompts: list[str]) -> list[tuple[np.ndarray, list[float], list[str], int]]:
        import torch

        processor, params = self.detector_processor, self.params
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True).to(self.device)
        with torch.inference_mode(), self._autocast():
            outputs = self.detector(**inputs)
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        posts = processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=params.box_threshold, text_threshold=params.text_threshold,
            target_sizes=[(image.height, image.width) for image in images],
        )
        detections = []
        for image, post in zip(images, posts):
            boxes = post["boxes"].cpu().numpy().reshape(-1, 4)
            scores = post["scores"].cpu().numpy().reshape(-1)
            labels = list(post["text_labels"])
            valid = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
            boxes = np.clip(boxes, 0, [image.width, image.height, image.width, image.height])
            valid &= (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
            order = [k for k in np.argsort(-scores, kind="stable") if valid[k]][: params.max_boxes]
            detections.append((boxes[order], [float(scores[k]) for k in order], [labels[k] for k in order],
                               int((~valid).sum())))
        return detections

    def _detect_mllm(self, images: list[Any], phrases: list[list[str]], results: list[Grounding]
                     ) -> list[tuple[np.ndarray, list[float], list[str], int]]:
        """The MLLM's boxes in the working images' pixels (no confidence scores: Qwen2.5-VL gives none)."""
        detections = []
        for found, result in zip(self.boxer.detect(images, phrases, self.params.max_boxes), results):
            result.dropped_reasons, result.detector_status = found.dropped, found.status
            result.detector_errors = found.errors
            detections.append((found.boxes, [], found.labels, len(found.dropped)))
        return detections

    def _segment(self, images: list[Any], boxes: list[list[list[float]]],
                 sizes: list[tuple[int, int]]) -> list[np.ndarray]:
        import torch

        counts = [len(b) for b in boxes]
        # SAM2 cannot pad box prompts: repeat an image's first box; duplicates do not change the union.
        padded = [b + [b[0]] * (max(counts) - len(b)) for b in boxes]
        inputs = self.segmenter_processor(images=images, input_boxes=padded, return_tensors="pt").to(self.device)
        with torch.inference_mode(), self._autocast():
            outputs = self.segmenter(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"],
                                     multimask_output=True)
        iou = outputs.iou_scores.float()  # (batch, boxes, 3)
        best = iou.argmax(dim=-1)  # best of the multimask outputs by predicted IoU
        logits = outputs.pred_masks.float()  # (batch, boxes, 3, h, w)
        index = best[..., None, None, None].expand(-1, -1, 1, *logits.shape[-2:])
        chosen = torch.gather(logits, 2, index)  # (batch, boxes, 1, h, w)
        chosen = torch.nan_to_num(chosen, nan=-1.0)  # malformed output: NaN logits count as background
        upsampled = self.segmenter_processor.post_process_masks(
            [c[:n].cpu() for c, n in zip(chosen, counts)], [list(s) for s in sizes])
        return [m.any(dim=0)[0].numpy().astype(bool) for m in upsampled]


# ---------------------------------------------------------------------- helpers
def _load(role: str, name: str, cls: Any, local_files_only: bool = False) -> Any:
    """``cls.from_pretrained(name)`` with a message that says what failed, where it looked, and the way out."""
    local = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or local.exists()
    if looks_local and not local.is_dir():
        raise WeightsUnavailableError(_missing_message(role, name, f"the local directory {local} (it does not exist)"))
    try:
        return cls.from_pretrained(str(local) if looks_local else name, local_files_only=local_files_only)
    except (OSError, ValueError, EnvironmentError) as err:
        if looks_local:
            where = f"the local directory {local}"
        else:
            from huggingface_hub import constants

            offline = constants.HF_HUB_OFFLINE or local_files_only
            hub = " (not the hub: offline / local_files_only)" if offline else " and the hub"
            where = f"the Hugging Face cache {constants.HF_HUB_CACHE}{hub}"
        raise WeightsUnavailableError(_missing_message(role, name, where, err)) from err


def _missing_message(role: str, name: str, where: str, err: Exception | None = None) -> str:
    cause = f" ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})" if err else ""
    key = "masks.grounding.detector_model" if role == "detector" else "masks.grounding.segmenter"
    return (f"grounded masks: cannot load the {role} model {name!r}; looked in {where}{cause}. "
            f"Point {key} in params.yaml at a local HF-format checkpoint directory, or run diff-only masks with "
            f"`masks: mode: diff` in params.yaml.")


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"masks.grounding.device is {device!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def _resolve_autocast(dtype: str, device: Any):
    import torch

    choices = {"auto": torch.bfloat16 if device.type == "cuda" else None, "bfloat16": torch.bfloat16, "float32": None}
    if dtype not in choices:
        raise ValueError(f"masks.grounding.dtype must be one of {sorted(choices)}, got {dtype!r}")
    return choices[dtype]


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"grounding expects HxWx3 uint8 RGB images, got {type(image).__name__} {shape} "
                         f"{getattr(image, 'dtype', '')}")


def _resize_longest(image: np.ndarray, max_side: int):
    """The one resize: to ``max_side`` on the longest side (never upscaled), as a PIL image for both processors."""
    from PIL import Image

    pil = Image.fromarray(image)
    scale = max_side / max(pil.size)
    if scale < 1:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    return pil


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if size < 1:
        raise ValueError(f"masks.grounding.batch_size must be >= 1, got {size}")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch

