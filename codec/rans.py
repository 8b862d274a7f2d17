"""rANS decoding in integers and plain numpy: the legacy single stream and interleaved lanes.

Two coders, both defined by integer rules that SPEC.md states in full:

* **stack** (format v1–v4): one stream, 64-bit state, 32-bit words read from the end,
  24-bit fixed-point tables built by :func:`stack_cdf`. It is the coder constriction 0.4/0.5
  calls ``stack.AnsCoder`` with ``Categorical(perfect=False)``; this module reproduces it
  without constriction so that old files decode with numpy alone. Decoding is inherently
  one symbol at a time.
* **lanes** (format v5): a block's symbols are dealt round-robin to L lanes (symbol i to
  lane i mod L), each lane an independent rANS coder with a 32-bit state and 16-bit words,
  the lanes' words interleaved in the order a lock-step decoder reads them. A decoder
  advances every lane by one symbol per numpy operation, and step t of a block is its
  symbols [t·L, (t+1)·L): the output needs no transposition.
  :func:`lane_cdf` builds their tables exactly in integers.
* **context lanes** (format v7): a block with C > 1 tables gives each lane a run of
  consecutive symbols, and each symbol is coded with the table its two predecessors in the
  lane select (:class:`_ContextStep`), so neighbouring levels inform each other's
  probabilities while every lane still advances one symbol per operation.

Everything here reads hostile input: a stream that is short, long or does not end in its
initial state raises CorruptionError.
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from typing import Callable, Generator, Iterable, Iterator, NamedTuple, Sequence, TypeVar

import numpy as np

from .errors import CorruptionError

STACK_PRECISION = 24
"""Bits of the v1–v4 fixed-point tables (constriction's default categorical model)."""

LANE_PRECISION_MAX = 16
"""Largest table precision a lane block may declare; its decoder holds 2**P table slots."""

MAX_LANE_SYMBOLS = 1 << 16
"""A lane holds at most 2**16 symbols, so a decoder's lock step is never longer than that."""

LANE_STATE_LOW = 1 << 16
"""A lane's state lives in [2**16, 2**32): it starts and must end at exactly 2**16."""

MAX_CONTEXTS = 4
"""A context-coded lane block has 2 to 4 tables: a context is a sum of two classes 0..3, capped."""

_WORD_BITS = 16
T = TypeVar("T")
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


def lane_lengths(count: int, n_lanes: int) -> np.ndarray:
    """Symbols in each lane: ⌊count / L⌋, one more for j < count mod L (round-robin or runs alike)."""
    q, r = divmod(count, n_lanes)
    lengths = np.full(n_lanes, q, dtype=np.int64)
    lengths[:r] += 1
    return lengths


class LaneTable:
    """Decoder lookup of one lane table, or of C context tables laid end to end: for each of the
    C·2**P slots, its symbol, the packed pair (slot count of the symbol, slot − first slot of the
    symbol) and, with contexts, the symbol's context class."""

    def __init__(self, cdf: np.ndarray, precision: int, classes: np.ndarray | None = None) -> None:
        cdfs = np.atleast_2d(np.asarray(cdf, dtype=np.int64))
        freq = np.diff(cdfs, axis=1)
        if (cdfs.ndim != 2 or cdfs.shape[1] < 2 or np.any(cdfs[:, 0] != 0)
                or np.any(cdfs[:, -1] != 1 << precision) or np.any(freq <= 0)):
            # the lock step's gathers skip bounds checks: every slot must belong to a symbol
            raise ValueError(f"a lane table needs cdfs rising strictly from 0 to 2**{precision}")
        self.precision = precision
        self.contexts = int(cdfs.shape[0])
        self.size = int(freq.shape[1])
        ids = np.arange(self.size, dtype=np.int32)
        self.symbol = np.concatenate([np.repeat(ids, f) for f in freq])
        if self.size > 1:  # every count is then below 2**16: (count << 16) + slot − first slot
            slots = np.arange(1 << precision)
            self.packed = np.concatenate([np.repeat((f << 16) - c[:-1], f) + slots for f, c in zip(freq, cdfs)])
            self.packed = self.packed.astype(np.uint32)
        self.classes = None
        if self.contexts > 1:
            if classes is None or np.asarray(classes).shape != (self.size,):
                raise ValueError("context tables need one class per symbol")
            if np.any(np.asarray(classes) < 0) or np.any(np.asarray(classes) > 3):
                raise ValueError("a symbol's context class is 0 to 3")   # the compiled lock step's lookups rely on it
            self.classes = np.asarray(classes, dtype=np.uint32)[self.symbol]


class LaneBlock(NamedTuple):
    """One coded lane block as a decoder receives it."""
    words: np.ndarray     # uint16
    table: LaneTable | None   # None only when count is 0
    count: int            # symbols
    n_lanes: int          # 1 ≤ n_lanes ≤ count (0 when count is 0)

    @property
    def contiguous(self) -> bool:
        """Lanes of a context-coded block hold runs of consecutive symbols, not every L-th one."""
        return self.table is not None and self.table.contexts > 1


def decode_lanes(words: np.ndarray, table: LaneTable, count: int, n_lanes: int) -> np.ndarray:
    """Decode one lane block: ``count`` symbols from uint16 ``words``.

    Symbol i is lane (i mod L)'s symbol number ⌊i / L⌋ (with context tables, lanes hold runs
    of consecutive symbols instead: SPEC section 3). The words start with every lane's
    initial state (high half, then low half, lane by lane); then, for each step t and for
    lanes in ascending order, a lane whose state fell below 2**16 after decoding its t-th
    symbol shifts in the next word. Every lane must end in state 2**16 with every word used.
    """
    return decode_lane_blocks([LaneBlock(words, table, count, n_lanes)])[0]


GROUP_SLACK = 1 << 20
"""Slots a lock step may spend on lanes that are already done, beyond the group's own symbols."""
MAX_GROUP_SLOTS = 1 << 31
"""Table slots of one lock step: its uint32 slot offsets never wrap."""


def decode_lane_blocks(blocks: Sequence[LaneBlock], compiled: bool = False) -> list[np.ndarray]:
    """Decode many lane blocks at once: every lane of every block advances in one lock step,
    so a model of many small tensors decodes at the speed of one large one. Blocks whose
    lock steps differ widely in length go in separate groups, so that memory stays within
    twice the symbols. ``compiled``: see :func:`lock_step_lane_blocks`."""
    return [s() for s in lock_step_lane_blocks(blocks, compiled)]


Alloc = Callable[[int, np.dtype], np.ndarray]
"""``alloc(count, dtype)``: an uninitialised C-contiguous writable array of ``count`` elements,
perhaps one a decoder used before (np.empty by default)."""
Symbols = Callable[[], np.ndarray]
"""A block's symbols once its lock step is done: calling it gathers them (from the lock step's
table slots), so that this work can run on another thread than the lock step."""


def lock_step_lane_blocks(blocks: Sequence[LaneBlock], compiled: bool = False,
                          alloc: Alloc | None = None) -> list[Symbols]:
    """:func:`decode_lane_blocks`, each block's symbols left to gather: every check of the
    words is made here (a damaged block raises CorruptionError now); gathering cannot fail.
    ``compiled`` decodes with :mod:`codec.rans_jit` (numba; import it first) instead: the same symbols, and the
    same error for a damaged block; it takes each block's symbol array from ``alloc`` when given."""
    results: list = [None] * len(blocks)
    live = []
    for i, b in enumerate(blocks):
        prepared = _prepare(b, widen=not compiled)
        if prepared is None:
            results[i] = _ready(np.zeros(0, dtype=np.int32))
            continue
        if b.table.size == 1:  # one symbol: it owns every slot, states never move, no words
            x0, body = prepared
            if body.size or np.any(x0 != LANE_STATE_LOW):
                raise CorruptionError("a lane of a one-symbol table must hold its initial state and no words")
            results[i] = _ready(np.zeros(b.count, dtype=np.int32))
            continue
        live.append((i, prepared))
    groups = _groups(blocks, live)
    if compiled and compiled_group is None:
        raise RuntimeError("the compiled lock step needs nnr.codec.rans_jit imported first")
    for group in groups:
        if compiled:
            for i, symbols in compiled_group(blocks, group, LANE_STATE_LOW, alloc).items():
                results[i] = _ready(symbols)
        else:
            _gather_group(blocks, group, results)
    return results


compiled_group: Callable | None = None
"""codec.rans_jit.decode_group once that module is imported (it registers itself, so this
module never imports numba)."""


def _groups(blocks: Sequence[LaneBlock], live: list) -> list[list]:
    """``live``'s (block index, prepared) items in lock-step groups: longest lock steps first, a
    group closed where its steps would hold over twice its symbols (plus GROUP_SLACK) or its
    tables would pass MAX_GROUP_SLOTS."""
    live.sort(key=lambda item: -_steps(blocks[item[0]]))
    groups: list[list] = []
    group: list = []
    lanes = symbols = 0
    slots = 0
    for item in live:
        b = blocks[item[0]]
        size = b.table.contexts << b.table.precision
        if group and (_steps(blocks[group[0][0]]) * (lanes + b.n_lanes) > 2 * (symbols + b.count) + GROUP_SLACK
                      or slots + size > MAX_GROUP_SLOTS):
            groups.append(group)
            group, lanes, symbols, slots = [], 0, 0, 0
        group.append(item)
        lanes += b.n_lanes
        symbols += b.count
        slots += size
    if group:
        groups.append(group)
    return groups


def _gather_group(blocks: Sequence[LaneBlock], group: list, results: list) -> None:
    """Lock-step ``group`` and put in ``results`` what gathers each of its blocks' symbols."""
    symbol, columns = _decode_group(blocks, group)
    for i, cols in columns:
        results[i] = functools.partial(_gathered, cols, symbol, blocks[i])


def _ready(symbols: np.ndarray) -> Symbols:
    return lambda: symbols


GATHER_ELEMENTS = 1 << 16
"""Slots looked up at a time when a block's symbols are gathered: the lookup's index array
(int64, as numpy's gathers want it) is made one small piece at a time and reused, where a
whole block's would be a fresh allocation of 8 bytes per symbol."""
TILE = 256
"""Side of the tiles in which a context block's symbols are turned from step-major to
lane-major order: a tile stays in cache, where a whole-block transpose does not."""


def _gathered(cols: np.ndarray, symbol: np.ndarray, b: LaneBlock) -> np.ndarray:
    """Block ``b``'s symbols from its columns of a lock step's slots (row t: every lane's t-th
    slot), in the block's symbol order."""
    steps, lanes = cols.shape
    if not b.contiguous:   # symbol i is lane i mod L's ⌊i / L⌋-th: the slots row by row
        rows = max(1, GATHER_ELEMENTS // lanes)
        index = np.empty((min(rows, steps), lanes), dtype=np.intp)
        out = np.empty((steps, lanes), dtype=symbol.dtype)
        for t in range(0, steps, rows):
            piece = index[:min(rows, steps - t)]
            piece[...] = cols[t:t + rows]
            symbol.take(piece, out=out[t:t + rows], mode="clip")   # slots < symbol.size by construction
        return out.reshape(-1)[:b.count]
    runs = np.empty((lanes, steps), dtype=symbol.dtype)   # lane j's run is row j
    index = np.empty((min(TILE, steps), min(TILE, lanes)), dtype=np.intp)
    tile = np.empty(index.shape, dtype=symbol.dtype)
    for t in range(0, steps, TILE):
        for j in range(0, lanes, TILE):
            piece = cols[t:t + TILE, j:j + TILE]
            at, got = index[:piece.shape[0], :piece.shape[1]], tile[:piece.shape[0], :piece.shape[1]]
            at[...] = piece
            symbol.take(at, out=got, mode="clip")
            runs[j:j + TILE, t:t + TILE] = got.T
    q, r = divmod(b.count, lanes)
    if not r:
        return runs.reshape(-1)
    out = np.empty(b.count, dtype=symbol.dtype)   # the lanes past count mod L are one shorter
    out[:r * steps] = runs[:r].reshape(-1)
    out[r * steps:].reshape(lanes - r, q)[:] = runs[r:, :q]
    return out


def _steps(b: LaneBlock) -> int:
    return -(-b.count // b.n_lanes)


def _decode_group(blocks: Sequence[LaneBlock], group: list) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One lock step over the lanes of ``group`` ((block index, (initial states, words)) pairs):
    the symbol of each table slot, and per block (its index, its lanes' columns of the slots
    they read, row t holding step t)."""
    live = [i for i, _ in group]
    nb = len(live)
    tables = [blocks[i].table for i in live]
    lanes = np.array([blocks[i].n_lanes for i in live], dtype=np.int64)
    lane_start = np.concatenate(([0], np.cumsum(lanes)))
    lut_size = np.array([t.contexts << t.precision for t in tables], dtype=np.int64)
    lut_start = np.concatenate(([0], np.cumsum(lut_size)[:-1]))
    packed = np.concatenate([t.packed for t in tables])
    x = np.concatenate([p[0] for _, p in group])
    blk = np.repeat(np.arange(nb), lanes)
    context = _ContextStep(tables, lut_start, blk) if any(t.contexts > 1 for t in tables) else None
    if context is not None:
        off = context.first()
    else:
        off = lut_start.astype(np.uint32)[blk] if nb > 1 else None
    precisions = np.array([t.precision for t in tables], dtype=np.uint32)
    if np.all(precisions == precisions[0]):
        shift, mask = precisions[0], np.uint32((1 << int(precisions[0])) - 1)
    else:
        shift = precisions[blk]
        mask = (np.uint32(1) << shift) - np.uint32(1)
    bodies = [p[1] for _, p in group]
    body_len = np.array([bd.size for bd in bodies], dtype=np.int64)
    body_start = np.concatenate(([0], np.cumsum(body_len)[:-1]))
    body = np.concatenate(bodies)
    length = np.concatenate([lane_lengths(blocks[i].count, blocks[i].n_lanes) for i in live])
    steps = int(length.max())
    slots = np.empty((steps, x.size), dtype=np.uint32)   # step-major: row t holds every lane's t-th symbol
    pos = np.zeros(nb, dtype=np.int64)
    low = np.uint32(LANE_STATE_LOW)
    low16 = np.uint32(0xFFFF)
    alive = None
    ends = np.unique(length).tolist()
    e = np.empty_like(x)      # reused at every step: the lane-wide operations allocate nothing
    freq = np.empty_like(x)
    need = np.empty(x.size, dtype=bool)
    for t in range(steps):
        if t == ends[0]:  # lanes that are done must end where they started; they read no more words
            done = length == t
            if (x[done] != low).any():
                raise CorruptionError("a lane does not end in its initial state")
            alive = length > t
            ends.pop(0)
        g = slots[t]
        np.bitwise_and(x, mask, out=g)
        if off is not None:
            g += off
        packed.take(g, out=e, mode="clip")   # g < packed.size by construction: clip only skips the checks
        if context is not None:
            off = context.next(g)
        x >>= shift
        np.right_shift(e, 16, out=freq)
        x *= freq
        e &= low16
        x += e
        np.less(x, low, out=need)
        if alive is not None:
            need &= alive
        idx = np.flatnonzero(need)
        k = idx.size
        if not k:
            continue
        if nb == 1:
            p0 = int(pos[0])
            widx = slice(p0, p0 + k)
            pos[0] = p0 + k
        else:
            bounds = idx.searchsorted(lane_start)
            cnt = bounds[1:] - bounds[:-1]
            base = body_start + pos
            base -= bounds[:-1]
            widx = base.repeat(cnt)
            widx += np.arange(k)
            pos += cnt
        if (pos > body_len).any():
            raise CorruptionError("lane block runs out of words")
        x[idx] = (x[idx] << _WORD_BITS) | body[widx]
    if (x[length == steps] != low).any():
        raise CorruptionError("a lane does not end in its initial state")
    if (pos != body_len).any():
        raise CorruptionError("lane block has words left over after its last symbol")
    symbol = np.concatenate([t.symbol for t in tables])   # slots are offsets into the tables laid end to end
    return symbol, [(i, slots[:_steps(blocks[i]), lane_start[k]:lane_start[k + 1]]) for k, i in enumerate(live)]


class _ContextStep:
    """Table offsets of each lane's next symbol in a lock step over context-coded blocks: the
    context of a lane's symbol t is min(class(t − 1) + class(t − 2), C − 1) (classes before the
    lane's first symbol are 0), and it selects the block's table number context."""

    def __init__(self, tables: list[LaneTable], lut_start: np.ndarray, blk: np.ndarray) -> None:
        offsets = np.empty((len(tables), 4, 4), dtype=np.uint32)   # [block, previous class, class]
        pair = np.add.outer(np.arange(4), np.arange(4))
        for b, t in enumerate(tables):
            offsets[b] = lut_start[b] + (np.minimum(pair, t.contexts - 1) << t.precision)
        self.offsets = offsets.reshape(-1)
        self.classes = np.concatenate([t.classes if t.classes is not None else np.zeros(t.symbol.size, np.uint32)
                                       for t in tables])
        self.base = (blk * 16).astype(np.uint32)
        self.key = self.base.copy()   # block·16 + 4·class of the previous symbol
        self._cls = np.empty_like(self.key)
        self._off = np.empty_like(self.key)

    def first(self) -> np.ndarray:
        """Offsets of every lane's first symbol (context 0)."""
        return self.offsets.take(self.key)

    def next(self, slots: np.ndarray) -> np.ndarray:
        """Offsets of every lane's next symbol, given the slots its current symbol was read from
        (an array this object overwrites at its next call). Slots and keys are in range by
        construction, so the gathers skip their checks."""
        cls = self.classes.take(slots, out=self._cls, mode="clip")
        self.key += cls
        self.offsets.take(self.key, out=self._off, mode="clip")
        cls <<= 2
        np.add(self.base, cls, out=self.key)
        return self._off


def _prepare(b: LaneBlock, widen: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """Check a block's shape; returns (initial states, body words: uint32 for the numpy lock
    step's shifts, or with ``widen`` off the uint16 words themselves), or None if it is empty."""
    words = np.asarray(b.words, dtype=np.uint16)
    if b.count == 0:
        if words.size:
            raise CorruptionError("empty lane block carries words")
        return None
    n_lanes = b.n_lanes
    least = -(-b.count // MAX_LANE_SYMBOLS)
    if not least <= n_lanes <= b.count:
        raise CorruptionError(f"lane block of {b.count} symbols declares {n_lanes} lanes ({least} to {b.count})")
    if words.size < 2 * n_lanes:
        raise CorruptionError(f"lane block of {n_lanes} lanes holds only {words.size} words")
    x = (words[0:2 * n_lanes:2].astype(np.uint32) << 16) | words[1:2 * n_lanes:2]
    if np.any(x < LANE_STATE_LOW):
        raise CorruptionError("lane block starts a lane below its state range")
    body = words[2 * n_lanes:]
    return x, body.astype(np.uint32) if widen else body


class StackBlock(NamedTuple):
    """One v1–v4 stream as a decoder receives it."""
    words: np.ndarray     # uint32
    freqs: np.ndarray     # the table's integer frequencies
    count: int


Block = LaneBlock | StackBlock


def decode_blocks(blocks: Sequence[Block], compiled: bool = False) -> list[np.ndarray]:
    """Symbols of each block: lane blocks all in one lock step, stack streams one by one."""
    return [s() for s in lock_step_blocks(blocks, compiled)]


def lock_step_blocks(blocks: Sequence[Block], compiled: bool = False, alloc: Alloc | None = None) -> list[Symbols]:
    """:func:`decode_blocks`, the lane blocks' symbols left to gather (:func:`lock_step_lane_blocks`)."""
    out: list[Symbols] = [_ready(np.zeros(0, dtype=np.int32))] * len(blocks)
    lane_at = [i for i, b in enumerate(blocks) if isinstance(b, LaneBlock)]
    for i, symbols in zip(lane_at, lock_step_lane_blocks([blocks[i] for i in lane_at], compiled, alloc)):
        out[i] = symbols
    for i, b in enumerate(blocks):
        if isinstance(b, StackBlock):
            out[i] = _ready(stack_decode(b.words, b.freqs, b.count))
    return out


Steps = Generator[list[Block], list[np.ndarray], T]
"""A decoder written as a generator: it yields the entropy-coded blocks it needs, receives
their symbols, and returns its result, so a driver can decode many decoders' blocks at once."""


def run(steps: "Steps[T]") -> T:
    """Drive one decoder generator to its result."""
    return run_all([steps])[0]


MapFn = Callable[[Callable, Iterable], Iterable]
"""``map``-like: results in the items' order, the first failure raised when reached (the
builtin ``map``, or ``ThreadPoolExecutor.map``)."""


def run_all(decoders: "Sequence[Steps[T]]", map_fn: MapFn = map, waves: int = 1,
            compiled: bool = False) -> list[T]:
    """Drive many decoder generators together to their results (:func:`start_all`)."""
    return list(start_all(decoders, map_fn, waves, compiled)())


def start_all(decoders: "Sequence[Steps[T]]", map_fn: MapFn = map, waves: int = 1,
              compiled: bool = False, alloc: Alloc | None = None) -> Callable[[], Iterator[T]]:
    """Start many decoder generators together; the returned function yields their results in
    order, each as soon as it and those before it are done.

    Every decoder takes its first step (parsing its body, charging the budget) here, in order.
    The first round lock-steps the blocks the decoders wait for (:func:`decode_blocks`) in
    ``waves`` waves of consecutive decoders, and hands each decoder its symbols through
    ``map_fn`` as soon as its wave is decoded; later rounds (for decoders that wait again) are
    one lock step each. With ``ThreadPoolExecutor.map`` (which takes its items as they come) the
    first round's lock steps run here, in the calling thread, while the decoders' finishing work
    (gathering symbols, levels, reconstruction) runs on the pool; with the builtin ``map`` they run in the returned
    function. The results are the same for any ``map_fn`` and wave count; with the builtin
    ``map`` and one wave, the first failure in decoding order is raised.

    ``compiled`` decodes each decoder's blocks on its own with the compiled lock step, which
    needs no lock step across decoders to be fast and releases the interpreter lock: each
    decoder's whole decoding (lock steps and finishing work) is one item of ``map_fn``, and
    ``waves`` is ignored; each lane block's symbol array comes from ``alloc`` when given. The
    results are the same; the first failure in decoder order is raised, for any ``map_fn``.
    A result, once given, is held nowhere here: the caller decides how long it lives."""
    results: list = [None] * len(decoders)
    done = [False] * len(decoders)
    waiting: dict[int, list[Block]] = {}
    for i, d in enumerate(decoders):
        try:
            waiting[i] = next(d)
        except StopIteration as stop:
            results[i], done[i] = stop.value, True

    def advance(job: tuple[int, list[Symbols]]) -> tuple[int, bool, object]:
        return (job[0], *_advance(decoders[job[0]], [s() for s in job[1]]))

    def alone(i: int) -> tuple[int, bool, object]:
        blocks = waiting[i]
        while True:
            finished, value = _advance(decoders[i], [s() for s in lock_step_blocks(blocks, True, alloc)])
            if finished:
                return i, True, value
            blocks = value

    if not waiting:
        first: Iterable = iter(())
    elif compiled:
        first = map_fn(alone, list(waiting))
    else:
        first = map_fn(advance, _lock_stepped(waiting, waves))

    def finish() -> Iterator[T]:
        rounds = first
        given = 0
        while True:
            nxt: dict[int, list[Block]] = {}
            for i, finished, value in rounds:
                if finished:
                    results[i], done[i] = value, True
                else:
                    nxt[i] = value
                value = None
                while given < len(results) and done[given]:
                    yield _given_away(results, given)   # the caller decides how long it lives
                    given += 1
            if not nxt:
                yield from results[given:]
                return
            rounds = map_fn(advance, _lock_stepped(nxt, 1))   # one lock step: its error is the first
    return finish


def _given_away(results: list, i: int) -> object:
    """results[i], no longer held by ``results``."""
    value, results[i] = results[i], None
    return value


def _lock_stepped(waiting: "dict[int, list[Block]]", waves: int) -> "Iterator[tuple[int, list[Symbols]]]":
    """(decoder, its blocks' symbols to gather) for every waiting decoder, in order,
    lock-stepped in ``waves`` waves of consecutive decoders of about equal symbol counts."""
    size = {i: sum(b.count for b in blocks) for i, blocks in waiting.items()}
    total = sum(size.values())
    part: list[int] = []
    done = cut = 0
    for n, i in enumerate(waiting, 1):
        part.append(i)
        done += size[i]
        if n < len(waiting) and (cut >= waves - 1 or done * waves < (cut + 1) * max(total, 1)):
            continue
        symbols = lock_step_blocks([b for j in part for b in waiting[j]])
        at = 0
        for j in part:
            yield j, symbols[at:at + len(waiting[j])]
            at += len(waiting[j])
        part, cut = [], max(cut + 1, done * waves // max(total, 1))


def _advance(decoder: "Steps[T]", symbols: list[np.ndarray]) -> tuple[bool, object]:
    """Send a decoder its symbols: (True, its result) when it is done, else (False, the blocks it
    waits for next)."""
    try:
        return False, decoder.send(symbols)
    except StopIteration as stop:
        return True, stop.value
