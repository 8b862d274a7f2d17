"""The decoding pipeline and the lazy reader: container bytes → tensors → ONNX model.

Imports neither numba nor any encoder module, so a device needs numpy, constriction
and onnx only.
"""

from __future__ import annotations

import math
import os
from typing import Iterator

import numpy as np
from onnx import ModelProto, TensorProto

from codec.lossy_decode import lossy_step
from formats.container import (CODING_LOSSY, CODING_NAMES, COMPLEX_SINCE, Container, TensorUnit, read_container,
                               read_tensor_unit)
from formats.fileio import read_input
from formats.onnx_io import COMPLEX_TYPES, Slot, fill_tensor, save_model, tensor_slots

from .errors import CorruptionError, FormatError
from .tensorcodec import decode_unit, unit_array


def _read_source(src: str | os.PathLike | bytes | memoryview) -> bytes | memoryview:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return src
    return read_input(src, "an .nnr file")


class NnrFile:
    """Random access to a .nnr file: metadata, tensor names, single tensors, the model."""

    def __init__(self, src: str | os.PathLike | bytes | memoryview) -> None:
        self._data = _read_source(src)
        self._container: Container = read_container(self._data)
        self._by_name = {e.name: e for e in self._container.index}

    @property
    def version(self) -> int:
        return self._container.version

    def metadata(self) -> dict:
        """The JSON metadata unit: producer, encoder options, ..."""
        return dict(self._container.meta)

    def keys(self) -> list[str]:
        """Names of the coded tensors, in file order."""
        return [e.name for e in self._container.index]

    def units(self) -> Iterator[TensorUnit]:
        for entry in self._container.index:
            yield read_tensor_unit(self._data, entry)

    def get_tensor(self, name: str) -> np.ndarray:
        """Decode one tensor without touching the others."""
        if name not in self._by_name:
            raise KeyError(f"no coded tensor named {name!r}")
        return unit_array(read_tensor_unit(self._data, self._by_name[name]))

    def graph(self) -> ModelProto:
        """The model with coded tensors' data still stripped."""
        model = ModelProto()
        try:
            model.ParseFromString(self._container.graph)
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
            raise FormatError(f"graph unit is not a valid ONNX model: {exc}") from exc
        return model

    def model(self) -> ModelProto:
        """Decode every tensor and put it back into the graph."""
        model = self.graph()
        slots = tensor_slots(model)
        typed = self._typed_fields()
        seen: set[int] = set()
        for unit in self.units():
            slot = _matching_slot(slots, unit)
            if unit.dtype in COMPLEX_TYPES and self.version < COMPLEX_SINCE:
                raise CorruptionError(f"tensor {unit.name!r} is complex, which format version {self.version} "
                                      f"cannot hold (complex tensors came with version {COMPLEX_SINCE})")
            if unit.slot in seen:
                raise CorruptionError(f"tensor slot {unit.slot} is coded twice")
            seen.add(unit.slot)
            fill_tensor(slot.tensor, decode_unit(unit), typed=unit.slot in typed)
        return model

    def _typed_fields(self) -> set[int]:
        """Slots whose values go back into their type's repeated field (format version 2 on)."""
        if self.version < 2:
            return set()
        slots = self._container.meta.get("typed_fields", [])
        if not isinstance(slots, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in slots):
            raise FormatError("metadata key typed_fields is not a list of slot numbers")
        return set(slots)

    def info(self) -> list[dict]:
        """One row per coded tensor: name, dtype, shape, coding, bytes, bits/weight, SNR."""
        rows = []
        for unit in self.units():
            rows.append({
                "name": unit.name,
                "dtype": TensorProto.DataType.Name(unit.dtype).lower(),
                "shape": list(unit.dims),
                "mode": CODING_NAMES[unit.coding],
                "step": lossy_step(unit.body) if unit.coding == CODING_LOSSY else None,
                "bytes": len(unit.body),
                "bits_per_weight": 8.0 * len(unit.body) / max(unit.numel, 1),
                "snr_db": None if math.isnan(unit.snr_db) else unit.snr_db,
            })
        return rows


def _matching_slot(slots: list[Slot], unit: TensorUnit) -> Slot:
    if unit.slot >= len(slots):
        raise CorruptionError(f"tensor {unit.name!r} refers to slot {unit.slot}; the graph has {len(slots)}")
    slot = slots[unit.slot]
    t = slot.tensor
    if t.data_type != unit.dtype or tuple(t.dims) != unit.dims:
        raise CorruptionError(f"tensor {unit.name!r} does not match its place in the graph "
                              f"({TensorProto.DataType.Name(t.data_type)}{list(t.dims)})")
    return slot


def open(src: str | os.PathLike | bytes) -> NnrFile:  # noqa: A001 - mirrors safetensors/zstd
    """Open a .nnr file (path or bytes) for random access."""
    return NnrFile(src)


def decode(src: str | os.PathLike | bytes) -> ModelProto:
    """Decode a .nnr file (path or bytes) into an ONNX ModelProto, entirely in memory."""
    return NnrFile(src).model()


def decode_to_file(src: str | os.PathLike | bytes, output: str | os.PathLike,
                   external_data: bool | None = None) -> ModelProto:
    """Decode and write the ONNX file atomically; ``external_data`` defaults to what the
    original model used."""
    f = NnrFile(src)
    model = f.model()
    if external_data is None:
        external_data = bool(f.metadata().get("external_data", False))
    save_model(model, output, external_data=external_data)
    return model


def load_session(src: str | os.PathLike | bytes, **session_kwargs):
    """An onnxruntime InferenceSession of the decoded model, without temporary files."""
    import onnxruntime as ort

    model = decode(src)
    session_kwargs.setdefault("providers", ["CPUExecutionProvider"])
    return ort.InferenceSession(model.SerializeToString(), **session_kwargs)
