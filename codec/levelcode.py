"""Entropy coding of integer quantization levels: coarse symbols, raw fine bits, escapes.

A level q with |q| ≤ K splits into a coarse part c = q >> s (floor division by 2**s) and s
raw fine bits f = q & (2**s − 1). The coarse parts are ANS-coded over the alphabet
[c_lo, c_hi] = [(−K) >> s, K >> s] plus one escape symbol; levels beyond ±K are escapes
coded as varints. At high rate the low bits of a Laplacian level are nearly uniform, so
sending them raw costs almost nothing and keeps the coded alphabet small and the decoder
fast; the encoder picks s per tensor.

Layout of a level block (all little-endian):

    varint K                  alphabet half-width (≤ 2**20; ≤ 2**15 − 1 with lanes)
    u8     s                  fine bits per non-escaped level (0..16)
    u8     C                  format v7 on: number of tables, 1 to 4 (absent before: one)
    C tables                  codec.entropy.write_table over n = c_hi − c_lo + 2 symbols;
                              symbol = c − c_lo, escape = n − 1 (geometric tables need s = 0)
    varint n_escapes, then n_escapes varints u = 2·(|q| − K − 1) + (1 if q < 0 else 0)
    varint n_fine_bytes, then s bit planes: plane j holds bit j of the fine part of every
                              non-escaped level in order, packed 8 per byte (first level in
                              the least significant bit), ceil(m / 8) bytes per plane
    ANS stream                format v1–v4: varint n_words, n_words uint32 words (codec.rans
                              stack coder); v5: u8 P, varint L, varint n_words, n_words uint16
                              words (codec.rans lanes, table precision P, L lanes)

With C > 1 the lanes hold runs of consecutive symbols and each symbol is coded with table
min(class(previous) + class(the one before), C − 1) of its lane, where a symbol's class is
min(|c|, 3) and the escape's is 3 (codec.rans, context lanes): on small, recurrent and audio
models a level's magnitude follows its neighbours' (docs/techniques.md).

The element count is not stored here: the caller knows it from the tensor's shape. Reading
a block (:func:`read_levels`) and finishing it from its decoded symbols are separate steps, so
a decoder can decode the symbols of many blocks at once (:func:`codec.rans.decode_blocks`).
"""

from __future__ import annotations

import numpy as np

from .errors import CorruptionError

from . import exactmath
from .bytestream import ByteReader, ByteWriter, encode_varints
from .entropy import ans_encode, best_table, best_tables, read_table, write_table
from .rans import LANE_PRECISION_MAX, MAX_CONTEXTS, LaneBlock, LaneTable, StackBlock, decode_blocks, lane_cdf

STACK, LANES, CONTEXT_LANES = 0, 1, 2
"""Level block dialects: format v1–v4 (one stack stream), v5–v6 (lanes), v7 on (lanes and a
table count C). A dialect is truthy exactly when the block uses lanes."""

MAX_K = 1 << 20
"""Largest alphabet half-width a stream may declare."""
MAX_LANE_K = (1 << (LANE_PRECISION_MAX - 1)) - 1
"""With lanes the alphabet (2K + 2 symbols at most) must fit a 16-bit table."""
LANE_TABLE_BYTES_PER_SLOT = 16
"""Memory a decoder spends per slot of a lane table (symbol, packed pair, one temporary)."""
CONTEXT_TABLE_BYTES_PER_SLOT = 24
"""The same for context tables, which also keep each slot's class."""
PRECISION_TOLERANCE = 0.001
"""The encoder takes the coarsest table precision that costs at most this fraction more
(plus one byte) than 16 bits: a small table is faster to build and to look up."""

MAX_EXPANSION_LOG2 = 20
"""A level block holds at most 2**20 levels per byte (plus 64 bytes of slack): SPEC §4."""

MAX_FINE_BITS = 16
MAX_LEVEL = (1 << 31) - 1
CONTEXT_MIN_GAIN = 0.02
"""The encoder codes a block with context tables only when they save at least this fraction of
its estimated entropy-coded bits (tables included): a lock step over context-coded lanes does
about 40 % more work per step."""

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

    coarse, probs = [], []
    for s in range(min(MAX_FINE_BITS, k.bit_length()) + 1):
        lo, hi = _coarse_range(k, s)
        edges = (np.arange(lo, hi + 1) << s) + k
        c = np.add.reduceat(level_counts, np.maximum(edges, 0)).astype(np.float64)
        c = np.append(c[c > 0], n_escapes)
        c = c[c > 0]
        coarse.append(c)
        probs.append(c / c.sum())
    logs = np.split(exactmath.log2(np.concatenate(probs)), np.cumsum([p.size for p in probs])[:-1])
    cost = [float(-(c * lg).sum()) + s * n_plain for s, (c, lg) in enumerate(zip(coarse, logs))]
    best = 0
    for s in range(1, len(cost)):
        if cost[s] > cost[0] * (1 + FINE_BITS_TOLERANCE):
            break
        best = s
    return best


def encode_levels(levels: np.ndarray, k: int | None = None, fine_bits: int | None = None,
                  lanes: int = CONTEXT_LANES) -> bytes:
    """Code an int array of levels; returns the level block in dialect ``lanes`` (the current
    format's by default)."""
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
    kind, params, bits = best_table(counts, (n_sym - 2) // 2, allow_geometric=(s == 0))
    w = ByteWriter()
    w.varint(k)
    w.u8(s)
    tables = [(kind, params)]
    contexts = None
    if lanes == CONTEXT_LANES:
        contexts = _choose_contexts(symbols, counts, bits, symbol_classes(lo, n_sym), s == 0)
        if contexts is not None:
            tables = contexts[2]
        w.u8(len(tables))
    table = ByteWriter()
    for kind, params in tables:
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
    r = ByteReader(table.getvalue())
    freqs = [read_table(r, n_sym) for _ in tables]
    if contexts is not None:
        w.raw(_encode_context_stream(symbols, freqs, contexts[0], contexts[1], symbol_classes(lo, n_sym)))
        return w.getvalue()
    if lanes:
        w.raw(encode_lane_stream(symbols, freqs[0], counts))
        return w.getvalue()
    words = ans_encode(symbols, freqs[0])
    w.varint(int(words.size))
    w.raw(words.astype("<u4").tobytes())
    return w.getvalue()


def symbol_classes(lo: int, n_sym: int) -> np.ndarray:
    """Context class of each coarse symbol: min(|c|, 3) for coarse value c, 3 for the escape."""
    classes = np.minimum(np.abs(np.arange(n_sym - 1) + lo), 3)
    return np.append(classes, 3)


def _choose_contexts(symbols: np.ndarray, counts: np.ndarray, plain_bits: float, classes: np.ndarray,
                     allow_geometric: bool) -> tuple[int, np.ndarray, list] | None:
    """(lanes, counts per context, tables) of the context count that codes ``symbols`` smallest,
    tables included, or None when one table is smallest or within CONTEXT_MIN_GAIN of it."""
    from .rans_encode import LANE_SYMBOLS, choose_lanes, context_counts

    n_sym = counts.size
    if symbols.size < 2 or n_sym < 3:
        return None
    n_lanes = choose_lanes(int(symbols.size), plain_bits, LANE_SYMBOLS)
    joint = context_counts(symbols, classes, MAX_CONTEXTS, n_lanes)
    best = plain_bits * (1 - CONTEXT_MIN_GAIN)
    if _conditional_bits(joint) >= best:  # the finest contexts, with no table at all, do not pay
        return None
    splits = [np.vstack([joint[:c - 1], joint[c - 1:].sum(axis=0, keepdims=True)]) for c in range(2, MAX_CONTEXTS + 1)]
    splits = [parts for parts in splits if parts.any(axis=1).all()]
    found = iter(best_tables([part for parts in splits for part in parts], (n_sym - 2) // 2, allow_geometric))
    chosen = None
    for parts in splits:
        tables, bits = [], 8.0 * (len(parts) - 1)   # the kind byte of each table past the first
        for kind, params, b in (next(found) for _ in parts):
            tables.append((kind, params))
            bits += b
        if bits < best:
            best, chosen = bits, (n_lanes, parts, tables)
    return chosen


def _conditional_bits(joint: np.ndarray) -> float:
    """Ideal code length of the symbols counted in ``joint`` (contexts × symbols), each row coded
    with its own distribution."""
    used = joint > 0
    rows = np.broadcast_to(joint.sum(axis=1, keepdims=True), joint.shape)
    return float(-(joint[used] * exactmath.log2(joint[used] / rows[used])).sum())


def _encode_context_stream(symbols: np.ndarray, freqs: list[np.ndarray], n_lanes: int, parts: np.ndarray,
                           classes: np.ndarray) -> bytes:
    """The lane stream of a context-coded block (``parts``: each context's symbol counts):
    u8 P, varint L, varint n_words, n_words u16."""
    from .rans_encode import choose_precision, encode_context_lanes

    precision = max(choose_precision(f, part, PRECISION_TOLERANCE)[0] for f, part in zip(freqs, parts))
    words = encode_context_lanes(symbols, np.stack([lane_cdf(f, precision) for f in freqs]), classes,
                                 precision, n_lanes)
    w = ByteWriter()
    w.u8(precision)
    w.varint(n_lanes)
    w.varint(int(words.size))
    w.raw(words.astype("<u2").tobytes())
    return w.getvalue()


def encode_lane_stream(symbols: np.ndarray, freqs: np.ndarray, counts: np.ndarray,
                       lane_symbols: int | None = None) -> bytes:
    """u8 P, varint L, varint n_words, n_words u16: ``symbols`` under table ``freqs`` in lanes
    (of about ``lane_symbols`` each; default codec.rans_encode.LANE_SYMBOLS)."""
    from .rans_encode import LANE_SYMBOLS, choose_lanes, choose_precision, encode_lanes

    w = ByteWriter()
    if symbols.size == 0:  # no symbols: no table is built, no lanes, no words
        w.u8(LANE_PRECISION_MAX)
        w.varint(0)
        w.varint(0)
        return w.getvalue()
    precision, bits = choose_precision(freqs, counts, PRECISION_TOLERANCE)
    n_lanes = choose_lanes(int(symbols.size), bits, lane_symbols or LANE_SYMBOLS)
    words = encode_lanes(symbols, lane_cdf(freqs, precision), precision, n_lanes)
    w.u8(precision)
    w.varint(n_lanes)
    w.varint(int(words.size))
    w.raw(words.astype("<u2").tobytes())
    return w.getvalue()


def read_lane_stream(r: ByteReader, freqs: np.ndarray | list[np.ndarray], count: int,
                     classes: np.ndarray | None = None) -> LaneBlock:
    """The lane stream of ``count`` symbols that follows its table, or its C context tables
    (a list of C > 1 tables and the symbols' ``classes``; see encode_levels)."""
    tables = freqs if isinstance(freqs, list) else [freqs]
    precision = r.u8()
    n_lanes = r.varint(count)
    if (count > 0) != (n_lanes > 0):
        raise CorruptionError(f"{count} symbols in {n_lanes} lanes")
    if not 1 <= precision <= LANE_PRECISION_MAX:
        raise CorruptionError(f"table precision {precision} (1 to {LANE_PRECISION_MAX} bits)")
    if count:
        per_slot = CONTEXT_TABLE_BYTES_PER_SLOT if len(tables) > 1 else LANE_TABLE_BYTES_PER_SLOT
        r.charge(len(tables) * per_slot << precision, f"{len(tables)} lane table(s) of {1 << precision} slots")
    table = None
    if count:
        cdfs = np.stack([lane_cdf(f, precision) for f in tables])
        table = LaneTable(cdfs if len(tables) > 1 else cdfs[0], precision, classes if len(tables) > 1 else None)
    n_words = r.varint()
    if n_words * 2 > r.remaining:
        raise CorruptionError(f"lane stream declares {n_words} words but only {r.remaining} bytes remain")
    r.charge(2 * count + 8 * n_lanes, f"{n_lanes} lanes of {count} symbols")
    return LaneBlock(r.array("<u2", n_words), table, count, n_lanes)


class LevelJob:
    """A parsed level block whose symbols are still entropy-coded (``ans``)."""

    def __init__(self, ans: LaneBlock | StackBlock, k: int, s: int, lo: int, n_sym: int,
                 escapes: np.ndarray, packed: memoryview, n_plain: int) -> None:
        self.ans, self.k, self.s, self.lo, self.n_sym = ans, k, s, lo, n_sym
        self.escapes, self.packed, self.n_plain = escapes, packed, n_plain

    def finish(self, symbols: np.ndarray) -> np.ndarray:
        """Levels (int32) from the block's decoded symbols; an int32 ``symbols`` array is
        overwritten with them (a block's symbols are not needed once it has its levels)."""
        s, n_esc = self.s, self.escapes.size
        esc_pos = np.flatnonzero(symbols == self.n_sym - 1)
        if esc_pos.size != n_esc:
            raise CorruptionError(f"level block has {esc_pos.size} escape symbols but {n_esc} escape values")
        levels = symbols if symbols.dtype == np.int32 else symbols.astype(np.int32)
        levels += self.lo
        if s:
            levels <<= s
            np.bitwise_or(levels, self._fine_bits(esc_pos), out=levels)
        if n_esc:
            self.check_escapes()
            levels[esc_pos] = self.escape_levels()
        return levels

    def check_escapes(self) -> None:
        """Refuse an escaped level beyond MAX_LEVEL."""
        if np.any(self.escapes >> np.uint64(1) > np.uint64(MAX_LEVEL - self.k - 1)):
            raise CorruptionError("escaped level out of range")

    def escape_levels(self) -> np.ndarray:
        """The escaped levels (int32), in order; meaningful once check_escapes has passed."""
        mags = ((self.escapes >> np.uint64(1)).astype(np.int64) + self.k + 1).astype(np.int32)
        return np.where(self.escapes & np.uint64(1), -mags, mags)

    def fine_planes(self) -> np.ndarray:
        """The s bit planes of the plain levels' fine bits, (s, ⌈plain / 8⌉) uint8, bit j % 8 of
        byte j // 8 for the j-th plain level (lowest plane first)."""
        return np.frombuffer(self.packed, dtype=np.uint8).reshape(self.s, (self.n_plain + 7) // 8)

    def _fine_bits(self, esc_pos: np.ndarray) -> np.ndarray:
        """Each level's s low bits from the bit planes (0 at the escapes, which have none),
        gathered in bytes when they fit: the planes are as long as the tensor."""
        s, n = self.s, self.n_plain
        planes = self.fine_planes()
        wide = np.int32 if s > 8 else np.uint8
        fine = np.unpackbits(planes[0], count=n, bitorder="little").astype(wide, copy=False)
        for j in range(1, s):
            bits = np.unpackbits(planes[j], count=n, bitorder="little").astype(wide, copy=False)
            bits <<= j
            fine |= bits
        if esc_pos.size:
            fine = np.insert(fine, esc_pos - np.arange(esc_pos.size), 0)
        return fine


def read_levels(r: ByteReader, count: int, lanes: int) -> LevelJob:
    """Read one level block for ``count`` elements, up to its entropy-coded symbols."""
    if count > (r.remaining + 64) << MAX_EXPANSION_LOG2:
        raise CorruptionError(f"level block of {count} levels cannot come from {r.remaining} bytes")
    r.charge(8 * count, f"{count} levels")
    k = r.varint(MAX_LANE_K if lanes else MAX_K)
    s = r.u8()
    if s > MAX_FINE_BITS:
        raise CorruptionError(f"level block declares {s} fine bits (limit {MAX_FINE_BITS})")
    lo, hi = _coarse_range(k, s)
    n_sym = hi - lo + 2
    n_tables = 1
    if lanes == CONTEXT_LANES:
        n_tables = r.u8()
        if not 1 <= n_tables <= MAX_CONTEXTS:
            raise CorruptionError(f"level block declares {n_tables} tables (1 to {MAX_CONTEXTS})")
    tables = [read_table(r, n_sym, allow_geometric=(s == 0)) for _ in range(n_tables)]
    n_esc = r.varint(count)
    escapes = r.varints(n_esc)
    n_fine = r.varint()
    n_plain = count - n_esc
    plane_bytes = (n_plain + 7) // 8
    if n_fine != s * plane_bytes:
        raise CorruptionError(f"level block holds {n_fine} fine-bit bytes, expected {s * plane_bytes}")
    packed = r.raw(n_fine)
    if lanes:
        classes = symbol_classes(lo, n_sym) if n_tables > 1 else None
        ans: LaneBlock | StackBlock = read_lane_stream(r, tables if n_tables > 1 else tables[0], count, classes)
    else:
        freqs = tables[0]
        n_words = r.varint()
        if n_words * 4 > r.remaining:
            raise CorruptionError(f"level block declares {n_words} words but only {r.remaining} bytes remain")
        ans = StackBlock(r.array("<u4", n_words), freqs, count)
    return LevelJob(ans, k, s, lo, n_sym, escapes, packed, n_plain)


def decode_levels(r: ByteReader, count: int, lanes: int = CONTEXT_LANES) -> np.ndarray:
    """Read one level block for ``count`` elements; returns int32 levels."""
    job = read_levels(r, count, lanes)
    return job.finish(decode_blocks([job.ans])[0])
