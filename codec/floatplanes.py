"""Lossless coding of IEEE floats by planes of bits, both directions.

Each word is rotated left by one bit so the sign moves to bit 0 and the exponent to the
top; the words are then split into planes, most significant first. The top plane holds the
skewed exponent and is entropy-coded with a measured histogram; a plane that would not
shrink is stored raw.

Format version 6 (:func:`encode_float_fields`) lets the encoder choose each plane's width:
a top plane of 8–12 bits codes the exponent together with the leading mantissa bits, whose
distribution depends on the exponent (within a binade a bell-shaped density falls, so the
leading bits are not uniform), and its table lists only the symbols that occur. Body layout:

    u8 width          bytes per word (2, 4 or 8)
    u8 n_planes       1 … 8·width
    per plane, most significant first:
        u8 bits       1 … 12; the planes' bits add up to 8·width
        u8 mode       0 = raw: 8-bit planes n bytes; others ``bits`` bit planes of ceil(n / 8)
                      bytes, bit 0's first, 8 words per byte, first word in the least
                      significant bit (as a level block's fine bits), unused bits 0
                      1 = coded
        coded: varint n_runs, per run varint gap, varint len, len varints F: the symbols that
               occur, ascending (a run starts gap symbols after the previous run's end, the
               first after 0; gap ≥ 1 after the first run; len ≥ 1; 1 ≤ F ≤ 2**31; runs end
               within 2**bits); then the lane stream (codec.levelcode) of each word's index
               into that list

Versions 1–5 (:func:`encode_float_planes`) use 8-bit planes and a 256-symbol table:

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
from .entropy import MAX_TABLE_FREQ, TABLE_BYTES_PER_SYMBOL, ans_encode, cost_bits, costs_bits, histogram_freqs
from .levelcode import encode_lane_stream, read_lane_stream
from .rans import Block, StackBlock, Steps, run

_UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}
RAW, CODED = 0, 1
MAX_PLANE_BITS = 12
"""Widest plane of format v6: 4096 symbols, so an index table fits a 16-bit lane table."""
TOP_PLANE_BITS = range(8, MAX_PLANE_BITS + 1)
"""The top-plane widths the encoder tries; the second plane takes the rest of the top 16 bits."""
FLOAT_LANE_SYMBOLS = 8192
"""Longest lane of a coded float plane: a lane's state costs about 32 bits, 0.1 % of a 4-bit
plane at this length (0.4 % at the levels' 2048). A plane gets lanes this long only when it
still has 1024 of them, so a decoder's lock step stays wide (a step costs the same for few
lanes as for many)."""
WIDE_LOCK_STEP = 1024


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


def _open_body(body: bytes | memoryview, count: int, budget: Budget | None) -> tuple[ByteReader, int]:
    """A reader past a lossless body's width byte, with the words' memory charged."""
    r = ByteReader(body, "lossless float body", budget)
    width = r.u8()
    if width not in _UINT:
        raise CorruptionError(f"lossless float body has word width {width}")
    if count > (r.remaining + 64) << 20:
        raise CorruptionError("lossless float body declares more elements than it can hold")
    r.charge(4 * count * width, f"{count} words of {width} bytes")
    return r, width


def decode_float_planes(body: bytes | memoryview, count: int, budget: Budget | None = None,
                        lanes: bool = True) -> bytes:
    """Inverse of :func:`encode_float_planes`: the original little-endian bytes."""
    return bytes(run(float_planes_decoder(body, count, budget, lanes)))


def float_planes_decoder(body: bytes | memoryview, count: int, budget: Budget | None = None,
                         lanes: bool = True) -> Steps[memoryview]:
    """:func:`decode_float_planes` as a decoder generator (codec.rans.run_all)."""
    r, width = _open_body(body, count, budget)
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
    return _little_endian_bytes(_rotr1(rot, 8 * width), width)


def _little_endian_bytes(words: np.ndarray, width: int) -> memoryview:
    """The words' little-endian bytes as a view (no copy made while the GIL is held)."""
    return memoryview(words.astype(f"<u{width}", copy=False).reshape(-1).view(np.uint8))


def _words(data: bytes | np.ndarray, width: int) -> np.ndarray:
    if width not in _UINT:
        raise ValueError(f"word width {width} (2, 4 or 8 bytes)")
    raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
    return np.frombuffer(raw, dtype=np.dtype(_UINT[width]).newbyteorder("<")).astype(_UINT[width])


def encode_float_fields(data: bytes | np.ndarray, width: int) -> bytes:
    """Code little-endian words of ``width`` bytes (any float format) without loss: the
    format v6 body, with the plane widths that cost least for these words."""
    rot = _rotl1(_words(data, width), 8 * width)
    shift = 8 * width - 16
    top16 = np.bincount((rot >> rot.dtype.type(shift)).astype(np.int64), minlength=1 << 16) if rot.size else \
        np.zeros(1 << 16, dtype=np.int64)
    low = [_plane(rot, 8 * p, 8) for p in range(width - 3, -1, -1)]
    layouts = []
    for h in TOP_PLANE_BITS:
        joint = top16.reshape(1 << h, 1 << (16 - h))
        layouts.append([(joint.sum(axis=1), h)] + ([(joint.sum(axis=0), 16 - h)] if h < 16 else []))
    modes = iter(_best_modes([(np.bincount(v, minlength=256), 8) for v in low] + [p for lay in layouts for p in lay]))
    low_coded = [next(modes) for _ in low]
    best = None
    for h, layout in zip(TOP_PLANE_BITS, layouts):
        chosen = [next(modes) for _ in layout]
        cost = sum(c[0] for c in chosen)
        if best is None or cost < best[0]:
            best = (cost, h, chosen)
    _, h, chosen = best
    planes = [(h, _plane(rot, shift + 16 - h, h)), (16 - h, _plane(rot, shift, 16 - h))] + [(8, v) for v in low]
    w = ByteWriter()
    w.u8(width)
    w.u8(len(planes))
    for (bits, values), (_, table) in zip(planes, chosen + low_coded):
        w.u8(bits)
        if table is None:
            w.u8(RAW)
            w.raw(_pack_raw(values, bits))
            continue
        used, freqs, counts, side = table
        index = np.zeros(1 << bits, dtype=np.int64)
        index[used] = np.arange(used.size)
        w.u8(CODED)
        w.raw(side)
        w.raw(encode_lane_stream(index[values], freqs, counts, _lane_symbols(values.size)))
    return w.getvalue()


def _lane_symbols(count: int) -> int:
    from .rans_encode import LANE_SYMBOLS

    return int(min(FLOAT_LANE_SYMBOLS, max(LANE_SYMBOLS, count // WIDE_LOCK_STEP)))


def _pack_raw(values: np.ndarray, bits: int) -> bytes:
    """A raw plane: bytes when 8 bits wide, else its bit planes, bit 0 first."""
    if bits == 8:
        return values.astype(np.uint8).tobytes()
    return b"".join(np.packbits(((values >> j) & 1).astype(np.uint8), bitorder="little").tobytes()
                    for j in range(bits))


def _unpack_raw(r: ByteReader, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`_pack_raw`, reading from ``r``: the plane's values (uint16)."""
    if bits == 8:
        return np.frombuffer(r.raw(count), dtype=np.uint8).astype(np.uint16)
    per = (count + 7) // 8
    packed = np.frombuffer(r.raw(bits * per), dtype=np.uint8).reshape(bits, per)
    values = np.zeros(count, dtype=np.uint16)
    if count % 8 and np.any(packed[:, -1] >> (count % 8)):
        raise CorruptionError("raw lossless float plane has nonzero unused bits")
    for j in range(bits):
        values |= np.unpackbits(packed[j], count=count, bitorder="little").astype(np.uint16) << np.uint16(j)
    return values


def _plane(rot: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """Bits ``shift`` … ``shift + bits − 1`` of every rotated word, as int64 symbols."""
    t = rot.dtype.type
    return ((rot >> t(shift)) & t((1 << bits) - 1)).astype(np.int64)


def _best_modes(planes: list[tuple[np.ndarray, int]]) -> list[tuple[float, tuple | None]]:
    """For each plane given as (symbol counts, bits): (estimated bytes, None for raw or (used
    symbols, freqs, counts, table bytes)), coded unless raw is no larger."""
    from .rans_encode import choose_lanes

    tables = []
    for counts, _ in planes:
        used = np.flatnonzero(counts)
        freqs = histogram_freqs(counts[used])
        side = ByteWriter()
        _write_runs(side, used, freqs)
        tables.append((used, freqs, counts[used], side.getvalue()))
    est = costs_bits([(c, f) for _, f, c, _ in tables])
    out = []
    for (counts, bits), table, est_bits in zip(planes, tables, est):
        n = int(counts.sum())
        raw = n if bits == 8 else bits * ((n + 7) // 8)
        if n == 0:
            out.append((0.0, None))
            continue
        coded = len(table[3]) + est_bits / 8 + 4 * choose_lanes(n, est_bits, _lane_symbols(n)) + 4
        out.append((float(raw), None) if coded >= raw else (coded, table))
    return out


def _write_runs(w: ByteWriter, used: np.ndarray, freqs: np.ndarray) -> None:
    """The table of the symbols that occur: runs of consecutive symbols, each after a gap."""
    breaks = np.flatnonzero(np.diff(used) > 1) + 1
    starts = np.concatenate(([0], breaks)) if used.size else np.zeros(0, dtype=np.int64)
    ends = np.concatenate((breaks, [used.size])) if used.size else np.zeros(0, dtype=np.int64)
    fields = np.empty(1 + 2 * starts.size + used.size, dtype=np.int64)   # n, then gap, length, freqs a run
    fields[0] = starts.size
    at = 1 + 2 * np.arange(starts.size) + starts   # each run's gap field
    gaps = used[starts] - np.concatenate(([0], used[ends[:-1] - 1] + 1)) if used.size else starts
    fields[at], fields[at + 1] = gaps, ends - starts
    is_freq = np.ones(fields.size, dtype=bool)
    is_freq[0] = False
    is_freq[at] = is_freq[at + 1] = False
    fields[is_freq] = freqs
    w.varints(fields)


def _read_runs(r: ByteReader, bits: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(symbols, frequencies) of a v6 plane table; see the module docstring for the rules."""
    alphabet = 1 << bits
    n_runs = r.varint(alphabet)
    if (n_runs > 0) != (count > 0):
        raise CorruptionError(f"lossless float plane table has {n_runs} runs for {count} words")
    symbols, freqs, end = [], [], 0
    for i in range(n_runs):
        gap = r.varint(alphabet)
        length = r.varint(alphabet)
        if (gap == 0 and i > 0) or length == 0 or end + gap + length > alphabet:
            raise CorruptionError(f"lossless float plane table run {i} (gap {gap}, length {length}) breaks "
                                  f"the {alphabet}-symbol alphabet's rules")
        run = r.varints(length)
        if np.any(run == 0) or np.any(run > MAX_TABLE_FREQ):
            raise CorruptionError("lossless float plane table frequency out of range (1 to 2**31)")
        symbols.append(np.arange(end + gap, end + gap + length))
        freqs.append(run.astype(np.int64))
        end += gap + length
    if not symbols:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(symbols), np.concatenate(freqs)


def decode_float_fields(body: bytes | memoryview, count: int, budget: Budget | None = None) -> bytes:
    """Inverse of :func:`encode_float_fields`: the original little-endian bytes."""
    return bytes(run(float_fields_decoder(body, count, budget)))


def float_fields_decoder(body: bytes | memoryview, count: int, budget: Budget | None = None) -> Steps[memoryview]:
    """:func:`decode_float_fields` as a decoder generator (codec.rans.run_all)."""
    r, width = _open_body(body, count, budget)
    n_planes = r.u8()
    if not 1 <= n_planes <= 8 * width:
        raise CorruptionError(f"lossless float body has {n_planes} planes (1 to {8 * width})")
    t = _UINT[width]
    rot = np.zeros(count, dtype=t)
    raw: list[tuple[int, np.ndarray]] = []
    coded: list[tuple[int, int, np.ndarray, Block]] = []
    shift = 8 * width
    for _ in range(n_planes):
        bits, mode = r.u8(), r.u8()
        if not 1 <= bits <= min(MAX_PLANE_BITS, shift):
            raise CorruptionError(f"lossless float plane of {bits} bits where {shift} remain "
                                  f"(1 to {MAX_PLANE_BITS} each, adding up to {8 * width})")
        shift -= bits
        if mode == RAW:
            raw.append((shift, _unpack_raw(r, bits, count)))
        elif mode == CODED:
            symbols, freqs = _read_runs(r, bits, count)
            r.charge(symbols.size * TABLE_BYTES_PER_SYMBOL, "a lossless float plane table")
            coded.append((shift, bits, symbols, read_lane_stream(r, freqs, count)))
        else:
            raise CorruptionError(f"lossless float plane mode {mode} unknown")
    if shift:
        raise CorruptionError(f"lossless float planes leave {shift} of the {8 * width} bits undefined")
    r.expect_end()
    for at, values in raw:
        rot |= values.astype(t) << t(at)
    if coded:
        decoded = yield [block for *_, block in coded]
        for (at, _, symbols, _), index in zip(coded, decoded):
            rot |= (symbols.astype(t) << t(at))[index]   # the table shifted, then gathered: no wide temporaries
    return _little_endian_bytes(_rotr1(rot, 8 * width), width)
