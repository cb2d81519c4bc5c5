"""Label Studio brush RLE <-> boolean masks, vectorised with numpy.

Label Studio stores a brush region as ``@thi.ng/rle-pack`` bits over the RGBA buffer of the image
(``4 * height * width`` 8-bit words, row-major, channels interleaved). The stream is::

    32 bits  number of words            5 bits  word size - 1         4 x 4 bits  run-size field widths - 1
    then blocks:  1 bit repeat?  2 bits size index  <size> bits count-1  then 1 word (repeat) or count words

The painted pixels are the ones with a non-zero alpha (LS's editor sets all four channels to 255 there). Our mask
convention (True = pixels that SHOULD change) maps to painted pixels one to one.

:func:`mask_to_rle` reproduces ``label_studio_sdk.converter.brush.mask2rle(mask * 255)`` byte for byte (including
its quirks: runs over 65,536 words are split, and a stream that already ends on a byte boundary gets a full zero
byte of padding). :func:`rle_to_mask` decodes any valid stream (any word size, run-size table and literal blocks).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from annotate.rle_decode import HEADER_BITS, decode_runs

# mask2rle's fixed header: word size 8, run-size field widths (3, 4, 8, 16).
_WORD_BITS = 8
_RUN_FIELD_BITS = np.array([3, 4, 8, 16], dtype=np.int64)
_MAX_RUN = 1 << 16  # the widest run field (16 bits) counts at most 65,536 words
_CHANNELS = 4


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """HxW mask (bool, or integers where non-zero = painted) -> Label Studio brush RLE (list of byte values)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    if mask.size == 0:
        raise ValueError("mask is empty (zero height or width)")
    flat = mask.ravel() if mask.dtype == bool else (mask != 0).ravel()  # a bool mask is read in place (no copy)
    num_words = flat.size * _CHANNELS
    if num_words >= 1 << 32:
        raise ValueError(f"mask of {flat.size} pixels is too large for Label Studio's 32-bit word count")

    # Pixel runs; each pixel is 4 identical RGBA words, so word runs are 4x pixel runs.
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], change))
    run_words = np.diff(np.concatenate((starts, [flat.size]))).astype(np.int64) * _CHANNELS
    run_values = np.where(flat[starts], 255, 0).astype(np.int64)

    # Runs longer than 65,536 words become full 65,536-word chunks plus the remainder (the SDK's while loop).
    chunks = (run_words - 1) // _MAX_RUN + 1
    lengths = np.full(int(chunks.sum()), _MAX_RUN, dtype=np.int64)
    last = np.cumsum(chunks) - 1
    lengths[last] = run_words - (chunks - 1) * _MAX_RUN
    values = np.repeat(run_values, chunks)
    # The SDK picks the field by the ORIGINAL run length: a split run's remainder keeps the 16-bit field.
    size_index = np.repeat(np.searchsorted([8, 16, 256], run_words, side="left"), chunks)

    field_bits = _RUN_FIELD_BITS[size_index]
    code_bits = 3 + field_bits + _WORD_BITS
    codes = (1 << (code_bits - 1)) | (size_index << (field_bits + _WORD_BITS)) | ((lengths - 1) << _WORD_BITS) | values

    header = (num_words << 21) | ((_WORD_BITS - 1) << 16) | 0x237F  # widths-1 = 2, 3, 7, 15 -> 0010 0011 0111 1111
    all_codes = np.concatenate(([header], codes)).astype(np.uint64)
    all_bits = np.concatenate(([HEADER_BITS], code_bits)).astype(np.int64)
    total_bits = int(all_bits.sum())
    total_bits += 8 - total_bits % 8  # the SDK always pads, a full byte when already aligned
    return _pack_codes(all_codes, all_bits, total_bits).tolist()


def _pack_codes(codes: np.ndarray, bits: np.ndarray, total_bits: int) -> np.ndarray:
    """Concatenate variable-length big-endian codes (each <= 57 bits) into bytes, zero-padded to total_bits."""
    ends = np.cumsum(bits)
    starts = ends - bits
    n_words = (total_bits + 63) // 64 + 1
    word = starts >> 6
    offset = starts & 63  # bit offset of the code inside its 64-bit word (0 = most significant)
    room = 64 - offset
    fits = bits <= room
    # Part in the first word: shift left when it fits, else keep the top `room` bits.
    shift_left = np.where(fits, room - bits, 0).astype(np.uint64)
    shift_right = np.where(fits, 0, bits - room).astype(np.uint64)
    first = (codes << shift_left) >> shift_right
    # Part spilling into the next word: the low (bits - room) bits, left-aligned.
    spill_bits = np.where(fits, 0, bits - room)
    spill = np.where(fits, np.uint64(0), codes << (np.uint64(64) - spill_bits.astype(np.uint64)))
    # Codes have disjoint bits, so summing the parts of one word equals OR-ing them; words are non-decreasing.
    out = np.zeros(n_words, dtype=np.uint64)
    boundaries = np.flatnonzero(np.diff(word)) + 1
    group_starts = np.concatenate(([0], boundaries))
    out[word[group_starts]] = np.add.reduceat(first, group_starts)
    spilled = np.flatnonzero(~fits)
    out[word[spilled] + 1] += spill[spilled]  # at most one spilling code per word: no collisions
    return out.astype(">u8").view(np.uint8)[: total_bits // 8]


def rle_to_mask(rle: Sequence[int] | np.ndarray | bytes, height: int, width: int) -> np.ndarray:
    """Label Studio brush RLE -> HxW boolean mask (True where the brush painted, i.e. alpha > 0)."""
    values, lengths, num = decode_runs(_as_bytes(rle))
    expected = height * width * _CHANNELS
    if num != expected:
        raise ValueError(f"brush RLE holds {num} RGBA words, but a {height}x{width} image needs {expected}; "
                         "original_width/original_height do not match the mask")
    # Run j covers words [start, end); the alphas are words 4k+3, and 4k+3 < end for k < end // 4.
    ends = np.minimum(np.cumsum(lengths), num)
    alphas = np.diff(ends // _CHANNELS, prepend=0)
    return np.repeat(values != 0, alphas).reshape(height, width)


def _as_bytes(rle: Sequence[int] | np.ndarray | bytes) -> np.ndarray:
    if isinstance(rle, (bytes, bytearray)):
        return np.frombuffer(bytes(rle), dtype=np.uint8)
    if isinstance(rle, list):  # the JSON form; bytes() converts and range-checks ~7x faster than numpy
        try:
            return np.frombuffer(bytes(rle), dtype=np.uint8)
        except (TypeError, ValueError) as error:
            raise ValueError(f"brush RLE must be a list of integers in 0..255 ({error})") from None
    array = np.asarray(rle)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("brush RLE must be a non-empty flat list of byte values")
    if not np.issubdtype(array.dtype, np.integer) or array.min() < 0 or array.max() > 255:
        raise ValueError("brush RLE must contain integers in 0..255")
    return array.astype(np.uint8)
