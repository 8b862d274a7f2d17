"""Reference bitstreams and robustness vectors.

Reference vectors (``vectors/v<N>/``): per case, the source model (.onnx, and .onnx.data
when its weights are external), its .nnr, and a .json with the encoder options and the
SHA-256 of every decoded tensor and of the decoded ONNX serialisation. Files of earlier
versions are never rewritten: the decoder must reproduce them forever, and the encoder
must reproduce the bytes of the current version's files on every machine. A record with a
``decode_only`` key (and the reason) is a file an earlier encoder wrote that today's does not
re-produce; decoders still check it.

Robustness vectors (``vectors/robustness/``): damaged copies of a reference file, each
with the error class a decoder must raise (formats/SPEC.md, "Refusals"). Hostile vectors
(``vectors/hostile/``): crafted files from a fuzzing audit, with the error each must raise
or none where the file is legal.

    nnr-conformance --update-vectors   # maintainers only, after a deliberate format change
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from onnx import ModelProto, TensorProto

from nnr.formats.container import FORMAT_VERSION, read_container

HERE = Path(__file__).resolve().parent
VECTOR_ROOT = HERE / "vectors"
ROBUSTNESS = VECTOR_ROOT / "robustness"
HOSTILE = VECTOR_ROOT / "hostile"
"""Crafted files of a fuzzing audit (committed as found): hostile.json gives each one's error."""
UNKNOWN_VERSION = 0xFFFF  # reserved by formats/SPEC.md: never a real format version


@dataclass(frozen=True)
class Case:
    build: Callable[[], ModelProto]
    options: dict
    external_data: bool = False   # source model saved with its weights in a .onnx.data file

    @property
    def encode_options(self) -> dict:
        """The case's options over the defaults pinned for this format version."""
        return {**PINNED_DEFAULTS, **self.options}


PINNED_DEFAULTS: dict = {"reconstruction": "mse"}
"""Encoder defaults of the release that froze this version's vectors and changed since; they
stay pinned so that a case means the same file until the next format version."""


def cases() -> dict[str, Case]:
    """The reference cases of the current format version: every coding mode and weight place."""
    from .toy_models import complex_linear, constants_and_subgraphs, mlp

    return {
        "mlp_lossy": Case(lambda: mlp(), {}),
        "mlp_coarse": Case(lambda: mlp(), {"qp": -12.0}),
        "mlp_lossless": Case(lambda: mlp(), {"lossless": True}),
        "mlp_fp16": Case(lambda: mlp(dtype=TensorProto.FLOAT16), {}),
        "mlp_bf16": Case(lambda: mlp(dtype=TensorProto.BFLOAT16), {}),
        "mlp_fp64_lossless": Case(lambda: mlp(dtype=TensorProto.DOUBLE), {"lossless": True}),
        "constants_subgraphs": Case(lambda: constants_and_subgraphs(), {}),
        "per_tensor_uniform": Case(lambda: mlp(seed=3), {"step_rule": "uniform", "qp": -30.0}),
        "per_channel": Case(lambda: mlp(seed=4), {"step_rule": "channel"}),
        "external_data": Case(lambda: mlp(seed=5), {}, external_data=True),
        "typed_fields_lossless": Case(lambda: mlp(seed=6, typed=True), {"lossless": True}),
        "typed_fields_fp16": Case(lambda: mlp(seed=7, dtype=TensorProto.FLOAT16, typed=True), {}),
        "quantizer_midrise": Case(lambda: mlp(seed=8), {"quantizer": "midrise", "qp": -24.0}),
        "quantizer_deadzone_wide": Case(lambda: mlp(seed=9), {"quantizer": "deadzone:0.7", "qp": -24.0}),
        "quantizer_mulaw": Case(lambda: mlp(seed=10), {"quantizer": "mulaw:255"}),
        "quantizer_e4m3": Case(lambda: mlp(seed=11), {"quantizer": "e4m3"}),
        "quantizer_fp16_per_channel": Case(lambda: mlp(seed=12, dtype=TensorProto.FLOAT16),
                                           {"quantizer": "deadzone:0.25", "step_rule": "channel"}),
        "quantizer_bf16_e5m2": Case(lambda: mlp(seed=13, dtype=TensorProto.BFLOAT16), {"quantizer": "e5m2"}),
        "complex_lossy": Case(lambda: complex_linear(), {}),
        "complex_lossless": Case(lambda: complex_linear(seed=21), {"lossless": True}),
        "complex_per_channel_mulaw": Case(lambda: complex_linear(seed=22), {"quantizer": "mulaw:255",
                                                                            "step_rule": "channel"}),
        "complex_pruned_phase": Case(lambda: complex_linear(seed=23), {"prune": "magnitude:0.5", "prune_global": True,
                                                                       "prune_criterion": "phase"}),
        "pruned_filters_l2": Case(lambda: mlp(seed=24), {"prune": "filters:l2:0.25"}),
        "fine_bits": Case(lambda: mlp(seed=25, hidden=512), {"qp": -28.0}),
        "mlp_fp16_lossless": Case(lambda: mlp(seed=26, dtype=TensorProto.FLOAT16), {"lossless": True}),
        "mlp_bf16_lossless": Case(lambda: mlp(seed=27, dtype=TensorProto.BFLOAT16), {"lossless": True}),
        "quantizer_e5m10": Case(lambda: mlp(seed=28), {"quantizer": "minifloat:e5m10"}),
        "per_channel_wide_deadzone": Case(lambda: mlp(seed=29), {"quantizer": "deadzone:0.7", "step_rule": "channel"}),
        "context_tables": Case(lambda: mlp(seed=30, hidden=256, row_scales=True), {"qp": -8.0}),
        "context_tables_two": Case(lambda: mlp(seed=33, hidden=256, row_scales=True), {"qp": 4.0}),
        "context_tables_three": Case(lambda: mlp(seed=33, hidden=256, row_scales=True), {"qp": 0.0}),
        "gain_reconstruction": Case(lambda: mlp(seed=34, hidden=256, row_scales=True),
                                    {"qp": 0.0, "reconstruction": "gain"}),
    }


STORED_BYTES_SINCE = 5
"""Records of this format version on hash each tensor's stored bytes (formats/SPEC.md, section 7)."""


def decoded_hashes(data: bytes) -> dict:
    """SHA-256 of every decoded tensor (by name) and of the decoded model's serialisation.
    From format version 5 a tensor's hash is of its stored bytes; records of versions 1–4
    hash the decoded numpy array's bytes (bfloat16 widened to float32)."""
    import nnr

    f = nnr.open(data)
    if f.version >= STORED_BYTES_SINCE:
        tensors = {name: hashlib.sha256(f.get_bytes(name)).hexdigest() for name in f.keys()}
    else:
        tensors = {name: hashlib.sha256(np.ascontiguousarray(f.get_tensor(name)).tobytes()).hexdigest()
                   for name in f.keys()}
    model = hashlib.sha256(f.model().SerializeToString()).hexdigest()
    return {"tensors": tensors, "model": model}


def replay(record: Path) -> bytes:
    """Encode a vector's source again with the options its .nnr carries in META (every option,
    defaults included), so a later change of a default does not change what a vector means."""
    import nnr
    from nnr.options import EncoderOptions

    carried = read_container(record.with_suffix(".nnr").read_bytes()).meta["options"]
    return nnr.encode(record.with_suffix(".onnx"), EncoderOptions.from_json(carried), probe=False)


def reproducible(record: Path) -> bool:
    """Whether today's encoder must re-produce this vector: false for files kept only for
    decoding (their record says why under ``decode_only``)."""
    return "decode_only" not in json.loads(record.read_text())


def vector_files() -> list[Path]:
    """The .json records of every reference vector, all versions."""
    return sorted(VECTOR_ROOT.glob("v*/*.json"))


def same_bitstream(new: bytes, old: bytes) -> bool:
    """Equal except the producer string in the metadata (it names the nnr release)."""
    a, b = read_container(new), read_container(old)
    if a.version != b.version or a.graph != b.graph:
        return False
    if {k: v for k, v in a.meta.items() if k != "producer"} != {k: v for k, v in b.meta.items() if k != "producer"}:
        return False
    import nnr

    return [u.to_bytes() for u in nnr.open(new).units()] == [u.to_bytes() for u in nnr.open(old).units()]


def _save_source(model: ModelProto, path: Path, external: bool) -> None:
    import onnx

    if external:
        onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=0)
    else:
        onnx.save(model, path)


def handmade_vectors() -> dict[str, tuple[ModelProto, bytes, str]]:
    """name -> (source model, file, why): current-version files no encoder option makes,
    for rules a decoder could get wrong while passing every encoder-made vector."""
    import onnx

    from nnr.codec.bytestream import ByteWriter
    from nnr.codec.levelcode import encode_levels

    # x = (|q|·256 − θ) · 2^(e − 16) with θ = 255, e = −9: level 131137 gives 1 + 2^-11 + 2^-25,
    # a hair above a float16 tie. float32 rounds it onto the tie, which float16 rounds to even
    # (1.0); one rounding from float64 would give the next float16 up (1 + 2^-10).
    levels = np.array([131137, -131137, 131136, 1, 0, -3], dtype=np.int64)
    body = ByteWriter()
    body.u8(0)
    body.u8(255)
    body.i16(-9)
    body.u8(1)
    body.raw(encode_levels(levels))
    weights = ((np.abs(levels) * 256 - 255) * np.sign(levels) * 2.0 ** -25).astype(np.float32).astype(np.float16)
    why = ("hand-made: float16 levels whose float64 value is a hair above a float16 tie; float64 → "
           "float32 → float16 (the rule) and float64 → float16 decode differently")
    source, data = _one_tensor_file("double_rounding", "Add", weights, TensorProto.FLOAT16, body.getvalue(), why)
    onnx.checker.check_model(source)
    return {"fp16_double_rounding": (source, data, why), "context_fine_bits_escapes": _context_fine_bits_escapes()}


def _one_tensor_file(name: str, op: str, weights: np.ndarray, dtype: int, body: bytes, why: str) -> tuple[ModelProto, bytes]:
    """A model ``y = op(x, w)`` with ``weights`` as w, and the file that codes w by ``body``
    (coding 2): the source a hand-made vector decodes to."""
    from onnx import helper, numpy_helper

    from nnr.formats.container import TensorUnit, write_container

    x_shape = [weights.shape[0]] if op == "Add" else [1, weights.shape[0]]
    y_shape = [weights.shape[-1]] if op == "Add" else [1, weights.shape[-1]]
    graph = helper.make_graph([helper.make_node(op, ["x", "w"], ["y"])], name,
                              [helper.make_tensor_value_info("x", dtype, x_shape)],
                              [helper.make_tensor_value_info("y", dtype, y_shape)],
                              [numpy_helper.from_array(weights, "w")])
    source = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    stripped = ModelProto()
    stripped.CopyFrom(source)
    stripped.graph.initializer[0].ClearField("raw_data")
    data = write_container({"note": why, "slots": 1}, stripped.SerializeToString(),
                           [TensorUnit(0, "w", dtype, tuple(weights.shape), 2, body)])
    return source, data


def _context_fine_bits_escapes() -> tuple[ModelProto, bytes, str]:
    """Context tables over coarse symbols (two fine bits) with escapes and histogram tables:
    the classes come from coarse values, the escape's is 3."""
    from nnr.codec.bytestream import ByteWriter
    from nnr.codec.levelcode import encode_levels
    from nnr.codec.lossy_decode import decode_lossy

    rng = np.random.default_rng(40)
    levels = np.round(rng.laplace(0.0, np.repeat(np.exp2(rng.uniform(-2, 5, 64)), 64))).astype(np.int64)
    body = ByteWriter()
    body.u8(0)      # flags: one step
    body.u8(0)      # θ
    body.i16(-4)    # step 128 · 2^(−4 − 8) = 2^-5
    body.u8(128)
    body.raw(encode_levels(levels, k=40, fine_bits=2))
    weights = decode_lossy(body.getvalue(), (64, 64), np.dtype(np.float32))
    why = ("hand-made: a level block of four context tables (histograms) over coarse symbols with two "
           "fine bits and 55 escapes, which the encoder's own choices do not combine on a small model")
    source, data = _one_tensor_file("context_fine_bits_escapes", "MatMul", weights, TensorProto.FLOAT, body.getvalue(), why)
    return source, data, why


def update_vectors(log: Callable[[str], None] = print) -> list[str]:
    """Write the current version's reference and robustness vectors; returns the files written.

    Refuses to change an existing current-version .nnr: a changed bitstream means a new
    format version (bump FORMAT_VERSION, keep a decoder for the old one), not new golden files.
    """
    import tempfile

    import nnr

    out = VECTOR_ROOT / f"v{FORMAT_VERSION}"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in cases().items():
            src = Path(tmp) / f"{name}.onnx"
            _save_source(case.build(), src, case.external_data)
            data = nnr.encode(src, probe=False, **case.encode_options)
            target = out / f"{name}.nnr"
            if target.exists() and not same_bitstream(data, target.read_bytes()):
                raise SystemExit(f"{target}: the encoder now writes different bytes for this case. A "
                                 f"bitstream change needs a new format version: bump FORMAT_VERSION "
                                 f"(formats/container.py), keep decoding v{FORMAT_VERSION}, then update.")
            if target.exists():
                log(f"unchanged {target}")
                continue
            for f in Path(tmp).glob(f"{name}.onnx*"):
                (out / f.name).write_bytes(f.read_bytes())
                written.append(str(out / f.name))
            target.write_bytes(data)
            record = {"format_version": FORMAT_VERSION, "options": case.options,
                      "external_data": case.external_data, **decoded_hashes(data)}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            written += [str(target), str(out / f"{name}.json")]
            log(f"wrote {target} ({len(data)} bytes)")
        for name, (source, data, why) in handmade_vectors().items():
            target = out / f"{name}.nnr"
            if target.exists() and target.read_bytes() != data:
                raise SystemExit(f"{target}: the hand-made file changed; that needs a new format version")
            _save_source(source, out / f"{name}.onnx", False)
            target.write_bytes(data)
            record = {"format_version": FORMAT_VERSION, "options": {}, "external_data": False,
                      "decode_only": why, **decoded_hashes(data)}
            (out / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            written += [str(out / f"{name}.onnx"), str(target), str(out / f"{name}.json")]
    written += write_robustness(log)
    return written


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def _with_header(data: bytes, version: int | None = None, flags: int | None = None) -> bytes:
    """``data`` with its header's version or flags changed and its checksum made valid again:
    a well-formed header that says something else."""
    from nnr.formats.container import header_bytes

    head = bytearray(header_bytes(FORMAT_VERSION)[:12])
    head[:12] = data[:12]
    if version is not None:
        struct.pack_into("<H", head, 4, version)
    if flags is not None:
        struct.pack_into("<H", head, 6, flags)
    return bytes(head) + struct.pack("<I", zlib.crc32(head)) + data[16:]


def _rebuilt(good: bytes, edit: Callable[[list], list]) -> bytes:
    """``good`` written again (every CRC valid) after ``edit`` changed its list of tensor units."""
    import nnr
    from nnr.formats.container import write_container

    c = read_container(good)
    return write_container(c.meta, c.graph, edit(list(nnr.open(good).units())), version=c.version)


def _unit_edit(index: int, **changes) -> Callable[[list], list]:
    import dataclasses

    def edit(units: list) -> list:
        units[index] = dataclasses.replace(units[index], **changes)
        return units
    return edit


def robustness_cases(good: bytes) -> dict[str, tuple[bytes, str, str]]:
    """name -> (damaged bytes, error class a decoder must raise, what was done), from ``good``,
    a file of the current version."""
    import nnr
    from nnr.formats.container import read_unit

    c = read_container(good)
    first = c.index[0]
    units = list(nnr.open(good).units())
    body = units[0].body
    last_word_flipped = body[:-1] + bytes([body[-1] ^ 0x01])
    _, meta, graph_at = read_unit(memoryview(good), 16, None, c.version)
    meta_start = graph_at - 4 - len(meta)
    _, graph, after = read_unit(memoryview(good), graph_at, None, c.version)
    graph_start = after - 4 - len(graph)
    return {
        "empty": (b"", "FormatError", "zero bytes"),
        "header_only": (good[:16], "CorruptionError", "the 16-byte header and nothing else"),
        "truncated_half": (good[:len(good) // 2], "CorruptionError", "first half of the file"),
        "truncated_last_byte": (good[:-1], "CorruptionError", "last byte missing"),
        "appended_garbage": (good + b"\x00" * 7, "CorruptionError", "7 zero bytes appended"),
        "bitflip_magic": (_flip(good, 1), "FormatError", "bit 0 of magic byte 1 flipped"),
        "bitflip_header_version": (_flip(good, 4, 3), "CorruptionError",
                                   "bit 3 of the header's version flipped (its checksum no longer matches)"),
        "bitflip_metadata": (_flip(good, meta_start + 3, 3), "CorruptionError", "bit 3 flipped in the META payload"),
        "bitflip_graph": (_flip(good, graph_start + 5, 2), "CorruptionError", "bit 2 flipped in the GRPH payload"),
        "bitflip_tensor_body": (_flip(good, first.offset + 20, 5), "CorruptionError",
                                "bit 5 flipped inside the first tensor unit"),
        "bitflip_trailer": (_flip(good, len(good) - 16, 0), "CorruptionError",
                            "bit 0 of the trailer's index offset flipped"),
        "version_bumped": (_with_header(good, version=UNKNOWN_VERSION), "VersionError",
                           f"header version set to {UNKNOWN_VERSION}, checksum valid"),
        "flags_set": (_with_header(good, flags=1), "FormatError", "header flags set to 1, checksum valid"),
        "unit_removed": (_rebuilt(good, lambda us: us[1:]), "CorruptionError",
                         f"the first tensor unit ({first.name}) left out, every CRC valid"),
        "unit_slot_unknown": (_rebuilt(good, _unit_edit(0, slot=len(units) + 1000)), "CorruptionError",
                              "the first tensor unit points at a slot the graph does not have, every CRC valid"),
        "unit_slot_twice": (_rebuilt(good, _unit_edit(1, slot=units[0].slot)), "CorruptionError",
                            "the second tensor unit codes the first one's slot again, every CRC valid"),
        "unit_coding_unknown": (_rebuilt(good, _unit_edit(0, coding=9)), "FormatError",
                                "the first tensor unit declares coding 9, every CRC valid"),
        "lane_word_flipped": (_rebuilt(good, _unit_edit(0, body=last_word_flipped)), "CorruptionError",
                              "a bit of the first unit's last ANS word flipped, every CRC valid: its "
                              "lane goes astray"),
        "unit_body_truncated": (_rebuilt(good, _unit_edit(0, body=body[:-2])), "CorruptionError",
                                "the first unit's body one ANS word short, every CRC valid"),
        **_container_cases(good),
        **_body_cases(good),
    }


def _pieces(data: bytes) -> list[tuple[bytes | None, bytes]]:
    """The units of a file as (kind, payload) pairs in file order, the index last."""
    from nnr.formats.container import read_unit

    c = read_container(data)
    view, pos, pieces = memoryview(data), 16, []
    while pos < len(data) - 16:
        kind, payload, pos = read_unit(view, pos, None, c.version)
        pieces.append((kind, bytes(payload)))
    return pieces


def _assembled(pieces: list[tuple[bytes | None, bytes]], version: int = FORMAT_VERSION) -> bytes:
    """Units laid out again with valid CRCs (kind None: raw bytes, no unit), the trailer
    pointing at the last one."""
    from nnr.formats.container import TRAILER, TRAILER_MAGIC, _unit, header_bytes

    parts = [header_bytes(version)]
    for kind, payload in pieces[:-1]:
        parts.append(payload if kind is None else _unit(kind, payload, version))
    index_at = sum(map(len, parts))
    parts.append(_unit(pieces[-1][0], pieces[-1][1], version))
    return b"".join(parts) + TRAILER.pack(index_at, bytes(4), TRAILER_MAGIC)


def _container_cases(good: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damage to units and index, every CRC valid."""
    from nnr.codec.bytestream import ByteReader, ByteWriter
    from nnr.formats.container import GRAPH, META

    pieces = _pieces(good)
    index = ByteReader(pieces[-1][1])
    entries = [(index.varint(), index.varint()) for _ in range(index.varint())]

    def with_piece(i: int, piece: tuple[bytes | None, bytes]) -> bytes:
        changed = list(pieces)
        changed[i] = piece
        return _assembled(changed)

    lengths = ByteWriter()
    lengths.varint(len(entries))
    for i, (slot, length) in enumerate(entries):
        lengths.varint(slot)
        lengths.varint(length + (1 if i == 0 else -1 if i == 1 else 0))
    graph = zlib.decompress(pieces[1][1])
    model = ModelProto()
    model.ParseFromString(graph)
    external = model.graph.initializer[0]
    name = external.name.encode()
    external.data_location = TensorProto.EXTERNAL
    external.external_data.add(key="location", value="weights.bin")
    return {
        "unit_kind_wrong": (with_piece(2, (b"TENX", pieces[2][1])), "FormatError",
                            "the first tensor unit's kind is TENX, every CRC valid"),
        "index_lengths_disagree": (with_piece(-1, (pieces[-1][0], lengths.getvalue())), "CorruptionError",
                                   "the index gives the first unit one byte more and the second one "
                                   "less (they still tile the tensor area), every CRC valid"),
        "bytes_between_units": (_assembled(pieces[:3] + [(None, bytes(3))] + pieces[3:]), "CorruptionError",
                                "three zero bytes between the first and second tensor units, the index "
                                "unchanged: bytes no unit covers"),
        "meta_not_json": (with_piece(0, (META, b"{not json")), "FormatError",
                          "META holds '{not json', every CRC valid"),
        "graph_not_zlib": (with_piece(1, (GRAPH, b"not zlib")), "FormatError",
                           "GRPH holds 'not zlib', every CRC valid"),
        "graph_not_onnx": (with_piece(1, (GRAPH, zlib.compress(b"\x0a\xff\xff\xff\xff\x0f"))), "FormatError",
                           "GRPH is a zlib stream of six bytes that are no ONNX model, every CRC valid"),
        "graph_name_not_utf8": (with_piece(1, (GRAPH, zlib.compress(graph.replace(name, name[:-1] + b"\xff"), 9))),
                                "FormatError", f"the graph's initializer {external.name!r} renamed, where it is "
                                "defined and used, with a last byte 0xFF (not UTF-8), every CRC valid"),
        "graph_external_data": (with_piece(1, (GRAPH, zlib.compress(model.SerializeToString(), 9))),
                                "CorruptionError",
                                f"the graph's initializer {external.name!r} refers to external data, "
                                "every CRC valid"),
    }


def _varint(value: int) -> bytes:
    from nnr.codec.bytestream import ByteWriter

    w = ByteWriter()
    w.varint(value)
    return w.getvalue()


def _body_cases(good: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damage inside the first tensor unit's main level block (a per-tensor lossy body), every
    CRC valid: field by field, each refusal of SPEC sections 3 and 4."""
    import nnr
    from nnr.codec.bytestream import ByteReader
    from nnr.codec.levelcode import CONTEXT_LANES, read_levels
    from nnr.codec.lossy_decode import main_block_offset
    from nnr.codec.rans import LANE_STATE_LOW, decode_lanes
    from nnr.codec.rans_encode import encode_lanes

    unit = list(nnr.open(good).units())[0]
    body = bytes(unit.body)
    flags, start = main_block_offset(body)
    assert unit.coding == 2 and flags == 0, "the source's first unit must be a per-tensor lossy body"
    ans = read_levels(ByteReader(body[start:]), unit.numel, CONTEXT_LANES).ans
    assert not ans.contiguous, "the source's first unit must code its levels with one table"
    k_bytes = len(_varint(ByteReader(body[start:]).varint()))
    words_at = len(body) - 2 * ans.words.size
    lanes_at = words_at - len(_varint(ans.words.size)) - len(_varint(ans.n_lanes))
    p_at = lanes_at - 1
    count_at = start + k_bytes + 1
    table_at = count_at + 1

    def edited(new_body: bytes) -> bytes:
        return _rebuilt(good, _unit_edit(0, body=new_body))

    def put(at: int, value: int, width: int = 1) -> bytes:
        return edited(body[:at] + value.to_bytes(width, "little") + body[at + width:])

    def lanes(value: int) -> bytes:
        return edited(body[:lanes_at] + _varint(value) + body[p_at + 1 + len(_varint(ans.n_lanes)):])

    more_words = _varint(ans.words.size + 1)
    symbols = decode_lanes(ans.words, ans.table, ans.count, ans.n_lanes)
    cdf = np.concatenate(([0], np.cumsum(np.bincount(ans.table.symbol, minlength=ans.table.size))))
    off_end = encode_lanes(symbols, cdf, ans.table.precision, ans.n_lanes, start=LANE_STATE_LOW + 1)
    return {
        "lane_end_state": (edited(body[:lanes_at] + _varint(ans.n_lanes) + _varint(off_end.size)
                                  + off_end.astype("<u2").tobytes()), "CorruptionError",
                           "the main block's lanes coded from state 2**16 + 1: every word is used "
                           "but a lane ends in 2**16 + 1, not its initial state"),
        "lossy_flags_unknown": (put(0, 4), "CorruptionError", "lossy flags 0x04 (undefined), every CRC valid"),
        "level_k_over_limit": (edited(body[:start] + _varint(1 << 15) + body[start + k_bytes:]), "CorruptionError",
                               "the main level block's K is 2**15, one over version 5's limit"),
        "table_kind_unknown": (put(table_at, 7), "CorruptionError", "entropy table kind 7 (undefined)"),
        "table_count_zero": (put(count_at, 0), "CorruptionError", "the main level block declares 0 tables"),
        "table_count_5": (put(count_at, 5), "CorruptionError", "the main level block declares 5 tables (at most 4)"),
        "lane_precision_zero": (put(p_at, 0), "CorruptionError", "lane table precision P = 0"),
        "lane_precision_17": (put(p_at, 17), "CorruptionError", "lane table precision P = 17"),
        "lane_count_zero": (lanes(0), "CorruptionError", f"0 lanes for {unit.numel} symbols"),
        "lane_count_over": (lanes(unit.numel + 1), "CorruptionError",
                            f"{unit.numel + 1} lanes for {unit.numel} symbols"),
        "lane_start_low": (put(words_at, 0, 2), "CorruptionError",
                           "the high half of lane 0's initial state is 0: the lane starts below 2**16"),
        "lane_words_left_over": (edited(body[:lanes_at + len(_varint(ans.n_lanes))] + more_words + body[words_at:]
                                        + bytes(2)), "CorruptionError",
                                 "one zero word appended to the main block's lane stream (its word count "
                                 "raised by one): a word is left over"),
    }


CONTEXT_SOURCE = "context_tables"
"""The current version's vector whose damaged context-coded block the context cases are made from."""


def context_cases(good: bytes) -> dict[str, tuple[bytes, str, str]]:
    """Damage inside the first context-coded level block of ``good``, every CRC valid."""
    import nnr
    from nnr.codec.bytestream import ByteReader
    from nnr.codec.levelcode import CONTEXT_LANES, read_levels
    from nnr.codec.lossy_decode import main_block_offset

    units = list(nnr.open(good).units())
    for at, unit in enumerate(units):
        body = bytes(unit.body)
        flags, start = main_block_offset(body)
        if unit.coding == 2 and read_levels(ByteReader(body[start:]), unit.numel, CONTEXT_LANES).ans.contiguous:
            break
    else:
        raise AssertionError("the source has no context-coded level block")
    count_at = start + len(_varint(ByteReader(body[start:]).varint())) + 1

    def edited(new_body: bytes) -> bytes:
        return _rebuilt(good, _unit_edit(at, body=new_body))

    return {
        "context_last_word_flipped": (edited(body[:-1] + bytes([body[-1] ^ 0x01])), "CorruptionError",
                                      f"a bit of the last word of {unit.name}'s context-coded lanes flipped"),
        "context_table_count_1": (edited(body[:count_at] + b"\x01" + body[count_at + 1:]), "CorruptionError",
                                  f"{unit.name}'s level block declares 1 table instead of {body[count_at]}: the "
                                  f"other tables are read as what follows"),
    }


LEGACY_SOURCES = {"v4_lossy": "v4/mlp_lossy.nnr", "v4_complex": "v4/complex_lossy.nnr",
                  "v3_mulaw": "v3/quantizer_mulaw.nnr"}
"""Frozen older vectors the legacy robustness cases are made from."""


def legacy_robustness_cases() -> dict[str, tuple[bytes, str, str, str]]:
    """name -> (damaged bytes, error, what was done, source): refusals only a version 1–4
    file can show (its ANS stream, features newer than its version)."""
    import nnr
    from nnr.formats.container import write_container

    def source(key: str) -> bytes:
        return (VECTOR_ROOT / LEGACY_SOURCES[key]).read_bytes()

    def relabelled(key: str, version: int) -> bytes:
        data = source(key)
        c = read_container(data)
        return write_container(c.meta, c.graph, list(nnr.open(data).units()), version=version)

    v4 = source("v4_lossy")
    body = bytes(list(nnr.open(v4).units())[0].body)

    def v4_body(new_body: bytes) -> bytes:
        return _rebuilt(v4, _unit_edit(0, body=new_body))

    return {
        "v4_stream_ends_in_zero_word": (v4_body(body[:-4] + bytes(4)), "CorruptionError",
                                        "the last 32-bit word of the first unit's ANS stream set to 0", "v4_lossy"),
        "v4_stream_not_exhausted": (v4_body(_flip(body, len(body) - 8)), "CorruptionError",
                                    "bit 0 of the first unit's second-to-last ANS word flipped: the "
                                    "stream does not end in state 0 with every word used", "v4_lossy"),
        "v3_complex_unit": (relabelled("v4_complex", 3), "CorruptionError",
                            "a complex64 tensor unit in a file written as version 3", "v4_complex"),
        "v2_codebook_unit": (relabelled("v3_mulaw", 2), "CorruptionError",
                             "coding 3 (codebook) units in a file written as version 2", "v3_mulaw"),
    }


def robustness_source() -> Path:
    return VECTOR_ROOT / f"v{FORMAT_VERSION}" / "mlp_lossy.nnr"


def current_robustness_cases() -> dict[str, tuple[bytes, str, str, Path]]:
    """``v<N>_<case>`` -> (damaged bytes, error, what was done, source file) for the current version."""
    source = robustness_source()
    made = {f"v{FORMAT_VERSION}_{case}": (*made, source)
            for case, made in robustness_cases(source.read_bytes()).items()}
    contexts = VECTOR_ROOT / f"v{FORMAT_VERSION}" / f"{CONTEXT_SOURCE}.nnr"
    return made | {f"v{FORMAT_VERSION}_{case}": (*made, contexts)
                   for case, made in context_cases(contexts.read_bytes()).items()}


def write_robustness(log: Callable[[str], None] = print) -> list[str]:
    """Write the current version's damaged files (``v<N>_<case>.nnr``) and the legacy cases
    made from frozen older vectors, and record them in robustness.json (what each must
    raise); damaged files of older versions stay as they are."""
    ROBUSTNESS.mkdir(parents=True, exist_ok=True)
    index = ROBUSTNESS / "robustness.json"
    record = json.loads(index.read_text()) if index.exists() else {}
    made = current_robustness_cases()
    made |= {name: (data, error, what, VECTOR_ROOT / LEGACY_SOURCES[key])
             for name, (data, error, what, key) in legacy_robustness_cases().items()}
    written = []
    for name, (data, error, what, src) in made.items():
        path = ROBUSTNESS / f"{name}.nnr"
        path.write_bytes(data)
        record[name] = {"error": error, "what": what, "from": str(src.relative_to(VECTOR_ROOT))}
        written.append(str(path))
    index.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    log(f"wrote {len(written)} robustness vectors in {ROBUSTNESS}")
    return written + [str(index)]


@dataclass(frozen=True)
class VectorCheck:
    name: str
    kind: str          # "decode", "encode" or "refuse"
    ok: bool
    detail: str = ""


def check_vectors() -> list[VectorCheck]:
    """Decode every reference vector to its golden hashes, re-encode the current version's
    vectors, and feed every robustness and hostile vector to the decoder."""
    import nnr

    results = []
    for record_path in vector_files():
        rec = json.loads(record_path.read_text())
        name = f"{record_path.parent.name}/{record_path.stem}"
        data = record_path.with_suffix(".nnr").read_bytes()
        try:
            got = decoded_hashes(data)
            ok = got == {"tensors": rec["tensors"], "model": rec["model"]}
            results.append(VectorCheck(name, "decode", ok, "" if ok else "decoded hashes differ"))
        except Exception as exc:  # noqa: BLE001 - reported as a failed vector, not a crash
            results.append(VectorCheck(name, "decode", False, f"{type(exc).__name__}: {exc}"))
        if rec["format_version"] == FORMAT_VERSION and "decode_only" not in rec:
            ok = same_bitstream(replay(record_path), data)
            results.append(VectorCheck(name, "encode", ok, "" if ok else "encoder output differs"))
    for folder in (ROBUSTNESS, HOSTILE):
        expected = json.loads((folder / f"{folder.name}.json").read_text())
        for name, rec in sorted(expected.items()):
            results.append(_check_refusal(f"{folder.name}/{name}", (folder / f"{name}.nnr").read_bytes(),
                                          rec["error"]))
    return results


def _check_refusal(name: str, data: bytes, error: str | None) -> VectorCheck:
    """Decode ``data``: it must raise the NnrError class ``error``, or decode when ``error`` is None."""
    import nnr
    from nnr.errors import NnrError

    try:
        nnr.decode(data)
        ok = error is None
        return VectorCheck(name, "refuse", ok, "" if ok else "decoded without error")
    except NnrError as exc:
        ok = type(exc).__name__ == error
        return VectorCheck(name, "refuse", ok, "" if ok else f"raised {type(exc).__name__}, expected {error}")
    except Exception as exc:  # noqa: BLE001 - a crash is exactly what this check reports
        return VectorCheck(name, "refuse", False, f"crashed with {type(exc).__name__}: {exc}")
