"""Structure-aware mutations of .nnr files, the input generator of conformance/fuzzing.py.

A seed file is split into header, units and trailer, and its TENS payloads into fields
(formats/SPEC.md). Mutations change fields; the file is then re-serialised with every CRC,
the index and the trailer recomputed, so that a mutation reaches the parser behind the CRC
checks instead of being stopped by them. Index and trailer faults are injected on purpose in
a fraction of the inputs, and a few inputs get raw byte mutations with nothing fixed.

Each mutation returns a label (``name:detail``) recorded with the input. :func:`violations`
names the rules of the spec a mutated file is known to break, so that a decoder accepting
it can be reported.
"""

from __future__ import annotations

import json
import math
import random
import struct
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable

from onnx import AttributeProto, GraphProto, ModelProto, TensorProto

from nnr.codec.bytestream import ByteReader, ByteWriter
from nnr.formats.container import (COMPACT_SINCE, GRAPH, HEADER, INDEX, MAGIC, META, SUPPORTED_VERSIONS, TENSOR,
                               TRAILER, TRAILER_MAGIC, UNIT_HEAD, _unit)
from nnr.formats.onnx_io import tensor_slots
from nnr.errors import NnrError

INTERESTING = (0, 1, 2, 7, 8, 255, 256, 1 << 16, 1 << 20, (1 << 20) + 1, 1 << 31, 1 << 32, 1 << 40,
               (1 << 63) - 1)
"""Integers that sit on a limit of the format or of a machine type."""

INTERESTING_FIXED = {
    "B": (0, 1, 2, 3, 7, 8, 15, 16, 17, 64, 65, 127, 128, 200, 255),
    "h": (-32768, -201, -200, -1, 0, 1, 200, 201, 32767),
    "H": (0, 1, 0x7FFF, 0x8000, 0xFFFF),
    "I": (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF),
}
ODD_VARINTS = (b"\x80\x00", b"\xff" * 9 + b"\x01", b"\x80" * 10 + b"\x00", b"\xff" * 10 + b"\x7f")
"""Non-minimal and over-long LEB128 encodings."""

DTYPES = tuple(range(31)) + (200, 255)
COMPLEX = (TensorProto.COMPLEX64, TensorProto.COMPLEX128)
DIMS = ((), (0,), (1,), (2,), (1 << 20,), (1 << 40,), (1 << 40, 0), (0, 1 << 40), (1 << 20, 1 << 20),
        (1 << 20, 1 << 21), (1,) * 64, (2,) * 64, (1,) * 65, (1 << 32,), ((1 << 63) - 1,), (3, 0, 5))
NAMES = ("", "\x1b[31mred\x1b[0m", "\x1b]0;title\x07", "\x1b[2J\x1b[H", "a\nb", "tab\there", "\r\roverwrite",
         "\x00nul", "\u202eevil", "\x9b31m", "\x7fdel")
BAD_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"ok\x80", b"\xf8\x88\x80\x80\x80")
HOSTILE_PATHS = ("/etc/hostname", "../../x", "/dev/zero", "/proc/self/mem", "", "a" * 300, "\x1b[2J",
                 "model.onnx.data")
MAX_FIELDS = 4096


@dataclass
class Tens:
    """A TENS payload by field; ``ndim`` overrides the declared count when it must disagree.
    In the version-5 layout (``compact``) only slot, coding, a one-byte SNR and the body are
    written: dtype, dims and name are the graph's, kept here for the body mutations."""

    slot: int
    coding: int
    dtype: int
    dims: list[int]
    name: bytes
    snr: bytes
    body: bytes
    ndim: int | None = None
    compact: bool = False

    def payload(self) -> bytes:
        w = ByteWriter()
        w.varint(self.slot)
        w.u8(self.coding & 0xFF)
        if self.compact:
            w.raw(self.snr[:1])
            w.raw(self.body)
            return w.getvalue()
        w.u8(self.dtype & 0xFF)
        w.varint(len(self.dims) if self.ndim is None else self.ndim)
        for d in self.dims:
            w.varint(d)
        w.blob(self.name)
        w.raw(self.snr)
        w.raw(self.body)
        return w.getvalue()


@dataclass
class Unit:
    kind: bytes
    payload: bytes | Tens

    def to_bytes(self, layout: int) -> bytes:
        body = self.payload.payload() if isinstance(self.payload, Tens) else self.payload
        return _unit(self.kind, body, layout)

    def ident(self) -> tuple[int, bytes]:
        """The (slot, name) its index entry carries."""
        return (self.payload.slot, self.payload.name) if isinstance(self.payload, Tens) else (0, b"")


@dataclass
class Doc:
    """A file by structure: the index and trailer are rebuilt from ``units`` by :func:`assemble`.
    ``layout`` is the version whose byte layout the seed has; ``version`` is what the header
    declares (a mutation may relabel one layout as another version)."""

    version: int
    flags: int
    reserved: bytes
    units: list[Unit]
    layout: int = 4
    index_faults: list[tuple[str, float, int]] = field(default_factory=list)
    trailer_fault: tuple[str, int] | None = None

    def copy(self) -> "Doc":
        units = [Unit(u.kind, replace(u.payload, dims=list(u.payload.dims)) if isinstance(u.payload, Tens)
                      else u.payload) for u in self.units]
        return replace(self, units=units, index_faults=list(self.index_faults))

    def tensors(self) -> list[Tens]:
        return [u.payload for u in self.units if isinstance(u.payload, Tens)]


@dataclass
class Seed:
    name: str
    data: bytes
    doc: Doc | None


@dataclass
class Sample:
    """One fuzz input and how it was made."""

    data: bytes
    seed: str
    mutations: list[str]
    violations: list[str]


# ---- parsing and serialising -------------------------------------------------------------

def parse_tens(payload: bytes, compact: bool = False) -> Tens | None:
    """Split a TENS payload into fields; None if it does not parse."""
    r = ByteReader(payload, "tens")
    try:
        slot, coding = r.varint(), r.u8()
        if compact:
            snr = bytes(r.raw(1))
            return Tens(slot, coding, 0, [], b"", snr, bytes(r.raw(r.remaining)), compact=True)
        dtype = r.u8()
        dims = [r.varint() for _ in range(r.varint(1 << 16))]
        name = bytes(r.blob())
        snr = bytes(r.raw(4))
    except NnrError:
        return None
    return Tens(slot, coding, dtype, dims, name, snr, bytes(r.raw(r.remaining)))


def _unit_head(data: bytes, pos: int, layout: int) -> tuple[bytes, int, int] | None:
    """(kind, payload length, payload start) of the unit at ``pos``; None if it does not parse."""
    if layout >= COMPACT_SINCE:
        r = ByteReader(data[pos + 4:pos + 14], "unit length")
        try:
            length = r.varint()
        except NnrError:
            return None
        return data[pos:pos + 4], length, pos + 4 + (len(data[pos + 4:pos + 14]) - r.remaining)
    if pos + UNIT_HEAD.size > len(data):
        return None
    kind, length = UNIT_HEAD.unpack_from(data, pos)
    return kind, length, pos + UNIT_HEAD.size


def parse(data: bytes) -> Doc | None:
    """Header, units (CRCs ignored) and TENS fields of a file; None unless the layout is intact."""
    if len(data) < HEADER.size + TRAILER.size or data[:4] != MAGIC or data[-4:] != TRAILER_MAGIC:
        return None
    _, version, flags, reserved = HEADER.unpack_from(data)
    layout = COMPACT_SINCE if version >= COMPACT_SINCE else 4
    if layout >= COMPACT_SINCE:
        reserved = reserved[:4]
    pos, end, units = HEADER.size, len(data) - TRAILER.size, []
    while pos < end:
        head = _unit_head(data, pos, layout)
        if head is None:
            return None
        kind, length, start = head
        stop = start + length
        if stop + 4 > end:
            return None
        units.append(Unit(kind, data[start:stop]))
        pos = stop + 4
    if len(units) < 3 or [u.kind for u in units[:2]] != [META, GRAPH] or units[-1].kind != INDEX:
        return None
    units.pop()
    for u in units[2:]:
        if u.kind == TENSOR:
            u.payload = parse_tens(u.payload, layout >= COMPACT_SINCE)
            if u.payload is None:
                return None
    doc = Doc(version, flags, reserved, units, layout=layout)
    if layout >= COMPACT_SINCE:
        _describe(doc)
    return doc


def _describe(doc: Doc) -> None:
    """Give compact units the dtype, dims and name of their graph slot (the body mutations need them)."""
    model = _model(doc)
    slots = tensor_slots(model) if model is not None else []
    for t in doc.tensors():
        if t.slot < len(slots):
            g = slots[t.slot].tensor
            name = slots[t.slot].name   # bytes when a mutated graph's name is not UTF-8 (proto2)
            t.dtype, t.dims, t.name = int(g.data_type), [int(d) for d in g.dims], \
                name if isinstance(name, bytes) else name.encode()


@dataclass
class _Index:
    entries: list[list]
    count: int | None = None
    tail: bytes = b""
    layout: int = 4

    def payload(self) -> bytes:
        w = ByteWriter()
        w.varint(len(self.entries) if self.count is None else self.count)
        for slot, offset, length, name in self.entries:
            w.varint(slot)
            if self.layout >= COMPACT_SINCE:   # offsets follow from the lengths; names from the graph
                w.varint(length & ((1 << 63) - 1))
                continue
            w.u64(offset & ((1 << 64) - 1))
            w.u64(length & ((1 << 64) - 1))
            w.blob(name)
        return w.getvalue() + self.tail


def _apply_index_fault(index: _Index, fault: tuple[str, float, int]) -> None:
    """Apply one recorded fault; ``where`` in [0, 1) picks the entry whatever the count."""
    kind, where, value = fault
    rows = index.entries
    i = int(where * len(rows)) if rows else 0
    if kind == "count":
        index.count = value
    elif kind == "tail":
        index.tail += bytes([value & 0xFF])
    elif kind == "extra":
        index.entries.append([value & 0xFFFFFFFF, HEADER.size, UNIT_HEAD.size + 4, b"ghost"])
    elif not rows:
        return
    elif kind == "drop":
        del rows[i]
    elif kind == "dup":
        rows.insert(i, list(rows[i]))
    elif kind == "slot":
        rows[i][0] = value & 0xFFFFFFFF
    elif kind in ("offset", "length"):
        col = 1 if kind == "offset" else 2
        rows[i][col] = max(0, rows[i][col] + value)
    elif kind == "name":
        rows[i][3] = rows[i][3] + bytes([value & 0xFF])
    elif kind == "swap" and len(rows) > 1:
        j = (i + 1) % len(rows)
        rows[i][1], rows[j][1] = rows[j][1], rows[i][1]


def _header(doc: Doc) -> bytes:
    """The header in the seed's layout; a version-5 layout gets a valid checksum whatever it declares."""
    if doc.layout >= COMPACT_SINCE:
        head = MAGIC + struct.pack("<HH", doc.version & 0xFFFF, doc.flags & 0xFFFF) + doc.reserved[:4]
        return head + struct.pack("<I", zlib.crc32(head))
    return HEADER.pack(MAGIC, doc.version & 0xFFFF, doc.flags & 0xFFFF, doc.reserved)


def assemble(doc: Doc) -> tuple[bytes, list[str]]:
    """The file bytes, with CRCs, index and trailer recomputed (faults injected as recorded),
    and the spec rules the file breaks."""
    parts = [_header(doc)]
    pos, rows = HEADER.size, []
    for i, unit in enumerate(doc.units):
        raw = unit.to_bytes(doc.layout)
        if i >= 2:
            slot, name = unit.ident()
            rows.append([slot, pos, len(raw), name])
        parts.append(raw)
        pos += len(raw)
    clean = _Index([list(r) for r in rows], layout=doc.layout).payload()
    index = _Index(rows, layout=doc.layout)
    for fault in doc.index_faults:
        _apply_index_fault(index, fault)
    payload = index.payload()
    parts.append(_unit(INDEX, payload, doc.layout))
    offset, treserved = pos, b"\0\0\0\0"
    if doc.trailer_fault:
        kind, value = doc.trailer_fault
        if kind == "offset":
            offset = max(0, pos + value)
        else:
            treserved = struct.pack("<I", value & 0xFFFFFFFF)
    parts.append(TRAILER.pack(offset & ((1 << 64) - 1), treserved, TRAILER_MAGIC))
    broken = violations(doc)
    if payload != clean:
        broken.append("index_mismatch")
    if (offset, treserved) != (pos, b"\0\0\0\0"):
        broken.append("trailer_mismatch")
    return b"".join(parts), broken


# ---- the rules a reader must enforce --------------------------------------------------------

def _zlib_trailing(payload: bytes) -> bool:
    d = zlib.decompressobj()
    chunk = payload
    try:
        while chunk and not d.eof:
            d.decompress(chunk, 1 << 22)
            chunk = d.unconsumed_tail
    except zlib.error:
        return False
    return d.eof and bool(d.unused_data)


def _meta_rule(payload: bytes) -> str | None:
    try:
        value = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return "meta_not_json"
    except (ValueError, RecursionError):
        return None
    return None if isinstance(value, dict) else "meta_not_object"


def _tens_rules(t: Tens, version: int) -> list[str]:
    if t.ndim is not None and not t.compact:
        return []
    rules = []
    if t.coding > 4:
        rules.append("coding_unknown")
    if version < 3 and (t.coding in (3, 4) or (t.coding == 2 and t.body[:1] and t.body[0] & 2)):
        rules.append("v3_coding_before_v3")
    if version < 4 and t.dtype in COMPLEX:
        rules.append("complex_before_v4")
    if t.slot >= 1 << 32:
        rules.append("slot_limit")
    if len(t.dims) > 64:
        rules.append("ndim_limit")
    elif math.prod(t.dims) > 1 << 40 or any(d > 1 << 40 for d in t.dims):
        rules.append("numel_limit")
    if t.compact:
        return rules
    if len(t.name) > 1 << 16:
        rules.append("name_limit")
    try:
        t.name.decode("utf-8")
    except UnicodeDecodeError:
        rules.append("name_not_utf8")
    return rules


def violations(doc: Doc) -> list[str]:
    """Rules of formats/SPEC.md the (fault-free part of the) document breaks: a decoder must refuse it."""
    rules = []
    if doc.version not in SUPPORTED_VERSIONS:
        rules.append("version_unknown")
    if doc.flags or doc.reserved != bytes(len(doc.reserved)):
        rules.append("header_flags")
    if (doc.version >= COMPACT_SINCE) != (doc.layout >= COMPACT_SINCE):
        rules.append("header_layout")  # a v5 header read as v1–v4 has a nonzero checksum where zeros belong,
        #                                a v1–v4 header declaring v5 has no checksum
        return rules
    kinds = [u.kind for u in doc.units]
    if kinds[:2] != [META, GRAPH] or any(k != TENSOR for k in kinds[2:]) \
            or any(isinstance(u.payload, Tens) != (i >= 2) for i, u in enumerate(doc.units)):
        rules.append("unit_order")
        return rules
    meta = _meta_rule(doc.units[0].payload)
    if meta:
        rules.append(meta)
    if _zlib_trailing(doc.units[1].payload):
        rules.append("grph_trailing")
    slots = [t.slot for t in doc.tensors()]
    if len(set(slots)) != len(slots):
        rules.append("duplicate_slot")
    if doc.layout >= COMPACT_SINCE:
        _describe(doc)   # dtype, dims and name are the graph's
    for t in doc.tensors():
        rules.extend(r for r in _tens_rules(t, doc.version) if r not in rules)
    return rules


# ---- helpers shared by mutations --------------------------------------------------------------

def _pick_tens(doc: Doc, rng: random.Random) -> Tens | None:
    found = doc.tensors()
    return rng.choice(found) if found else None


def _interesting(rng: random.Random) -> int:
    v = rng.choice(INTERESTING)
    return max(0, v + rng.choice((-1, 0, 0, 0, 1)))


def _varint(v: int) -> bytes:
    w = ByteWriter()
    w.varint(v)
    return w.getvalue()


def _raw_payload(doc: Doc, i: int) -> bytes | None:
    """The bytes of unit ``i`` (META 0, GRPH 1 in an intact file), None if it holds a TENS."""
    payload = doc.units[i].payload if i < len(doc.units) else None
    return payload if isinstance(payload, bytes) else None


def _graph_bytes(doc: Doc) -> bytes | None:
    payload = _raw_payload(doc, 1)
    if payload is None:
        return None
    try:
        return zlib.decompressobj().decompress(payload, 1 << 26)
    except zlib.error:
        return None


def _model(doc: Doc) -> ModelProto | None:
    """The graph of GRPH, or None when it no longer decompresses or parses."""
    raw = _graph_bytes(doc)
    if raw is None:
        return None
    try:
        model = ModelProto()
        model.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError or RuntimeError by backend
        return None
    return model


def _store_model(doc: Doc, model: ModelProto) -> None:
    doc.units[1].payload = zlib.compress(model.SerializeToString())


def _retype_graph(doc: Doc, slot: int, dtype: int | None, dims: list[int] | None) -> bool:
    """Give the graph tensor at ``slot`` this dtype and dims, so that the unit still matches it."""
    model = _model(doc)
    if model is None or doc.units[1].kind != GRAPH:
        return False
    slots = tensor_slots(model)
    if slot >= len(slots) or (dims is not None and any(d >= 1 << 63 for d in dims)):
        return False
    t = slots[slot].tensor
    if dtype is not None:
        t.data_type = dtype
    if dims is not None:
        del t.dims[:]
        t.dims.extend(dims)
    _store_model(doc, model)
    return True


def _flip(data: bytes, rng: random.Random, count: int, head: int | None = None) -> bytes:
    out = bytearray(data)
    span = min(len(out), head) if head else len(out)
    for _ in range(count):
        if span:
            out[rng.randrange(span)] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
    return bytes(out)


# ---- header, META, GRPH -------------------------------------------------------------------------

def header_version(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Relabel the file with another version (1..4 mostly): version gates must hold."""
    doc.version = rng.choice((1, 2, 3, 4) * 4 + (0, 5, 0xFFFF))
    return f"header_version:{doc.version}"


def header_flags(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Set a header flag or reserved byte, which a reader must refuse."""
    if rng.random() < 0.5:
        doc.flags = rng.choice(INTERESTING_FIXED["H"][1:])
        return f"header_flags:flags={doc.flags}"
    i = rng.randrange(len(doc.reserved))
    doc.reserved = doc.reserved[:i] + bytes([rng.randrange(1, 256)]) + doc.reserved[i + 1:]
    return f"header_flags:reserved[{i}]"


def _deep(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def _junk_json(rng: random.Random, slots: list[int]) -> tuple[str, str]:
    """A JSON value for a META key, and a label for it."""
    digits = rng.choice((20, 4300, 4301, 5000, 50000))
    choices = {
        "nan": "NaN", "inf": "-Infinity", "deep": _deep(rng.choice((50, 500, 5000, 100000)), rng),
        "bigint": "9" * digits, "string": '"\\u001b[31mred"', "list_str": '["0"]', "list_bool": "[true]",
        "list_float": "[0.5]", "list_neg": "[-1]", "list_big": f"[{1 << 63}]", "list_huge": f"[{'9' * digits}]",
        "list_nested": "[[0]]", "object": '{"0":1}', "null": "null", "all_slots": json.dumps(slots),
        "dup_slots": json.dumps(slots + slots), "beyond": json.dumps([max(slots, default=0) + 1000]),
        "empty_list": "[]", "number": "0",
    }
    label = rng.choice(sorted(choices))
    return choices[label], label


def meta_replace(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Replace META by other text: non-objects, NaN, deep nesting, huge ints, junk keys, not JSON."""
    slots = sorted({t.slot for t in doc.tensors()})
    value, label = _junk_json(rng, slots)
    texts = {
        "top_value": value, "top_list": "[]", "top_string": '"meta"', "top_null": "null", "top_number": "1.5",
        "typed": '{"typed_fields":' + value + "}", "options": '{"options":' + value + ',"producer":"nnr 0.4.0"}',
        "producer": '{"producer":"\\u001b[2J\\u001b]0;pwned\\u0007\\r\\n"}', "dup_keys":
        '{"typed_fields":[0],"typed_fields":' + value + "}", "slots": '{"slots":' + value + "}",
        "external": '{"external_data":' + value + "}", "not_json": "{", "empty": "", "bom": '\ufeff{}',
        "trailing": "{}x",
    }
    kind = rng.choice(sorted(texts))
    data = texts[kind].encode("utf-8")
    if rng.random() < 0.05:
        data = rng.choice((b"\xff\xfe{}", b'{"a":"\xc3"}'))
        kind = "bad_utf8"
    doc.units[0].payload = data
    return f"meta_replace:{kind}:{label}"


def meta_edit(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Keep META but give one key (typed_fields most often) a value of the wrong type or range."""
    try:
        meta = json.loads(_raw_payload(doc, 0) or b"")
    except (ValueError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    slots = sorted({t.slot for t in doc.tensors()})
    key = rng.choice(("typed_fields", "typed_fields", "options", "producer", "slots", "external_data", "unknown"))
    value, label = _junk_json(rng, slots)
    text = json.dumps({k: v for k, v in meta.items() if k != key}, sort_keys=True, separators=(",", ":"))
    head = text[:-1] + ("," if len(text) > 2 else "")
    doc.units[0].payload = (head + json.dumps(key) + ":" + value + "}").encode("utf-8")
    return f"meta_edit:{key}={label}"


def meta_typed(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """A valid typed_fields: some or all coded slots go back into typed repeated fields."""
    try:
        meta = json.loads(_raw_payload(doc, 0) or b"")
    except (ValueError, RecursionError):
        return None
    slots = sorted({t.slot for t in doc.tensors()})
    if not isinstance(meta, dict) or not slots:
        return None
    meta["typed_fields"] = slots if rng.random() < 0.5 else sorted(rng.sample(slots, rng.randint(1, len(slots))))
    doc.units[0].payload = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return f"meta_typed:{len(meta['typed_fields'])}"


def grph_trailing(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Append bytes after GRPH's zlib stream, which the CRC then covers."""
    if _raw_payload(doc, 1) is None:
        return None
    extra = rng.choice((b"\0", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
                        zlib.compress(b"second stream")))
    doc.units[1].payload += extra
    return f"grph_trailing:{len(extra)}"


def grph_proto_flip(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Flip bytes inside the decompressed model and recompress it."""
    raw = _graph_bytes(doc)
    if raw is None:
        return None
    n = rng.randint(1, 8)
    doc.units[1].payload = zlib.compress(_flip(raw, rng, n))
    return f"grph_proto_flip:{n}"


def grph_tensor_type(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Give a graph tensor another data_type (undefined ones too) or other dims."""
    model = _model(doc)
    slots = tensor_slots(model) if model is not None else []
    if not slots:
        return None
    slot = rng.randrange(len(slots))
    t = slots[slot].tensor
    if rng.random() < 0.5:
        t.data_type = rng.choice(DTYPES + (99, 1 << 20, -1))
        what = f"dtype={t.data_type}"
    else:
        del t.dims[:]
        t.dims.extend(rng.choice(DIMS + ((-1,), (-(1 << 40), 2))))
        what = f"dims={list(t.dims)[:4]}"
    _store_model(doc, model)
    return f"grph_tensor_type:slot{slot}:{what}"


def grph_external(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Point a graph tensor at external data in a hostile location."""
    model = _model(doc)
    slots = tensor_slots(model) if model is not None else []
    if not slots:
        return None
    slot = rng.randrange(len(slots))
    t = slots[slot].tensor
    location = rng.choice(HOSTILE_PATHS)
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", rng.choice(("0", "-1", "x", str(1 << 70)))),
                       ("length", rng.choice(("4", "-5", "", str(1 << 40))))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    _store_model(doc, model)
    return f"grph_external:slot{slot}:{location[:20]!r}"


def grph_bomb(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """A GRPH that decompresses to megabytes: zeros, or the model with a huge doc_string."""
    size = rng.choice((1, 2, 4, 8, 16)) << 20
    if rng.random() < 0.5:
        raw = bytes(size)
        what = "zeros"
    else:
        model = _model(doc)
        prefix = model.SerializeToString() if model is not None else b""
        raw = prefix + b"\x32" + _varint(size) + b"A" * size
        what = "doc_string"
    doc.units[1].payload = zlib.compress(raw, 1)
    return f"grph_bomb:{what}:{size >> 20}MiB"


def grph_garbage(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """A GRPH that is not a complete zlib stream of a model."""
    payload = _raw_payload(doc, 1) or b""
    choices = {
        "empty": b"", "random": bytes(rng.randrange(256) for _ in range(rng.randint(1, 200))),
        "truncated": payload[:rng.randrange(max(1, len(payload)))], "not_model": zlib.compress(b"\xff" * 100),
        "zlib_empty": zlib.compress(b""), "raw_deflate": zlib.compress(b"x" * 100)[2:-4],
    }
    kind = rng.choice(sorted(choices))
    doc.units[1].payload = choices[kind]
    return f"grph_garbage:{kind}"


def grph_slots(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Shift slot numbers (add or drop an initializer) or bury the graph, slots kept in order,
    in nested If nodes."""
    model = _model(doc)
    if model is None:
        return None
    kind = rng.choice(("add", "drop", "nest"))
    if kind == "add":
        t = TensorProto(name="\x1b[1mextra", data_type=rng.choice(DTYPES), dims=[rng.choice((0, 1, 3))])
        model.graph.initializer.insert(0, t)
    elif kind == "drop" and model.graph.initializer:
        del model.graph.initializer[rng.randrange(len(model.graph.initializer))]
    else:
        depth = rng.choice((1, 10, 40, 200))
        for _ in range(depth):
            outer = GraphProto(name="nest")
            node = outer.node.add(op_type="If", name="nest")
            attr = node.attribute.add(name="then_branch", type=AttributeProto.GRAPH)
            attr.g.CopyFrom(model.graph)
            model.graph.CopyFrom(outer)
        kind = f"nest{depth}"
    _store_model(doc, model)
    return f"grph_slots:{kind}"


# ---- TENS fields --------------------------------------------------------------------------------

def tens_slot(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Point a unit at another slot: a taken one, a missing one, or beyond 2**32."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    others = [u.slot for u in doc.tensors() if u is not t]
    t.slot = rng.choice(others) if others and rng.random() < 0.3 else _interesting(rng)
    return f"tens_slot:{t.slot}"


def tens_coding(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Relabel a unit's coding, unknown codings 5 and 6 included."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    t.coding = rng.randrange(7)
    return f"tens_coding:{t.coding}"


def tens_dtype(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Relabel a unit's dtype (0..30, 200, 255), half the time in the graph too."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    t.dtype = rng.choice(DTYPES)
    both = rng.random() < 0.5 and _retype_graph(doc, t.slot, t.dtype, None)
    return f"tens_dtype:{t.dtype}{'+graph' if both else ''}"


def _budget_dims(t: Tens, rng: random.Random) -> list[int]:
    """Dims whose element count sits at the limit a coded body of this size may expand to
    (formats/SPEC.md: 2**20 x (body bytes + 64)), the largest a reader has to allocate."""
    numel = ((len(t.body) + 64) << 20) + rng.choice((-1, 0, 0, 1))
    split = rng.choice((1, 1, 2, 8, 64))
    return [numel] if split == 1 else [split, numel // split]


def _new_dims(t: Tens, rng: random.Random) -> list[int]:
    pick = rng.random()
    if pick < 0.1:
        return _budget_dims(t, rng)
    if pick < 0.6 or not t.dims:
        return list(rng.choice(DIMS))
    dims = list(t.dims)
    op = rng.choice(("double", "zero", "swap", "append", "drop", "interesting"))
    i = rng.randrange(len(dims))
    if op == "double":
        dims[i] *= 2
    elif op == "zero":
        dims[i] = 0
    elif op == "swap":
        dims.reverse()
    elif op == "append":
        dims.append(rng.choice((1, 2)))
    elif op == "drop":
        dims.pop(i)
    else:
        dims[i] = _interesting(rng)
    return dims


def _set_channels(t: Tens) -> None:
    """Keep a per-channel lossy body's channel count equal to dims[0], as the decoder demands."""
    if t.coding != 2 or not t.dims:
        return
    for f in body_fields(t):
        if f.what == "channels":
            t.body = t.body[:f.offset] + _varint(t.dims[0]) + t.body[f.offset + f.size:]


def tens_dims(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Give a unit other dims (huge, zero, 64 or 65 of them, at the expansion limit), mostly in the graph too."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    t.dims = _new_dims(t, rng)
    both = rng.random() < 0.6 and _retype_graph(doc, t.slot, None, t.dims)
    if both:
        _set_channels(t)
    shown = t.dims if len(t.dims) <= 4 else f"{len(t.dims)}x{t.dims[0]}"
    return f"tens_dims:{shown}{'+graph' if both else ''}"


def tens_ndim(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Declare an ndim that disagrees with the dims that follow."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    t.ndim = rng.choice((0, len(t.dims) + 1, max(0, len(t.dims) - 1), 64, 65, 1 << 20, 1 << 40))
    if t.ndim == len(t.dims):
        t.ndim = None
    return f"tens_ndim:{t.ndim}"


def tens_name(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Names with control characters, terminal escapes, invalid UTF-8, 64 KiB, or another unit's."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    kind = rng.choice(("control", "control", "bad_utf8", "long", "dup"))
    if kind == "control":
        t.name = (rng.choice(NAMES) + t.name.decode("utf-8", "replace")).encode("utf-8")
    elif kind == "bad_utf8":
        t.name = t.name + rng.choice(BAD_UTF8)
    elif kind == "long":
        t.name = b"n" * rng.choice((1 << 16, (1 << 16) + 1, 1000))
    else:
        t.name = rng.choice(doc.tensors()).name
    return f"tens_name:{kind}"


def tens_snr(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """An snr_db of NaN, infinity, -0 or random bits."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    if t.compact:
        t.snr = bytes([rng.choice((0, 1, 254, 255, rng.randrange(256)))])
        return f"tens_snr:{t.snr[0]}"
    t.snr = rng.choice((struct.pack("<f", float("inf")), struct.pack("<f", float("-inf")), b"\x00\x00\xc0\x7f",
                        b"\x01\x00\x80\xff", struct.pack("<f", -0.0), struct.pack("<f", 3.4e38),
                        bytes(rng.randrange(256) for _ in range(4))))
    return f"tens_snr:{struct.unpack('<f', t.snr)[0]}"


def tens_body_flip(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Flip bits or bytes of a codec body, half the time in its first 32 bytes."""
    t = _pick_tens(doc, rng)
    if t is None or not t.body:
        return None
    n = rng.choice((1, 1, 2, 4, 8))
    head = 32 if rng.random() < 0.5 else None
    t.body = _flip(t.body, rng, n, head)
    return f"tens_body_flip:{n}{'@head' if head else ''}"


def tens_body_resize(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Truncate a codec body or extend it with zeros, 0xff or random bytes."""
    t = _pick_tens(doc, rng)
    if t is None:
        return None
    if t.body and rng.random() < 0.5:
        cut = rng.choice((0, 1, 4, len(t.body) // 2, len(t.body) - 1, rng.randrange(len(t.body))))
        t.body = t.body[:max(0, cut)]
        return f"tens_body_resize:cut{cut}"
    n = rng.choice((1, 4, 64, 4096))
    t.body += rng.choice((bytes(n), b"\xff" * n, bytes(rng.randrange(256) for _ in range(min(n, 64)))))
    return f"tens_body_resize:extend{n}"


# ---- codec body fields (formats/SPEC.md section 3) ---------------------------------------------

class _End(Exception):
    pass


@dataclass
class _Field:
    offset: int
    size: int
    fmt: str
    what: str


class _Walker:
    """Reads a codec body's known fields without decoding it, recording where each field is."""

    def __init__(self, body: bytes) -> None:
        self.body, self.pos, self.fields = body, 0, []

    def fixed(self, fmt: str, what: str) -> int:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.body):
            raise _End
        (v,) = struct.unpack_from("<" + fmt, self.body, self.pos)
        self.fields.append(_Field(self.pos, size, fmt, what))
        self.pos += size
        return v

    def varint(self, what: str, record: bool = True) -> int:
        value = 0
        for i in range(10):
            if self.pos + i >= len(self.body):
                raise _End
            b = self.body[self.pos + i]
            value |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                if record:
                    self.fields.append(_Field(self.pos, i + 1, "varint", what))
                self.pos += i + 1
                return value
        raise _End

    def varints(self, count: int, what: str) -> None:
        if count > MAX_FIELDS:
            raise _End
        for i in range(count):
            self.varint(f"{what}[{i}]", record=i < 3 or i == count - 1)

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.body):
            raise _End
        self.pos += n

    def level_block(self, what: str) -> None:
        k = self.varint(f"{what}.K")
        s = self.fixed("B", f"{what}.s")
        kind = self.fixed("B", f"{what}.table")
        if kind == 0:
            self.varint(f"{what}.f0")
            self.varint(f"{what}.f1")
            self.fixed("H", f"{what}.r")
            self.varint(f"{what}.fesc")
        elif kind == 1:
            self.varints((k >> s) - ((-k) >> s) + 2, f"{what}.freq")
        else:
            raise _End
        self.varints(self.varint(f"{what}.n_esc"), f"{what}.esc")
        self.skip(self.varint(f"{what}.n_fine"))
        n_words = self.varint(f"{what}.n_words")
        if n_words:
            self.fixed("I", f"{what}.word0")
            self.skip(4 * (n_words - 1))

    def planes(self, count: int) -> None:
        width = self.fixed("B", "width")
        for p in range(width):
            mode = self.fixed("B", f"plane{p}.mode")
            if mode == 0:
                self.skip(count)
            elif mode == 1:
                self.varints(256, f"plane{p}.freq")
                self.skip(4 * self.varint(f"plane{p}.n_words"))
            else:
                raise _End


def body_fields(t: Tens) -> list[_Field]:
    """The fields of a unit's codec body that the walker could locate, in order."""
    w = _Walker(t.body)
    numel = 1
    for d in t.dims:
        numel *= d
    try:
        if t.coding == 1:
            w.planes(numel * (2 if t.dtype in COMPLEX else 1))
        elif t.coding == 2:
            flags = w.fixed("B", "flags")
            w.fixed("B", "theta")
            w.fixed("h", "exponent")
            if flags & 1:
                w.varint("channels")
                w.level_block("shifts")
                w.level_block("mantissas")
            else:
                w.fixed("B", "mantissa")
            w.level_block("levels")
        elif t.coding == 3:
            w.fixed("B", "flags")
            w.skip(8 * w.varint("K"))
            w.level_block("levels")
        elif t.coding == 4:
            for fmt, what in (("B", "E"), ("B", "M"), ("h", "scale")):
                w.fixed(fmt, what)
            w.level_block("levels")
    except _End:
        pass
    return w.fields


def _field_value(fmt: str, rng: random.Random) -> tuple[bytes, str]:
    """Encoded interesting value for a field of this format, and how to show it."""
    if fmt != "varint":
        value = rng.choice(INTERESTING_FIXED[fmt])
        return struct.pack("<" + fmt, value), str(value)
    if rng.random() < 0.1:
        return rng.choice(ODD_VARINTS), "odd"
    value = _interesting(rng)
    return _varint(value), str(value)


def _put_field(t: Tens, what: str, new: bytes) -> bool:
    found = [f for f in body_fields(t) if f.what == what]
    if found:
        f = found[0]
        t.body = t.body[:f.offset] + new + t.body[f.offset + f.size:]
    return bool(found)


def tens_body_field(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Put an interesting integer into one located field of a codec body, now and then into that
    field of every unit of the same coding (so that a cost per unit adds up)."""
    units = [t for t in doc.tensors() if t.coding in (1, 2, 3, 4)]
    if not units:
        return None
    t = rng.choice(units)
    fields = body_fields(t)
    if not fields:
        return None
    f = rng.choice(fields)
    new, shown = _field_value(f.fmt, rng)
    targets = [u for u in units if u.coding == t.coding] if rng.random() < 0.2 else [t]
    changed = sum(_put_field(u, f.what, new) for u in targets)
    return f"tens_body_field:c{t.coding}:{f.what}={shown}{f':x{changed}' if len(targets) > 1 else ''}"


def tens_body_varint(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Replace whatever varint starts at a random early offset of a body by an interesting one."""
    t = _pick_tens(doc, rng)
    if t is None or not t.body:
        return None
    off = rng.randrange(min(len(t.body), 64))
    end = off
    while end < len(t.body) and t.body[end] & 0x80 and end - off < 9:
        end += 1
    value = _interesting(rng)
    t.body = t.body[:off] + _varint(value) + t.body[end + 1:]
    return f"tens_body_varint:@{off}={value}"


# ---- whole units ------------------------------------------------------------------------------

def tens_units(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Duplicate, delete or reorder TENS units, or swap two units' codings and bodies."""
    idx = [i for i, u in enumerate(doc.units) if isinstance(u.payload, Tens)]
    if not idx:
        return None
    op = rng.choice(("dup", "delete", "reorder", "swap_bodies"))
    i = rng.choice(idx)
    if op == "dup":
        doc.units.insert(rng.choice(idx) + 1, Unit(TENSOR, replace(doc.units[i].payload)))
    elif op == "delete":
        del doc.units[i]
    elif op == "reorder":
        tail = doc.units[2:]
        rng.shuffle(tail)
        doc.units[2:] = tail
    else:
        a, b = doc.units[i].payload, doc.units[rng.choice(idx)].payload
        a.body, b.body = b.body, a.body
        a.coding, b.coding = b.coding, a.coding
    return f"tens_units:{op}"


def tens_splice(doc: Doc, rng: random.Random, pool: list[Seed]) -> str | None:
    """Replace a unit's coding, dtype, dims and body by another seed's unit, retyping the graph
    to match, so foreign codings (e.g. a v3 codebook in a v1 file) reach the decoders."""
    t = _pick_tens(doc, rng)
    donors = [(s.name, u) for s in pool if s.doc for u in s.doc.tensors()]
    if t is None or not donors:
        return None
    name, donor = rng.choice(donors)
    t.coding, t.dtype, t.dims, t.body = donor.coding, donor.dtype, list(donor.dims), donor.body
    both = _retype_graph(doc, t.slot, t.dtype, t.dims)
    return f"tens_splice:{name}:c{donor.coding}:dt{donor.dtype}{'+graph' if both else ''}"


def unit_shuffle(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Break the unit sequence: change a kind, drop, duplicate or swap META/GRPH, insert a stray unit."""
    op = rng.choice(("kind", "drop", "dup", "swap", "insert"))
    i = rng.randrange(len(doc.units))
    if op == "kind":
        doc.units[i].kind = rng.choice((META, GRAPH, TENSOR, INDEX, b"XXXX", b"tens", b"\0\0\0\0"))
    elif op == "drop" and len(doc.units) > 2:
        del doc.units[rng.randrange(2)]
    elif op == "dup":
        j = rng.randrange(min(2, len(doc.units)))
        doc.units.insert(j + 1, replace(doc.units[j]))
    elif op == "swap":
        doc.units[0], doc.units[1] = doc.units[1], doc.units[0]
    else:
        stray = rng.choice((Unit(INDEX, b"\0"), Unit(b"XXXX", b"junk"), Unit(META, b"{}"), Unit(TENSOR, b"")))
        doc.units.insert(rng.randint(2, len(doc.units)), stray)
    return f"unit_shuffle:{op}"


def index_fault(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Make the index disagree with the units (recorded, applied when assembling)."""
    kind = rng.choice(("count", "tail", "extra", "drop", "dup", "slot", "offset", "length", "name", "swap"))
    value = {"count": _interesting(rng), "offset": rng.choice((-1, 1, -16, 4096, 1 << 40)),
             "length": rng.choice((-1, 1, -4, 1 << 40))}.get(kind, rng.randrange(1 << 32))
    doc.index_faults.append((kind, rng.random(), value))
    return f"index_fault:{kind}={value}"


def trailer_fault(doc: Doc, rng: random.Random, pool: list[Seed]) -> str:
    """Make the trailer point elsewhere or set its reserved bytes."""
    if rng.random() < 0.8:
        doc.trailer_fault = ("offset", rng.choice((-1, 1, -12, -(1 << 20), 1 << 40, -16)))
    else:
        doc.trailer_fault = ("reserved", rng.randrange(1, 1 << 32))
    return f"trailer_fault:{doc.trailer_fault[0]}={doc.trailer_fault[1]}"


Mutation = Callable[[Doc, random.Random, list[Seed]], "str | None"]
MUTATIONS: dict[str, tuple[float, Mutation]] = {
    f.__name__: (w, f) for w, f in (
        (4, header_version), (1, header_flags), (3, meta_replace), (4, meta_edit), (2, meta_typed),
        (1.5, grph_trailing), (2.5, grph_proto_flip), (2.5, grph_tensor_type), (1.5, grph_external),
        (0.4, grph_bomb), (1, grph_garbage), (1.5, grph_slots),
        (3, tens_slot), (4, tens_coding), (4, tens_dtype), (5, tens_dims), (1, tens_ndim), (3, tens_name),
        (1.5, tens_snr), (6, tens_body_flip), (4, tens_body_resize), (12, tens_body_field),
        (3, tens_body_varint), (4, tens_units), (4, tens_splice), (1.5, unit_shuffle),
        (2.5, index_fault), (1.5, trailer_fault),
    )
}


# ---- raw byte mutations, nothing fixed -----------------------------------------------------------

def unit_offsets(data: bytes) -> list[int]:
    """Offsets of the unit headers found by walking the unit lengths from the header on."""
    layout = COMPACT_SINCE if len(data) >= 6 and struct.unpack_from("<H", data, 4)[0] >= COMPACT_SINCE else 4
    found, pos, end = [], HEADER.size, len(data) - TRAILER.size
    while pos + 9 <= end:
        head = _unit_head(data, pos, layout)
        if head is None:
            break
        found.append(pos)
        pos = head[2] + head[1] + 4
    return found


def raw_mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One byte-level mutation with no CRC, index or trailer fixed."""
    op = rng.choice(("flip", "flip", "cut", "append", "insert", "delete", "length", "trailer", "header"))
    out = bytearray(data)
    if op == "flip" or not out:
        return _flip(data, rng, rng.randint(1, 16)), "raw:flip"
    pos = rng.randrange(len(out))
    if op == "cut":
        del out[pos:]
    elif op == "append":
        out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 32)))
    elif op == "insert":
        out[pos:pos] = bytes(rng.randint(1, 16))
    elif op == "delete":
        del out[pos:pos + rng.randint(1, 16)]
    elif op == "length":
        offsets = unit_offsets(data)
        at = rng.choice(offsets) + 4 if offsets else pos
        out[at:at + 8] = struct.pack("<Q", _interesting(rng) & ((1 << 64) - 1))
    elif op == "trailer" and len(out) >= TRAILER.size:
        out[-16:-8] = struct.pack("<Q", _interesting(rng) & ((1 << 64) - 1))
    elif op == "header" and len(out) >= 8:
        out[4:8] = struct.pack("<HH", rng.choice((1, 2, 3, 4, 0xFFFF)), rng.choice((0, 0, 1)))
    return bytes(out), f"raw:{op}"


# ---- putting it together ---------------------------------------------------------------------

RAW_ONLY = 0.05
RAW_ON_TOP = 0.03
MAX_STACK = 5


def load_seeds(files: list[tuple[str, bytes]]) -> list[Seed]:
    """Seeds in the given order, each parsed once (None when only raw mutations apply)."""
    return [Seed(name, data, parse(data)) for name, data in files]


def _pick_mutation(rng: random.Random) -> str:
    names = list(MUTATIONS)
    return rng.choices(names, weights=[MUTATIONS[n][0] for n in names])[0]


def mutate(pool: list[Seed], rng: random.Random, only: tuple[str, ...] | None = None) -> Sample:
    """A mutated file from a random seed: stacked structure-aware mutations (restricted to
    ``only`` when given), or now and then raw byte mutations with nothing fixed."""
    seed = rng.choice([s for s in pool if s.doc] if only else pool)
    if seed.doc is None or (only is None and rng.random() < RAW_ONLY):
        data, label = raw_mutate(seed.data, rng)
        return Sample(data, seed.name, [label], [])
    doc = seed.doc.copy()
    labels = []
    want = 1
    while want < MAX_STACK and rng.random() < 0.4:
        want += 1
    for _ in range(4 * want):
        if len(labels) == want:
            break
        name = rng.choice(only) if only else _pick_mutation(rng)
        label = MUTATIONS[name][1](doc, rng, pool)
        if label:
            labels.append(label)
    data, broken = assemble(doc)
    labels = labels or ["reassembled"]
    if only is None and rng.random() < RAW_ON_TOP:
        data, label = raw_mutate(data, rng)
        labels.append(label)
        broken = []
    return Sample(data, seed.name, labels, broken)
