"""rANS decoding in integers and plain numpy: the legacy single stream and interleaved lanes.

Two coders, both defined by integer rules that SPEC.md states in full:

* **stack** (format v1–v4): one stream, 64-bit state, 32-bit words read from the end,
  24-bit fixed-point tables built by :func:`stack_cdf`. It is the coder constriction 0.4/0.5
  calls ``stack.AnsCoder`` with ``Categorical(perfect=False)``; this module reproduces it
  without constriction so that old files decode with numpy alone. Decoding is inherently
  one symbol at a time.
* **lanes** (format v5): a tensor's symbols are cut into lanes of ``lane_len`` consecutive
  symbols, each lane an independent rANS coder with a 32-bit state and 16-bit words, the
  lanes' words interleaved in the order a lock-step decoder reads them. A decoder advances
  every lane by one symbol per numpy operation, so decoding runs at array speed.
  :func:`lane_cdf` builds their tables exactly in integers.

Everything here reads hostile input: a stream that is short, long or does not end in its
initial state raises CorruptionError.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import NamedTuple, Sequence

import numpy as np

from nnr.errors import CorruptionError

STACK_PRECISION = 24
"""Bits of the v1–v4 fixed-point tables (constriction's default categorical model)."""

LANE_PRECISION_MAX = 16
"""Largest table precision a lane block may declare; its decoder holds 2**P table slots."""

LANE_STATE_LOW = 1 << 16
"""A lane's state lives in [2**16, 2**32): it starts and must end at exactly 2**16."""

_WORD_BITS = 16
_MASK32 = (1 << 32) - 1


def stack_cdf(freqs: np.ndarray) -> np.ndarray:
    """v1–v4 rule: cdf[i] = trunc(float64(cum_i) × float64((2**24 − n) / total)) + i.

    ``freqs`` are the n ≥ 2 integer weights carried in the file (zeros allowed). Every symbol
    gets at least one of the 2**24 slots. The float64 product is part of the rule: it is what
    constriction's ``from_floating_point_probabilities_fast`` computes, so v1–v4 streams
    decode only with this exact rounding. Returns n + 1 int64 boundaries ending in 2**24.
    """
    f = np.asarray(freqs, dtype=np.int64)
    n = f.size
    if n < 2 or n >= (1 << STACK_PRECISION) - 1:
        raise CorruptionError(f"entropy table of {n} symbols (a v1–v4 table has 2 to 2**24 − 2)")
    if np.any(f < 0) or int(f.sum()) <= 0:
        raise CorruptionError("entropy table has no nonzero frequency")
    total = float(int(f.sum()))  # < 2**53: exact
    scale = float((1 << STACK_PRECISION) - n) / total
    cum = np.concatenate(([0], np.cumsum(f)[:-1])).astype(np.float64)
    cdf = np.empty(n + 1, dtype=np.int64)
    cdf[:n] = np.trunc(cum * scale).astype(np.int64) + np.arange(n)
    cdf[n] = 1 << STACK_PRECISION
    return cdf


def stack_decode(words: np.ndarray, freqs: np.ndarray, count: int) -> np.ndarray:
    """Decode ``count`` symbols of a v1–v4 stream (uint32 words) under table ``freqs``.

    The initial state is the last word (never zero), widened by the one before it; each
    symbol takes quantile = state mod 2**24, finds i with cdf[i] ≤ quantile < cdf[i+1],
    sets state = (state >> 24) · (cdf[i+1] − cdf[i]) + quantile − cdf[i], and refills one
    word from the end while state < 2**32 and words remain. A valid stream leaves state 0
    and no words.
    """
    if count == 0:
        return np.zeros(0, dtype=np.int32)
    cdf = stack_cdf(freqs).tolist()
    stack = [int(w) for w in np.asarray(words, dtype=np.uint32)]
    if stack and stack[-1] == 0:
        raise CorruptionError("entropy-coded stream ends in a zero word")
    state = 0
    if stack:
        state = stack.pop()
        if stack:
            state = (state << 32) | stack.pop()
    out = [0] * count
    low = 1 << 32
    mask = (1 << STACK_PRECISION) - 1
    shift = STACK_PRECISION
    for i in range(count):
        q = state & mask
        s = bisect_right(cdf, q) - 1
        c = cdf[s]
        state = (state >> shift) * (cdf[s + 1] - c) + q - c
        if state < low and stack:
            state = (state << 32) | stack.pop()
        out[i] = s
    if state != 0 or stack:
        raise CorruptionError("entropy-coded stream has data left over after its last symbol")
    return np.asarray(out, dtype=np.int32)


def lane_cdf(freqs: np.ndarray, precision: int) -> np.ndarray:
    """v5 rule, exact in integers: cdf[i] = ⌊cum_i · (2**P − n) / total⌋ + i.

    Every one of the n symbols gets at least one slot, the boundaries end at 2**P, and the
    rounding is the same on every platform. ``total`` must stay below 2**47 so that the
    products fit int64. Returns n + 1 int64 boundaries.
    """
    f = np.asarray(freqs, dtype=np.int64)
    n = f.size
    if not 1 <= precision <= LANE_PRECISION_MAX:
        raise CorruptionError(f"table precision {precision} (a lane table has 1 to {LANE_PRECISION_MAX} bits)")
    if n < 1 or n > (1 << precision):
        raise CorruptionError(f"entropy table of {n} symbols does not fit {precision}-bit precision")
    if np.any(f < 0):
        raise CorruptionError("entropy table has a negative frequency")
    total = int(f.sum())
    if total <= 0 or total >= 1 << 47:
        raise CorruptionError("entropy table total out of range (1 to 2**47 − 1)")
    cum = np.concatenate(([0], np.cumsum(f)))
    cdf = cum * ((1 << precision) - n) // total + np.arange(n + 1)
    return cdf


def lane_count(count: int, lane_len: int) -> int:
    """Lanes a block of ``count`` symbols has: every lane holds ``lane_len`` but the last."""
    return -(-count // lane_len) if count else 0


class LaneTable:
    """Decoder lookup of one lane table: for each of the 2**P slots, its symbol and the
    packed pair (slot count of the symbol, slot − first slot of the symbol)."""

    def __init__(self, cdf: np.ndarray, precision: int) -> None:
        freq = np.diff(cdf)
        self.precision = precision
        self.size = int(freq.size)
        self.symbol = np.repeat(np.arange(freq.size, dtype=np.int32), freq)
        if self.size > 1:  # every count is then below 2**16, so it packs into 16 bits
            sym = self.symbol
            self.packed = (freq[sym].astype(np.uint32) << 16) | (np.arange(1 << precision) - cdf[sym]).astype(np.uint32)


class LaneBlock(NamedTuple):
    """One coded lane block as a decoder receives it."""
    words: np.ndarray     # uint16
    table: LaneTable
    count: int            # symbols
    lane_len: int         # symbols per lane (every lane but the last)


def decode_lanes(words: np.ndarray, table: LaneTable, count: int, lane_len: int) -> np.ndarray:
    """Decode one lane block: ``count`` symbols from uint16 ``words``.

    Lane j holds symbols [j·lane_len, (j+1)·lane_len). The words start with every lane's
    initial state (high half, then low half, lane by lane); then, for each step t and for
    lanes in ascending order, a lane whose state fell below 2**16 after decoding its t-th
    symbol shifts in the next word. Every lane must end in state 2**16 with every word used.
    """
    return decode_lane_blocks([LaneBlock(words, table, count, lane_len)])[0]


def decode_lane_blocks(blocks: Sequence[LaneBlock]) -> list[np.ndarray]:
    """Decode many lane blocks at once: every lane of every block advances in one lock step,
    so a model of many small tensors decodes at the speed of one large one."""
    results = [np.zeros(b.count if b.count > 0 else 0, dtype=np.int32) for b in blocks]
    live, heads, bodies = [], [], []
    for i, b in enumerate(blocks):
        prepared = _prepare(b)
        if prepared is None:
            continue
        x0, body = prepared
        if b.table.size == 1:  # one symbol: it owns every slot, states never move, no words
            if body.size or np.any(x0 != LANE_STATE_LOW):
                raise CorruptionError("a lane of a one-symbol table must hold its initial state and no words")
            continue
        live.append(i)
        heads.append(x0)
        bodies.append(body)
    if not live:
        return results
    nb = len(live)
    lanes = np.array([h.size for h in heads], dtype=np.int64)
    lane_start = np.concatenate(([0], np.cumsum(lanes)))
    lut_size = np.array([1 << blocks[i].table.precision for i in live], dtype=np.int64)
    lut_start = np.concatenate(([0], np.cumsum(lut_size)[:-1]))
    packed = np.concatenate([blocks[i].table.packed for i in live])
    x = np.concatenate(heads)
    off = np.repeat(lut_start.astype(np.uint32), lanes) if nb > 1 else None
    precisions = np.array([blocks[i].table.precision for i in live], dtype=np.uint32)
    if np.all(precisions == precisions[0]):
        shift, mask = precisions[0], np.uint32((1 << int(precisions[0])) - 1)
    else:
        shift = np.repeat(precisions, lanes)
        mask = (np.uint32(1) << shift) - np.uint32(1)
    body_len = np.array([bd.size for bd in bodies], dtype=np.int64)
    body_start = np.concatenate(([0], np.cumsum(body_len)[:-1]))
    body = np.concatenate(bodies)
    length = np.concatenate([_lane_lengths(blocks[i]) for i in live])
    steps = int(length.max())
    slots = np.empty((steps, x.size), dtype=np.uint16)
    pos = np.zeros(nb, dtype=np.int64)
    low = np.uint32(LANE_STATE_LOW)
    alive = None
    ends = np.unique(length)
    next_end = 0
    for t in range(steps):
        if t == ends[next_end]:  # lanes that are done must end where they started; they stop reading
            done = length == t
            if np.any(x[done] != low):
                raise CorruptionError("a lane does not end in its initial state")
            alive = length > t
            next_end += 1
        g = x & mask
        slots[t] = g
        if off is not None:
            g += off
        e = packed.take(g)
        x >>= shift
        x *= e >> 16
        x += e & np.uint32(0xFFFF)
        need = x < low
        if alive is not None:
            need &= alive
        idx = np.flatnonzero(need)
        k = idx.size
        if not k:
            continue
        if nb == 1:
            widx = slice(int(pos[0]), int(pos[0]) + k)
            pos[0] += k
        else:
            bounds = np.searchsorted(idx, lane_start)
            cnt = np.diff(bounds)
            widx = np.repeat(body_start + pos - bounds[:-1], cnt) + np.arange(k)
            pos += cnt
        if np.any(pos > body_len):
            raise CorruptionError("lane block runs out of words")
        x[idx] = (x[idx] << _WORD_BITS) | body[widx]
    last = length == steps
    if np.any(x[last] != low):
        raise CorruptionError("a lane does not end in its initial state")
    if np.any(pos != body_len):
        raise CorruptionError("lane block has words left over after its last symbol")
    for k, i in enumerate(live):
        b = blocks[i]
        cols = slots[:min(b.lane_len, b.count), lane_start[k]:lane_start[k + 1]]
        results[i] = b.table.symbol.take(cols.T.reshape(-1)[:b.count])
    return results


def _lane_lengths(b: LaneBlock) -> np.ndarray:
    n_lanes = lane_count(b.count, b.lane_len)
    lengths = np.full(n_lanes, min(b.lane_len, b.count), dtype=np.int64)
    lengths[-1] = b.count - (n_lanes - 1) * b.lane_len
    return lengths


def _prepare(b: LaneBlock) -> tuple[np.ndarray, np.ndarray] | None:
    """Check a block's shape; returns (initial states, body words), or None if it is empty."""
    words = np.asarray(b.words, dtype=np.uint16)
    if b.count == 0:
        if words.size:
            raise CorruptionError("empty lane block carries words")
        return None
    if b.lane_len < 1:
        raise CorruptionError("lane length must be at least 1")
    n_lanes = lane_count(b.count, b.lane_len)
    if words.size < 2 * n_lanes:
        raise CorruptionError(f"lane block of {n_lanes} lanes holds only {words.size} words")
    x = (words[0:2 * n_lanes:2].astype(np.uint32) << 16) | words[1:2 * n_lanes:2]
    if np.any(x < LANE_STATE_LOW):
        raise CorruptionError("lane block starts a lane below its state range")
    return x, words[2 * n_lanes:].astype(np.uint32)
