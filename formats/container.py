"""The .nnr container: header, CRC-checked typed units, index, trailer (versions 1–5).

The byte layout and the reason for each rule are in formats/SPEC.md; this module is its
reference implementation. Readers check every length against the bytes present before
using it, verify each unit's CRC32 before parsing it, and refuse unknown versions.
"""

from __future__ import annotations

import io
import json
import math
import struct
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator

import numpy as np

from nnr.codec.bytestream import ByteReader, ByteWriter
from nnr.codec.errors import CorruptionError, FormatError, LimitError, VersionError

MAGIC = b"\x89NNR"
TRAILER_MAGIC = b"NNR\x89"
FORMAT_VERSION = 7
SUPPORTED_VERSIONS = (1, 2, 3, 4, 5, 6, 7)
TYPED_FIELDS_SINCE = 2
"""First format version whose META may carry ``typed_fields``."""
QUANTIZERS_SINCE = 3
"""First format version with codings 3 (codebook) and 4 (minifloat) and coding 2's negative θ."""
COMPLEX_SINCE = 4
"""First format version whose units may hold complex64/complex128 tensors."""
COMPACT_SINCE = 5
"""First format version with a checksummed header, compact units and index (names, types and
shapes come from the graph), and entropy coding in lanes."""
FLOAT_FIELDS_SINCE = 6
"""First format version whose lossless float bodies choose their planes' widths (1–12 bits)
and list only the symbols that occur."""
CONTEXTS_SINCE = 7
"""First format version whose level blocks carry a table count: with 2 to 4 tables, a level's
table is chosen by the magnitudes of the two levels before it in its lane."""
HEADER = struct.Struct("<4sHH8s")
HEADER_V5 = struct.Struct("<4sHH4sI")
UNIT_HEAD = struct.Struct("<4sQ")
TRAILER = struct.Struct("<Q4s4s")
MAX_META_BYTES = 1 << 24
MAX_GRAPH_BYTES = 1 << 31
MAX_NDIM = 64
MAX_ELEMENTS = 1 << 40

META, GRAPH, TENSOR, INDEX = b"META", b"GRPH", b"TENS", b"INDX"

CODING_RAW = 0
CODING_FLOAT_LOSSLESS = 1
CODING_LOSSY = 2
CODING_CODEBOOK = 3    # format version 3
CODING_MINIFLOAT = 4   # format version 3
CODING_NAMES = {CODING_RAW: "raw", CODING_FLOAT_LOSSLESS: "lossless", CODING_LOSSY: "lossy",
                CODING_CODEBOOK: "codebook", CODING_MINIFLOAT: "minifloat"}


@dataclass
class TensorUnit:
    """One coded tensor: where it goes in the graph, what it is, and its codec body."""

    slot: int
    name: str
    dtype: int
    dims: tuple[int, ...]
    coding: int
    body: bytes
    snr_db: float = float("nan")

    @property
    def numel(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64)) if self.dims else 1

    def to_bytes(self, version: int = FORMAT_VERSION) -> bytes:
        """The unit's payload in a file of ``version``."""
        w = ByteWriter()
        w.varint(self.slot)
        if version >= COMPACT_SINCE:
            w.u8(self.coding)
            w.u8(snr_code(self.snr_db))
            w.raw(self.body)
            return w.getvalue()
        w.u8(self.coding)
        w.u8(self.dtype)
        w.varint(len(self.dims))
        for d in self.dims:
            w.varint(d)
        w.blob(self.name.encode("utf-8"))
        w.raw(struct.pack("<f", self.snr_db))
        w.raw(self.body)
        return w.getvalue()

    @classmethod
    def from_bytes(cls, payload: bytes | memoryview, entry: "IndexEntry | None" = None) -> "TensorUnit":
        """Parse a payload; a version-5 unit takes its name, type and shape from ``entry``."""
        r = ByteReader(payload, "tensor unit")
        slot = r.varint(1 << 32)
        coding = r.u8()
        if coding not in CODING_NAMES:
            raise FormatError(f"tensor unit uses unknown coding {coding}")
        if entry is not None and entry.version >= COMPACT_SINCE:
            snr = snr_value(r.u8())
            return cls(slot, entry.name, entry.dtype, entry.dims, coding, bytes(r.raw(r.remaining)), snr)
        dtype = r.u8()
        ndim = r.varint(MAX_NDIM)
        dims = tuple(r.varint(MAX_ELEMENTS) for _ in range(ndim))
        numel = 1
        for d in dims:
            numel *= d
        if numel > MAX_ELEMENTS:
            raise CorruptionError(f"tensor unit declares {numel} elements (limit {MAX_ELEMENTS})")
        try:
            name = bytes(r.blob(1 << 16)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError("tensor name is not UTF-8") from exc
        (snr,) = struct.unpack("<f", r.raw(4))
        body = bytes(r.raw(r.remaining))
        return cls(slot, name, dtype, dims, coding, body, float(snr))


def snr_code(snr_db: float) -> int:
    """Version 5's one-byte weight SNR (informative): 0 unknown, 255 exact, else 1 + 2·dB
    rounded, clamped to 1 … 254 (0 to 126.5 dB in half-dB steps)."""
    if math.isnan(snr_db):
        return 0
    if snr_db == math.inf:
        return 255
    return int(min(max(round(2 * snr_db) + 1, 1), 254))


def snr_value(code: int) -> float:
    """Inverse of :func:`snr_code`."""
    return math.nan if code == 0 else math.inf if code == 255 else (code - 1) / 2


@dataclass
class IndexEntry:
    slot: int
    name: str
    offset: int
    length: int
    version: int = FORMAT_VERSION
    dtype: int = 0                    # version 5: from the graph's tensor at ``slot``
    dims: tuple[int, ...] = ()


@dataclass
class Container:
    """A parsed container: metadata, the compressed graph, tensor units by position."""

    version: int
    meta: dict
    graph: bytes
    index: list[IndexEntry] = field(default_factory=list)


def _unit(kind: bytes, payload: bytes, version: int = FORMAT_VERSION) -> bytes:
    if version >= COMPACT_SINCE:
        w = ByteWriter()
        w.raw(kind)
        w.varint(len(payload))
        head = w.getvalue()
    else:
        head = UNIT_HEAD.pack(kind, len(payload))
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + payload + struct.pack("<I", crc)


def header_bytes(version: int = FORMAT_VERSION) -> bytes:
    """The 16-byte header; from version 5 on its last four bytes are the CRC32 of the first 12."""
    if version >= COMPACT_SINCE:
        head = HEADER_V5.pack(MAGIC, version, 0, bytes(4), 0)[:12]
        return head + struct.pack("<I", zlib.crc32(head))
    return HEADER.pack(MAGIC, version, 0, bytes(8))


class ContainerWriter:
    """Writes a container unit by unit, so an encoder never holds every coded tensor at once.

    The file's order is header, META, GRPH, the TENS units, INDX, trailer; META (the final
    options) and GRPH (the graph without the coded tensors) are only known once every tensor
    is coded. So ``add`` appends each TENS unit to ``spill`` (a binary file the caller owns,
    e.g. a temporary file beside the output; by default memory) and ``finish`` writes the
    whole container to ``out``, copying the spilled units in chunks. Only the index (a few
    numbers per tensor) stays in memory.
    """

    def __init__(self, version: int = FORMAT_VERSION, spill: BinaryIO | None = None) -> None:
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"format version {version} is not one this nnr writes")
        self.version = version
        self._spill = spill if spill is not None else io.BytesIO()
        self._start = self._spill.tell()
        self._entries: list[tuple[int, str, int, int]] = []   # slot, name, offset in spill, unit length
        self.body_bytes = 0
        """Sum of the tensor bodies added so far (what the probe compares attempts by)."""

    def add(self, t: TensorUnit) -> None:
        """Append one tensor's unit."""
        body = t.to_bytes(self.version)
        u = _unit(TENSOR, body, self.version)
        self._entries.append((t.slot, t.name, self._spill.tell() - self._start, len(u)))
        self._spill.write(u)
        self.body_bytes += len(t.body)

    def finish(self, out: BinaryIO, meta: dict, graph: bytes) -> int:
        """Write the container to ``out``; ``graph`` is the serialised, data-stripped ModelProto.
        Returns the bytes written."""
        v = self.version
        head = [header_bytes(v)]
        meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
        head += [_unit(META, meta_bytes, v), _unit(GRAPH, zlib.compress(graph, 9), v)]
        first = sum(map(len, head))
        for part in head:
            out.write(part)
        self._spill.seek(self._start)
        copied = 0
        units = sum(length for *_, length in self._entries)
        while copied < units:
            chunk = self._spill.read(min(COPY_CHUNK, units - copied))
            if not chunk:
                raise OSError("the spilled tensor units ended early")
            out.write(chunk)
            copied += len(chunk)
        index = ByteWriter()
        index.varint(len(self._entries))
        for slot, name, off, length in self._entries:
            index.varint(slot)
            if v >= COMPACT_SINCE:
                index.varint(length)
                continue
            index.u64(first + off)
            index.u64(length)
            index.blob(name.encode("utf-8"))
        tail = _unit(INDEX, index.getvalue(), v) + TRAILER.pack(first + units, b"\0\0\0\0", TRAILER_MAGIC)
        out.write(tail)
        return first + units + len(tail)


COPY_CHUNK = 1 << 24
"""Bytes of spilled units copied at a time by ContainerWriter.finish."""


def write_container(meta: dict, graph: bytes, tensors: Iterator[TensorUnit] | list[TensorUnit],
                    version: int = FORMAT_VERSION) -> bytes:
    """Serialise a whole container in memory; ``graph`` is the serialised, data-stripped
    ModelProto. ``version`` lays the container out as that version does (the units' bodies
    are the caller's: nnr's encoder writes the current version only)."""
    writer = ContainerWriter(version)
    for t in tensors:
        writer.add(t)
    out = io.BytesIO()
    writer.finish(out, meta, graph)
    return out.getvalue()


def read_unit(data: memoryview, offset: int, expected: bytes | None = None,
              version: int = FORMAT_VERSION) -> tuple[bytes, memoryview, int]:
    """Read and CRC-check the unit at ``offset``; returns (kind, payload, next offset)."""
    if version >= COMPACT_SINCE:
        if offset + 9 > len(data):
            raise CorruptionError(f"file is truncated: unit at offset {offset} is incomplete")
        kind = bytes(data[offset:offset + 4])
        r = ByteReader(data[offset + 4:offset + 14], "unit length")
        try:
            length = r.varint()
        except CorruptionError as exc:
            raise CorruptionError(f"file is truncated: unit at offset {offset} is incomplete") from exc
        start = offset + 4 + (len(data[offset + 4:offset + 14]) - r.remaining)
    else:
        if offset + UNIT_HEAD.size + 4 > len(data):
            raise CorruptionError(f"file is truncated: unit at offset {offset} is incomplete")
        kind, length = UNIT_HEAD.unpack_from(data, offset)
        start = offset + UNIT_HEAD.size
    end = start + length
    if end + 4 > len(data):
        raise CorruptionError(
            f"file is truncated: unit {kind!r} at offset {offset} declares {length} bytes, "
            f"{max(len(data) - start - 4, 0)} present")
    (crc,) = struct.unpack_from("<I", data, end)
    if zlib.crc32(data[offset:end]) != crc:
        raise CorruptionError(f"unit {kind!r} at offset {offset} fails its CRC32 check (corrupted file)")
    if expected is not None and kind != expected:
        raise FormatError(f"expected a {expected!r} unit at offset {offset}, found {kind!r}")
    return kind, data[start:end], end + 4


def check_header(data: memoryview) -> int:
    """Validate magic, version and (version 5 on) the header checksum; returns the version.

    The version field is read before it is verified, to know the header's layout: a version
    of 5 or more (known or not) has its CRC checked first, so a damaged header is reported as
    corruption, never as a newer version; versions 1–4 have zero bytes where the CRC would be.
    """
    if len(data) < HEADER.size or bytes(data[:4]) != MAGIC:
        raise FormatError("not an .nnr file (magic bytes missing)")
    (version,) = struct.unpack_from("<H", data, 4)
    if version == 0:
        raise FormatError("header declares format version 0, which no .nnr file has (versions start at 1)")
    if version >= COMPACT_SINCE:
        _, _, flags, reserved, crc = HEADER_V5.unpack_from(data, 0)
        if zlib.crc32(data[:12]) != crc:
            raise CorruptionError("header fails its CRC32 check (corrupted file)")
        reserved_ok = reserved == bytes(4)
    else:
        _, _, flags, reserved = HEADER.unpack_from(data, 0)
        reserved_ok = reserved == bytes(8)
    if version not in SUPPORTED_VERSIONS:
        raise VersionError(
            f"this .nnr file uses format version {version}; this nnr reads versions "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}. Upgrade nnr to decode it.")
    if flags or not reserved_ok:
        raise FormatError(f"header flags/reserved bytes are not zero (not defined in format version {version})")
    return version


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


MAX_META_DEPTH = 64
"""Deepest nesting of arrays and objects a META may have (the outer object is depth 1)."""


def _check_json_limits(value: object, depth: int = 1) -> None:
    """Refuse nesting deeper than MAX_META_DEPTH and integers outside int64: limits every JSON
    parser can honour, so that a file is refused or accepted the same by every decoder."""
    if depth > MAX_META_DEPTH:
        raise FormatError(f"metadata unit nests deeper than {MAX_META_DEPTH} levels")
    if isinstance(value, dict):
        value = value.values()
    elif not isinstance(value, list):
        if isinstance(value, int) and not -(1 << 63) <= value < 1 << 63:
            raise FormatError("metadata unit holds an integer outside the signed 64-bit range")
        return
    for item in value:
        _check_json_limits(item, depth + 1)


def parse_meta(payload: bytes | memoryview, version: int) -> dict:
    """The META unit as a dict: a JSON object (no NaN/Infinity) within the limits of
    :func:`_check_json_limits`, ``typed_fields`` only from version 2 on."""
    if len(payload) > MAX_META_BYTES:
        raise FormatError("metadata unit is larger than 16 MiB")
    try:
        meta = json.loads(bytes(payload).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"metadata unit is not JSON: {str(exc)[:200]}") from exc
    if not isinstance(meta, dict):
        raise FormatError(f"metadata unit is JSON but not an object (a {type(meta).__name__})")
    _check_json_limits(meta)
    if "typed_fields" in meta and version < TYPED_FIELDS_SINCE:
        raise FormatError(f"metadata key typed_fields is not defined in format version {version}")
    return meta


def inflate_graph(payload: bytes | memoryview, limit: int = MAX_GRAPH_BYTES) -> bytes:
    """Decompress GRPH: one complete zlib stream, nothing after it, at most ``limit`` bytes
    (never more than 2 GiB)."""
    cap = min(limit, MAX_GRAPH_BYTES)
    dec = zlib.decompressobj()
    try:
        graph = dec.decompress(payload, cap)
    except zlib.error as exc:
        raise FormatError(f"graph unit does not decompress: {exc}") from exc
    if dec.unconsumed_tail:
        if cap < MAX_GRAPH_BYTES:
            raise LimitError(f"graph unit decompresses beyond the decoder's memory limit of {cap} bytes for "
                             f"this file; if the file is trusted, raise the limit (--max-memory, or max_memory=)")
        raise FormatError("graph unit decompresses beyond 2 GiB")
    if not dec.eof:
        raise FormatError("graph unit is incomplete (its zlib stream is truncated)")
    if dec.unused_data:
        raise FormatError(f"graph unit has {len(dec.unused_data)} bytes after its zlib stream")
    return graph


def read_container(data: bytes | memoryview, max_graph_bytes: int = MAX_GRAPH_BYTES) -> Container:
    """Parse header, metadata, graph and index (tensor units are read on demand); the
    decompressed graph may take at most ``max_graph_bytes``."""
    data = memoryview(data)
    version = check_header(data)
    if len(data) < HEADER.size + TRAILER.size:
        raise CorruptionError("file is truncated: no room for the trailer")
    index_off, treserved, tmagic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    if tmagic != TRAILER_MAGIC or treserved != bytes(4):
        raise CorruptionError("file is truncated or has trailing garbage: trailer magic missing")
    _, meta_payload, pos = read_unit(data, HEADER.size, META, version)
    _, graph_payload, pos = read_unit(data, pos, GRAPH, version)
    if index_off < pos or index_off > len(data) - TRAILER.size:
        raise CorruptionError(f"trailer points at offset {index_off}, outside the unit area")
    _, index_payload, end = read_unit(data, index_off, INDEX, version)
    if end != len(data) - TRAILER.size:
        raise CorruptionError("bytes between the index unit and the trailer")
    entries = _read_index(index_payload, version, pos, index_off, len(data))
    meta = parse_meta(meta_payload, version)
    graph = inflate_graph(graph_payload, max_graph_bytes)
    if version >= COMPACT_SINCE:
        _describe_from_graph(entries, graph)
    return Container(version, meta, graph, entries)


def _read_index(payload: memoryview, version: int, first: int, index_off: int, size: int) -> list[IndexEntry]:
    """Index entries; they must tile the bytes between GRPH and INDX exactly, in file order."""
    r = ByteReader(payload, "index unit")
    count = r.varint(size)
    entries = []
    expected = first
    for _ in range(count):
        slot = r.varint(1 << 32)
        if version >= COMPACT_SINCE:
            length = r.varint(size)
            entries.append(IndexEntry(slot, "", expected, length, version))
            expected += length
            continue
        off = r.u64()
        length = r.u64()
        try:
            name = bytes(r.blob(1 << 16)).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptionError("index name is not UTF-8") from exc
        if off < first or off + length > index_off:
            raise CorruptionError(f"index entry for {name!r} points outside the tensor area")
        entries.append(IndexEntry(slot, name, off, length, version))
    r.expect_end()
    if version >= COMPACT_SINCE:
        if expected != index_off:
            raise CorruptionError("tensor units and index disagree: bytes not covered by any unit")
        return entries
    expected = first
    for e in sorted(entries, key=lambda e: e.offset):
        if e.offset != expected:
            raise CorruptionError("tensor units and index disagree: bytes not covered by any unit")
        expected += e.length
    if expected != index_off:
        raise CorruptionError("tensor units and index disagree: bytes not covered by any unit")
    return entries


def _describe_from_graph(entries: list[IndexEntry], graph: bytes) -> None:
    """Version 5 units name no tensor: each entry gets the name, type and shape of its slot."""
    from onnx import ModelProto

    from .onnx_io import tensor_slots

    model = ModelProto()
    try:
        model.ParseFromString(graph)
    except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
        raise FormatError(f"graph unit is not a valid ONNX model: {str(exc)[:200]}") from exc
    slots = tensor_slots(model)
    seen: set[int] = set()
    for e in entries:
        if e.slot >= len(slots):
            raise CorruptionError(f"index entry refers to slot {e.slot}; the graph has {len(slots)}")
        if e.slot in seen:
            raise CorruptionError(f"tensor slot {e.slot} is coded twice")
        seen.add(e.slot)
        t = slots[e.slot]
        if isinstance(t.name, bytes):  # protobuf hands back a proto2 string that is not UTF-8 as bytes
            raise FormatError(f"graph tensor at slot {e.slot} has a name that is not UTF-8")
        e.name, e.dtype, e.dims = t.name, int(t.tensor.data_type), tuple(int(d) for d in t.tensor.dims)
        if len(e.dims) > MAX_NDIM or int(np.prod(e.dims, dtype=np.float64)) > MAX_ELEMENTS or min(e.dims, default=0) < 0:
            raise CorruptionError(f"tensor {e.name!r} has a shape nnr does not code ({list(e.dims)})")


def read_tensor_unit(data: bytes | memoryview, entry: IndexEntry) -> TensorUnit:
    """Read the tensor unit an index entry points at, checking it matches the entry."""
    _, payload, end = read_unit(memoryview(data), entry.offset, TENSOR, entry.version)
    if end - entry.offset != entry.length:
        raise CorruptionError(f"index length of {entry.name!r} disagrees with its unit")
    unit = TensorUnit.from_bytes(payload, entry)
    if unit.slot != entry.slot or unit.name != entry.name:
        raise CorruptionError(f"index entry {entry.name!r} disagrees with its tensor unit")
    return unit
