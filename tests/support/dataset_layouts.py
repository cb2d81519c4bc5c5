"""Tiny copies of the published editing datasets, each in its own layout and column schema, with generated images.

Every builder writes a few good pairs plus the oddities the preset must handle (an unmapped edit type, an extra
visual input, a path that leaves the dataset folder, a source known only by URL) and returns the folder.
The schemas follow the dataset cards / public code listed in docs/datasets.md.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

SIZE = 32


def photo(seed: int, size: int = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.integers(40, 160, 3)
    image = base + xx[..., None] * rng.uniform(0, 2, 3) + yy[..., None] * rng.uniform(0, 2, 3)
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 230).astype(np.uint8)  # no pure white pixels


def region(size: int = SIZE) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[8:20, 10:24] = True
    return mask


def edited(image: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    out = image.copy()
    out[region() if mask is None else mask] = (200, 30, 30)
    return out


def png(array: np.ndarray, fmt: str = "PNG") -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _parquet(path: Path, columns: dict[str, list], images: tuple[str, ...], lists: tuple[str, ...] = (),
             kinds: dict | None = None) -> None:
    """Write like the hub does: ``datasets`` Image features (``{bytes, path}`` structs) in a parquet file."""
    import datasets

    features = {}
    for name, values in columns.items():
        if kinds and name in kinds:
            features[name] = kinds[name]
        elif name in images:
            features[name] = datasets.Image()
        elif name in lists:
            features[name] = datasets.Sequence(datasets.Value("string"))
        else:
            sample = next((v for v in values if v is not None), "")
            kind = {bool: "bool", int: "int64", float: "float64"}.get(type(sample), "string")
            features[name] = datasets.Value(kind)
    cells = {k: [None if v is None else ({"bytes": v, "path": None} if k in images else v) for v in vs]
             for k, vs in columns.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(cells, features=datasets.Features(features)).to_parquet(str(path))


def _columns(n: int, seed: int, row) -> dict[str, list]:
    """Columns of ``n`` rows, row ``i`` being ``row(i, photo(seed + i))`` (a dict of cells, in column order)."""
    rows = [row(i, photo(seed + i)) for i in range(n)]
    return {name: [r[name] for r in rows] for name in rows[0]} if rows else {}


def hub_shard(split: str, index: int, count: int) -> str:
    """A shard name as ``push_to_hub`` wrote them: ``<split>-NNNNN-of-NNNNN-<16 hex digits>.parquet``."""
    import hashlib

    digest = hashlib.sha256(f"{split}/{index}".encode()).hexdigest()[:16]
    return f"{split}-{index:05d}-of-{count:05d}-{digest}.parquet"


def white_spots(image: np.ndarray) -> np.ndarray:
    """The photo with pure white pixels inside and outside :func:`region` (where white paint is ambiguous)."""
    out = image.copy()
    out[10:14, 12:16] = 255  # inside the region, touching its paint
    out[26:30, 2:6] = 255  # far from the region
    return out


def magicbrush_mask(image: np.ndarray, style: str = "alpha") -> bytes:
    """A MagicBrush ``mask_img``: the photo with the edited region erased (``alpha``: transparent, white underneath)
    or painted opaque white (``rgb``)."""
    if style == "rgb":
        painted = image.copy()
        painted[region()] = 255
        return png(painted)
    rgba = np.dstack([image, np.full(image.shape[:2], 255, np.uint8)])
    rgba[region()] = (255, 255, 255, 0)
    return png(rgba)


def magicbrush(root: Path, n: int = 3, mask_style: str = "alpha") -> Path:
    """As on the hub: ``data/train-0000k-of-00002-<hash>.parquet`` + ``data/dev-00000-of-00001-<hash>.parquet``
    (``img_id`` string, ``turn_index`` int32, Image features); ``mask_img`` is the photo (with white spots) whose edit
    region is erased to transparent white (``mask_style="rgb"``: painted opaque white instead)."""
    import datasets

    for split, offset, shards in (("train", 0, 2), ("dev", 100, 1)):
        rows: dict[str, list] = {k: [] for k in ("img_id", "turn_index", "source_img", "mask_img", "instruction",
                                                 "target_img")}
        for i in range(n):
            image = white_spots(photo(offset + i))
            rows["img_id"].append(str(242679 + offset + i // 2))
            rows["turn_index"].append(1 + i % 2)  # two turns of the same image share img_id
            rows["source_img"].append(png(image))
            rows["mask_img"].append(magicbrush_mask(image, mask_style))
            rows["instruction"].append(f"make the box red {i}")
            rows["target_img"].append(png(edited(image)))
        cut = [(k * n) // shards for k in range(shards + 1)]
        for k in range(shards):
            part = {name: values[cut[k]:cut[k + 1]] for name, values in rows.items()}
            _parquet(root / "data" / hub_shard(split, k, shards), part, ("source_img", "mask_img", "target_img"),
                     kinds={"turn_index": datasets.Value("int32")})
    return root


def ultraedit(root: Path, n: int = 3, region_based: bool = False) -> Path:
    split = "RegionBase" if region_based else "FreeForm"
    names = ["clip_sim_source", "clip_sim_target", "clip_sim_dir", "clip_sim_image", "dinov2_sim", "ssim",
             "source_caption", "target_caption", "idx", "edit_prompt", "source_image", "edited_image"]
    names += ["edit_object", "mask_image"] if region_based else []
    rows: dict[str, list] = {k: [] for k in names}
    for i in range(n):
        image = photo(200 + i)
        for score in names[:6]:
            rows[score].append(0.5 + i / 100)
        rows["source_caption"].append("a photo")
        rows["target_caption"].append("a photo with a red box")
        rows["idx"].append(1000 + i)
        rows["edit_prompt"].append(f"paint the box red {i}")
        rows["source_image"].append(png(image))
        rows["edited_image"].append(png(edited(image)))
        if region_based:
            rows["edit_object"].append("box")
            rows["mask_image"].append(png(np.where(region(), 255, 0).astype(np.uint8)))
    _parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows, ("source_image", "edited_image", "mask_image"))
    return root


OMNIEDIT_TASKS = ["addition", "removal", "swap", "attribute_modification", "background_swap", "environment",
                  "style", "mystery_task"]


def omniedit(root: Path, n: int = 8) -> Path:
    names = ["omni_edit_id", "task", "src_img", "edited_img", "edited_prompt_list", "width", "height", "sc_score_1",
             "sc_score_2", "sc_reasoning", "pq_score", "pq_reasoning", "o_score"]
    for part in range(2):
        rows: dict[str, list] = {k: [] for k in names}
        for i in range(part * n // 2, (part + 1) * n // 2):
            image = photo(300 + i)
            rows["omni_edit_id"].append(f"omni_{i:06d}")
            rows["task"].append(OMNIEDIT_TASKS[i % len(OMNIEDIT_TASKS)])
            rows["src_img"].append(png(image))
            rows["edited_img"].append(png(edited(image)))
            rows["edited_prompt_list"].append([f"Make the box red ({i}).", f"Turn the box red, keep the rest ({i})."])
            rows["width"].append(SIZE)
            rows["height"].append(SIZE)
            for k in ("sc_score_1", "sc_score_2", "pq_score"):
                rows[k].append(8)
            rows["sc_reasoning"].append("fine")
            rows["pq_reasoning"].append("fine")
            rows["o_score"].append(8.0)
        _parquet(root / "data" / f"train-0000{part}-of-00002.parquet", rows, ("src_img", "edited_img"),
                 ("edited_prompt_list",))
    return root


def instructpix2pix(root: Path, n: int = 3) -> Path:
    """As on the hub: ``data/train-0000k-of-00002-<hash>.parquet`` with ``original_prompt, original_image, edit_prompt,
    edited_prompt, edited_image``."""
    rows = _columns(n, 400, lambda i, image: {
        "original_prompt": "a box", "original_image": png(image), "edit_prompt": f"make it red {i}",
        "edited_prompt": "a red box", "edited_image": png(edited(image))})
    cut = n // 2
    for k, (start, stop) in enumerate(((0, cut), (cut, n))):
        part = {name: values[start:stop] for name, values in rows.items()}
        _parquet(root / "data" / hub_shard("train", k, 2), part, ("original_image", "edited_image"))
    return root


def hq_edit(root: Path, n: int = 3) -> Path:
    rows = _columns(n, 500, lambda i, image: {
        "input": "a box", "input_image": png(image), "edit": f"paint the box red {i}",
        "inverse_edit": "paint the box back", "output": "a red box", "output_image": png(edited(image))})
    _parquet(root / "data" / "train-00000-of-00001.parquet", rows, ("input_image", "output_image"))
    return root


ANYEDIT_TYPES = ["color_alter", "background_change", "material_change", "action_change", "tone_transfer",
                 "movement", "visual_sketch", "remove"]


def anyedit(root: Path, n: int = 8) -> Path:
    names = ["image_id", "edit_instruction", "edit_type", "image_file", "edited_file", "visual_input", "input", "output"]
    for split in ("train", "validation"):
        rows: dict[str, list] = {k: [] for k in names}
        for i in range(n):
            image = photo(600 + i + (50 if split == "train" else 0))
            kind = ANYEDIT_TYPES[i % len(ANYEDIT_TYPES)]
            rows["image_id"].append(f"coco_{i // 2:05d}")  # ids repeat across edits of one photo
            rows["edit_instruction"].append(f"{kind.replace('_', ' ')} please {i}")
            rows["edit_type"].append(kind)
            rows["image_file"].append(png(image))
            rows["edited_file"].append(png(edited(image)))
            rows["visual_input"].append(png(photo(700 + i)) if kind.startswith("visual") else None)
            rows["input"].append("a box")
            rows["output"].append("an edited box")
        _parquet(root / "data" / f"{split}-00000-of-00001.parquet", rows, ("image_file", "edited_file", "visual_input"))
    return root


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def imgedit(root: Path, n: int = 2) -> Path:
    """``Parquet/<task>_part1.parquet`` (lists of paths) + the unpacked tar folders; one path escapes the folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for t, task in enumerate(("add", "remove", "adjust")):
        inputs, outputs, prompts = [], [], []
        for i in range(n):
            image = photo(800 + 10 * t + i)
            folder = f"results_{task}_coco_part1/{t * 100 + i:06d}"
            _write(root / "Singleturn" / folder / "input.jpg", png(image, "JPEG"))
            _write(root / "Singleturn" / folder / "output.png", png(edited(image)))
            extra = [f"{folder}/reference.jpg"] if task == "add" and i == 0 else []
            if extra:
                _write(root / "Singleturn" / extra[0], png(photo(9)))
            inputs.append([f"{folder}/input.jpg", *extra])
            outputs.append([f"{folder}/output.png"])
            prompts.append(f"{task} something {i}")
        if task == "remove":  # a hostile row: its path leaves the dataset folder
            inputs.append(["../../outside.png"])
            outputs.append(["results_remove_coco_part1/x/output.png"])
            prompts.append("remove it")
        table = pa.table({"input_images": inputs, "output_images": outputs, "prompt": prompts})
        (root / "Parquet").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "Parquet" / f"{task}_part1.parquet")
    _write(root.parent / "outside.png", png(photo(1)))
    return root


def gpt_image_edit(root: Path, n: int = 2) -> Path:
    """``gpt-edit/hqedit/edit/{input,output}/`` and ``gpt-edit/omniedit/...`` + ``training_json/*.json``."""
    hq, omni = [], []
    for i in range(n):
        image = photo(900 + i)
        _write(root / "gpt-edit/hqedit/edit/input" / f"{i:08d}.png", png(image))
        _write(root / "gpt-edit/hqedit/edit/output" / f"{i:08d}.png", png(edited(image)))
        hq.append({"id": f"{i:08d}", "dataset_source": "hqedit", "task": "edit", "input": f"input/{i:08d}.png",
                   "output": f"output/{i:08d}.png", "instruction": f"make the box red {i}",
                   "instruction_type": "original", "input_description": "a box"})
        image = photo(950 + i)
        _write(root / "gpt-edit/omniedit/addition/input" / f"{i:08d}.png", png(image))
        _write(root / "gpt-edit/omniedit/addition/output" / f"{i:08d}.png", png(edited(image)))
        omni.append({"id": f"{i:08d}", "dataset_source": "omniedit", "task": "addition",
                     "input": f"addition/input/{i:08d}.png", "output": f"addition/output/{i:08d}.png",
                     "instruction": f"Add a red box to the middle of the picture {i}.",
                     "instruction_type": "rewrite", "input_description": "a wall",
                     "instruction_original": f"add a red box {i}"})
    omni.append({"id": "llava", "image": [f"addition/input/{0:08d}.png", f"addition/output/{0:08d}.png"],
                 "conversations": [{"from": "human", "value": "<image>\nadd a box (llava style)"},
                                   {"from": "gpt", "value": "<image>"}], "task": "addition"})
    (root / "training_json").mkdir(parents=True, exist_ok=True)
    (root / "training_json/hqedit_gpt_edit.json").write_text(json.dumps(hq))
    (root / "training_json/omniedit_gpt_rewrite.json").write_text(json.dumps(omni))
    return root


PICO_TYPES = ["Remove an existing object", "Add a new object to the scene", "Change overall color tone (warm ↔ cool)",
              "Zoom in", "Apply a seasonal transformation"]


def pico_banana(root: Path, n: int = 5) -> Path:
    """``sft.jsonl`` + ``images/positive-edit/<n>.png`` + downloaded sources; one URL-only, one escaping path."""
    lines = []
    for i in range(n):
        image = photo(1000 + i)
        _write(root / "openimages" / f"{i:016x}.jpg", png(image, "JPEG"))
        _write(root / "images/positive-edit" / f"{i + 1}.png", png(edited(image)))
        lines.append({"open_image_input_url": f"https://farm.example/{i}.jpg", "text": f"Turn the box red ({i}).",
                      "summarized_text": "red box", "output_image": f"images/positive-edit/{i + 1}.png",
                      "edit_type": PICO_TYPES[i % len(PICO_TYPES)], "local_input_image": f"openimages/{i:016x}.jpg"})
    lines.append({"open_image_input_url": "https://farm.example/url-only.jpg", "text": "no local source",
                  "summarized_text": "x", "output_image": "images/positive-edit/99.png", "edit_type": "Zoom in"})
    lines.append({"text": "escape", "summarized_text": "x", "output_image": "../../../etc/hostname",
                  "edit_type": "Zoom in", "local_input_image": f"openimages/{0:016x}.jpg"})
    (root / "sft.jsonl").write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines),
                                    encoding="utf-8")
    return root


def cocoedit_40k(root: Path, n: int = 3) -> Path:
    """CoCoEdit-40K unpacked: ``train_metadata.jsonl`` (``prompt, image, mask``) + the unzipped ``images_part1/`` and
    ``masks_part1/`` folders; masks are RGB PNGs where white marks the region to KEEP (the edit is black); the last
    mask is shipped at half the image size."""
    lines = []
    for i in range(n):
        image = photo(1200 + i)
        keep = np.where(region(), 0, 255).astype(np.uint8)
        if i == n - 1:
            keep = keep[::2, ::2]
        _write(root / "images_part1" / f"{i:06d}.jpg", png(image, "JPEG"))
        _write(root / "masks_part1" / f"{i:06d}.png", png(np.stack([keep] * 3, -1)))
        lines.append({"prompt": f"replace the box with a red ball {i}", "image": f"images_part1/{i:06d}.jpg",
                      "mask": f"masks_part1/{i:06d}.png"})
    (root / "train_metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


INTER_EDIT_TYPES = ["Add", "Remove", "Texture", "Local"]


def inter_edit(root: Path, n: int = 4) -> Path:
    """Inter-Edit-Train's release: ``metadata/train-0000k-of-00002.jsonl.gz`` + ``asset_shards/asset-0000k-of-00002.tar``.

    Manifest 0 gives its asset locations as ``{"shard", "member"}`` objects under ``source`` / ``target`` / ``mask``,
    manifest 1 as ``<shard>.tar/<member>`` strings under ``source_path`` / ``target_path`` / ``mask_path`` (the card
    does not spell these keys; the preset reads both). Masks are white = edit at the image size except one at half
    size (resized, flagged); boxes are given in a reference size of twice the image.
    """
    import gzip
    import tarfile

    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "asset_shards").mkdir(parents=True, exist_ok=True)
    for shard in range(2):
        shard_name = f"asset-{shard:05d}-of-00002.tar"
        lines = []
        with tarfile.open(root / "asset_shards" / shard_name, "w") as archive:
            for i in range(shard * n // 2, (shard + 1) * n // 2):
                image = photo(1100 + i)
                mask = np.where(region(), 255, 0).astype(np.uint8)
                if i == 1:  # a mask shipped at half the image size
                    mask = mask[::2, ::2]
                members = {"source": (f"{i:08d}_src.jpg", png(image, "JPEG")),
                           "target": (f"{i:08d}_tgt.png", png(edited(image))),
                           "mask": (f"{i:08d}_mask.png", png(mask))}
                for name, data in members.values():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
                line = {"instruction": f"make the box red {i}", "edit_type": INTER_EDIT_TYPES[i % 4],
                        "bounding_box": [20, 16, 48, 40], "bbox_reference_dimensions": [2 * SIZE, 2 * SIZE],
                        "better_data": i % 2 == 0}
                for role, (name, _) in members.items():
                    if shard == 0:
                        line[role] = {"shard": shard_name, "member": name}
                    else:
                        line[f"{role}_path"] = f"{shard_name.removesuffix('.tar')}.tar/{name}"
                lines.append(line)
        with gzip.open(root / "metadata" / f"train-{shard:05d}-of-00002.jsonl.gz", "wt", encoding="utf-8") as handle:
            handle.writelines(json.dumps(line) + "\n" for line in lines)
    return root


BUILDERS = {"magicbrush": magicbrush, "ultraedit": ultraedit, "omniedit": omniedit,
            "instructpix2pix": instructpix2pix, "hq_edit": hq_edit, "anyedit": anyedit, "imgedit": imgedit,
            "gpt_image_edit": gpt_image_edit, "pico_banana": pico_banana, "inter_edit": inter_edit,
            "cocoedit_40k": cocoedit_40k}
