"""Lossless coding of IEEE floats by byte planes (ZipNN-style), both directions.

Each word is rotated left by one bit so the sign moves to bit 0 and the exponent to the
top; the words are then split into byte planes, most significant first. The top plane(s)
hold the skewed exponent and are entropy-coded with a measured 256-symbol histogram; a
plane that would not shrink is stored raw.

Body layout:

    u8 width          bytes per word (2, 4 or 8)
    per plane (width of them, most significant first):
        u8 mode       0 = raw (n bytes follow), 1 = coded
        coded: varint freqs[256], then the ANS stream of the plane's bytes: format v1–v4
               varint n_words, n_words uint32 words; v5 a lane stream (codec.levelcode)
"""

from __future__ import annotations

import numpy as np

from .errors import CorruptionError

from .bytestream import Budget, ByteReader, ByteWriter
from .entropy import MAX_TABLE_FREQ, TABLE_BYTES_PER_SYMBOL, ans_encode, cost_bits, histogram_freqs
from .levelcode import encode_lane_stream, read_lane_stream
from .rans import Block, StackBlock, Steps, run

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
RAW, CODED = 0, 1


def _rotl1(u: np.ndarray, bits: int) -> np.ndarray:
    t = u.dtype.type
    return (u << t(1)) | (u >> t(bits - 1))


def _rotr1(u: np.ndarray, bits: int) -> np.ndarray:
    t = u.dtype.type
    return (u >> t(1)) | (u << t(bits - 1))


def encode_float_planes(data: bytes | np.ndarray, width: int, lanes: bool = True) -> bytes:
    """Code little-endian words of ``width`` bytes (any float format) without loss
    (``lanes``: format v5's ANS)."""
    words = np.frombuffer(bytes(data) if not isinstance(data, np.ndarray) else data.tobytes(),
                          dtype=np.dtype(_UINT[width]).newbyteorder("<")).astype(_UINT[width])
    rot = _rotl1(words, 8 * width)
    planes = rot.astype(f"<u{width}").view(np.uint8).reshape(-1, width)
    w = ByteWriter()
    w.u8(width)
    for p in range(width - 1, -1, -1):
        plane = np.ascontiguousarray(planes[:, p])
        counts = np.bincount(plane, minlength=256)
        freqs = histogram_freqs(counts)
        side = ByteWriter()
        side.varints(freqs)
        coded_bits = cost_bits(counts, freqs) + 8 * len(side.getvalue()) + 64
        if plane.size and coded_bits < 8 * plane.size * 0.99:
            w.u8(CODED)
            w.raw(side.getvalue())
            if lanes:
                w.raw(encode_lane_stream(plane, freqs, counts))
                continue
            coded = ans_encode(plane, freqs)
            w.varint(int(coded.size))
            w.raw(coded.astype("<u4").tobytes())
        else:
            w.u8(RAW)
            w.raw(plane.tobytes())
    return w.getvalue()


def decode_float_planes(body: bytes | memoryview, count: int, budget: Budget | None = None,
                        lanes: bool = True) -> bytes:
    """Inverse of :func:`encode_float_planes`: the original little-endian bytes."""
    return run(float_planes_decoder(body, count, budget, lanes))


def float_planes_decoder(body: bytes | memoryview, count: int, budget: Budget | None = None,
                         lanes: bool = True) -> Steps[bytes]:
    """:func:`decode_float_planes` as a decoder generator (codec.rans.run_all)."""
    r = ByteReader(body, "lossless float body", budget)
    width = r.u8()
    if width not in _UINT:
        raise CorruptionError(f"lossless float body has word width {width}")
    if count > (r.remaining + 64) << 20:
        raise CorruptionError("lossless float body declares more elements than it can hold")
    r.charge(4 * count * width, f"{count} words of {width} bytes")
    planes = np.empty((count, width), dtype=np.uint8)
    coded: list[tuple[int, Block]] = []
    for p in range(width - 1, -1, -1):
        mode = r.u8()
        if mode == RAW:
            planes[:, p] = np.frombuffer(r.raw(count), dtype=np.uint8)
        elif mode == CODED:
            freqs = r.varints(256).astype(np.int64)
            if np.any(freqs > MAX_TABLE_FREQ):
                raise CorruptionError("byte-plane table frequency out of range")
            r.charge(256 * TABLE_BYTES_PER_SYMBOL, "a byte-plane table")
            if lanes:
                coded.append((p, read_lane_stream(r, freqs, count)))
                continue
            n_words = r.varint()
            if n_words * 4 > r.remaining:
                raise CorruptionError("lossless float plane declares more words than remain")
            coded.append((p, StackBlock(r.array("<u4", n_words), freqs, count)))
        else:
            raise CorruptionError(f"lossless float plane mode {mode} unknown")
    r.expect_end()
    if coded:
        symbols = yield [b for _, b in coded]
        for (p, _), sym in zip(coded, symbols):
            planes[:, p] = sym
    rot = planes.reshape(-1).view(f"<u{width}").astype(_UINT[width])
    return _rotr1(rot, 8 * width).astype(f"<u{width}").tobytes()
