"""Reuse of decoded tensors' buffers within one decode.

With the compiled kernels, each tensor's symbols, and then its float32 values written over
them, live in one array per tensor; once the tensor is placed (copied into its protobuf field,
or written to the external-data file) that memory is free. Handing it to a later tensor of the
same size spares the operating system faulting fresh pages in for it and unmapping the old
ones, which the threads of one process contend for: two decoding threads spent more CPU time
in the kernel than one doing the same work.
"""

from __future__ import annotations

import sys
import threading
from collections import deque

import numpy as np


class BufferPool:
    """The arrays of the last placed tensors, up to ``max_bytes`` in all (the oldest go first),
    each handed out again for a block of exactly its element count and dtype (a model's
    repeated layers share shapes); thread-safe."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._held: deque[np.ndarray] = deque()
        self._bytes = 0
        self._lock = threading.Lock()
        self.reused = 0

    def take(self, count: int, dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of ``count`` elements of ``dtype``: a returned one if one fits."""
        dtype = np.dtype(dtype)
        with self._lock:
            for i, array in enumerate(self._held):
                if array.size == count and array.dtype == dtype:
                    del self._held[i]
                    self._bytes -= array.nbytes
                    self.reused += 1
                    return array
        return np.empty(count, dtype=dtype)

    def give(self, array: np.ndarray) -> None:
        """Keep ``array`` for a later :meth:`take`, dropping the oldest kept beyond ``max_bytes``."""
        if array.nbytes > self._max_bytes:
            return
        with self._lock:
            self._held.append(array)
            self._bytes += array.nbytes
            while self._bytes > self._max_bytes:
                self._bytes -= self._held.popleft().nbytes

    def recycle(self, holder: list) -> None:
        """Take a placed tensor's data out of ``holder`` (a list of one item, left empty, so the
        caller keeps no reference) and keep the array owning its memory, if nothing else can
        still reach it: whoever kept the data, a view or a memoryview of it holds a reference."""
        owner = _owner(holder.pop())
        if owner is not None and sys.getrefcount(owner) == 2:   # ``owner`` here, and the argument
            self.give(owner)


def _owner(data: object) -> np.ndarray | None:
    """The writable C-contiguous ndarray that owns the memory of ``data`` (an ndarray, or a
    memoryview of one), or None."""
    if isinstance(data, memoryview):
        data = data.obj
    if not isinstance(data, np.ndarray):
        return None
    owner = data if data.base is None else data.base
    if not isinstance(owner, np.ndarray) or not (owner.flags.owndata and owner.flags.c_contiguous
                                                 and owner.flags.writeable):
        return None
    return owner
