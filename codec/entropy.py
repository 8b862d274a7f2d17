"""Integer frequency tables, and the writer of the format v1–v4 ANS stream.

Tables are integer arrays carried in (or rebuilt from integers in) the bitstream; codec.rans
turns them into fixed-point tables by the rules of formats/SPEC.md. nnr writes format v5
(codec.rans lanes); :func:`ans_encode` writes the v1–v4 stream with constriction (a test
dependency) so that the tests can make such streams and check codec.rans's decoder on them.
"""

from __future__ import annotations

import numpy as np

from .errors import CorruptionError

from . import exactmath
from .bytestream import ByteReader, ByteWriter

MAX_TABLE_FREQ = 1 << 31
"""Largest frequency a table may carry (keeps sums exact in float64)."""

TABLE_BYTES_PER_SYMBOL = 24
"""Memory a decoder spends per alphabet symbol (nnr's table plus the coder's model)."""

GEOMETRIC = 0
HISTOGRAM = 1
_HIST_SCALE_MAX = 4095


def _model(freqs: np.ndarray):
    import constriction

    probs = np.asarray(freqs, dtype=np.float64)
    if probs.sum() <= 0:
        raise CorruptionError("entropy table has no nonzero frequency")
    return constriction.stream.model.Categorical(probs, perfect=False)


def ans_encode(symbols: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """Entropy-code symbols in [0, len(freqs)) with one vectorised call; returns uint32 words."""
    import constriction

    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    if symbols.size == 0:
        return np.zeros(0, dtype=np.uint32)
    coder = constriction.stream.stack.AnsCoder()
    coder.encode_reverse(symbols, _model(freqs))
    return coder.get_compressed().astype(np.uint32)


def geometric_freqs(k: int, f0: int, f1: int, ratio16: int, fesc: int) -> np.ndarray:
    """Two-sided discrete Laplace table over levels [-k, k] plus an escape symbol.

    Level 0 gets f0; levels ±1 get f1; each further magnitude multiplies by ratio16/65536
    with floor, never below 1. Pure integer arithmetic, so every platform gets the same table.
    """
    head = [f0]
    v = f1
    while len(head) <= k:
        head.append(max(v, 1))
        if v <= 1:
            break
        v = (v * ratio16) >> 16
    mags = np.ones(k + 1, dtype=np.int64)
    mags[:len(head)] = head
    freqs = np.empty(2 * k + 2, dtype=np.int64)
    freqs[k:2 * k + 1] = mags
    freqs[:k] = mags[:0:-1]
    freqs[2 * k + 1] = fesc
    return freqs


def geometric_fit(counts: np.ndarray, k: int) -> tuple[int, int, int, int]:
    """Fit the geometric table's integer parameters to level counts (encoder side)."""
    mag_counts = counts[k:2 * k + 1].astype(np.float64).copy()
    mag_counts[1:] += counts[:k][::-1]
    n_nonzero = mag_counts[1:].sum()
    f0 = int(max(mag_counts[0], 1))
    if n_nonzero <= 0:
        return f0, 1, 0, int(counts[2 * k + 1])
    mean_excess = float((mag_counts[1:] * np.arange(k)).sum() / n_nonzero)
    ratio = mean_excess / (1.0 + mean_excess)
    ratio16 = int(min(max(round(ratio * 65536), 0), 65535))
    f1 = int(max(round(n_nonzero * (1.0 - ratio) / 2.0), 1))
    return f0, min(f1, MAX_TABLE_FREQ), ratio16, int(counts[2 * k + 1])


def histogram_freqs(counts: np.ndarray) -> np.ndarray:
    """Scale measured counts to at most 4095, keeping every used symbol nonzero (encoder side)."""
    counts = np.asarray(counts, dtype=np.float64)
    top = counts.max() if counts.size else 0.0
    if top <= _HIST_SCALE_MAX:
        return counts.astype(np.int64)
    scaled = np.round(counts * (_HIST_SCALE_MAX / top)).astype(np.int64)
    scaled[(counts > 0) & (scaled == 0)] = 1
    return scaled


def cost_bits(counts: np.ndarray, freqs: np.ndarray) -> float:
    """Ideal code length in bits of symbols with these counts under this table."""
    return costs_bits([(counts, freqs)])[0]


def costs_bits(tables: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """:func:`cost_bits` of many (counts, freqs) pairs, with one call of the exact logarithm
    for all of them (its cost is mostly per call); each result is the same float."""
    probs, counts_used = [], []
    for counts, freqs in tables:
        freqs = np.asarray(freqs, dtype=np.float64)
        used = counts > 0
        if np.any(freqs[used] <= 0):   # a used symbol without frequency: priced at a tiny floor
            freqs = np.maximum(freqs, freqs.sum() / (1 << 24))
        probs.append((freqs / freqs.sum())[used] if np.any(used) else freqs[:0])
        counts_used.append(counts[used])
    logs = exactmath.log2(np.concatenate(probs)) if probs else np.zeros(0)
    out, at = [], 0
    for c, p in zip(counts_used, probs):
        out.append(float(-(c * logs[at:at + p.size]).sum()) if p.size else 0.0)
        at += p.size
    return out


def write_table(w: ByteWriter, kind: int, params: tuple[int, ...] | np.ndarray) -> None:
    w.u8(kind)
    if kind == GEOMETRIC:
        f0, f1, ratio16, fesc = params
        w.varint(f0)
        w.varint(f1)
        w.u16(ratio16)
        w.varint(fesc)
    else:
        w.varints(np.asarray(params))


def read_table(r: ByteReader, n_symbols: int, allow_geometric: bool = True) -> np.ndarray:
    """Rebuild the integer table for an alphabet of ``n_symbols`` (2k + 2 for geometric)."""
    kind = r.u8()
    r.charge(TABLE_BYTES_PER_SYMBOL * n_symbols, f"an entropy table of {n_symbols} symbols")
    if kind == GEOMETRIC:
        if not allow_geometric or n_symbols % 2:
            raise CorruptionError("geometric table where only a histogram is allowed")
        f0 = r.varint(MAX_TABLE_FREQ)
        f1 = r.varint(MAX_TABLE_FREQ)
        ratio16 = r.u16()
        fesc = r.varint(MAX_TABLE_FREQ)
        return geometric_freqs((n_symbols - 2) // 2, f0, f1, ratio16, fesc)
    if kind == HISTOGRAM:
        freqs = r.varints(n_symbols).astype(np.int64)
        if np.any(freqs > MAX_TABLE_FREQ):
            raise CorruptionError("histogram table frequency out of range")
        return freqs
    raise CorruptionError(f"unknown entropy table kind {kind}")


def best_table(counts: np.ndarray, k: int, allow_geometric: bool = True
               ) -> tuple[int, tuple[int, ...] | np.ndarray, float]:
    """Pick the geometric (Laplace) or measured-histogram table, whichever codes smaller
    including its own side information; returns (kind, params, estimated bits)."""
    return best_tables([counts], k, allow_geometric)[0]


def best_tables(counts: list[np.ndarray], k: int, allow_geometric: bool = True
                ) -> list[tuple[int, tuple[int, ...] | np.ndarray, float]]:
    """:func:`best_table` of each of several count arrays, their costs estimated together."""
    hists, sides, geos, pairs = [], [], [], []
    for c in counts:
        hist = histogram_freqs(c)
        side = ByteWriter()
        side.varints(hist)
        hists.append(hist)
        sides.append(len(side.getvalue()))
        pairs.append((c, hist))
        if allow_geometric:
            geos.append(geometric_fit(c, k))
            pairs.append((c, geometric_freqs(k, *geos[-1])))
    bits = iter(costs_bits(pairs))
    out = []
    for i, hist in enumerate(hists):
        hist_bits = next(bits) + 8 * sides[i]
        if not allow_geometric:
            out.append((HISTOGRAM, hist, hist_bits))
            continue
        geo_bits = next(bits) + 8 * 12
        out.append((HISTOGRAM, hist, hist_bits) if hist_bits < geo_bits else (GEOMETRIC, geos[i], geo_bits))
    return out
