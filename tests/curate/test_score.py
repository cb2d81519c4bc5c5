"""Scores: pHash, mask geometry, background PSNR/SSIM outside the mask, CLIP with a tiny open-clip model."""
import io
import math

import numpy as np
import pytest

from editkit import rle, schema, store
from curate.scoring import phash
from curate.scoring.pair import PSNR_CAP_DB, SSIM_DECIMALS, mask_geometry, score_pairs
from tests.support.numerics import assert_close


def _jpeg(image, quality=90):
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def _photo(seed, size=128):
    """A smooth random 'photo' (low-frequency content, like real images)."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    return (resize(rng.random((8, 8, 3)), (size, size, 3), order=3) * 255).clip(0, 255).astype(np.uint8)


# ---------------------------------------------------------------- pHash
def test_phash_matches_a_closed_form_dct():
    from PIL import Image

    image = _photo(0)
    gray = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    small = np.asarray(Image.fromarray(gray, mode="F").resize((32, 32), Image.Resampling.BOX), dtype=np.float64)
    n = np.arange(32)  # orthonormal DCT-II basis written out
    basis = np.sqrt(2 / 32) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / 64)
    basis[0] /= np.sqrt(2)
    low = (basis @ small @ basis.T)[:8, :8].ravel()
    expected = int("".join("1" if v > np.median(low) else "0" for v in low), 2)
    assert phash.phash(image) == expected


def test_phash_is_robust_to_reencoding_and_separates_images():
    a, b = _photo(1), _photo(2)
    assert phash.hamming(phash.phash(a), phash.phash(_jpeg(a, 70))) <= 4
    assert phash.hamming(phash.phash(a), phash.phash(np.clip(a.astype(int) + 6, 0, 255).astype(np.uint8))) <= 4
    assert phash.hamming(phash.phash(a), phash.phash(b)) > 12


def test_hamming_against_python_popcount():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**63, 100, dtype=np.int64).astype(np.uint64) * np.uint64(2)
    b = rng.integers(0, 2**63, 100, dtype=np.int64).astype(np.uint64)
    assert list(phash.hamming(a, b)) == [bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)]


def test_change_hash_tells_two_edits_of_one_photo_apart():
    source = _photo(4)
    left, right = source.copy(), source.copy()
    left[10:40, 10:40] = [255, 0, 0]
    right[80:110, 80:110] = [255, 0, 0]
    h_left, h_right = phash.pair_hashes(source, left), phash.pair_hashes(source, right)
    assert h_left["source"] == h_right["source"]
    assert phash.hamming(h_left["change"], h_right["change"]) > 4


# ---------------------------------------------------------------- mask geometry
def test_mask_geometry_against_closed_forms_and_skimage():
    from skimage.measure import label

    yy, xx = np.mgrid[:200, :200]
    disc = (yy - 100) ** 2 + (xx - 100) ** 2 <= 60**2
    square = np.zeros((200, 200), bool)
    square[50:150, 50:150] = True
    strip = np.zeros((200, 200), bool)
    strip[90:110, 10:190] = True
    # closed form 4*pi*A/P^2; digital perimeter estimates overshoot curved boundaries by ~5% (so ~10% on a disc)
    assert_close(mask_geometry(disc)["mask_compactness"], 1.0, atol=0.12,
                 why="the digital perimeter overshoots a curved boundary by ~5 %, so P^2 by ~10 %")
    assert_close(mask_geometry(square)["mask_compactness"], math.pi / 4, atol=0.03,
                 why="the digital perimeter of a square's corners: a few pixels on 400")
    assert_close(mask_geometry(strip)["mask_compactness"], 4 * math.pi * 3600 / 400**2, atol=0.02,
                 why="the digital perimeter of a strip's corners: a few pixels on 400")
    rng = np.random.default_rng(5)
    for _ in range(5):
        mask = rng.random((40, 50)) > 0.7
        geometry = mask_geometry(mask)
        assert geometry["mask_area"] == mask.mean()
        assert geometry["mask_components"] == label(mask, connectivity=2).max()
    assert mask_geometry(np.zeros((4, 4), bool)) == {"mask_area": 0.0, "mask_components": 0.0}


# ---------------------------------------------------------------- score_pairs over an image shard
def _shard(tmp_path, pairs):
    store.write_image_shard(tmp_path, "shard-00000", [
        {"id": rid, "source": store.encode_png(s), "edited": store.encode_png(e)} for rid, (s, e) in pairs.items()])
    return store.ImageShard(tmp_path / "shard-00000.parquet")


def test_score_pairs_background_scores_and_rejects(tmp_path):
    rng = np.random.default_rng(6)
    source = _photo(6, 64)
    mask = np.zeros((64, 64), bool)
    mask[10:30, 20:50] = True
    edited = source.copy()
    edited[mask] = 255 - edited[mask]
    noisy = edited.copy()
    noisy[~mask] = np.clip(noisy[~mask].astype(int) + rng.integers(-8, 9, noisy[~mask].shape), 0, 255)
    pairs = {"clean": (source, edited), "noisy": (source, noisy), "global": (source, 255 - source),
             "sizes": (source, source[:32]), "nomask": (source, edited)}
    images = _shard(tmp_path, pairs)
    full = np.ones((64, 64), bool)
    records = [schema.new_record(id=rid, has_edited=True, mask=None if rid == "nomask" else rle.encode(
        full if rid == "global" else mask)) for rid in pairs]
    out = {r["id"]: r for r in score_pairs(records, images)}
    from skimage.metrics import structural_similarity

    assert out["clean"]["scores"]["bg_psnr"] == PSNR_CAP_DB  # identical background: +inf, capped
    diff = (noisy.astype(float) - source.astype(float))[~mask]
    expected = 10 * math.log10(255**2 / np.mean(diff**2))  # closed form over the NON-edited pixels only
    assert_close(out["noisy"]["scores"]["bg_psnr"], expected, dtype=np.float64, accumulations=diff.size,
                 growth="linear", why="float64 MSE summed over the background's values, in another order")
    for rid in ("clean", "noisy"):  # reference: scikit-image's full SSIM map averaged over the NON-edited region
        _, ssim_map = structural_similarity(source, pairs[rid][1], full=True, gaussian_weights=True, sigma=1.5,
                                            use_sample_covariance=False, data_range=255, channel_axis=-1)
        assert out[rid]["scores"]["bg_ssim"] == round(float(ssim_map[~mask].mean()), SSIM_DECIMALS)
    assert out["noisy"]["scores"]["bg_ssim"] < out["clean"]["scores"]["bg_ssim"]
    assert "bg_psnr" not in out["global"]["scores"] and out["global"]["scores"]["mask_area"] == 1.0
    assert out["sizes"]["status"] == "rejected" and "sizes differ" in out["sizes"]["reject_reason"]
    assert out["nomask"]["status"] == "rejected" and "no edit mask" in out["nomask"]["reject_reason"]
    assert set(out["clean"]["phash"]) == {"source", "edited", "change"}
    assert len(out) == len(records)  # nothing dropped



def _ssim_cases():
    """Pairs where float32 SSIM loses the most: photos with JPEG noise, noise, saturated flat regions, a ramp."""
    rng = np.random.default_rng(11)
    photo = _photo(12, 96)
    checker = (np.indices((64, 64)).sum(0) // 16 % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    ramp = np.tile(np.arange(0, 256, 2, dtype=np.uint8)[None, :, None], (40, 1, 3))
    jitter = lambda image: np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)
    return {"jpeg": (photo, _jpeg(photo, 70)), "checker": (checker, jitter(checker)), "ramp": (ramp, jitter(ramp)),
            "noise": (rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), rng.integers(0, 256, (48, 80, 3), np.uint8)),
            "flat": (np.full((32, 32, 3), 255, np.uint8), np.full((32, 32, 3), 250, np.uint8))}


@pytest.mark.parametrize("case", ["jpeg", "checker", "ramp", "noise", "flat"])
def test_float32_ssim_stays_within_its_rounding_guard(case):
    """The float64 moments path equals editkit.metrics.masked_ssim; float32 stays well inside the guard band the
    stored 4-decimal rounding relies on (masked_ssim_rounded)."""
    from curate.scoring.pair import _SSIM32_ERROR, masked_ssim_mean, masked_ssim_rounded
    from editkit.metrics import masked_ssim

    a, b = _ssim_cases()[case]
    region = np.ones(a.shape[:2], bool)
    region[3:9, 4:20] = False
    reference = masked_ssim(a / 255.0, b / 255.0, region)
    assert_close(masked_ssim_mean(a, b, region, np.float64), reference, dtype=np.float64,
                 accumulations=11 * 11 * a.size, growth="linear", why="float64 moments, centred, blurred by OpenCV")
    assert abs(masked_ssim_mean(a, b, region, np.float32) - reference) < _SSIM32_ERROR / 2
    assert masked_ssim_rounded(a, b, region) == round(reference, SSIM_DECIMALS)

# ---------------------------------------------------------------- CLIP
@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir):
    import torch

    # Tiny ops on a shared 2-core machine: one thread avoids oversubscription stalls (10x slower otherwise).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield "local-dir:" + str(tiny_clip_dir)  # one build per session (tests/conftest.py)
    torch.set_num_threads(threads)


def _steer(model, preprocess_size, image, text_embedding, sign, steps=60):
    """Edit ``image`` by gradient steps on its pixels so its CLIP embedding moves toward (+1) / away (-1) from text."""
    import torch

    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None] / 255
    x.requires_grad_(True)
    for _ in range(steps):
        small = torch.nn.functional.interpolate(x, size=preprocess_size, mode="bilinear", antialias=True)
        emb = torch.nn.functional.normalize(model.encode_image((small - mean) / std), dim=-1)
        (-(sign * emb @ text_embedding.T).sum()).backward()
        with torch.no_grad():
            x -= 0.02 * x.grad.sign()
            x.clamp_(0, 1)
            x.grad.zero_()
    return (x[0].permute(1, 2, 0).detach().numpy() * 255).round().astype(np.uint8)


def test_directional_clip_sign_on_a_constructed_case(tiny_clip, tmp_path):
    import torch

    from editkit.clip import ClipScorer

    scorer = ClipScorer(tiny_clip, device="cpu", batch_size=2, cache_dir=tmp_path / "cache")
    instruction = "make the sky purple"
    text = torch.tensor(scorer.embed_texts([instruction]))
    source = _photo(7, 32)
    toward = _steer(scorer.model, (32, 32), source, text, +1)
    away = _steer(scorer.model, (32, 32), source, text, -1)
    images = _shard(tmp_path, {"toward": (source, toward), "away": (source, away)})
    records = [schema.new_record(id=i, has_edited=True, instruction="x", instruction_refined=instruction)
               for i in ("toward", "away")]
    out = {r["id"]: r["scores"] for r in scorer(records, images)}
    assert out["toward"]["clip_direction"] > 0.2 and out["away"]["clip_direction"] < -0.2
    assert -1 <= out["toward"]["clip_image_sim"] <= 1
    # independent reference: the same cosines from the model directly
    from PIL import Image

    emb = lambda a: torch.nn.functional.normalize(scorer.model.encode_image(scorer.preprocess(Image.fromarray(a))[None]), dim=-1)[0]
    with torch.no_grad():
        d = emb(toward) - emb(source)
        # the tiny CLIP's image tower: 64-wide sums through 2 layers, batched (2) vs one image, in float32
        chain = 64 * 2
        assert_close(out["toward"]["clip_direction"], d @ text[0] / d.norm(), dtype=torch.float32,
                     accumulations=chain, scale=1.0, why="cosines of embeddings from a batched vs a single forward")
        assert_close(out["toward"]["clip_image_sim"], emb(toward) @ emb(source), dtype=torch.float32,
                     accumulations=chain, scale=1.0, why="cosines of embeddings from a batched vs a single forward")
    # second scorer on the same cache: every embedding is a hit and the scores are identical
    again = ClipScorer(tiny_clip, device="cpu", cache_dir=tmp_path / "cache")
    records = [schema.new_record(id=i, has_edited=True, instruction=instruction) for i in ("toward", "away")]
    assert {r["id"]: r["scores"] for r in again(records, images)} == out  # cached vectors: bit-identical
    assert again.cache.misses == 0 and again.cache.hits == 4  # unique keys: one source, two edits, one text


def test_clip_load_failure_is_a_clear_error(tmp_path):
    from editkit.clip import ClipScorer

    with pytest.raises((RuntimeError, FileNotFoundError), match="local-dir|enabled: false"):
        ClipScorer(f"local-dir:{tmp_path / 'missing'}", device="cpu")


def test_score_stage_with_clip_on_the_sample(sample_ingest_dir, tiny_clip, tmp_path):
    """The stage end to end on real photos, CLIP enabled through params exactly as for a real checkpoint."""
    from editkit.pipeline import run_stage
    from curate.stages import score as score_stage

    def gt_masks(records, _images):
        for record in records:
            if schema.is_ok(record):
                record["mask"] = record["gt_mask"]
        return records

    run_stage("masks", sample_ingest_dir / "records", tmp_path / "masks", gt_masks, progress=False)
    params = score_stage.ScoreParams(device="cpu", clip=score_stage.ClipParams(
        enabled=True, model=tiny_clip, pretrained=None, cache_dir=str(tmp_path / "cache")))
    metrics = score_stage.run(params, tmp_path / "masks", sample_ingest_dir / "images", tmp_path / "score")
    assert metrics["clip_enabled"] and metrics["clip_device"] == "cpu" and metrics["clip_cache"]["misses"] > 0
    records = [r for _, shard in store.iter_records(tmp_path / "score") for r in shard if schema.is_ok(r)]
    assert records and all({"clip_image_sim", "clip_direction", "mask_area"} <= set(r["scores"]) for r in records)
    assert all(r["phash"] is not None for r in records)
    overall = metrics["by_edit_type"]["all"]
    assert overall["records"] == len(records) and -1 <= overall["mean_clip_direction"] <= 1


def test_damaged_image_bytes_are_rejected_with_a_reason(tmp_path):
    source = _photo(8, 32)
    store.write_image_shard(tmp_path, "shard-00000", [
        {"id": "bad", "source": store.encode_png(source), "edited": store.encode_png(source)[:40]},
        {"id": "gone", "source": store.encode_png(source), "edited": None}])
    images = store.ImageShard(tmp_path / "shard-00000.parquet")
    full = rle.encode(np.ones((32, 32), bool))
    records = [schema.new_record(id=i, has_edited=True, mask=full) for i in ("bad", "gone", "unknown")]
    out = {r["id"]: r for r in score_pairs(records, images)}
    assert out["bad"]["reject_reason"].startswith("cannot decode image")
    assert out["gone"]["reject_reason"] == "edited image missing"
    assert out["unknown"]["reject_reason"] == "images missing from the image shard"
    assert all(r["reject_stage"] == "score" for r in out.values())


def test_embedding_cache_round_trip_and_keys(tmp_path):
    from editkit.embedding_cache import EmbeddingCache, content_key

    assert content_key("model-a", "image", b"x") != content_key("model-b", "image", b"x")
    assert content_key("m", "image", b"x") != content_key("m", "text", b"x")
    vectors = {content_key("m", "image", i.to_bytes(2, "little")): np.random.default_rng(i).random(7).astype(np.float32)
               for i in range(600)}  # more than one SQLite parameter chunk
    cache = EmbeddingCache(tmp_path)
    cache.put_many(vectors)
    cache.close()
    found = EmbeddingCache(tmp_path).get_many(list(vectors) + ["missing"])
    assert set(found) == set(vectors) and all(np.array_equal(found[k], v) for k, v in vectors.items())
    assert EmbeddingCache(None).get_many(list(vectors)[:3]) == {}


def test_stored_scores_do_not_depend_on_the_cpus_simd_kernels(tmp_path):
    """OpenCV picks SIMD kernels per CPU; switching them off here stands in for another machine. The score stage's
    stored values (what goes into the shards, hence dvc.lock) must be the same bits either way."""
    import cv2

    from curate.stages.score import ScoreParams, ScoreStep

    rng = np.random.default_rng(3)
    pairs = []
    for i in range(6):
        source = _photo(10 + i, 160)
        edited = _jpeg(source, quality=60 + 5 * i).copy()
        mask = np.zeros((160, 160), bool)
        mask[20 + i * 5:90, 30:100 + i * 4] = True
        edited[mask] = rng.integers(0, 256, (int(mask.sum()), 3), dtype=np.uint8)
        pairs.append((f"p{i}", source, edited, mask))
    step = ScoreStep(ScoreParams(workers=1))

    def scores(optimized: bool) -> list[dict]:
        shard = _shard(tmp_path / str(optimized), {rid: (s, e) for rid, s, e, _ in pairs})
        records = [schema.new_record(id=rid, has_edited=True, mask=rle.encode(m)) for rid, _, _, m in pairs]
        previous = cv2.useOptimized()
        cv2.setUseOptimized(optimized)
        try:
            return [r["scores"] for r in step(records, shard)]
        finally:
            cv2.setUseOptimized(previous)

    fast, plain = scores(True), scores(False)
    assert all(len(s) >= 5 for s in fast)
    assert [{k: v.hex() for k, v in s.items()} for s in fast] == [{k: v.hex() for k, v in s.items()} for s in plain]


def test_stored_rounding_is_decimal_and_leaves_specials():
    from editkit.scores import stored

    assert stored(0.95725863822) == 0.957259 and stored(29.774582665612918) == stored(29.77458266561291) == 29.7746
    assert stored(None) is None and math.isnan(stored(float("nan"))) and stored(float("inf")) == float("inf")
