"""Decoding ``@thi.ng/rle-pack`` streams (Label Studio brush RLE) with numpy, without a Python loop per block.

A stream is a 53-bit header (32-bit word count, 5-bit word size - 1, four 4-bit run-field widths - 1) followed by
blocks: 1 bit repeat?, 2 bits size index, ``width[index]`` bits count - 1, then one word (repeat) or ``count`` words
(literal). Each block's length depends only on its own first bits, so where a block starting at bit ``p`` would end
(``next[p]``) is computed for every bit at once; the real blocks are the chain header -> next -> next ...

The chain is followed with pointer doubling (``next`` applied 16 times in 4 gathers), a short Python walk over every
16th block, and a lockstep trace that fills the gaps. Streams of repeat blocks only (everything Label Studio and its
SDK write for masks) need just the 2 size-index bits to find a block's length; the guess "all blocks are repeats" is
tried first and verified on the chain it finds (if every block on it is a repeat, it is the true chain), otherwise the
exact lengths, which read the count of literal blocks, are used.
"""
from __future__ import annotations

import numpy as np

HEADER_BITS = 32 + 5 + 16
_JUMP_ROUNDS = 4  # the walk visits every 2^4 = 16th block


class BitReader:
    """Random access to big-endian bit fields (<= 32 bits wide) at arrays of bit positions."""

    def __init__(self, data: np.ndarray):
        padded = np.concatenate((data, np.zeros(16, dtype=np.uint8))).astype(np.uint64)
        windows = np.zeros(data.size + 8, dtype=np.uint64)  # the 64 bits starting at each byte
        for k in range(8):
            windows |= padded[k : k + data.size + 8] << np.uint64(56 - 8 * k)
        self.windows = windows
        self.n_bits = data.size * 8

    def read(self, positions: np.ndarray | int, width: np.ndarray | int) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        window = self.windows[positions >> 3] << (positions & 7).astype(np.uint64)  # >= 57 valid bits
        width = np.asarray(width, dtype=np.int64)
        top = (window >> np.uint64(32)).astype(np.int64)  # the 32 bits starting at each position
        return (top >> (32 - width)) & ((np.int64(1) << width) - 1)


def decode_runs(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Stream bytes -> (word values, run lengths, word count). Raises ValueError on a malformed stream.

    ``np.repeat(values, lengths)[:count]`` are the stream's words (the RGBA buffer for a brush mask).
    """
    if data.size < 7:
        raise ValueError(f"brush RLE too short ({data.size} bytes) to hold the 53-bit header")
    reader = BitReader(data)
    num = int(reader.read(0, 32))
    word_bits = int(reader.read(32, 5)) + 1
    run_fields = np.array([int(reader.read(37 + 4 * i, 4)) + 1 for i in range(4)], dtype=np.int64)
    if num == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), 0
    if word_bits > 32:
        raise ValueError(f"brush RLE word size {word_bits} bits is not supported (at most 32)")

    bits = np.unpackbits(data)
    starts, counts, complete = _chain(_next_if_all_repeats(bits, word_bits, run_fields), reader, run_fields, num)
    repeat = bits[starts].astype(bool)
    if not repeat.all():  # a literal block on the chain: the guess was wrong from there on
        starts, counts, complete = _chain(_next_exact(reader, word_bits, run_fields), reader, run_fields, num)
        repeat = bits[starts].astype(bool)
    if not complete:
        raise ValueError(f"brush RLE is truncated: its blocks hold {int(counts.sum())} of its {num} words")

    payload = starts + 3 + run_fields[reader.read(starts + 1, 2)]
    if repeat.all():
        word_pos, lengths = payload, counts
    else:  # literal blocks hold `count` words of length 1 each
        n_words = np.where(repeat, 1, counts)
        first = np.repeat(np.cumsum(n_words) - n_words, n_words)
        word_pos = np.repeat(payload, n_words) + (np.arange(int(n_words.sum())) - first) * word_bits
        lengths = np.where(np.repeat(repeat, n_words), np.repeat(counts, n_words), 1)
    if int(word_pos[-1]) + word_bits > reader.n_bits:
        raise ValueError("brush RLE is truncated: the last block runs past the end of the data")
    return reader.read(word_pos, word_bits), lengths, num


def _next_if_all_repeats(bits: np.ndarray, word_bits: int, run_fields: np.ndarray) -> np.ndarray:
    """next[p] assuming the block at p is a repeat block: its length depends on the 2 size-index bits only."""
    n = bits.size
    padded = np.concatenate((bits, np.zeros(3, dtype=np.uint8)))
    size_index = (padded[1 : n + 1] << 1) | padded[2 : n + 2]
    block_bits = (3 + run_fields + word_bits).astype(np.intp)
    return _with_sink(np.arange(n, dtype=np.intp) + np.take(block_bits, size_index), n)


def _next_exact(reader: BitReader, word_bits: int, run_fields: np.ndarray) -> np.ndarray:
    """next[p] for every bit, reading the count of literal blocks."""
    n = reader.n_bits
    positions = np.arange(n, dtype=np.int64)
    top = reader.read(positions, 32)
    field = run_fields[(top >> 29) & 3]
    count = ((top >> (29 - field)) & ((np.int64(1) << field) - 1)) + 1
    return _with_sink(positions + 3 + field + np.where(top >> 31 == 1, 1, count) * word_bits, n)


def _with_sink(nxt: np.ndarray, n: int) -> np.ndarray:
    """Clip to n and append n -> n: every chain ends in the sink n (past the data)."""
    # intp: numpy gathers with native-width indices are ~5x faster than with int32 ones.
    return np.append(np.minimum(nxt, n), n).astype(np.intp)


def _chain(nxt: np.ndarray, reader: BitReader, run_fields: np.ndarray, num: int):
    """Blocks on the chain from the header up to the one completing ``num`` words: (starts, counts, complete)."""
    starts = _follow(nxt, HEADER_BITS)
    counts = reader.read(starts + 3, run_fields[reader.read(starts + 1, 2)]) + 1
    done = np.cumsum(counts)
    keep = int(np.searchsorted(done, num, side="left")) + 1  # padding bits after the last block look like blocks
    return starts[:keep], counts[:keep], bool(done.size) and int(done[-1]) >= num


def _follow(nxt: np.ndarray, first: int) -> np.ndarray:
    """The positions first, nxt[first], nxt[nxt[first]], ... before the sink, in order."""
    n = nxt.size - 1
    jump = nxt
    for _ in range(_JUMP_ROUNDS):
        jump = np.take(jump, jump)
    anchors = []
    position = first
    while position < n:  # one iteration per 16 blocks
        anchors.append(position)
        position = int(jump[position])
    trace = np.empty((len(anchors), 1 << _JUMP_ROUNDS), dtype=np.intp)
    current = np.array(anchors, dtype=np.intp)
    for step in range(trace.shape[1]):
        trace[:, step] = current
        current = np.take(nxt, current)
    flat = trace.ravel()  # row i = blocks 16i .. 16i+15: already in stream order
    return flat[flat < n]
