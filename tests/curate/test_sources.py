"""Sources and image validation: the built-in sample's masks, every kind of bad input, folder and HF sources."""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from editkit import rle, schema
from curate import images
from curate.sources import edits
from curate.sources.folder import FolderParams, FolderSource
from curate.sources.hf import HFParams, HFSource
from curate.sources.sample import SampleParams, SampleSource, generate
from curate.stages.ingest import IngestParams, run_ingest, to_record
from editkit.store import read_records

POLICY = images.ImagePolicy()


def encode(array_or_image, fmt="PNG", **kwargs) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def photo(h=48, w=64, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------------------------- built-in sample
def test_sample_is_deterministic_and_independent_of_n():
    small = list(SampleSource(SampleParams(n=3, size=64, seed=7)))
    again = list(SampleSource(SampleParams(n=6, size=64, seed=7)))[:3]
    other_seed = list(SampleSource(SampleParams(n=3, size=64, seed=8)))
    for a, b in zip(small, again):
        assert (a.source, a.edited, a.instruction) == (b.source, b.edited, b.instruction)
        np.testing.assert_array_equal(a.gt_mask, b.gt_mask)
    assert [p.source for p in small] != [p.source for p in other_seed]


def test_sample_gt_mask_is_exactly_the_changed_pixels_before_jitter():
    params = SampleParams(n=12, size=96, seed=3, degrade_fraction=0.5)
    seen_types, degraded = set(), 0
    for index in range(params.n):
        sample = generate(params, index)
        edit = sample.edit
        seen_types.add(edit.edit_type)
        assert edit.edit_type in edits.EDITS and edit.instruction and edit.target_phrases
        changed = np.any(edit.source.astype(int) != sample.edited_clean.astype(int), axis=-1)
        if edit.edit_type == "style":
            assert sample.gt_mask.all() and changed.mean() > 0.3
        else:
            np.testing.assert_array_equal(sample.gt_mask, changed)
            # the mask is the intended region, not a sliver of it
            assert 0 < changed.sum() and changed.sum() >= 0.8 * edit.region.sum()
        stored = np.asarray(Image.open(io.BytesIO(sample.edited_bytes)).convert("RGB"))
        if sample.degradation["degraded"]:
            degraded += 1
            outside = ~sample.gt_mask
            # jitter + JPEG touch most pixels outside the edit: a naive diff would not recover the mask
            assert np.any(stored != edit.source, axis=-1)[outside].mean() > 0.5
        else:
            np.testing.assert_array_equal(stored, sample.edited_clean)
    assert seen_types == set(edits.EDITS) and degraded > 0


def test_sample_rejects_bad_params():
    with pytest.raises(ValueError, match="edit_types"):
        SampleParams(edit_types=["teleport"])
    with pytest.raises(ValueError, match="degrade_fraction"):
        SampleParams(degrade_fraction=2)


# ----------------------------------------------------------------------------------------------- image policies
def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 100000 x 100000 pixels (the pixel data is never read)."""
    data = bytearray(encode(photo(4, 4)))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", 100_000, 100_000)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def test_mode_conversions_follow_the_documented_policy():
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[:4] = (255, 0, 0, 255)  # opaque red top half, transparent bottom half
    out = np.asarray(images.decode(encode(rgba), "source", POLICY).image)
    assert (out[:4] == (255, 0, 0)).all() and (out[4:] == 255).all()  # composited on white

    sixteen = np.array([[0, 65535], [32896, 257]], np.uint16)
    out = np.asarray(images.decode(encode(Image.fromarray(sixteen)), "source", POLICY).image)
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [128, 1]])

    cmyk = Image.new("CMYK", (6, 6), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(images.decode(encode(cmyk, "JPEG"), "source", POLICY).image)
    assert out.shape == (6, 6, 3) and out[..., 0].mean() > 200 and out[..., 1:].mean() < 60

    gray = images.decode(encode(Image.fromarray(np.full((5, 5), 77, np.uint8))), "source", POLICY).image
    assert gray.mode == "RGB" and np.asarray(gray)[0, 0].tolist() == [77, 77, 77]


def _png48(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = rgb16.shape
    raw = b"".join(b"\x00" + rgb16[y].astype(">u2").tobytes() for y in range(h))
    chunk = lambda kind, body: struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))  # noqa: E731
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_48bit_png_is_reencoded_as_8bit():
    rgb16 = np.random.default_rng(1).integers(0, 65536, (5, 7, 3)).astype(np.uint16)
    pair = images.normalize_pair(_png48(rgb16), encode(photo(5, 7)), POLICY)
    stored = Image.open(io.BytesIO(pair.source))
    assert stored.mode == "RGB" and pair.source[24] == 8
    assert np.abs(np.asarray(stored).astype(int) - rgb16 / 257).max() <= 1


def test_exif_orientation_is_applied():
    image = Image.fromarray(photo(20, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = images.decode(encode(image, "JPEG", exif=exif.tobytes()), "source", POLICY)
    assert decoded.image.size == (20, 40) and not decoded.kept_as_is


@pytest.mark.parametrize(
    "source, category",
    [
        (None, "missing source image"),
        (b"not an image at all", "corrupt source image"),
        ("truncated", "truncated source image"),
        ("bomb", "image too large"),
    ],
)
def test_bad_bytes_are_clear_problems(source, category):
    if source == "truncated":
        full = encode(photo(64, 64), "JPEG", quality=90)
        source = full[: len(full) // 2]
    elif source == "bomb":
        source = _bomb_png()
    with pytest.raises(images.ImageProblem) as problem:
        images.normalize_pair(source, encode(photo()), POLICY)
    assert problem.value.category == category


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(images.ImageProblem, match="image too large: source is 64x48 = 3072 pixels > 1000"):
        images.normalize_pair(encode(photo()), encode(photo()), images.ImagePolicy(max_pixels=1000))
    with pytest.raises(ValueError, match="max_pixels"):
        images.ImagePolicy(max_pixels=10**12)


def test_size_policy_resizes_same_aspect_and_rejects_other_aspect():
    src = encode(photo(48, 64))
    ok = images.normalize_pair(src, encode(photo(96, 128, seed=1)), POLICY)
    assert (ok.width, ok.height) == (64, 48) and "edited_resized" in ok.flags
    assert Image.open(io.BytesIO(ok.edited)).size == (64, 48)
    assert ok.source == src  # already 8-bit RGB PNG: the bytes are kept as they came
    with pytest.raises(images.ImageProblem, match="size mismatch"):
        images.normalize_pair(src, encode(photo(48, 48)), POLICY)
    small = images.normalize_pair(src, encode(photo(48, 64)), images.ImagePolicy(max_side=32))
    assert (small.width, small.height) == (32, 24) and "downscaled" in small.flags


# ----------------------------------------------------------------------------------------------- folder source
def build_folder(root) -> dict[str, str]:
    """Good pairs plus every kind of bad input; returns origin_key -> expected reject category ("" = ok)."""
    (root / "img").mkdir(parents=True)

    def write(name: str, data: bytes) -> str:
        (root / "img" / name).write_bytes(data)
        return f"img/{name}"

    base = photo(48, 64)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:20, 10:30] = 255
    rgba = np.dstack([base, np.full((48, 64), 128, np.uint8)])
    full = encode(photo(48, 64, 5), "JPEG")
    lines, expected = [], {}

    def add(key, source, edited, category="", **extra):
        lines.append(json.dumps({"id": key, "source": source, "edited": edited, "instruction": f"edit {key}", **extra}))
        expected[key] = category

    add("good", write("good_s.png", encode(base)), write("good_e.png", encode(photo(48, 64, 1))),
        mask=write("good_m.png", encode(mask)), edit_type="recolor")
    add("good_jpeg", write("j_s.jpg", encode(base, "JPEG")), write("j_e.jpg", encode(photo(48, 64, 2), "JPEG")))
    add("cmyk", write("c_s.jpg", encode(Image.fromarray(base).convert("CMYK"), "JPEG")), write("c_e.png", encode(base)))
    add("sixteen", write("g16.png", encode(Image.fromarray((photo(48, 64)[..., 0].astype(np.uint16) * 257)))),
        write("g16_e.png", encode(base)))
    add("rgba", write("a_s.png", encode(rgba)), write("a_e.png", encode(base)))
    add("gray", write("l_s.png", encode(base[..., 0])), write("l_e.png", encode(base)))
    add("resized", write("r_s.png", encode(base)), write("r_e.png", encode(photo(96, 128, 3))))
    add("truncated", write("t_s.jpg", full[: len(full) // 2]), write("t_e.png", encode(base)), "truncated source image")
    add("mismatch", write("m_s.png", encode(base)), write("m_e.png", encode(photo(64, 64))), "size mismatch")
    add("missing", "img/does_not_exist.png", write("x_e.png", encode(base)), "missing source image")
    add("bomb", write("bomb.png", _bomb_png()), write("b_e.png", encode(base)), "image too large")
    add("corrupt", write("junk.jpg", b"\xff\xd8 junk"), write("k_e.png", encode(base)), "corrupt source image")
    add("badtype", write("bt_s.png", encode(base)), write("bt_e.png", encode(photo(48, 64, 9))), "unknown edit type",
        edit_type="teleport")
    add("dup", "img/good_s.png", "img/good_e.png", "duplicate")
    lines[-1] = lines[-1].replace('"instruction": "edit dup"', '"instruction": "edit good"')
    for bad in ("{this is not json", json.dumps({"source": "img/good_s.png", "instruction": "no edited image"}),
                json.dumps({"source": 12, "edited": "img/good_e.png", "instruction": "a number as a path"})):
        lines.append(bad)
        expected[f"line {len(lines)}"] = "malformed pairs line"  # no id: the key is the line number
    (root / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return expected


def test_folder_source_every_input_ends_ok_or_rejected_with_its_reason(tmp_path):
    expected = build_folder(tmp_path / "pairs")
    source = FolderSource(FolderParams(path=str(tmp_path / "pairs")))
    assert len(source) == len(expected)
    metrics = run_ingest(source, tmp_path / "out", IngestParams(), progress=False)
    records = read_records(tmp_path / "out" / "records", "shard-00000")
    by_key = {r["origin_key"]: r for r in records}
    assert set(by_key) == set(expected) and len(records) == len(expected)
    for key, category in expected.items():
        record = by_key[key]
        if category:
            assert record["status"] == "rejected" and record["reject_reason"].startswith(category), (key, record)
            assert record["reject_stage"] == "ingest"
        else:
            assert schema.is_ok(record), (key, record["reject_reason"])
            assert (record["width"], record["height"]) == (64, 48)
    assert np.array_equal(rle.decode(by_key["good"]["gt_mask"]), np.asarray(Image.open(tmp_path / "pairs/img/good_m.png")) > 127)
    assert by_key["good"]["scope"] == "local" and "edited_resized" in by_key["resized"]["flags"]
    assert metrics["ok"] == sum(1 for c in expected.values() if not c)
    assert metrics["rejects"]["size mismatch"] == 1 and metrics["rejects"]["malformed pairs line"] == 3


def test_non_text_cells_are_rejected_not_crashing():
    from curate.sources import RawPair

    record, row = to_record(RawPair("hf:x", "row 0", 5, encode(photo()), encode(photo()), edit_type=3), POLICY)
    assert row is None and record["reject_reason"] == "missing instruction: not text: int"
    record, _ = to_record(RawPair("hf:x", "row 1", "ok", encode(photo()), encode(photo()), edit_type=3), POLICY)
    assert record["reject_reason"].startswith("unknown edit type: '3'")
    schema.to_table([record])  # still writable


def test_folder_source_config_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="path is empty"):
        FolderSource(FolderParams())
    with pytest.raises(FileNotFoundError, match="pairs.jsonl"):
        FolderSource(FolderParams(path=str(tmp_path)))


# ----------------------------------------------------------------------------------------------- HF source
def test_hf_dataset_saved_to_disk(tmp_path):
    import datasets

    base = [photo(32, 32, s) for s in range(3)]
    mask = np.zeros((32, 32), np.uint8)
    mask[:8] = 255
    features = datasets.Features({"key": datasets.Value("string"), "src": datasets.Image(), "out": datasets.Image(),
                                  "prompt": datasets.Value("string"), "m": datasets.Image(), "kind": datasets.Value("string")})
    rows = {
        "key": ["a", "b", "c"],
        "src": [{"bytes": encode(b), "path": None} for b in base],
        "out": [{"bytes": encode(base[1]), "path": None}, {"bytes": b"broken", "path": None}, None],
        "prompt": ["make it blue", "x", "y"],
        "m": [{"bytes": encode(mask), "path": None}, None, None],
        "kind": ["recolor", "add", "add"],
    }
    dataset = datasets.Dataset.from_dict(rows, features=features)
    dataset.save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "files").mkdir()
    dataset.to_parquet(str(tmp_path / "files" / "train.parquet"))  # a data folder, read by load_dataset
    params = HFParams(path=str(tmp_path / "ds"), source_column="src", edited_column="out", instruction_column="prompt",
                      id_column="key", mask_column="m", edit_type_column="kind")
    source = HFSource(params)
    assert len(source) == 3
    records = [to_record(pair, POLICY)[0] for pair in source]
    assert [r["origin_key"] for r in records] == ["a", "b", "c"]
    assert schema.is_ok(records[0]) and records[0]["origin"] == "hf:ds"
    assert rle.decode(records[0]["gt_mask"])[:8].all() and rle.area(records[0]["gt_mask"]) == 8 * 32
    assert records[1]["reject_reason"].startswith("corrupt edited image")
    assert records[2]["reject_reason"].startswith("missing edited image")
    from_files = [to_record(pair, POLICY)[0] for pair in HFSource(dataclasses.replace(params, path=str(tmp_path / "files")))]
    assert [r["id"] for r in from_files][:2] == [r["id"] for r in records][:2]  # same content, same id
    assert [r["reject_reason"] for r in from_files] == [r["reject_reason"] for r in records]
    with pytest.raises(ValueError, match="not in the dataset"):
        HFSource(HFParams(path=str(tmp_path / "ds")))
    with pytest.raises(RuntimeError, match="could not load the Hugging Face dataset"):
        HFSource(HFParams(path=str(tmp_path / "no_such_dataset_dir")))
