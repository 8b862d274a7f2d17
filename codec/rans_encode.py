"""Encoder side of :mod:`codec.rans`: interleaved lane rANS (numba) and the lane length rule."""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from . import exactmath
from .rans import LANE_PRECISION_MAX, LANE_STATE_LOW, MAX_CONTEXTS, MAX_LANE_SYMBOLS, lane_cdf, lane_lengths

LANE_SYMBOLS = 2048
"""Most symbols the encoder puts in a lane. A decoder's lock step is as long as the longest
lane, so short equal lanes keep its steps few and thousands of lanes busy on a large model."""
MIN_LANE_BYTES = 256
"""Fewest coded bytes per lane: a lane costs about three bytes of state (32-bit flush, 16
bits of start-up), so very low-rate blocks get longer lanes to keep that near 1 %."""


@numba.njit(cache=True, nogil=True)
def _encode(symbols, cdfs, classes, precision, n_lanes, start, runs):  # pragma: no cover - compiled
    count = symbols.size
    q = count // n_lanes
    r = count - q * n_lanes
    top_ctx = cdfs.shape[0] - 1
    x = np.full(n_lanes, start, dtype=np.uint64)
    out = np.empty(count, dtype=np.uint16)   # at most one word a symbol, stored before it is counted
    n_out = 0
    for t in range((q + 1 if r else q) - 1, -1, -1):
        top = n_lanes if t < q else r
        for j in range(top - 1, -1, -1):
            ctx = 0
            if runs:   # lane j holds symbols s_j … s_j + len_j − 1; its two previous ones pick the table
                i = j * q + min(j, r) + t
                if t >= 1:
                    ctx = classes[symbols[i - 1]]
                if t >= 2:
                    ctx += classes[symbols[i - 2]]
                ctx = min(ctx, top_ctx)
            else:      # round-robin: lane j holds symbols j, j + L, j + 2L, …
                i = t * n_lanes + j
            s = symbols[i]
            c = np.uint64(cdfs[ctx, s])
            f = np.uint64(cdfs[ctx, s + 1]) - c
            xj = x[j]
            # shift out a word when the state is too large for f; branch-free (the branch was
            # taken about half the time at random, and mispredicting it was most of the cost):
            # the word is always stored and kept only when emitted
            emit = xj >= (f << np.uint64(32 - precision))
            out[n_out] = np.uint16(xj & np.uint64(0xFFFF))
            n_out += emit
            xj >>= np.uint64(emit) * np.uint64(16)
            quot = xj // f
            x[j] = (quot << np.uint64(precision)) + (xj - quot * f) + c
    words = np.empty(2 * n_lanes + n_out, dtype=np.uint16)
    for j in range(n_lanes):
        words[2 * j] = np.uint16(x[j] >> np.uint64(16))
        words[2 * j + 1] = np.uint16(x[j] & np.uint64(0xFFFF))
    for i in range(n_out):
        words[2 * n_lanes + i] = out[n_out - 1 - i]
    return words


@numba.njit(cache=True, nogil=True)
def _context_counts(symbols, classes, n_lanes, n_sym, contexts):  # pragma: no cover - compiled
    count = symbols.size
    q = count // n_lanes
    r = count - q * n_lanes
    joint = np.zeros((contexts, n_sym), dtype=np.int64)
    for j in range(n_lanes):
        start = j * q + min(j, r)
        c1 = 0
        c2 = 0
        for t in range(q + 1 if j < r else q):
            s = symbols[start + t]
            joint[min(c1 + c2, contexts - 1), s] += 1
            c2 = c1
            c1 = classes[s]
    return joint


def context_counts(symbols: np.ndarray, classes: np.ndarray, contexts: int, n_lanes: int) -> np.ndarray:
    """How often each symbol (columns) occurs in each context (rows) of a context-coded block
    in ``n_lanes`` contiguous lanes: :func:`lane_contexts` counted in one pass, without it."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    cls = np.ascontiguousarray(classes, dtype=np.int64)
    return _context_counts(s, cls, int(n_lanes), int(cls.size), int(contexts))


def lane_contexts(symbols: np.ndarray, classes: np.ndarray, contexts: int, n_lanes: int) -> np.ndarray:
    """Context of every symbol of a context-coded block in ``n_lanes`` contiguous lanes:
    min(class of the symbol before + class of the one before that, C − 1), both in its lane."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    cls = np.asarray(classes, dtype=np.int64)[s]
    ctx = np.zeros(s.size, dtype=np.int64)
    ctx[1:] += cls[:-1]
    ctx[2:] += cls[:-2]
    q, r = divmod(s.size, n_lanes)
    starts = np.arange(n_lanes) * q + np.minimum(np.arange(n_lanes), r)
    ctx[starts] = 0
    second = starts + 1
    second = second[(second < s.size) & (lane_lengths(s.size, n_lanes) > 1)]
    ctx[second] = cls[second - 1]
    return np.minimum(ctx, contexts - 1)


def encode_context_lanes(symbols: np.ndarray, cdfs: np.ndarray, classes: np.ndarray, precision: int,
                         n_lanes: int, start: int = LANE_STATE_LOW) -> np.ndarray:
    """Code symbols as one context-coded lane block: lane j holds a run of consecutive symbols,
    each coded with table ``cdfs[c]`` for the context c that :func:`lane_contexts` gives it."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    if s.size == 0:
        return np.zeros(0, dtype=np.uint16)
    cdfs = np.ascontiguousarray(cdfs, dtype=np.int64)
    classes = np.ascontiguousarray(classes, dtype=np.int64)
    if not 1 <= n_lanes <= s.size:
        raise ValueError(f"{n_lanes} lanes for {s.size} symbols")
    if cdfs.ndim != 2 or not 2 <= cdfs.shape[0] <= MAX_CONTEXTS or classes.shape != (cdfs.shape[1] - 1,):
        raise ValueError("context tables: 2 to 4 cdfs over the same symbols, one class per symbol")
    if s.min() < 0 or s.max() >= cdfs.shape[1] - 1 or classes.min() < 0 or classes.max() > 3:
        raise ValueError("a symbol is outside the tables, or a class outside 0..3")
    if np.any((context_counts(s, classes, cdfs.shape[0], n_lanes) > 0) & (np.diff(cdfs, axis=1) <= 0)):
        raise ValueError("a symbol has no slot in its context's table")
    if not LANE_STATE_LOW <= start < 1 << 32:
        raise ValueError(f"initial lane state {start} outside [2**16, 2**32)")
    return _encode(s, cdfs, classes, int(precision), int(n_lanes), np.uint64(start), True)


def encode_lanes(symbols: np.ndarray, cdf: np.ndarray, precision: int, n_lanes: int,
                 start: int = LANE_STATE_LOW) -> np.ndarray:
    """Code symbols (indices into ``cdf``'s n + 1 boundaries) as one lane block of ``n_lanes``
    lanes: uint16 words that :func:`codec.rans.decode_lanes` turns back into ``symbols``.
    ``start`` is the lanes' initial state; anything but 2**16 makes a stream a decoder must
    refuse (conformance vectors use it)."""
    s = np.ascontiguousarray(symbols, dtype=np.int64).ravel()
    if s.size == 0:
        return np.zeros(0, dtype=np.uint16)
    if not 1 <= n_lanes <= s.size:
        raise ValueError(f"{n_lanes} lanes for {s.size} symbols")
    cdf = np.ascontiguousarray(cdf, dtype=np.int64)
    if s.min() < 0 or s.max() >= cdf.size - 1 or np.any((np.bincount(s, minlength=cdf.size - 1) > 0)
                                                          & (np.diff(cdf) <= 0)):
        raise ValueError("a symbol is outside the table or has no slot")
    if not LANE_STATE_LOW <= start < 1 << 32:
        raise ValueError(f"initial lane state {start} outside [2**16, 2**32)")
    return _encode(s, cdf[None, :], np.zeros(cdf.size - 1, dtype=np.int64), int(precision), int(n_lanes),
                   np.uint64(start), False)


def choose_lanes(count: int, est_bits: float, lane_symbols: int = LANE_SYMBOLS) -> int:
    """Lanes for a block of ``count`` symbols whose words take about ``est_bits``, each lane
    about ``lane_symbols`` long."""
    if count == 0:
        return 0
    by_symbols = -(-count // lane_symbols)
    by_bytes = int(est_bits / (8 * MIN_LANE_BYTES))
    return int(max(1, -(-count // MAX_LANE_SYMBOLS), min(by_symbols, by_bytes)))


@functools.cache
def _slot_log2() -> np.ndarray:
    """log2 of every slot count 0 … 2**16 (entry 0 unused), by codec.exactmath: the same on every machine."""
    table = np.zeros((1 << LANE_PRECISION_MAX) + 1)
    table[1:] = exactmath.log2(np.arange(1, (1 << LANE_PRECISION_MAX) + 1, dtype=np.float64))
    return table


def choose_precision(freqs: np.ndarray, counts: np.ndarray, tolerance: float) -> tuple[int, float]:
    """Coarsest table precision P whose code length for ``counts`` is within ``tolerance``
    (plus 8 bits) of 16-bit precision; returns (P, estimated bits)."""
    n = int(np.asarray(freqs).size)
    used = counts > 0

    log2 = _slot_log2()

    def bits(p: int) -> float:  # exact logs and fsum: the choice is part of the bitstream
        slots = np.diff(lane_cdf(freqs, p))[used]
        return math.fsum((counts[used] * (p - log2[slots])).tolist())

    best = bits(LANE_PRECISION_MAX)
    for p in range(max(1, (n - 1).bit_length()), LANE_PRECISION_MAX):
        b = bits(p)
        if b <= best * (1 + tolerance) + 8:
            return p, b
    return LANE_PRECISION_MAX, best
