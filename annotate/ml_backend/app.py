"""The Label Studio ML backend HTTP API over :class:`PromptMasker` (FastAPI).

Endpoints Label Studio calls: ``GET /health``, ``POST /setup`` (on connect: project, schema, hostname, token),
``POST /predict`` (``{"tasks", "project", "label_config", "params": {"context"}}`` -> ``{"results": [...]}``), and
``POST /webhook`` (training events; acknowledged, nothing is trained). Interactive predictions carry the reviewer's
prompt in ``params.context.result``: ``keypointlabels`` (percent x/y, ``is_positive``) and ``rectanglelabels``
(percent x/y/width/height). The answer is one brush region (Label Studio RLE) on the config's BrushLabels tag.

Images are read from the data folder directly (the backend runs on the same machine): a task's
``/data/local-files/?d=<path>`` URL must resolve inside ``data_root``; nothing is fetched over the network.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import numpy as np
from fastapi import FastAPI, HTTPException, Request  # at module level: the endpoints' annotations resolve here

from annotate.labeling import BRUSH, BRUSH_LABEL, IMAGE
from annotate.ml_backend.masker import Prompt
from annotate.rle import mask_to_rle

MODEL_VERSION = "editkit-sam2"


def brush_target(label_config: str | None) -> tuple[str, str, str, str]:
    """(BrushLabels name, its image name, first label, the image's $data key) from a labeling config."""
    name, to_name, label, key = BRUSH, IMAGE, BRUSH_LABEL, "source_image"
    if label_config:
        try:
            root = ET.fromstring(label_config)
        except ET.ParseError:
            return name, to_name, label, key
        brush = next(root.iter("BrushLabels"), None)
        if brush is not None:
            name, to_name = brush.get("name", name), brush.get("toName", to_name)
            first = next(brush.iter("Label"), None)
            label = first.get("value", label) if first is not None else label
        image = next((el for el in root.iter("Image") if el.get("name") == to_name), None)
        if image is not None and (image.get("value") or "").startswith("$"):
            key = image.get("value")[1:]
    return name, to_name, label, key


def prompt_from_context(context: dict[str, Any] | None) -> tuple[Prompt, tuple[int, int] | None]:
    """The reviewer's clicks/box (percent of the image) -> pixel prompt, plus the (width, height) they refer to."""
    prompt, size = Prompt(), None
    for item in (context or {}).get("result") or []:
        value = item.get("value") or {}
        try:
            width, height = int(item["original_width"]), int(item["original_height"])
            x, y = float(value["x"]) * width / 100.0, float(value["y"]) * height / 100.0
        except (KeyError, TypeError, ValueError):
            continue
        size = (width, height)
        if item.get("type") == "keypointlabels":
            prompt.points.append((x, y))
            prompt.labels.append(0 if item.get("is_positive") is False else 1)
        elif item.get("type") == "rectanglelabels":
            w, h = float(value.get("width", 0)) * width / 100.0, float(value.get("height", 0)) * height / 100.0
            prompt.box = (x, y, x + w, y + h)
    return prompt, size


def local_image(url: str, data_root: Path) -> Path:
    """The file behind a local-files URL, refusing anything outside ``data_root``."""
    query = parse_qs(urlparse(url).query)
    relative = (query.get("d") or [""])[0]
    if not relative:
        raise ValueError(f"not a local-files URL: {url!r}")
    root = data_root.resolve()
    path = (root / relative).resolve()
    if root not in path.parents or not path.is_file():
        raise ValueError(f"image {relative!r} is not a file inside the data folder")
    return path


def create_app(masker, data_root: Path | str, model_version: str = MODEL_VERSION):
    from editkit.store import decode_rgb

    app = FastAPI(title="editkit SAM2 ML backend")
    data_root = Path(data_root)
    state: dict[str, Any] = {"setups": 0}

    @app.get("/health")
    @app.get("/")
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "editkit.SAM2", "model_version": model_version}

    @app.post("/setup")
    async def setup(request: Request) -> dict[str, Any]:
        await request.json()  # project, schema, hostname, access_token: nothing to keep (images are local)
        state["setups"] += 1
        return {"model_version": model_version}

    @app.post("/webhook")
    async def webhook(request: Request) -> dict[str, Any]:
        await request.body()
        return {}

    @app.post("/predict")
    async def predict(request: Request) -> dict[str, Any]:
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
            raise HTTPException(400, "expected {'tasks': [...], 'params': {'context': ...}}")
        prompt, size = prompt_from_context((body.get("params") or {}).get("context"))
        if prompt.is_empty():
            return {"results": []}  # batch pre-annotation is not offered: masks come from the pipeline
        name, to_name, label, key = brush_target(body.get("label_config"))
        results = []
        for task in body["tasks"]:
            try:
                path = local_image(str((task.get("data") or {}).get(key, "")), data_root)
            except ValueError as error:
                raise HTTPException(400, str(error)) from None
            image = decode_rgb(path.read_bytes())
            if size is not None and size != (image.shape[1], image.shape[0]):
                raise HTTPException(400, f"prompt is for a {size[0]}x{size[1]} image, the task's is "
                                         f"{image.shape[1]}x{image.shape[0]}")
            mask, score = masker.predict(image, prompt)
            results.append({"model_version": model_version, "score": score, "result": [
                {"from_name": name, "to_name": to_name, "type": "brushlabels", "origin": "prediction",
                 "original_width": int(image.shape[1]), "original_height": int(image.shape[0]), "image_rotation": 0,
                 "value": {"format": "rle", "rle": mask_to_rle(np.asarray(mask)), "brushlabels": [label]}}]})
        return {"results": results}

    app.state.editkit = state
    return app
