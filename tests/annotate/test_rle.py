"""annotate.rle against label-studio-sdk's brush converter (the independent reference)."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter import brush

from annotate.rle import mask_to_rle, rle_to_mask
from annotate.rle_decode import decode_runs


def _random_masks(rng, count):
    for i in range(count):
        height, width = (int(v) for v in rng.integers(1, 70, 2))
        kind = i % 3
        if kind == 0:
            yield rng.random((height, width)) < rng.random()
        elif kind == 1:  # long runs, incl. runs over 65,536 words on the larger sizes
            mask = np.zeros((height, width), dtype=bool)
            mask[rng.integers(0, height):, rng.integers(0, width):] = True
            yield mask
        else:
            yield rng.random((height, width)) < 0.02


def test_encoder_is_byte_identical_to_the_sdk_on_random_odd_sizes():
    rng = np.random.default_rng(0)
    for mask in _random_masks(rng, 150):
        assert mask_to_rle(mask) == brush.mask2rle(mask.astype(np.uint8) * 255)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (257, 255), (300, 300)])
@pytest.mark.parametrize("fill", [False, True])
def test_empty_and_full_masks(shape, fill):
    mask = np.full(shape, fill)
    rle = mask_to_rle(mask)
    assert rle == brush.mask2rle(mask.astype(np.uint8) * 255)
    assert np.array_equal(rle_to_mask(rle, *shape), mask)


def test_decoder_matches_the_sdk_decoder_alpha():
    rng = np.random.default_rng(1)
    for mask in _random_masks(rng, 60):
        rle = brush.mask2rle(mask.astype(np.uint8) * 255)
        alpha = brush.decode_rle(rle).reshape(*mask.shape, 4)[:, :, 3]
        assert np.array_equal(rle_to_mask(rle, *mask.shape), alpha > 0)


def _pack(bits: str) -> list[int]:
    bits += "0" * (-len(bits) % 8)
    return [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)]


def _random_stream(rng, word_bits: int, fields: list[int]):
    """An rle-pack stream mixing literal and repeat blocks, written bit by bit (the format's plain definition)."""
    words, body = [], ""
    for _ in range(int(rng.integers(1, 60))):
        index = int(rng.integers(0, 4))
        count = int(rng.integers(1, min(1 << fields[index], 40) + 1))
        repeat = bool(rng.integers(0, 2))
        body += ("1" if repeat else "0") + f"{index:02b}" + f"{count - 1:0{fields[index]}b}"
        values = [int(rng.integers(0, 1 << word_bits))] * count if repeat else list(rng.integers(0, 1 << word_bits, count))
        body += "".join(f"{v:0{word_bits}b}" for v in (values[:1] if repeat else values))
        words += [int(v) for v in values]
    header = f"{len(words):032b}{word_bits - 1:05b}" + "".join(f"{f - 1:04b}" for f in fields)
    return _pack(header + body), np.array(words)


def test_decoder_reads_literal_blocks_and_other_headers():
    rng = np.random.default_rng(2)
    for trial in range(80):
        word_bits = 8 if trial % 2 else int(rng.integers(1, 9))
        fields = [3, 4, 8, 16] if trial % 3 else [int(v) for v in rng.integers(1, 9, 4)]
        stream, words = _random_stream(rng, word_bits, fields)
        values, lengths, num = decode_runs(np.array(stream, dtype=np.uint8))
        assert num == words.size
        assert np.array_equal(np.repeat(values, lengths)[:num], words)
        assert np.array_equal(brush.decode_rle(bytes(stream)), words.astype(np.uint8))  # the reference agrees


def test_bad_input_gets_a_clear_message():
    rle = mask_to_rle(np.ones((4, 5), dtype=bool))
    with pytest.raises(ValueError, match="needs"):
        rle_to_mask(rle, 5, 5)
    with pytest.raises(ValueError, match="truncated"):
        rle_to_mask(rle[:8], 4, 5)
    with pytest.raises(ValueError, match="0..255"):
        rle_to_mask([1, 2, 300], 1, 1)
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.ones(3, dtype=bool))
