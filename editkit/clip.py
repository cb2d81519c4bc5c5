"""CLIP scores with open-clip-torch: source<->edited image similarity and directional similarity.

* ``clip_image_sim``  = cos(E(source), E(edited)): low means the edit replaced the picture.
* ``clip_direction``  = cos(E(edited) - E(source), T(instruction)) with the refined instruction when present: positive
  means the image moved toward what the instruction says.

The model is named as open-clip names it: a built-in architecture plus ``pretrained`` (a tag such as
``laion2b_s34b_b79k`` or a local checkpoint file), or ``hf-hub:org/repo``, or ``local-dir:/path`` (a folder with
``open_clip_config.json`` + weights, e.g. :func:`tests.support.tiny.clip.build_clip`). Nothing here downloads by itself unless
the name asks the hub for it. :class:`ClipScorer` is a batch -> batch callable holding the model (the actor-pool shape
of the contract in :mod:`curate.scoring`); embeddings are cached on disk by model fingerprint + image bytes.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from editkit import schema
from editkit.scores import CLIP_DIRECTION, CLIP_IMAGE_SIM
from editkit.embedding_cache import EmbeddingCache, content_key

# Below this norm the image embedding did not move: the direction (and its cosine) is undefined.
_MIN_DIRECTION_NORM = 1e-6


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def model_fingerprint(model: str, pretrained: Optional[str]) -> str:
    """Identifies the weights for the cache: names, plus size and mtime of local checkpoint files."""
    parts = [model, pretrained or ""]
    local = [Path(model.removeprefix("local-dir:"))] if model.startswith("local-dir:") else []
    if pretrained and os.path.isfile(pretrained):
        local.append(Path(pretrained))
    for path in local:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        parts += [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files if f.is_file()]
    return "|".join(parts)


class ClipScorer:
    """Loads an open-clip model once; ``scorer(records, images) -> records`` adds the two CLIP scores."""

    def __init__(self, model: str, pretrained: Optional[str] = None, device: str = "auto", batch_size: int = 32,
                 cache_dir: Optional[str | Path] = None):
        import open_clip

        self.device = resolve_device(device)
        try:
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=pretrained or None, device=self.device)
        except Exception as error:
            raise RuntimeError(
                f"cannot load CLIP model {model!r} (pretrained={pretrained!r}): {error}. No weights can be downloaded "
                "here: point score.clip.model at 'local-dir:<folder>' or score.clip.pretrained at a checkpoint file, "
                "or set score.clip.enabled: false") from error
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.batch_size = int(batch_size)
        self.fingerprint = model_fingerprint(model, pretrained)
        self.cache = EmbeddingCache(cache_dir)

    # ------------------------------------------------------------ embeddings
    def embed_images(self, encoded: Sequence[bytes]) -> np.ndarray:
        """Encoded images -> L2-normalised embeddings (N, D), float32."""
        from PIL import Image

        def encode(batch: list[bytes]):
            pixels = []
            for data in batch:
                with Image.open(io.BytesIO(data)) as image:
                    pixels.append(self.preprocess(image.convert("RGB")))
            return self.model.encode_image(self._stack(pixels))

        return self._embed("image", list(encoded), list(encoded), encode)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> L2-normalised embeddings (N, D), float32."""
        return self._embed("text", [t.encode("utf-8") for t in texts], list(texts),
                           lambda batch: self.model.encode_text(self.tokenizer(batch).to(self.device)))

    def _stack(self, tensors):
        import torch

        return torch.stack(tensors).to(self.device)

    def _embed(self, kind: str, contents: list[bytes], items: list, encode) -> np.ndarray:
        import torch

        keys = [content_key(self.fingerprint, kind, c) for c in contents]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                out = encode([items[i] for i in chunk]).float()
                out = torch.nn.functional.normalize(out, dim=-1).cpu().numpy()
                for i, vector in zip(chunk, out):
                    fresh[keys[i]] = vector
        self.cache.put_many(fresh)
        found.update(fresh)
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    # ------------------------------------------------------------ scores
    def __call__(self, records: list[dict[str, Any]], images: Any) -> list[dict[str, Any]]:
        todo = [r for r in records if schema.is_ok(r) and r.get("has_edited") is not False]
        if not todo:
            return records
        sources = self.embed_images([images.source_bytes(r["id"]) for r in todo])
        edits = self.embed_images([images.edited_bytes(r["id"]) for r in todo])
        texts = self.embed_texts([r.get("instruction_refined") or r.get("instruction") or "" for r in todo])
        for record, values in zip(todo, clip_scores(sources, edits, texts)):
            record["scores"] = {**(record.get("scores") or {}), **values}
        return records


def clip_scores(sources: np.ndarray, edits: np.ndarray, texts: np.ndarray) -> list[dict[str, float]]:
    """Per row: image-image cosine and directional cosine (omitted when the image embedding did not move)."""
    out = []
    for source, edited, text in zip(sources, edits, texts):
        values = {CLIP_IMAGE_SIM: float(_cosine(source, edited))}
        direction = edited - source
        if np.linalg.norm(direction) > _MIN_DIRECTION_NORM:
            values[CLIP_DIRECTION] = float(_cosine(direction, text))
        out.append(values)
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class TransformersClip:
    """A transformers CLIP (``CLIPModel`` + its ``CLIPProcessor``) loaded from a local folder, for the scores that
    benchmarks compute with it: every image and text goes through the processor saved with the model (resize, crop,
    normalisation, tokenizer), as the benchmarks' own code does. Nothing is downloaded (``local_files_only``).

    * :meth:`text_score` = ``max(100·cos(E(image), E(text)), 0)``, the image given to the processor as a uint8
      ``C×H×W`` tensor and the text on its own, truncated to the model's positions (torchmetrics' ``CLIPScore``);
    * :meth:`image_similarity` = ``cos(E(a), E(b))`` of two PIL images processed together.
    """

    def __init__(self, path: str | Path, device: str = "auto"):
        from transformers import CLIPModel, CLIPProcessor

        self.device = resolve_device(device)
        try:
            self.model = CLIPModel.from_pretrained(str(path), local_files_only=True).to(self.device).eval()
            self.processor = CLIPProcessor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as error:
            raise RuntimeError(
                f"cannot load a transformers CLIP (CLIPModel + CLIPProcessor) from {str(path)!r}: {error}. Point it at "
                "a local folder written by save_pretrained (e.g. a copy of openai/clip-vit-large-patch14)") from error

    def _normalized(self, features):
        import torch

        features = getattr(features, "pooler_output", features)  # some versions return an output object
        return features / torch.linalg.vector_norm(features, dim=-1, keepdim=True)

    def text_score(self, image: Any, text: str) -> float:
        """``max(100·cos, 0)`` between a PIL image and a caption (torchmetrics ``CLIPScore`` on one pair)."""
        import torch

        with torch.inference_mode():
            pixels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
            inputs = self.processor(images=[pixels], return_tensors="pt", padding=True)
            image_features = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
            tokens = self.processor(text=[text], return_tensors="pt", padding=True)
            limit = self.model.config.text_config.max_position_embeddings
            ids, attention = tokens["input_ids"][..., :limit], tokens["attention_mask"][..., :limit]
            text_features = self.model.get_text_features(input_ids=ids.to(self.device),
                                                         attention_mask=attention.to(self.device))
            score = 100 * (self._normalized(image_features) * self._normalized(text_features)).sum(-1)
        return max(float(score[0]), 0.0)

    def image_similarity(self, first: Any, second: Any) -> float:
        """Cosine between the embeddings of two PIL images, processed in one call."""
        import torch

        with torch.inference_mode():
            inputs = self.processor(images=[first, second], return_tensors="pt", padding=True)
            features = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
            features = getattr(features, "pooler_output", features)
            return float(torch.nn.functional.cosine_similarity(features[0:1], features[1:2])[0])
