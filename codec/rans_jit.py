"""Compiled lane decoding (numba), an optional accelerator of :mod:`codec.rans`'s lock step.

The numpy lock step advances every lane of many blocks by one numpy call per operation; each
call holds the interpreter lock between operations, so two threads lock-stepping at once run
slower than one (docs/lock_step_threads.md). This kernel decodes one block at a time, lane by
lane within each step, without the interpreter lock, and looks each slot's symbol up at once,
so threads decoding different tensors run in parallel. It implements the same integer rules
as :func:`codec.rans.decode_lanes` and reports a damaged block with the same messages, in the
order a numpy lock step of the same blocks would (:func:`decode_group`).

Only a decoder of a large file imports this module, and only when numba is installed and its
JIT is on (:func:`nnr.decoder.compiled_lock_step`); a decode-only install never needs it.
"""

from __future__ import annotations

from typing import Sequence

import numba
import numpy as np

from . import rans
from .errors import CorruptionError

BAD_END, NO_WORDS, WORDS_LEFT = 1, 2, 3
"""Failure codes of :func:`_decode_block`; 0 is success."""
MESSAGES = {BAD_END: "a lane does not end in its initial state",
            NO_WORDS: "lane block runs out of words",
            WORDS_LEFT: "lane block has words left over after its last symbol"}


@numba.njit(cache=True, nogil=True, inline="always")
def _advance(xj, e, precision, low, word):  # pragma: no cover - compiled
    """(state after a lane's symbol, 1 if it took ``word`` in else 0): x ↦ (x >> P)·count + (x mod
    2**P − first slot) from ``e`` = (count << 16) + that difference, then ``word`` shifted in
    if the state fell below ``low``. Without a branch: whether a lane needs a word is a coin
    toss per symbol, and a mispredicted branch cost more than the arithmetic."""
    xj = (xj >> precision) * (e >> 16) + (e & 0xFFFF)
    need = np.int64(xj < low)
    return (xj << (need << 4)) | (word & -need), need


@numba.njit(cache=True, nogil=True)
def _decode_block(x, body, n_words, packed, symbol, classes, offsets, precision, count, runs, out, low):  # pragma: no cover - compiled
    """Decode one block's ``count`` symbols into ``out``; returns (failure code, time).

    ``x`` holds the lanes' initial states (overwritten); ``body`` the block's ``n_words`` words
    (at least one element: each step reads the next word ahead); ``packed``, ``symbol``,
    ``classes`` are the block's LaneTable arrays (C·2**P slots); ``offsets[4·a + b]`` is the
    first slot of the table that classes a, b select. Time 2t is the check of lanes done
    before step t, 2t + 1 step t's words: a numpy lock step raises the failure of the least
    time first.
    """
    n_lanes = x.size
    q = count // n_lanes
    r = count - q * n_lanes
    steps = q + 1 if r else q
    mask = (1 << precision) - 1
    last = max(n_words - 1, 0)
    off = np.zeros(n_lanes, dtype=np.int64)
    key = np.zeros(n_lanes, dtype=np.int64)   # 4 · class of the lane's previous symbol
    if runs:
        for j in range(n_lanes):
            off[j] = offsets[0]
    pos = 0
    for t in range(steps):
        active = n_lanes
        if t == q:   # the lanes from r on are one shorter, and done
            for j in range(r, n_lanes):
                if x[j] != low:
                    return BAD_END, 2 * t
            active = r
        if runs:   # each lane holds a run of consecutive symbols, whose classes pick its next table
            for j in range(active):
                xj = np.int64(x[j])
                g = (xj & mask) + off[j]
                out[j * q + min(j, r) + t] = symbol[g]
                c = np.int64(classes[g])
                off[j] = offsets[key[j] + c]
                key[j] = c << 2
                xj, need = _advance(xj, np.int64(packed[g]), precision, low, np.int64(body[min(pos, last)]))
                if need > n_words - pos:
                    return NO_WORDS, 2 * t + 1
                pos += need
                x[j] = xj
        else:   # lane j holds symbols j, j + L, ...: one table
            row = t * n_lanes
            for j in range(active):
                xj = np.int64(x[j])
                g = xj & mask
                out[row + j] = symbol[g]
                xj, need = _advance(xj, np.int64(packed[g]), precision, low, np.int64(body[min(pos, last)]))
                if need > n_words - pos:
                    return NO_WORDS, 2 * t + 1
                pos += need
                x[j] = xj
    for j in range(r if r else n_lanes):
        if x[j] != low:
            return BAD_END, 2 * steps
    if pos != n_words:
        return WORDS_LEFT, -1
    return 0, 0


def _context_offsets(contexts: int, precision: int) -> np.ndarray:
    pair = np.add.outer(np.arange(4), np.arange(4)).reshape(-1)
    return (np.minimum(pair, contexts - 1) << precision).astype(np.int64)


_NO_CLASSES = np.zeros(1, dtype=np.uint32)
_ONE_WORD = np.zeros(1, dtype=np.uint16)   # writable, like the words a reader copies out of a file
"""The body of a block without words: the kernel reads one word ahead, never using it."""


def _block(prepared: tuple[np.ndarray, np.ndarray], b, low: int, alloc=None) -> tuple[np.ndarray, int, int]:
    """(symbols, failure code, time) of one prepared block, in an array from ``alloc``."""
    x, body = prepared
    t = b.table
    out = np.empty(b.count, dtype=t.symbol.dtype) if alloc is None else alloc(b.count, t.symbol.dtype)
    if out.shape != (b.count,) or out.dtype != t.symbol.dtype or not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError(f"alloc gave no writable array of {b.count} {t.symbol.dtype}")   # the kernel writes unchecked
    runs = t.contexts > 1
    classes = t.classes if runs else _NO_CLASSES
    if t.packed.size != t.contexts << t.precision or t.symbol.size != t.packed.size or (runs and classes.size != t.packed.size):
        raise ValueError("a lane table's arrays must each hold C·2**P slots")   # the kernel reads them unchecked
    words = body if body.size else _ONE_WORD
    code, time = _decode_block(x, words, body.size, t.packed, t.symbol, classes, _context_offsets(t.contexts, t.precision),
                               t.precision, b.count, runs, out, low)
    return out, int(code), int(time)


def decode_group(blocks: Sequence, group: list, low: int, alloc: rans.Alloc | None = None) -> dict[int, np.ndarray]:
    """Decode one of the numpy lock step's groups ((block index, (initial states, words)) pairs
    of :class:`codec.rans.LaneBlock` s, whose lanes start and end in state ``low``): each
    block's symbols by index, in arrays from ``alloc`` (np.empty by default); of the group's
    failures, the one a numpy lock step of the group raises first is raised (least time, see
    _decode_block)."""
    steps = max(-(-blocks[i].count // blocks[i].n_lanes) for i, _ in group)
    first = None
    symbols = {}
    for i, prepared in group:
        out, code, time = _block(prepared, blocks[i], low, alloc)
        if code:
            order = 2 * steps + 1 if code == WORDS_LEFT else time
            if first is None or order < first[0]:
                first = (order, code)
        symbols[i] = out
    if first is not None:
        raise CorruptionError(MESSAGES[first[1]])
    return symbols


rans.compiled_group = decode_group
