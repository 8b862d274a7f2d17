"""Compiled reconstruction (numba), an optional accelerator of :mod:`codec.lossy_decode`.

With one step per tensor, a level is the table value of its symbol and fine bits: the plain
level ((symbol + lo) << s) | fine is (lo << s) + ((symbol << s) | fine), so a table of the
normative formula over every plain level, indexed by (symbol << s) | fine, gives its value.
This kernel reads each symbol, its fine bits and its table value in one pass without the
interpreter lock, where numpy makes a pass (and often a temporary array) per operation, each
holding the lock between passes; threads decoding different tensors then run in parallel.
The table and the escaped levels' values are computed by :func:`codec.lossy_decode.dequantize`'s
formula, so the values are the same bits.

Only a decoder of a large file imports this module (:func:`nnr.decoder.compiled_lock_step`).
"""

from __future__ import annotations

import numba
import numpy as np

from . import lossy_decode

_SPREAD = np.array([sum(((b >> k) & 1) << (8 * k) for k in range(8)) for b in range(256)], dtype=np.uint64)
"""Byte b's bit k moved to bit 8k: eight levels' fine bits of one plane, one byte per level."""


@numba.njit(cache=True, nogil=True)
def _values(symbols, escape, s, planes, n_plain, spread, table, escaped, out):  # pragma: no cover - compiled
    """out[i] = table[(symbols[i] << s) | fine bits of the i-th plain level], or the next of
    ``escaped`` where symbols[i] == escape; returns the escapes counted, or −1 for a symbol
    above ``escape`` or below 0. Reads no fine bits beyond ``n_plain`` levels and writes no more than
    ``escaped.size`` escapes: a wrong count is the caller's to refuse."""
    e = 0
    j = 0
    word = np.uint64(0)
    for i in range(symbols.size):
        v = np.int64(symbols[i])
        if v >= escape:
            if v != escape:
                return -1
            if e < escaped.size:
                out[i] = escaped[e]
            e += 1
            continue
        if v < 0:
            return -1
        if s:
            fine = 0
            if j < n_plain:
                b = j >> 3
                k = j & 7
                if s <= 8:
                    if k == 0:
                        word = np.uint64(0)
                        for p in range(s):
                            word |= spread[planes[p, b]] << np.uint64(p)
                    fine = np.int64((word >> np.uint64(8 * k)) & np.uint64(0xFF))
                else:
                    for p in range(s):
                        fine |= ((np.int64(planes[p, b]) >> k) & 1) << p
            v = (v << s) | fine
            j += 1
        out[i] = table[v]
    return e


def values(symbols: np.ndarray, escape: int, s: int, planes: np.ndarray, n_plain: int,
           table: np.ndarray, escaped: np.ndarray) -> tuple[np.ndarray, int]:
    """(values, escapes counted) of a level block's int32 ``symbols`` (see _values), written
    over the symbols when the values are as wide (float32): each symbol is read before its
    value is written, and a tensor's symbols are not needed once it has its values, so a
    decode allocates one buffer per tensor instead of two. ``table`` needs (escape << s)
    entries."""
    if table.size < escape << s or planes.ndim != 2 or (s and (planes.shape[0] < s or planes.shape[1] < (n_plain + 7) // 8)):
        raise ValueError("a reconstruction table needs (escape << s) entries and planes of every plain level")
    same_size = table.dtype.itemsize == symbols.dtype.itemsize and symbols.flags.c_contiguous and symbols.flags.writeable
    out = symbols.view(table.dtype) if same_size else np.empty(symbols.size, dtype=table.dtype)
    seen = _values(symbols, escape, s, planes, n_plain, _SPREAD, table, escaped.astype(table.dtype), out)
    if seen < 0:
        raise ValueError(f"a symbol beyond the level block's alphabet of {escape + 1}")
    return out, int(seen)


lossy_decode.compiled_values = values
