"""SAM2 from prompts: clicked points (positive / negative) and a box -> one boolean mask at the image's size.

transformers' ``Sam2Model`` + ``Sam2Processor`` (the same classes and checkpoints the grounded masks use), loaded
once. SAM2 returns three candidate masks per prompt; the one with the highest predicted IoU is kept, as the
interactive tools of SAM's own demo do.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class Prompt:
    points: list[tuple[float, float]] = field(default_factory=list)  # pixels (x, y) in the original image
    labels: list[int] = field(default_factory=list)  # 1 = on the object, 0 = not on it
    box: tuple[float, float, float, float] | None = None  # pixels (x0, y0, x1, y1)

    def is_empty(self) -> bool:
        return not self.points and self.box is None


class PromptMasker:
    def __init__(self, model: str, device: str = "auto", local_files_only: bool = False):
        if model.startswith(("/", "./", "../", "~")) and not Path(model).expanduser().is_dir():
            raise RuntimeError(f"no SAM2 weights at {Path(model).expanduser()} (annotate.ml_backend_model: a local "
                               "HF-format SAM2 folder or a hub id already in the local Hugging Face cache)")
        import torch
        from transformers import Sam2Model, Sam2Processor

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        local = Path(model).expanduser()
        source = str(local) if local.is_dir() else model
        try:
            self.processor = Sam2Processor.from_pretrained(source, local_files_only=local_files_only)
            self.model = Sam2Model.from_pretrained(source, local_files_only=local_files_only).to(self.device).eval()
        except (OSError, ValueError) as error:
            where = (f"at {local}" if local.is_dir() else f"for {model!r} in the local Hugging Face cache (the backend "
                     "runs offline)")
            raise RuntimeError(f"no SAM2 weights {where} ({type(error).__name__}); set annotate.ml_backend_model to a "
                               "local HF-format SAM2 checkpoint directory") from error
        self.name = model

    def predict(self, image: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, float]:
        """(HxW bool mask, SAM2's predicted IoU of it) for an HxWx3 uint8 image."""
        import torch
        from PIL import Image

        if prompt.is_empty():
            raise ValueError("a SAM2 prompt needs at least one point or a box")
        kwargs = {}
        points, labels = list(prompt.points), list(prompt.labels)
        if prompt.box is not None:
            kwargs["input_boxes"] = [[list(map(float, prompt.box))]]
        if points:
            kwargs["input_points"] = [[[list(map(float, p)) for p in points]]]
            kwargs["input_labels"] = [[[int(v) for v in labels]]]
        inputs = self.processor(images=Image.fromarray(image), return_tensors="pt", **kwargs).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**{k: v for k, v in inputs.items() if k != "original_sizes"}, multimask_output=True)
        iou = outputs.iou_scores.float()[0, 0]  # (3,)
        best = int(iou.argmax())
        logits = torch.nan_to_num(outputs.pred_masks.float()[0, 0, best : best + 1], nan=-1.0)  # (1, h, w)
        masks = self.processor.post_process_masks([logits[None].cpu()], inputs["original_sizes"].tolist())
        return masks[0][0, 0].numpy().astype(bool), float(iou[best])
