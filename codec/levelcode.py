"""Entropy coding of integer quantization levels: alphabet [-K, K] plus an escape.

Layout of a level block (all little-endian):

    varint K                   alphabet half-width; symbol s = level + K, escape = 2K + 1
    table                      see codec.entropy.write_table
    varint n_escapes, then n_escapes varints u = 2·(|q| − K − 1) + (1 if q < 0 else 0)
    varint n_words, then n_words uint32 ANS words

The element count is not stored here: the caller knows it from the tensor's shape.
"""

from __future__ import annotations

import numpy as np

from nnr.errors import CorruptionError

from .bytestream import ByteReader, ByteWriter, encode_varints
from .entropy import ans_decode, ans_encode, best_table, read_table, write_table

MAX_K = 1 << 20
"""Largest alphabet half-width a stream may declare."""

MAX_LEVEL = (1 << 31) - 1


def choose_k(mags: np.ndarray) -> int:
    """Alphabet half-width: the largest magnitude unless a few outliers would blow up the
    alphabet, in which case they become escapes."""
    if mags.size == 0:
        return 0
    top = int(mags.max())
    if top <= 255:
        return top
    q = int(np.quantile(mags, 0.9999))
    return int(min(top, max(255, 2 * q), 4095))


def encode_levels(levels: np.ndarray, k: int | None = None) -> bytes:
    """Code an int array of levels; returns the level block."""
    q = np.ascontiguousarray(levels, dtype=np.int64).ravel()
    mags = np.abs(q)
    if k is None:
        k = choose_k(mags)
    esc = mags > k
    symbols = np.where(esc, 2 * k + 1, q + k).astype(np.int32)
    counts = np.bincount(symbols, minlength=2 * k + 2)
    kind, params, _ = best_table(counts, k)
    w = ByteWriter()
    w.varint(k)
    write_table(w, kind, params)
    escaped = q[esc]
    w.varint(int(escaped.size))
    w.raw(encode_varints(((np.abs(escaped) - k - 1) << 1) | (escaped < 0)))
    words = ans_encode(symbols, read_table(ByteReader(_table_bytes(kind, params)), 2 * k + 2))
    w.varint(int(words.size))
    w.raw(words.astype("<u4").tobytes())
    return w.getvalue()


def _table_bytes(kind: int, params) -> bytes:
    w = ByteWriter()
    write_table(w, kind, params)
    return w.getvalue()


def decode_levels(r: ByteReader, count: int) -> np.ndarray:
    """Read one level block for ``count`` elements; returns int64 levels."""
    k = r.varint(MAX_K)
    freqs = read_table(r, 2 * k + 2)
    n_esc = r.varint(count)
    escapes = r.varints(n_esc)
    n_words = r.varint()
    if n_words * 4 > r.remaining:
        raise CorruptionError(f"level block declares {n_words} words but only {r.remaining} bytes remain")
    words = r.array("<u4", n_words)
    symbols = ans_decode(words, freqs, count).astype(np.int64)
    levels = symbols - k
    esc_pos = np.flatnonzero(symbols == 2 * k + 1)
    if esc_pos.size != n_esc:
        raise CorruptionError(f"level block has {esc_pos.size} escape symbols but {n_esc} escape values")
    if n_esc:
        if np.any(escapes >> np.uint64(1) > np.uint64(MAX_LEVEL - k - 1)):
            raise CorruptionError("escaped level out of range")
        mags = (escapes >> np.uint64(1)).astype(np.int64) + k + 1
        levels[esc_pos] = np.where(escapes & np.uint64(1), -mags, mags)
    return levels
