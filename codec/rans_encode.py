"""Encoder side of :mod:`codec.rans`: interleaved lane rANS (numba) and the lane length rule."""

from __future__ import annotations

import numba
import numpy as np

from .rans import LANE_STATE_LOW, lane_count

LANE_BYTES = 2048
"""Coded bytes the encoder aims to put in each lane. A lane costs about four bytes of state
(32-bit flush, 16 bits of start-up), so this keeps the lane structure near 0.2 % of the
stream while giving a decoder thousands of lanes to advance at once on a large model."""


@numba.njit(cache=True, nogil=True)
def _encode(symbols, cdf, precision, lane_len):  # pragma: no cover - compiled
    count = symbols.size
    n_lanes = (count + lane_len - 1) // lane_len
    last_len = count - (n_lanes - 1) * lane_len
    x = np.full(n_lanes, LANE_STATE_LOW, dtype=np.uint64)
    out = np.empty(count + 2 * n_lanes + 8, dtype=np.uint16)
    n_out = 0
    for t in range(lane_len - 1, -1, -1):
        top = n_lanes if t < last_len else n_lanes - 1
        for j in range(top - 1, -1, -1):
            s = symbols[j * lane_len + t]
            c = np.uint64(cdf[s])
            f = np.uint64(cdf[s + 1]) - c
            if x[j] >= (f << np.uint64(32 - precision)):
                if n_out == out.size:
                    grown = np.empty(2 * out.size, dtype=np.uint16)
                    grown[:n_out] = out[:n_out]
                    out = grown
                out[n_out] = np.uint16(x[j] & np.uint64(0xFFFF))
                n_out += 1
                x[j] >>= np.uint64(16)
            x[j] = ((x[j] // f) << np.uint64(precision)) + (x[j] % f) + c
    words = np.empty(2 * n_lanes + n_out, dtype=np.uint16)
    for j in range(n_lanes):
        words[2 * j] = np.uint16(x[j] >> np.uint64(16))
        words[2 * j + 1] = np.uint16(x[j] & np.uint64(0xFFFF))
    for i in range(n_out):
        words[2 * n_lanes + i] = out[n_out - 1 - i]
    return words


def encode_lanes(symbols: np.ndarray, cdf: np.ndarray, precision: int, lane_len: int) -> np.ndarray:
    """Code symbols (indices into ``cdf``'s n + 1 boundaries) as one lane block: uint16 words
    that :func:`codec.rans.decode_lanes` turns back into ``symbols``."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    if s.size == 0:
        return np.zeros(0, dtype=np.uint16)
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    if s.min() < 0 or s.max() >= cdf.size - 1 or np.any(np.diff(cdf)[np.unique(s)] <= 0):
        raise ValueError("a symbol is outside the table or has no slot")
    return _encode(s, cdf, int(precision), int(lane_len))


def choose_lane_len(count: int, est_bits: float) -> int:
    """Symbols per lane so each lane carries about LANE_BYTES of words (at least 64 symbols)."""
    if count == 0:
        return 1
    bits_per_symbol = max(est_bits / count, 1e-3)
    lane_len = int(max(64, round(8 * LANE_BYTES / bits_per_symbol)))
    return min(lane_len, count) if lane_count(count, lane_len) > 0 else 1
