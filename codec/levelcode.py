"""Entropy coding of integer quantization levels: coarse symbols, raw fine bits, escapes.

A level q with |q| ≤ K splits into a coarse part c = q >> s (floor division by 2**s) and s
raw fine bits f = q & (2**s − 1). The coarse parts are ANS-coded over the alphabet
[c_lo, c_hi] = [(−K) >> s, K >> s] plus one escape symbol; levels beyond ±K are escapes
coded as varints. At high rate the low bits of a Laplacian level are nearly uniform, so
sending them raw costs almost nothing and keeps the coded alphabet small and the decoder
fast; the encoder picks s per tensor.

Layout of a level block (all little-endian):

    varint K                  alphabet half-width (≤ 2**20)
    u8     s                  fine bits per non-escaped level (0..16)
    table                     codec.entropy.write_table over n = c_hi − c_lo + 2 symbols;
                              symbol = c − c_lo, escape = n − 1 (geometric tables need s = 0)
    varint n_escapes, then n_escapes varints u = 2·(|q| − K − 1) + (1 if q < 0 else 0)
    varint n_fine_bytes, then s bit planes: plane j holds bit j of the fine part of every
                              non-escaped level in order, packed 8 per byte (first level in
                              the least significant bit), ceil(m / 8) bytes per plane
    varint n_words, then n_words uint32 ANS words

The element count is not stored here: the caller knows it from the tensor's shape.
"""

from __future__ import annotations

import numpy as np

from nnr.errors import CorruptionError

from . import exactmath
from .bytestream import ByteReader, ByteWriter, encode_varints
from .entropy import ans_decode, ans_encode, best_table, read_table, write_table

MAX_K = 1 << 20
"""Largest alphabet half-width a stream may declare."""

MAX_EXPANSION_LOG2 = 20
"""A level block holds at most 2**20 levels per byte (plus 64 bytes of slack): SPEC §4."""

MAX_FINE_BITS = 16
MAX_LEVEL = (1 << 31) - 1
FINE_BITS_TOLERANCE = 0.003
"""The encoder takes the most fine bits that cost at most this fraction more than none."""


def choose_k(mags: np.ndarray) -> int:
    """Alphabet half-width: the largest magnitude unless a few outliers would blow up the
    alphabet, in which case they become escapes."""
    if mags.size == 0:
        return 0
    top = int(mags.max())
    if top <= 255:
        return top
    counts = np.bincount(np.minimum(mags, 4096))
    q = int(np.searchsorted(np.cumsum(counts), 0.9999 * mags.size))
    return int(min(top, max(255, 2 * q), 4095))


def _coarse_range(k: int, s: int) -> tuple[int, int]:
    return (-k) >> s, k >> s


def _coarse_symbols(q: np.ndarray, esc: np.ndarray, k: int, s: int) -> np.ndarray:
    lo, hi = _coarse_range(k, s)
    return np.where(esc, hi - lo + 1, (q >> s) - lo).astype(np.int32)


def choose_fine_bits(level_counts: np.ndarray, n_escapes: int, k: int) -> int:
    """Most raw fine bits whose estimated cost is within FINE_BITS_TOLERANCE of none.

    ``level_counts[i]`` counts level i − k for |level| ≤ k."""
    n_plain = int(level_counts.sum())
    if n_plain + n_escapes < 4096 or k < 8:
        return 0

    def cost(s: int) -> float:
        lo, hi = _coarse_range(k, s)
        edges = (np.arange(lo, hi + 1) << s) + k
        coarse = np.add.reduceat(level_counts, np.maximum(edges, 0)).astype(np.float64)
        coarse = np.append(coarse[coarse > 0], n_escapes)
        coarse = coarse[coarse > 0]
        total = coarse.sum()
        return float(-(coarse * exactmath.log2(coarse / total)).sum()) + s * n_plain

    base = cost(0)
    best = 0
    for s in range(1, min(MAX_FINE_BITS, k.bit_length()) + 1):
        if cost(s) > base * (1 + FINE_BITS_TOLERANCE):
            break
        best = s
    return best


def encode_levels(levels: np.ndarray, k: int | None = None, fine_bits: int | None = None) -> bytes:
    """Code an int array of levels; returns the level block."""
    q = np.ascontiguousarray(levels, dtype=np.int64).ravel()
    mags = np.abs(q)
    if k is None:
        k = choose_k(mags)
    esc = mags > k
    if fine_bits is None:
        n_esc = int(np.count_nonzero(esc))
        plain = q[~esc] if n_esc else q
        s = choose_fine_bits(np.bincount(plain + k, minlength=2 * k + 1), n_esc, k)
    else:
        s = fine_bits
    lo, hi = _coarse_range(k, s)
    n_sym = hi - lo + 2
    symbols = _coarse_symbols(q, esc, k, s)
    counts = np.bincount(symbols, minlength=n_sym)
    kind, params, _ = best_table(counts, (n_sym - 2) // 2, allow_geometric=(s == 0))
    w = ByteWriter()
    w.varint(k)
    w.u8(s)
    table = ByteWriter()
    write_table(table, kind, params)
    w.raw(table.getvalue())
    escaped = q[esc]
    w.varint(int(escaped.size))
    w.raw(encode_varints(((np.abs(escaped) - k - 1) << 1) | (escaped < 0)))
    plain = q[~esc] if escaped.size else q
    fine = (plain & ((1 << s) - 1)).astype(np.uint16 if s > 8 else np.uint8)
    packed = b"".join(np.packbits((fine >> j) & 1, bitorder="little").tobytes() for j in range(s))
    w.varint(len(packed))
    w.raw(packed)
    words = ans_encode(symbols, read_table(ByteReader(table.getvalue()), n_sym))
    w.varint(int(words.size))
    w.raw(words.astype("<u4").tobytes())
    return w.getvalue()


def decode_levels(r: ByteReader, count: int) -> np.ndarray:
    """Read one level block for ``count`` elements; returns int32 levels."""
    if count > (r.remaining + 64) << MAX_EXPANSION_LOG2:
        raise CorruptionError(f"level block of {count} levels cannot come from {r.remaining} bytes")
    r.charge(8 * count, f"{count} levels")
    k = r.varint(MAX_K)
    s = r.u8()
    if s > MAX_FINE_BITS:
        raise CorruptionError(f"level block declares {s} fine bits (limit {MAX_FINE_BITS})")
    lo, hi = _coarse_range(k, s)
    n_sym = hi - lo + 2
    freqs = read_table(r, n_sym, allow_geometric=(s == 0))
    n_esc = r.varint(count)
    escapes = r.varints(n_esc)
    n_fine = r.varint()
    n_plain = count - n_esc
    plane_bytes = (n_plain + 7) // 8
    if n_fine != s * plane_bytes:
        raise CorruptionError(f"level block holds {n_fine} fine-bit bytes, expected {s * plane_bytes}")
    packed = r.raw(n_fine)
    n_words = r.varint()
    if n_words * 4 > r.remaining:
        raise CorruptionError(f"level block declares {n_words} words but only {r.remaining} bytes remain")
    words = r.array("<u4", n_words)
    symbols = ans_decode(words, freqs, count)
    esc_mask = symbols == n_sym - 1
    esc_pos = np.flatnonzero(esc_mask)
    if esc_pos.size != n_esc:
        raise CorruptionError(f"level block has {esc_pos.size} escape symbols but {n_esc} escape values")
    levels = symbols.astype(np.int32, copy=False)
    levels += lo
    if s:
        levels <<= s
        planes = np.frombuffer(packed, dtype=np.uint8).reshape(s, plane_bytes)
        fine = np.unpackbits(planes[0], count=n_plain, bitorder="little").astype(np.int32)
        for j in range(1, s):
            fine |= np.unpackbits(planes[j], count=n_plain, bitorder="little").astype(np.int32) << j
        if n_esc:
            levels[~esc_mask] |= fine
        else:
            levels |= fine
    if n_esc:
        if np.any(escapes >> np.uint64(1) > np.uint64(MAX_LEVEL - k - 1)):
            raise CorruptionError("escaped level out of range")
        mags = ((escapes >> np.uint64(1)).astype(np.int64) + k + 1).astype(np.int32)
        levels[esc_pos] = np.where(escapes & np.uint64(1), -mags, mags)
    return levels
