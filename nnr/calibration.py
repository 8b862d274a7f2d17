"""Calibration inputs: the arrays a user gives rate control, read from an .npz and split
into the part the search measures on and the part held out to verify its result."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import ModelProto, TensorProto, helper

from .errors import InputError, OptionError
from .graph import model_inputs


@dataclass(frozen=True)
class Calibration:
    """Model inputs (batch axis 0, one array per graph input) and optional integer labels."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def take(self, idx: np.ndarray) -> "Calibration":
        return Calibration({k: v[idx] for k, v in self.inputs.items()},
                           None if self.labels is None else self.labels[idx])

    def split(self, holdout: float) -> tuple["Calibration", "Calibration | None"]:
        """(search part, held-out part): every k-th sample is held out, k ≈ 1/holdout."""
        if not 0 <= holdout < 1:
            raise OptionError(f"the held-out fraction must be in [0, 1), got {holdout!r}")
        if holdout == 0:
            return self, None
        n = len(self)
        held = np.zeros(n, dtype=bool)
        held[np.round(np.arange(0, n, 1 / holdout)).astype(int)[: max(1, round(n * holdout))]] = True
        if held.all() or not held.any():
            raise InputError(f"--holdout {holdout} leaves no calibration or no held-out samples of {n}")
        return self.take(np.flatnonzero(~held)), self.take(np.flatnonzero(held))

    def halves(self) -> tuple["Calibration", "Calibration"]:
        """(first half, second half), contiguous: error feedback fits its layer statistics on
        the first and the search judges on the second, since a file rounded for some inputs
        looks better on those inputs than it is."""
        n = len(self)
        if n < 2:
            raise InputError("error feedback needs at least 2 calibration samples")
        cut = (n + 1) // 2
        return self.take(np.arange(cut)), self.take(np.arange(cut, n))


def load_calibration(path: str | Path, model: ModelProto) -> Calibration:
    """Read an .npz with one array per model input (batch axis 0) and optionally ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(f"{path}: calibration file not found") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npz file ({exc})") from exc
    labels = arrays.pop("labels", None)
    names = model_inputs(model)
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{path}: no array for model input(s) {', '.join(missing)}; the .npz needs "
                         f"one array per input ({', '.join(names)}) and optionally 'labels'")
    extra = sorted(set(arrays) - set(names))
    if extra:
        raise InputError(f"{path}: arrays {', '.join(extra)} match no model input ({', '.join(names)})")
    sizes = {len(arrays[n]) if arrays[n].ndim else 0 for n in names}
    if len(sizes) != 1 or 0 in sizes:
        raise InputError(f"{path}: every input array needs the same number of samples along axis 0")
    n = sizes.pop()
    if labels is not None and (labels.ndim != 1 or len(labels) != n or labels.dtype.kind not in "iu"):
        raise InputError(f"{path}: 'labels' must be one integer per sample")
    declared = {vi.name: vi for vi in model.graph.input}
    return Calibration({name: _as_declared(path, declared[name], arrays[name]) for name in names}, labels)


_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
_INTEGERS = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8,
             TensorProto.UINT16, TensorProto.UINT32, TensorProto.UINT64)


def _as_declared(path, vi, array: np.ndarray) -> np.ndarray:
    """``array`` checked against the graph input ``vi`` (same axes, the first one the batch;
    the declared sizes) and cast to its element type, values kept: a float array for a float
    input, an integer one for an integer input (NumPy's float64 default would otherwise reach
    onnxruntime, which refuses it)."""
    tt = vi.type.tensor_type
    et = tt.elem_type
    kind = TensorProto.DataType.Name(et).lower() if et in TensorProto.DataType.values() else f"#{et}"
    if et not in _FLOATS + _INTEGERS + (TensorProto.BOOL,):
        raise InputError(f"{path}: the model's input {vi.name!r} is {kind}; nnr cannot run calibration inputs of "
                         "that type")
    if tt.HasField("shape") and not tt.shape.dim:
        raise InputError(f"{path}: the model's input {vi.name!r} is a scalar, with no first axis to stack "
                         "calibration samples along; nnr cannot calibrate this model")
    target = helper.tensor_dtype_to_np_dtype(et)
    if not (et in _FLOATS and array.dtype.kind == "f" or et in _INTEGERS and array.dtype.kind in "iu"
            or et == TensorProto.BOOL and array.dtype.kind == "b"):
        raise InputError(f"{path}: array {vi.name!r} holds {array.dtype} values; the model's input is {kind}")
    if et in _INTEGERS and array.size:
        info = np.iinfo(target)
        if int(array.min()) < info.min or int(array.max()) > info.max:
            raise InputError(f"{path}: array {vi.name!r} holds values outside {kind}'s range "
                             f"[{info.min}, {info.max}], the model's input type")
    with np.errstate(over="ignore", invalid="ignore"):   # an overflow is reported below, as an error
        cast = array.astype(target, copy=False)
    if et in _FLOATS and not np.all(np.isfinite(cast)) and np.all(np.isfinite(array)):
        raise InputError(f"{path}: array {vi.name!r} holds values too large for {kind}, the model's input type")
    if tt.HasField("shape"):
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        wanted = " x ".join("?" if d is None else str(d) for d in dims)
        shown = " x ".join(map(str, array.shape))
        if array.ndim != len(dims) or any(d is not None and d != a for d, a in zip(dims[1:], array.shape[1:])):
            raise InputError(f"{path}: array {vi.name!r} is {shown}; the model's input {vi.name!r} is {wanted} "
                             "(the calibration samples are stacked along its first axis, the batch)")
    return cast
