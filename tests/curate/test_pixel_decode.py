"""curate.images.decode_pixels (libspng / OpenCV for PNG, OpenCV for JPEG) gives the pixels editkit.store.decode_rgb
(PIL) gives."""
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


@pytest.mark.parametrize("mode", ["RGB", "RGB-opencv", "RGB-tRNS", "RGBA", "L", "LA", "P", "I;16"])
def test_every_png_kind_decodes_as_pil(mode):
    """8-bit RGB PNGs take libspng; every other PNG kind (alpha, grey, palette, 16-bit) takes another decoder, and
    all give PIL's pixels."""
    import cv2
    from PIL import Image

    from curate import images

    rgb = _image(7, (29, 41, 3))
    if mode == "RGB-opencv":  # another encoder's filters and compression
        data = cv2.imencode(".png", rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])[1].tobytes()
    else:
        image, options = Image.fromarray(rgb), {}
        if mode == "RGB-tRNS":
            options["transparency"] = tuple(int(v) for v in rgb[0, 0])
        elif mode == "I;16":
            image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
        elif mode == "P":
            image = image.quantize(16)
        elif mode != "RGB":
            image = image.convert(mode)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", **options)
        data = buffer.getvalue()
    spng_calls = []
    original = images._spng_rgb
    images._spng_rgb = lambda raw: spng_calls.append(1) or original(raw)
    try:
        pixels = decode_pixels(data)
    finally:
        images._spng_rgb = original
    assert bool(spng_calls) == (mode.startswith("RGB") and mode != "RGBA")  # libspng takes 8-bit RGB only
    assert np.array_equal(pixels, store.decode_rgb(data))


def test_damaged_rgb_png_raises_as_in_pil():
    data = bytearray(store.encode_png(_image(4, (64, 64, 3))))
    data[60:80] = bytes(20)  # inside the image data: a CRC error, the end marker intact
    with pytest.raises(OSError):
        store.decode_rgb(bytes(data))
    with pytest.raises(OSError):
        decode_pixels(bytes(data))
