"""Reuse of decoded tensors' arrays within one decode.

With the compiled kernels, each tensor's symbols, and then its float32 values written over
them, live in one int32 array per tensor; once the tensor is placed (copied into its protobuf
field, or written to the external-data file) that memory is free. Handing it to a later tensor
of the same size spares the operating system faulting fresh pages in for it and unmapping the
old ones, which the threads of one process contend for: two decoding threads spent more CPU
time in the kernel than one doing the same work.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np


class BufferPool:
    """The arrays of the last placed tensors, up to ``max_bytes`` in all (the oldest go first),
    each handed out again for a block of exactly its element count (a model's repeated layers
    share shapes). It keeps only 1-D ``dtype`` arrays of ``min_bytes`` or more: smaller ones
    come from the allocator's own free lists, and few large ones keep the lookup short.
    Thread-safe."""

    def __init__(self, dtype: np.dtype, max_bytes: int, min_bytes: int) -> None:
        self.dtype, self._max_bytes, self._min_bytes = np.dtype(dtype), max_bytes, min_bytes
        self._held: deque[np.ndarray] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0

    def take(self, count: int, dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``count`` elements of ``dtype``: a kept one if one fits."""
        if np.dtype(dtype) == self.dtype and count * self.dtype.itemsize >= self._min_bytes:
            with self._lock:
                for i, array in enumerate(self._held):
                    if array.size == count:
                        del self._held[i]
                        self._bytes -= array.nbytes
                        self.reused += 1
                        return array
        return np.empty(count, dtype=dtype)

    def give(self, data: object) -> None:
        """Keep the array owning the memory of a placed tensor's ``data`` (an array, or a
        memoryview of one) for a later :meth:`take`, if it is one this pool hands out. The
        caller guarantees nothing reads ``data`` any more: it was copied where it belongs."""
        owner = _owner(data)
        if owner is None or owner.ndim != 1 or owner.dtype != self.dtype or \
                not self._min_bytes <= owner.nbytes <= self._max_bytes:
            return
        with self._lock:
            self._held.append(owner)
            self._bytes += owner.nbytes
            while self._bytes > self._max_bytes:
                self._bytes -= self._held.popleft().nbytes


def _owner(data: object) -> np.ndarray | None:
    """The writable C-contiguous ndarray whose memory ``data`` (an ndarray, or a memoryview of
    one) spans whole, or None."""
    if isinstance(data, memoryview):
        try:
            nbytes, data = data.nbytes, data.obj
        except ValueError:   # released
            return None
    elif isinstance(data, np.ndarray):
        nbytes = data.nbytes
    else:
        return None
    if not isinstance(data, np.ndarray):
        return None
    owner = data if data.base is None else data.base
    if not isinstance(owner, np.ndarray) or owner.nbytes != nbytes or not (
            owner.flags.owndata and owner.flags.c_contiguous and owner.flags.writeable):
        return None
    return owner
