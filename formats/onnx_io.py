"""ONNX model I/O: load with clear errors, find every weight tensor, strip and refill data.

Weights live in graph initializers, in Constant nodes (attribute ``value``), in tensor
attributes of any node, in subgraphs of If/Loop/Scan (attributes of type GRAPH/GRAPHS),
and in model-local functions. :func:`tensor_slots` visits all of them in one fixed order,
so a slot number identifies the same tensor in the encoder and the decoder.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from google.protobuf.message import DecodeError, EncodeError
from onnx import AttributeProto, GraphProto, ModelProto, TensorProto, numpy_helper

from nnr.codec.errors import InputError

from .fileio import WriteBehind, atomic_writer, read_input, write_bytes_atomic

STORAGE_DTYPES = {
    TensorProto.FLOAT: "<f4",
    TensorProto.FLOAT16: "<f2",
    TensorProto.BFLOAT16: "<u2",
    TensorProto.DOUBLE: "<f8",
    TensorProto.INT8: "i1",
    TensorProto.UINT8: "u1",
    TensorProto.INT16: "<i2",
    TensorProto.UINT16: "<u2",
    TensorProto.INT32: "<i4",
    TensorProto.UINT32: "<u4",
    TensorProto.INT64: "<i8",
    TensorProto.UINT64: "<u8",
    TensorProto.BOOL: "u1",
    TensorProto.COMPLEX64: "<c8",
    TensorProto.COMPLEX128: "<c16",
}
"""Little-endian storage type of each ONNX dtype nnr extracts (bfloat16 as its bit pattern;
complex as interleaved real and imaginary parts, ONNX's raw_data layout)."""

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)
COMPLEX_TYPES = (TensorProto.COMPLEX64, TensorProto.COMPLEX128)
COMPONENT_DTYPE = {TensorProto.COMPLEX64: TensorProto.FLOAT, TensorProto.COMPLEX128: TensorProto.DOUBLE}
"""The float type of a complex type's real and imaginary parts."""


@dataclass
class Slot:
    """A tensor inside the model and a human-readable path to it."""

    index: int
    path: str
    tensor: TensorProto

    @property
    def name(self) -> str:
        return self.tensor.name or self.path


def read_model(src: str | os.PathLike | bytes | ModelProto) -> tuple[ModelProto, Path | None]:
    """Load an ONNX model without pulling external data into memory; returns (model, base dir)."""
    if isinstance(src, ModelProto):
        return src, None
    if isinstance(src, (bytes, bytearray, memoryview)):
        return _parse(bytes(src), "<bytes>"), None
    path = Path(src)
    return _parse(read_input(path, "an .onnx file"), str(path)), path.parent


def _parse(data: bytes, what: str) -> ModelProto:
    model = ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{what}: not an ONNX model ({exc})") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise InputError(f"{what}: not an ONNX model (no IR version or graph)")
    return model


def _graph_slots(graph: GraphProto, prefix: str) -> Iterator[tuple[str, TensorProto]]:
    for i, t in enumerate(graph.initializer):
        yield f"{prefix}/initializer[{i}]", t
    yield from _node_slots(graph.node, prefix)


def _node_slots(nodes, prefix: str) -> Iterator[tuple[str, TensorProto]]:
    for n, node in enumerate(nodes):
        where = f"{prefix}/node[{n}:{node.op_type}:{node.name}]"
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield f"{where}/{attr.name}", attr.t
            elif attr.type == AttributeProto.TENSORS:
                for j, t in enumerate(attr.tensors):
                    yield f"{where}/{attr.name}[{j}]", t
            elif attr.type == AttributeProto.GRAPH:
                yield from _graph_slots(attr.g, f"{where}/{attr.name}")
            elif attr.type == AttributeProto.GRAPHS:
                for j, g in enumerate(attr.graphs):
                    yield from _graph_slots(g, f"{where}/{attr.name}[{j}]")


def tensor_slots(model: ModelProto) -> list[Slot]:
    """Every TensorProto that can hold weights, in the fixed order slots are numbered."""
    found = list(_graph_slots(model.graph, "graph"))
    for f, func in enumerate(model.functions):
        found.extend(_node_slots(func.node, f"function[{f}:{func.name}]"))
    return [Slot(i, path, t) for i, (path, t) in enumerate(found)]


def is_external(tensor: TensorProto) -> bool:
    return tensor.data_location == TensorProto.EXTERNAL


def model_bytes_on_disk(path: str | os.PathLike) -> int:
    """An ONNX model's size on disk: the file and the external-data files its tensors name."""
    model, base_dir = read_model(path)
    files = {Path(path).resolve()}
    for slot in tensor_slots(model):
        location = {e.key: e.value for e in slot.tensor.external_data}.get("location") if is_external(slot.tensor) else None
        if location:
            files.add((base_dir / location).resolve())
    return sum(f.stat().st_size for f in files if f.is_file())


def _external_file(tensor: TensorProto, location: str, base_dir: Path) -> Path:
    """The file an external-data ``location`` names, refused unless it lies inside the model's
    folder, so a model cannot pull other files (keys, /etc/...) into the .nnr it is coded to."""
    rel = Path(location)
    if not location or "\0" in location or rel.is_absolute() or ".." in rel.parts:
        raise InputError(f"tensor {tensor.name!r}: external data location {location!r} is not a relative "
                         "path inside the model's folder")
    path = base_dir / rel
    try:
        inside = path.resolve().is_relative_to(base_dir.resolve())
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
        raise InputError(f"tensor {tensor.name!r}: external data location {location!r}: {exc}") from exc
    if not inside:
        raise InputError(f"tensor {tensor.name!r}: external data location {location!r} leads outside the "
                         "model's folder (through a symbolic link)")
    return path


def tensor_bytes(tensor: TensorProto, base_dir: Path | None) -> bytes:
    """The tensor's values as little-endian storage bytes, wherever they are kept."""
    if tensor.data_type not in STORAGE_DTYPES:
        raise InputError(f"tensor {tensor.name!r}: data type {tensor.data_type} is not extractable")
    numel = int(np.prod(tensor.dims, dtype=np.int64)) if tensor.dims else 1
    nbytes = numel * np.dtype(STORAGE_DTYPES[tensor.data_type]).itemsize
    if is_external(tensor):
        info = {e.key: e.value for e in tensor.external_data}
        if base_dir is None:
            raise InputError(f"tensor {tensor.name!r} keeps its data in an external file; "
                             "pass the model as a path so the file can be found")
        location = _external_file(tensor, info.get("location", ""), base_dir)
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", nbytes))
        except ValueError:
            raise InputError(f"tensor {tensor.name!r}: external data offset or length is not a number") from None
        if offset < 0:
            raise InputError(f"tensor {tensor.name!r}: external data offset {offset} is negative")
        if length != nbytes:
            raise InputError(f"tensor {tensor.name!r}: external data length {length} != {nbytes}")
        if location.exists() and not location.is_file():
            raise InputError(f"tensor {tensor.name!r}: external data {location} is not a regular file")
        try:
            with open(location, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                if offset + length > size:
                    raise InputError(f"tensor {tensor.name!r}: external data file {location} is too short "
                                     f"({size} bytes; the tensor ends at byte {offset + length})")
                fh.seek(offset)
                data = fh.read(length)
        except OSError as exc:
            raise InputError(f"tensor {tensor.name!r}: cannot read external data {location}: "
                             f"{exc.strerror}") from exc
        if len(data) != length:
            raise InputError(f"tensor {tensor.name!r}: external data file {location} is too short")
        return data
    if tensor.HasField("raw_data"):
        if len(tensor.raw_data) != nbytes:
            raise InputError(f"tensor {tensor.name!r}: raw_data holds {len(tensor.raw_data)} bytes, "
                             f"shape needs {nbytes}")
        return tensor.raw_data
    arr = numpy_helper.to_array(tensor)
    if tensor.data_type == TensorProto.BFLOAT16:
        return np.ascontiguousarray(arr).view(np.uint16).astype("<u2").tobytes()
    return np.ascontiguousarray(arr).astype(STORAGE_DTYPES[tensor.data_type]).tobytes()


def with_inline_data(proto: ModelProto, base_dir) -> ModelProto:
    """The model with external tensor data read in, so onnxruntime can run it from memory."""
    if not any(is_external(s.tensor) for s in tensor_slots(proto)):
        return proto
    out = ModelProto()
    out.CopyFrom(proto)
    for slot in tensor_slots(out):
        if is_external(slot.tensor):
            data = tensor_bytes(slot.tensor, base_dir)
            strip_tensor(slot.tensor)
            fill_tensor(slot.tensor, data)
    return out


def strip_tensor(tensor: TensorProto) -> None:
    """Remove a tensor's values (wherever kept), leaving name, type, dims and doc string."""
    for fld in ("raw_data", "float_data", "int32_data", "int64_data", "double_data",
                "uint64_data", "string_data"):
        tensor.ClearField(fld)
    tensor.ClearField("external_data")
    tensor.ClearField("data_location")


# The repeated field ONNX defines for each data type's values when raw_data is not used.
TYPED_FIELD = {
    TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
    TensorProto.INT64: "int64_data", TensorProto.UINT32: "uint64_data", TensorProto.UINT64: "uint64_data",
    TensorProto.COMPLEX64: "float_data", TensorProto.COMPLEX128: "double_data",
    **{dt: "int32_data" for dt in (TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8,
                                   TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16,
                                   TensorProto.INT32, TensorProto.BOOL)},
}


def uses_typed_field(tensor: TensorProto) -> bool:
    """True when the tensor keeps its values in its type's repeated field, not raw_data."""
    return not is_external(tensor) and not tensor.HasField("raw_data") and tensor.data_type in TYPED_FIELD


_TYPED_CHUNK = 1 << 16


_RAW_DATA_KEY = (9 << 3) | 2
"""TensorProto.raw_data is field 9, length-delimited."""
MAX_MERGED_BYTES = (1 << 31) - 2
"""Largest field protobuf's parser takes (its length prefix must stay below 2**31 − 1); a
larger tensor is assigned as bytes."""


def _merge_raw_data(tensor: TensorProto, data: memoryview) -> None:
    """``tensor.raw_data = bytes(data)`` with one copy made under the interpreter lock instead of
    two: the bytes are framed as a serialized raw_data field by numpy (which lets other threads
    run while it copies) and merged, which protobuf copies once. A decoder's threads wait for
    the lock while the calling thread places tensors. (With a recent protobuf, which parses a
    memoryview in place; older ones copy it to bytes first.)"""
    src = np.frombuffer(data, dtype=np.uint8)
    n, head = src.size, [_RAW_DATA_KEY]
    while n >= 0x80:
        head.append((n & 0x7F) | 0x80)
        n >>= 7
    head.append(n)
    framed = np.empty(len(head) + src.size, dtype=np.uint8)
    framed[:len(head)] = head
    framed[len(head):] = src
    tensor.MergeFromString(memoryview(framed))


def fill_tensor(tensor: TensorProto, data: bytes | memoryview, typed: bool = False) -> None:
    """Put storage bytes back: as raw_data, or with ``typed`` in the type's repeated field
    (float16/bfloat16 as their 16-bit patterns in int32_data, as ONNX specifies)."""
    if not typed:
        view = memoryview(data)
        if isinstance(data, bytes):
            tensor.raw_data = data
        elif view.nbytes > MAX_MERGED_BYTES or not view.c_contiguous:
            tensor.raw_data = bytes(view)
        else:
            _merge_raw_data(tensor, view)
        return
    field = TYPED_FIELD[tensor.data_type]
    values = np.frombuffer(data, dtype=STORAGE_DTYPES[tensor.data_type])
    if values.dtype.kind == "c":  # real and imaginary parts interleaved
        values = values.view(values.real.dtype)
    if field == "int32_data" and values.dtype.kind == "f":
        values = values.view(np.uint16)
    target = getattr(tensor, field)
    for start in range(0, values.size, _TYPED_CHUNK):  # bounded temporaries, whatever the size
        chunk = values[start:start + _TYPED_CHUNK]
        target.extend((chunk.astype(np.int32) if field == "int32_data" else chunk).tolist())


def save_model(model: ModelProto, path: str | os.PathLike, external_data: bool = False,
               size_threshold: int = 1024) -> None:
    """Write atomically; with ``external_data``, tensors of at least ``size_threshold`` bytes go
    to ``<file name>.data`` beside it, streamed so models above 2 GB work too."""
    path = Path(path)
    if not external_data:
        data = _serialize(model, "model is too large for a single ONNX file (> 2 GB); decode with --external-data")
        with atomic_writer(path) as fh:
            fh.write(data)
        return
    with ExternalData(path, size_threshold) as ext:
        ext.externalize(model)
        ext.save(model)


def refer_external(tensor: TensorProto, location: str, offset: int, length: int) -> None:
    """Mark ``tensor`` (its values already stripped) as kept in ``location`` at ``offset``."""
    tensor.data_location = TensorProto.EXTERNAL
    del tensor.external_data[:]
    for k, v in (("location", location), ("offset", str(offset)), ("length", str(length))):
        e = tensor.external_data.add()
        e.key, e.value = k, v


class ExternalData:
    """Writes a model with its weights in ``<file name>.data`` beside it, tensor by tensor, so a
    decoder can stream each tensor there as it is decoded instead of holding the whole model.
    Both files are written atomically, the model once the data file is in place (and removed
    again if the model cannot follow): a failure leaves neither, and a model file never points
    at data that is not its own."""

    def __init__(self, path: str | os.PathLike, size_threshold: int = 1024) -> None:
        self.path = Path(path)
        self.location = self.path.name + ".data"
        self.size_threshold = size_threshold
        self._writer = atomic_writer(self.path.parent / self.location)
        self._offset = 0
        self._model: bytes | None = None

    def __enter__(self) -> "ExternalData":
        self._fh = self._writer.__enter__()
        self._behind = WriteBehind(self._fh)
        return self

    def __exit__(self, *exc) -> bool | None:
        handled = self._writer.__exit__(*exc)   # the data file is on disk and in place, or removed
        if exc[0] is None and self._model is not None:
            try:
                write_bytes_atomic(self.path, self._model)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(self.path.parent / self.location)
                raise
        return handled

    def place(self, tensor: TensorProto, data: bytes | memoryview, typed: bool = False) -> None:
        """Put one tensor's values in: to the data file when large (64-byte aligned), else, or
        when they go back into a typed field, into the tensor itself."""
        if typed or len(data) < self.size_threshold:
            fill_tensor(tensor, data, typed=typed)
            return
        pad = (-self._offset) % 64
        self._fh.write(b"\0" * pad)
        self._offset += pad
        self._fh.write(data)
        self._behind.wrote(pad + len(data))
        strip_tensor(tensor)
        refer_external(tensor, self.location, self._offset, len(data))
        self._offset += len(data)

    def externalize(self, model: ModelProto) -> None:
        """Move every large ``raw_data`` the model still holds inline to the data file."""
        for slot in tensor_slots(model):
            t = slot.tensor
            if t.HasField("raw_data") and len(t.raw_data) >= self.size_threshold:
                self.place(t, t.raw_data)

    def save(self, model: ModelProto) -> None:
        """Give the model (its large tensors already placed) to be written when the data file is
        complete, on leaving the ``with`` block."""
        self._model = _serialize(model, "model graph is too large for ONNX (> 2 GB) even with its weights in external data")


def _serialize(model: ModelProto, too_large: str) -> bytes:
    """The model's protobuf bytes; protobuf's 2 GB limit becomes an InputError saying ``too_large``."""
    try:
        return model.SerializeToString()
    except (EncodeError, ValueError) as exc:  # upb raises EncodeError, the C++ backend ValueError
        raise InputError(too_large) from exc
