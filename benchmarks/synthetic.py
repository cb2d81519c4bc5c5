"""Tiny GEdit-Bench / ImgEdit-Bench copies in exactly the public formats, with generated images.

The real benchmarks cannot be downloaded on these machines, so `editkit bench make-fixture` (the default input of the
DVC stages ``bench_gedit`` / ``bench_imgedit``) and the tests use these. Each scene is a gradient with one coloured
shape; the instruction talks about that shape. Beside the public files the fixture writes ``reference_masks/<key>.png``
(white = pixels that SHOULD change, our convention) so a build can be given known masks (``--masks``), standing in for
reviewed masks.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

COLORS = {"red": (220, 40, 40), "blue": (40, 70, 220), "green": (40, 180, 60), "yellow": (230, 210, 40)}
SHAPES = ("square", "circle")


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # HxWx3 uint8
    shape: str
    color: str
    object_mask: np.ndarray  # HxW bool


def make_scene(seed: int, height: int = 48, width: int = 64) -> Scene:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(60, 200, size=3)
    image = base + 0.6 * xx[..., None] * rng.uniform(-1, 1, 3) + 0.6 * yy[..., None] * rng.uniform(-1, 1, 3)
    image = image + rng.normal(0, 6, size=image.shape)  # texture, so SSIM has structure to compare
    shape, color = SHAPES[seed % len(SHAPES)], list(COLORS)[seed % len(COLORS)]
    cy, cx = rng.integers(height // 3, 2 * height // 3), rng.integers(width // 3, 2 * width // 3)
    r = max(4, min(height, width) // 5)
    if shape == "square":
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    else:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    image[mask] = COLORS[color]
    return Scene(np.clip(image, 0, 255).astype(np.uint8), shape, color, mask)


def _edit(kind: str, scene: Scene) -> tuple[str, str, np.ndarray]:
    """(English instruction, Chinese instruction, mask of pixels that should change) for one edit kind."""
    obj = f"the {scene.color} {scene.shape}"
    full = np.ones_like(scene.object_mask)
    corner = np.zeros_like(scene.object_mask)
    corner[: scene.image.shape[0] // 3, : scene.image.shape[1] // 3] = True
    table = {
        "remove": (f"Remove {obj}.", f"移除{scene.color}的{scene.shape}。", scene.object_mask),
        "recolor": (f"Change the color of {obj} to purple.", f"把{scene.shape}的颜色改成紫色。", scene.object_mask),
        "replace": (f"Replace {obj} with a cat.", f"把{scene.shape}换成一只猫。", scene.object_mask),
        "background": (f"Change the background to a beach, keep {obj}.", "把背景换成海滩。", ~scene.object_mask),
        "style": ("Turn the image into a watercolor painting.", "把图片变成水彩画风格。", full),
        "add": ("Add a small bird in the top left corner.", "在左上角加一只小鸟。", corner),
        "extract": (f"Extract {obj} onto a white background.", f"提取{scene.shape}。", full),
    }
    return table[kind]


GEDIT_KINDS = [("subject-remove", "remove"), ("color_alter", "recolor"), ("background_change", "background"),
               ("style_change", "style"), ("subject-add", "add"), ("subject-replace", "replace")]
IMGEDIT_KINDS = [("remove", "remove"), ("adjust", "recolor"), ("background", "background"), ("extract", "extract"),
                 ("replace", "replace"), ("add", "add"), ("style", "style")]


def _png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _save_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_png(np.where(mask, 255, 0).astype(np.uint8)))


def make_gedit_fixture(root: Path | str, n: int = 4, seed: int = 0, size: tuple[int, int] = (48, 64)) -> Path:
    """``root/data/train-00000-of-00001.parquet`` like the hub repository (``n`` instructions x en/cn rows)."""
    import datasets

    root = Path(root)
    rows: dict[str, list] = {name: [] for name in ("task_type", "key", "instruction", "instruction_language",
                                                  "input_image", "input_image_raw", "Intersection_exist")}
    for i in range(n):
        task_type, kind = GEDIT_KINDS[i % len(GEDIT_KINDS)]
        scene = make_scene(seed + i, *size)
        english, chinese, mask = _edit(kind, scene)
        key = f"{seed + i:032x}"[-32:]
        for language, text in (("en", english), ("cn", chinese)):
            rows["task_type"].append(task_type)
            rows["key"].append(key)
            rows["instruction"].append(text)
            rows["instruction_language"].append(language)
            rows["input_image"].append({"bytes": _png(scene.image), "path": None})
            rows["input_image_raw"].append({"bytes": _png(scene.image), "path": None})
            rows["Intersection_exist"].append(i % 2 == 0)
        _save_mask(root / "reference_masks" / f"{key}.png", mask)
    features = datasets.Features({
        "task_type": datasets.Value("string"), "key": datasets.Value("string"),
        "instruction": datasets.Value("string"), "instruction_language": datasets.Value("string"),
        "input_image": datasets.Image(), "input_image_raw": datasets.Image(),
        "Intersection_exist": datasets.Value("bool"),
    })
    out = root / "data" / "train-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(out))
    return root


FIXTURE_RUBRIC = (
    "You grade an image edit of type {kind}. The first image is the original, the second the edited result. "
    "The instruction was: <edit_prompt>\n"
    "Answer with one short reasoning line, then exactly these three lines with integer scores from 1 to 5:\n"
    "Prompt Compliance: <score>\nVisual Seamlessness: <score>\nPhysical & Detail Fidelity: <score>"
)


def make_imgedit_fixture(root: Path | str, n: int = 4, seed: int = 100, size: tuple[int, int] = (48, 64)) -> Path:
    """``root/Benchmark/Basic/{basic_edit,prompts}.json`` + ``root/Benchmark/singleturn/<category>/<file>.jpg``."""
    root = Path(root)
    basic = root / "Benchmark" / "Basic"
    images = root / "Benchmark" / "singleturn"
    entries, prompts = {}, {}
    for i in range(n):
        edit_type, kind = IMGEDIT_KINDS[i % len(IMGEDIT_KINDS)]
        scene = make_scene(seed + i, *size)
        english, _, mask = _edit(kind, scene)
        image_id = f"{'animal' if i % 2 else 'daily object'}/{seed + i:09d}.jpg"
        (images / image_id).parent.mkdir(parents=True, exist_ok=True)
        (images / image_id).write_bytes(_png(scene.image, "JPEG"))
        key = str(seed + i)
        entries[key] = {"id": image_id, "prompt": english, "edit_type": edit_type}
        prompts[edit_type] = FIXTURE_RUBRIC.format(kind=edit_type)
        _save_mask(root / "reference_masks" / f"{key}.png", mask)
    basic.mkdir(parents=True, exist_ok=True)
    (basic / "basic_edit.json").write_text(json.dumps(entries, indent=4, ensure_ascii=False), encoding="utf-8")
    (basic / "prompts.json").write_text(json.dumps(prompts, indent=2), encoding="utf-8")
    return root
