"""curate.images.decode_pixels (OpenCV for PNG/JPEG) gives the pixels editkit.store.decode_rgb (PIL) gives."""
import io

import numpy as np
import pytest

from curate.images import decode_pair, decode_pixels
from editkit import store


def _image(seed: int, shape=(37, 53, 3)) -> np.ndarray:
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    smooth = resize(rng.random((6, 6, 3)), shape, order=3) * 200
    return np.clip(smooth + rng.integers(0, 56, shape), 0, 255).astype(np.uint8)


def _encode(image: np.ndarray, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("options", [
    {"format": "PNG"}, {"format": "PNG", "optimize": True},
    {"format": "JPEG", "quality": 60, "subsampling": 2}, {"format": "JPEG", "quality": 95, "subsampling": 0},
    {"format": "JPEG", "quality": 85, "subsampling": 1, "progressive": True},
    {"format": "WEBP", "lossless": True}, {"format": "BMP"}])
def test_decode_pixels_equals_pil(options):
    data = _encode(_image(len(str(options))), **options)
    pixels = decode_pixels(data)
    assert pixels.dtype == np.uint8 and pixels.shape == (37, 53, 3)
    assert np.array_equal(pixels, store.decode_rgb(data))


def test_decode_pair_reads_both_images_and_a_missing_edited(tmp_path):
    source, edited = _image(1), _image(2)
    store.write_image_shard(tmp_path, "shard-00000", [
        {"id": "a", "source": store.encode_png(source), "edited": _encode(edited, format="JPEG")},
        {"id": "b", "source": store.encode_png(source), "edited": None}])
    shard = store.ImageShard(tmp_path / "shard-00000.parquet")
    got_source, got_edited = decode_pair(shard, "a")
    assert np.array_equal(got_source, source) and np.array_equal(got_edited, shard.edited("a"))
    assert decode_pair(shard, "b")[1] is None


@pytest.mark.parametrize("options", [{"format": "PNG"}, {"format": "JPEG"}])
def test_cut_off_bytes_raise_as_in_pil(options):
    data = _encode(_image(3, (64, 64, 3)), **options)
    for cut in (data[:40], data[:len(data) // 2]):
        with pytest.raises(OSError):
            decode_pixels(cut)
