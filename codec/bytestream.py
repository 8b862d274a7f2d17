"""Bounds-checked little-endian byte writing and reading, with LEB128 varints.

The reader treats its input as hostile: every read checks the remaining length first
and raises CorruptionError instead of reading past the end or allocating blindly.
"""

from __future__ import annotations

import struct

import numpy as np

from .errors import CorruptionError, LimitError


class ByteWriter:
    """Appends little-endian fields to a growing buffer."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def u8(self, v: int) -> None:
        self._parts.append(struct.pack("<B", v))

    def i8(self, v: int) -> None:
        self._parts.append(struct.pack("<b", v))

    def u16(self, v: int) -> None:
        self._parts.append(struct.pack("<H", v))

    def i16(self, v: int) -> None:
        self._parts.append(struct.pack("<h", v))

    def u32(self, v: int) -> None:
        self._parts.append(struct.pack("<I", v))

    def u64(self, v: int) -> None:
        self._parts.append(struct.pack("<Q", v))

    def varint(self, v: int) -> None:
        if v < 0:
            raise ValueError("varint takes non-negative integers")
        out = bytearray()
        while True:
            b = v & 0x7F
            v >>= 7
            if v:
                out.append(b | 0x80)
            else:
                out.append(b)
                break
        self._parts.append(bytes(out))

    def varints(self, values: np.ndarray) -> None:
        self._parts.append(encode_varints(values))


    def raw(self, b: bytes | bytearray | memoryview) -> None:
        self._parts.append(bytes(b))

    def blob(self, b: bytes) -> None:
        """A varint length followed by the bytes."""
        self.varint(len(b))
        self.raw(b)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Budget:
    """Bytes a decoder may still allocate for one file: every table and array a hostile
    stream declares is charged here before it is allocated, so a tiny file cannot make the
    decoder take gigabytes (formats/SPEC.md, limits)."""

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self.remaining = int(limit)

    def charge(self, nbytes: int, what: str) -> None:
        if nbytes > self.remaining:
            raise LimitError(f"{what} needs {nbytes} bytes, beyond the decoder's memory limit of "
                             f"{self.limit} bytes for this file; if the file is trusted, raise the "
                             f"limit (--max-memory, or max_memory=)")
        self.remaining -= nbytes


class ByteReader:
    """Reads fields written by ByteWriter; any overrun raises CorruptionError. A ``budget``
    is charged for what the stream declares (see :class:`Budget`)."""

    def __init__(self, data: bytes | memoryview, what: str = "data", budget: Budget | None = None) -> None:
        self._buf = memoryview(data)
        self._pos = 0
        self._what = what
        self.budget = budget

    def charge(self, nbytes: int, what: str) -> None:
        if self.budget is not None:
            self.budget.charge(nbytes, f"{self._what}: {what}")

    @property
    def remaining(self) -> int:
        return len(self._buf) - self._pos

    def _take(self, n: int) -> memoryview:
        if n < 0 or n > self.remaining:
            raise CorruptionError(
                f"{self._what} is truncated: needs {n} more bytes at offset {self._pos}, "
                f"has {self.remaining}"
            )
        view = self._buf[self._pos:self._pos + n]
        self._pos += n
        return view

    def u8(self) -> int:
        return self._take(1)[0]

    def i8(self) -> int:
        return struct.unpack("<b", self._take(1))[0]

    def u16(self) -> int:
        return struct.unpack("<H", self._take(2))[0]

    def i16(self) -> int:
        return struct.unpack("<h", self._take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self._take(4))[0]

    def u64(self) -> int:
        return struct.unpack("<Q", self._take(8))[0]

    def varint(self, limit: int = (1 << 63) - 1) -> int:
        shift = 0
        value = 0
        for _ in range(10):
            b = self.u8()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                if value > limit:
                    raise CorruptionError(f"{self._what}: value {value} exceeds its limit {limit}")
                return value
            shift += 7
        raise CorruptionError(f"{self._what}: varint longer than 10 bytes")

    def varints(self, count: int) -> np.ndarray:
        """Read ``count`` varints (each at most 9 bytes, i.e. < 2**63) in one vectorised pass."""
        if count == 0:
            return np.zeros(0, dtype=np.uint64)
        if count > self.remaining:
            raise CorruptionError(f"{self._what}: declares {count} varints in {self.remaining} bytes")
        window = np.frombuffer(self._buf[self._pos:self._pos + min(self.remaining, 9 * count)], dtype=np.uint8)
        ends = np.flatnonzero(window < 0x80)
        if ends.size < count:
            raise CorruptionError(f"{self._what}: truncated varint array")
        ends = ends[:count]
        used = window[:int(ends[-1]) + 1]
        starts = np.empty(count, dtype=np.int64)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts + 1
        if lengths.max() > 9:
            raise CorruptionError(f"{self._what}: varint longer than 9 bytes in an array")
        group = np.repeat(np.arange(count), lengths)
        shift = (np.arange(used.size) - starts[group]) * 7
        parts = (used & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
        self._pos += used.size
        return np.add.reduceat(parts, starts)

    def raw(self, n: int) -> memoryview:
        return self._take(n)

    def blob(self, limit: int | None = None) -> memoryview:
        n = self.varint()
        if limit is not None and n > limit:
            raise CorruptionError(f"{self._what}: blob of {n} bytes exceeds its limit {limit}")
        return self._take(n)

    def array(self, dtype: str, count: int) -> np.ndarray:
        """Read ``count`` little-endian items of ``dtype`` as a fresh array."""
        itemsize = np.dtype(dtype).itemsize
        view = self._take(count * itemsize)
        return np.frombuffer(view, dtype=np.dtype(dtype).newbyteorder("<")).copy()

    def expect_end(self) -> None:
        if self.remaining:
            raise CorruptionError(f"{self._what}: {self.remaining} unexpected trailing bytes")


def encode_varints(values: np.ndarray) -> bytes:
    """LEB128 of each non-negative integer (< 2**63), concatenated; vectorised."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if v.size == 0:
        return b""
    nbytes = np.ones(v.size, dtype=np.int64)
    for i in range(1, 10):
        nbytes += v >= (np.uint64(1) << np.uint64(7 * i))
    starts = np.concatenate([[0], np.cumsum(nbytes)[:-1]])
    group = np.repeat(np.arange(v.size), nbytes)
    pos = np.arange(int(nbytes.sum())) - starts[group]
    out = ((v[group] >> (7 * pos).astype(np.uint64)) & np.uint64(0x7F)).astype(np.uint8)
    out[pos < nbytes[group] - 1] |= 0x80
    return out.tobytes()
