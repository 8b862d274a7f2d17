"""The decoding pipeline and the lazy reader: container bytes → tensors → ONNX model.

Imports neither numba, constriction nor any encoder module, so a device needs numpy and
onnx only; a large file's decode loads numba's compiled lock step if it is installed.
"""

from __future__ import annotations

import importlib
import math
import os
from typing import Callable, Iterator

import numpy as np
from onnx import ModelProto, TensorProto

from nnr.codec.bytestream import Budget
from nnr.codec.lossy_decode import lossy_step
from nnr.codec.rans import start_all
from nnr.formats.container import CODING_LOSSY, CODING_NAMES, Container, TensorUnit, read_container, read_tensor_unit
from nnr.formats.fileio import map_input
from nnr.formats.onnx_io import STORAGE_DTYPES, ExternalData, Slot, fill_tensor, save_model, tensor_slots

from .buffers import BufferPool
from .errors import CorruptionError, FormatError, NnrError
from .tensorcodec import decode_unit, storage_dtype, unit_array, unit_decoder
from .threads import pool_map, resolve as resolve_threads


def compiled_lock_step(file_bytes: int) -> bool:
    """Whether a whole-model decode of a file of this size uses the compiled lock step (and the
    compiled reconstruction of codec.lossy_jit): from COMPILED_MIN_BYTES on, when numba is
    installed with its JIT on (``NUMBA_DISABLE_JIT`` would run the kernels as Python) and the
    kernels load."""
    if file_bytes < COMPILED_MIN_BYTES:
        return False
    try:
        import numba

        if numba.config.DISABLE_JIT:
            return False
        importlib.import_module("nnr.codec.rans_jit")
        importlib.import_module("nnr.codec.lossy_jit")
    except Exception:   # not installed, or no place for numba's cache: the numpy lock step decodes the same
        return False
    return True


def _read_source(src: str | os.PathLike | bytes | memoryview) -> bytes | memoryview:
    """The file's bytes: given, or a path memory-mapped, so random access reads only the
    header, metadata, graph, index and the units asked for."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        return src
    return map_input(src, "an .nnr file")


BATCH_ELEMENTS = 1 << 25
"""Elements whose entropy-coded blocks are decoded in one lock step: enough for a model of
any realistic layer count, bounded so a huge model's symbols never all sit in memory at once."""
WAVES_PER_THREAD = 1
"""With threads, each batch's lock step is cut into this many waves per thread, so that the
finishing work of one wave runs on the pool while the next wave is entropy-decoded. More
waves are narrower lock steps, whose per-step cost grows; since the finishing work got
cheaper, one per thread decodes faster than two."""

POOL_BYTES = 64 << 20
POOL_MIN_BYTES = 1 << 20
"""Placed tensors' arrays kept for reuse by later tensors of the same size (nnr.buffers): at
most POOL_BYTES, a few layers' worth, not a whole model of distinct shapes; arrays of
POOL_MIN_BYTES or more, the ones the allocator maps afresh."""

COMPILED_MIN_BYTES = 1 << 24
"""Files from this size on are decoded with the compiled lock step (codec.rans_jit) when numba
is installed: threads then decode tensors in parallel, while loading numba would cost a small
file's decode more than it saves. Below it, or without numba, the numpy lock step decodes the
same model."""

DEFAULT_MEMORY_FLOOR = 64 << 20
MEMORY_PER_FILE_BYTE = 1024
"""Default decoding budget: max(64 MiB, 1024 × the file's size) bytes (formats/SPEC.md, limits)."""


def default_memory_limit(file_bytes: int) -> int:
    """Bytes a decoder may allocate for a file of this size unless the user allows more."""
    return max(DEFAULT_MEMORY_FLOOR, MEMORY_PER_FILE_BYTE * file_bytes)


OWN_OUTPUT_MEMORY = 1 << 62
"""Budget for decoding a file this process has just encoded (rate control, nnr-search): it
cannot be hostile, and a file coarse enough to be tiny may legitimately need more than
1024 × its size (a float32 weight is charged 30 bytes: storage, reconstruction, level and
symbol; so below about 0.24 bit per weight the default refuses it)."""


def _dtype_name(dtype: int) -> str:
    try:
        return TensorProto.DataType.Name(dtype).lower()
    except ValueError:
        return f"data type {dtype}"


class NnrFile:
    """Random access to a .nnr file: metadata, tensor names, single tensors, the model.

    ``max_memory`` bounds the bytes decoding may allocate (graph, tables, tensors); by
    default max(64 MiB, 1024 × the file's size). A file that needs more raises LimitError.
    """

    def __init__(self, src: str | os.PathLike | bytes | memoryview, max_memory: int | None = None) -> None:
        self._data = _read_source(src)
        self.max_memory = int(max_memory) if max_memory is not None else default_memory_limit(len(self._data))
        if self.max_memory <= 0:
            raise ValueError("max_memory must be a positive number of bytes")
        self._container: Container = read_container(self._data, self.max_memory)
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
            unit = read_tensor_unit(self._data, entry)
            if unit.dtype not in STORAGE_DTYPES:
                raise CorruptionError(f"tensor {unit.name!r} has {_dtype_name(unit.dtype)}, which nnr does not code")
            yield unit

    def get_tensor(self, name: str) -> np.ndarray:
        """Decode one tensor without touching the others."""
        return unit_array(self._unit(name), self.version, Budget(self.max_memory))

    def get_bytes(self, name: str) -> bytes:
        """One tensor's stored bytes: little-endian, ONNX ``raw_data`` layout (bfloat16 as its
        16-bit patterns, complex as real, imaginary pairs)."""
        return decode_unit(self._unit(name), self.version, Budget(self.max_memory))

    def _unit(self, name: str) -> TensorUnit:
        if name not in self._by_name:
            raise KeyError(f"no coded tensor named {name!r}")
        return read_tensor_unit(self._data, self._by_name[name])

    def graph(self) -> ModelProto:
        """The model with coded tensors' data still stripped."""
        model = ModelProto()
        try:
            model.ParseFromString(self._container.graph)
        except Exception as exc:  # protobuf raises DecodeError or RuntimeError by backend
            raise FormatError(f"graph unit is not a valid ONNX model: {str(exc)[:200]}") from exc
        return model

    def model(self, progress: Callable[[int, int, str], None] | None = None,
              place: Callable[[TensorProto, bytes | memoryview, bool], None] | None = None,
              threads: int | None = None) -> ModelProto:
        """Decode every tensor and put it back into the graph; ``progress(done, total, name)``
        is told after each batch of tensors. ``place(tensor, data, typed)``, when given, puts
        each decoded tensor's bytes (a bytes-like object: bytes or a memoryview) in place of
        fill_tensor (e.g. into an external-data file), so at most two batches of decoded tensors are in memory at a time. On ``threads``
        threads (default: every core) one batch is entropy-decoded while the tensors of the one
        before are reconstructed on the others; a file of COMPILED_MIN_BYTES or more, when
        numba is installed, has each tensor decoded whole by one of ``threads`` pool threads
        (:func:`compiled_lock_step`) while the calling thread places them. The file is parsed and
        the memory budget charged in file order, so the model, and the error a damaged file
        raises, are the same for any count."""
        return self._run(progress, place, threads, reuse=place is None)

    def _run(self, progress, place, threads: int | None, reuse: bool) -> ModelProto:
        """:meth:`model`; ``reuse``: ``place`` copies each tensor's data (the library's own
        placing), so its memory may serve a later tensor (nnr.buffers)."""
        n = resolve_threads(threads)
        compiled = compiled_lock_step(len(self._data))
        if n == 1:
            return self._model(progress, place, map, 1, compiled, reuse)
        if compiled:   # every tensor's whole decoding is a pool task; the calling thread places them
            with pool_map(n, "nnr-decode") as map_fn:
                return self._model(progress, place, map_fn, n, compiled, reuse)
        with pool_map(n - 1, "nnr-decode") as map_fn:   # the calling thread is the n-th: it lock-steps
            return self._model(progress, place, map_fn, WAVES_PER_THREAD * n, compiled, reuse)

    def memory_needed(self) -> int:
        """Bytes a whole-model decode charges to its memory budget (formats/SPEC.md, section 4):
        the least ``max_memory`` that decodes this file. Parses every unit and decodes no
        symbol; meant for a file this process trusts (its own output), as parsing is not limited."""
        budget = Budget(OWN_OUTPUT_MEMORY)
        self._charge_graph(budget)
        typed = self._typed_fields()
        for unit in self.units():
            self._charge_typed(budget, unit, typed)
            decoder = unit_decoder(unit, self.version, budget)   # its first step charges all it allocates
            try:
                next(decoder)
            except StopIteration:
                pass
            decoder.close()
        return budget.limit - budget.remaining

    def _charge_graph(self, budget: Budget) -> None:
        budget.charge(2 * len(self._container.graph), "the graph")

    @staticmethod
    def _charge_typed(budget: Budget, unit: TensorUnit, typed: set[int]) -> None:
        if unit.slot in typed:
            budget.charge(2 * unit.numel * storage_dtype(unit.dtype).itemsize,
                          f"tensor {unit.name!r} in its typed field")

    def _model(self, progress, place, map_fn, waves: int, compiled: bool, reuse: bool) -> ModelProto:
        budget = Budget(self.max_memory)
        self._charge_graph(budget)
        model = self.graph()
        slots = tensor_slots(model)
        _refuse_external_references(model, slots)
        total = len(self._container.index)
        report = None if progress is None else (lambda done, name: progress(done, total, name))
        batches = _Batches(self.version, budget, self._typed_fields(), place or _fill, report, map_fn, waves, compiled,
                           reuse)
        seen: set[int] = set()
        batch: list[tuple[TensorUnit, Slot]] = []
        elements = 0
        failure = None
        try:
            for unit in self.units():
                slot = _matching_slot(slots, unit)
                if unit.slot in seen:
                    raise CorruptionError(f"tensor slot {unit.slot} is coded twice")
                seen.add(unit.slot)
                self._charge_typed(budget, unit, batches.typed)
                batch.append((unit, slot))
                elements += unit.numel
                if elements >= BATCH_ELEMENTS:
                    batches.add(batch, reported=True)
                    batch, elements = [], 0
            batches.add(batch, reported=False)
        except NnrError as exc:
            failure = exc   # the batch still being decoded comes first in a one-thread decode
        except BaseException:
            batches.drop()
            raise
        batches.close()
        if failure is not None:
            raise failure
        _refuse_missing_data(slots, seen)
        if progress is not None:
            progress(total, total, "")
        return model

    def _typed_fields(self) -> set[int]:
        """Slots whose values go back into their type's repeated field (format version 2 on)."""
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
                "dtype": _dtype_name(unit.dtype),
                "shape": list(unit.dims),
                "mode": CODING_NAMES[unit.coding],
                "step": lossy_step(unit.body) if unit.coding == CODING_LOSSY else None,
                "bytes": len(unit.body),
                "bits_per_weight": 8.0 * len(unit.body) / max(unit.numel, 1),
                "snr_db": None if math.isnan(unit.snr_db) else unit.snr_db,
            })
        return rows


class _Batches:
    """Decodes batches of units into their slots, in file order. With threads (``waves`` > 1),
    a batch's lock steps run in the calling thread while the batch before it finishes on the
    pool; with the compiled lock step, its tensors are decoded on the pool while the batch
    before it is placed. Whatever fails, the error raised is the one a one-thread decode with
    the numpy lock step raises: every budget charge is made in the calling thread in file
    order, the batch before is placed (and reported) first, and a batch whose lock steps fail
    on threads, or that fails with the compiled lock step (which lock-steps each tensor on its
    own), is decoded again in one numpy lock step to find that error."""

    def __init__(self, version: int, budget: Budget, typed: set[int],
                 place: Callable[[TensorProto, bytes | memoryview, bool], None],
                 report: Callable[[int, str], None] | None, map_fn, waves: int, compiled: bool,
                 reuse: bool = False) -> None:
        self.version, self.budget, self.typed, self.place, self.report = version, budget, typed, place, report
        self.map_fn, self.waves, self.compiled = map_fn, waves, compiled
        # the compiled lock step's symbol arrays (float32 values overwrite them), reused once placed
        # by the library's own placing, which copies them (a caller's place function may keep them)
        self.buffers = BufferPool(np.int32, POOL_BYTES, POOL_MIN_BYTES) if compiled and reuse else None
        self.pending: tuple | None = None   # a started batch (see _start)
        self.placed = 0

    def _start(self, batch: list, reported: bool, map_fn=map, waves: int = 1, compiled: bool | None = None) -> tuple:
        """(batch, reported, the waiter for its tensors, the budget before, whether the lock step is
        compiled), the units' first steps taken; with a pool, the work under way (with the numpy
        lock step, the lock steps done)."""
        before = self.budget.remaining
        compiled = self.compiled if compiled is None else compiled
        decoders = [unit_decoder(u, self.version, self.budget, compiled) for u, _ in batch]
        alloc = self.buffers.take if compiled and self.buffers is not None else None
        return batch, reported, start_all(decoders, map_fn, waves, compiled, alloc), before, compiled

    def add(self, batch: list, reported: bool) -> None:
        """Start decoding ``batch`` (told to ``report`` once placed, if ``reported``). One thread
        decodes and places it now; with threads, the batch started before it is placed now."""
        if self.waves == 1:
            self._place(self._start(batch, reported))
            return
        before = self.budget.remaining
        try:
            started = self._start(batch, reported, self.map_fn, self.waves)
        except Exception:
            started = None
        self.close()
        if started is None:   # decode it again in one lock step: its error is the one to raise
            self.budget.remaining = before
            self._place(self._start(batch, reported))
        self.pending = started

    def close(self) -> None:
        """Wait for the started batch, if any, and place it."""
        if self.pending is not None:
            started, self.pending = self.pending, None
            self._place(started)

    def drop(self) -> None:
        """Forget the started batch (decoding stops on something other than a damaged file)."""
        self.pending = None

    def _place(self, started: tuple) -> None:
        """Wait for a started batch's tensors (the first failure in file order is raised, on
        threads as on one), place them, and report the batch."""
        batch, reported, wait, before, compiled = started
        results = wait()
        failure = None
        try:
            for unit, slot in batch:   # each placed as soon as it and those before are done
                data = next(results)
                self.place(slot.tensor, data, unit.slot in self.typed)
                if self.buffers is not None:
                    self.buffers.give(data)
                del data   # placed: not held while the next one is awaited
        except NnrError as exc:
            if not compiled:
                raise
            failure = exc
        if failure is not None:   # decode the batch in one numpy lock step, placing nothing: its error comes first
            self.budget.remaining = before
            for _ in self._start(batch, reported, compiled=False)[2]():
                pass
            raise failure
        self.placed += len(batch)
        if reported and self.report is not None:
            self.report(self.placed, batch[-1][0].name)


def _fill(tensor: TensorProto, data: bytes | memoryview, typed: bool) -> None:
    fill_tensor(tensor, data, typed=typed)


def _matching_slot(slots: list[Slot], unit: TensorUnit) -> Slot:
    if unit.slot >= len(slots):
        raise CorruptionError(f"tensor {unit.name!r} refers to slot {unit.slot}; the graph has {len(slots)}")
    slot = slots[unit.slot]
    t = slot.tensor
    if t.data_type != unit.dtype or tuple(t.dims) != unit.dims:
        raise CorruptionError(f"tensor {unit.name!r} does not match its place in the graph "
                              f"({_dtype_name(t.data_type)}{list(t.dims)})")
    return slot


def _refuse_external_references(model: ModelProto, slots: list[Slot]) -> None:
    """A .nnr file carries all of a model's data: a graph tensor that points at an external
    file (a path from the file, possibly /etc/… or ../..) is refused, never written out."""
    tensors = [s.tensor for s in slots]
    for sparse in model.graph.sparse_initializer:
        tensors += [sparse.values, sparse.indices]
    for t in tensors:
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data):
            raise CorruptionError(f"graph tensor {t.name!r} refers to external data; an .nnr file carries "
                                  "every tensor's data itself")


_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def _refuse_missing_data(slots: list[Slot], coded: set[int]) -> None:
    """Every non-empty tensor must hold its values: one without data and without a TENS unit
    means a unit was removed from the file."""
    for slot in slots:
        t = slot.tensor
        if slot.index in coded or 0 in t.dims:
            continue
        if not t.HasField("raw_data") and not any(len(getattr(t, f)) for f in _DATA_FIELDS[1:]):
            raise CorruptionError(f"tensor {slot.name!r} has no data and no tensor unit (a unit is missing)")


def open(src: str | os.PathLike | bytes, max_memory: int | None = None) -> NnrFile:  # noqa: A001 - as safetensors
    """Open a .nnr file (path or bytes) for random access; ``max_memory`` as in NnrFile."""
    return NnrFile(src, max_memory)


def decode(src: str | os.PathLike | bytes, max_memory: int | None = None, threads: int | None = None) -> ModelProto:
    """Decode a .nnr file (path or bytes) into an ONNX ModelProto, entirely in memory, on
    ``threads`` threads (default: every core; the model is the same for any count)."""
    return NnrFile(src, max_memory).model(threads=threads)


def decode_to_file(src: str | os.PathLike | bytes, output: str | os.PathLike,
                   external_data: bool | None = None, max_memory: int | None = None,
                   progress: Callable[[int, int, str], None] | None = None, threads: int | None = None) -> ModelProto:
    """Decode and write the ONNX file atomically; ``external_data`` defaults to what the
    original model used; ``threads`` as in decode."""
    f = NnrFile(src, max_memory)
    if external_data is None:
        external_data = bool(f.metadata().get("external_data", False))
    if not external_data:
        model = f.model(progress, threads=threads)
        save_model(model, output)
        return model
    with ExternalData(output) as ext:  # each tensor streams to the data file as it is decoded
        model = f._run(progress, ext.place, threads, reuse=True)   # place writes a copy to the file
        ext.externalize(model)          # tensors the encoder left in the graph
        ext.save(model)
    return model


def load_session(src: str | os.PathLike | bytes, **session_kwargs):
    """An onnxruntime InferenceSession of the decoded model, without temporary files."""
    import onnxruntime as ort

    model = decode(src)
    session_kwargs.setdefault("providers", ["CPUExecutionProvider"])
    return ort.InferenceSession(model.SerializeToString(), **session_kwargs)
