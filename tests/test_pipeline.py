"""End-to-end: everything that is not a weight survives; weights come back as promised."""

import hashlib
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

import nnr
from conformance.toy_models import constants_and_subgraphs, mlp
from conformance.vectors import vector_files
from nnr.formats.onnx_io import tensor_slots
from nnr.errors import UnsupportedModelError
from tests.conftest import skeleton


def _arrays(model):
    return {s.path: numpy_helper.to_array(s.tensor) for s in tensor_slots(model)}


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                   TensorProto.DOUBLE])
def test_lossy_round_trip_keeps_graph_and_dtypes(dtype):
    model = mlp(dtype=dtype)
    decoded = nnr.decode(nnr.encode(model))
    onnx.checker.check_model(decoded, full_check=True)
    assert skeleton(decoded) == skeleton(model)
    before, after = _arrays(model), _arrays(decoded)
    for path, a in before.items():
        b = after[path]
        assert b.dtype == a.dtype and b.shape == a.shape
        if a.dtype.kind in "iub":
            np.testing.assert_array_equal(a, b)
        else:
            af, bf = a.astype(np.float64), b.astype(np.float64)
            snr = 10 * np.log10(np.sum(af ** 2) / max(np.sum((af - bf) ** 2), 1e-300))
            assert snr > 25, path
    if dtype != TensorProto.BFLOAT16:  # onnxruntime's CPU Gemm has no bfloat16 kernel
        np_t = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}[dtype]
        x = np.random.default_rng(0).standard_normal((4, 32)).astype(np_t)
        ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
        out = nnr.load_session(nnr.encode(model)).run(None, {"x": x})[0]
        assert ref.shape == out.shape and np.abs(ref - out).max() < 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16,
                                   TensorProto.DOUBLE])
def test_lossless_keeps_every_bit(dtype):
    model = mlp(dtype=dtype)
    decoded = nnr.decode(nnr.encode(model, lossless=True))
    for s_in, s_out in zip(tensor_slots(model), tensor_slots(decoded)):
        assert numpy_helper.to_array(s_in.tensor).tobytes() == numpy_helper.to_array(s_out.tensor).tobytes()


def test_constants_and_if_subgraphs_are_coded_and_restored():
    model = constants_and_subgraphs()
    data = nnr.encode(model)
    names = nnr.open(data).keys()
    assert {"w_in_value", "then_w_value", "else_w_value", "b_in_value"} <= set(names)
    decoded = nnr.decode(data)
    onnx.checker.check_model(decoded, full_check=True)
    assert skeleton(decoded) == skeleton(model)
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    for flag in (True, False):
        feed = {"x": x, "flag": np.array(flag)}
        ref = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
        out = nnr.load_session(data).run(None, feed)[0]
        assert np.abs(ref - out).max() < 0.05 * np.abs(ref).max()


def test_vectors_stay_fine_when_the_weights_are_coarse():
    """Normalisation parameters drive whole channels and are few: at a coarse qp, where the
    matrices lose several bits per weight, every 1-D tensor stays within 1 % of its scale."""
    model = mlp(seed=2)
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        if len(t.dims) == 1:  # spread like batch-norm variances: most near 1, a few small
            values = rng.lognormal(0.0, 1.0, size=tuple(t.dims)).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(values, t.name))
    decoded = nnr.decode(nnr.encode(model, qp=-4))
    before, after = _arrays(model), _arrays(decoded)
    vectors = [p for p, a in before.items() if a.ndim == 1]
    assert vectors
    for path in vectors:
        a, b = before[path].astype(np.float64), after[path].astype(np.float64)
        assert np.max(np.abs(a - b)) <= 0.01 * np.mean(np.abs(a)), path
    matrix = next(p for p, a in before.items() if a.ndim == 2)
    a, b = before[matrix].astype(np.float64), after[matrix].astype(np.float64)
    assert np.max(np.abs(a - b)) > 0.05 * np.mean(np.abs(a))  # the weights themselves are coarse


def test_encoding_is_deterministic_and_input_untouched():
    model = mlp()
    before = model.SerializeToString()
    assert nnr.encode(model) == nnr.encode(model)
    assert model.SerializeToString() == before


def test_decoding_is_bit_identical_across_runs():
    data = nnr.encode(constants_and_subgraphs())
    hashes = {hashlib.sha256(nnr.decode(data).SerializeToString()).hexdigest() for _ in range(3)}
    assert len(hashes) == 1


def test_nonfinite_weights_survive_exactly_or_are_refused():
    model = mlp()
    w = numpy_helper.to_array(model.graph.initializer[0]).copy()
    w[0, :3] = [np.nan, np.inf, -np.inf]
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "fc1.weight"))
    out = numpy_helper.to_array(nnr.decode(nnr.encode(model)).graph.initializer[0])
    assert out.tobytes() == w.tobytes()
    with pytest.raises(UnsupportedModelError, match="NaN or Inf"):
        nnr.encode(model, nonfinite="refuse")


def test_external_data_in_and_out(tmp_path):
    model = mlp()
    src = tmp_path / "ext.onnx"
    onnx.save(mlp(), src, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.bin", size_threshold=0)
    data = nnr.encode(src)
    assert nnr.open(data).metadata()["external_data"] is True
    from nnr.decoder import decode_to_file
    decode_to_file(data, tmp_path / "out.onnx")
    assert (tmp_path / "out.onnx.data").exists()
    reloaded = onnx.load(tmp_path / "out.onnx")
    onnx.checker.check_model(str(tmp_path / "out.onnx"))
    assert skeleton(reloaded) == skeleton(model)
    lossless = nnr.decode(nnr.encode(src, lossless=True))
    for a, b in zip(tensor_slots(model), tensor_slots(lossless)):
        assert numpy_helper.to_array(a.tensor).tobytes() == numpy_helper.to_array(b.tensor).tobytes()


def test_decoder_imports_neither_numba_nor_encoder():
    import subprocess
    code = ("import sys, nnr; from conformance.toy_models import mlp; "
            "m = nnr.decode(DATA); "
            "bad = [k for k in sys.modules if k.startswith('numba') or k in "
            "('nnr.encoder', 'nnr.codec.quantize', 'nnr.codec.lossy_encode', 'nnr.codec.allocation')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    data = nnr.encode(mlp())
    script = code.replace("DATA", repr(data))
    from tests.conftest import ROOT
    res = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_unknown_option_is_refused():
    with pytest.raises(nnr.OptionError, match="unknown encoder option"):
        nnr.encode(mlp(), quality=3)
    with pytest.raises(nnr.OptionError, match="qp"):
        nnr.encode(mlp(), qp=float("nan"))


def test_options_say_when_they_need_real_inputs_and_encode_asks_for_them():
    from nnr.options import EncoderOptions

    assert not EncoderOptions().needs_calibration and not EncoderOptions(prune="filters:l1:0.2").needs_calibration
    for opts in (EncoderOptions(error_feedback=True), EncoderOptions(prune="filters:activation:0.2")):
        assert opts.needs_calibration
        with pytest.raises(nnr.OptionError, match="calibration"):
            nnr.encode(mlp(), opts)
    with pytest.raises(nnr.OptionError, match="need a pruning spec"):
        EncoderOptions(prune_criterion="phase")


@pytest.mark.parametrize("kwargs", [{}, {"probe": False}, {"lossless": True}])
def test_encode_to_file_writes_what_encode_returns_and_leaves_nothing_else(tmp_path, kwargs):
    """The streaming writer (units spilled beside the output, probe attempts included) makes the
    same bytes as the in-memory one, and leaves no temporary file behind."""
    out = tmp_path / "m.nnr"
    size = nnr.encode_to_file(mlp(), out, **kwargs)
    assert out.read_bytes() == nnr.encode(mlp(), **kwargs) and size == out.stat().st_size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.nnr"]


def test_encode_to_file_leaves_no_file_on_error(tmp_path, monkeypatch):
    import nnr.encoder as encoder

    def broken(*args, **kwargs):
        raise nnr.UnsupportedModelError("no")

    monkeypatch.setattr(encoder, "code_float", broken)
    with pytest.raises(nnr.UnsupportedModelError):
        nnr.encode_to_file(mlp(), tmp_path / "m.nnr", probe=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(nnr.OutputError, match="does not exist"):
        nnr.encode_to_file(mlp(), tmp_path / "absent" / "m.nnr")


def test_decoding_reports_progress_up_to_every_tensor():
    calls = []
    f = nnr.open(nnr.encode(mlp(), probe=False))
    f.model(lambda done, total, name: calls.append((done, total)))
    assert calls[-1] == (len(f.keys()), len(f.keys())) and all(d <= t for d, t in calls)


def test_decoding_to_external_data_streams_each_tensor_and_matches_the_model(tmp_path, monkeypatch):
    """decode_to_file with external data places each tensor in the .data file as it is decoded
    (never a whole model's weights in memory) and rebuilds the same model as nnr.decode."""
    from onnx import numpy_helper

    from nnr.formats.onnx_io import ExternalData

    data = nnr.encode(mlp(), lossless=True)
    placed = []
    original_place = ExternalData.place

    def spy(self, tensor, values, typed=False):
        placed.append((tensor.name, len(values)))
        return original_place(self, tensor, values, typed)

    monkeypatch.setattr(ExternalData, "place", spy)
    out = tmp_path / "m.onnx"
    nnr.decode_to_file(data, out, external_data=True)
    assert len(placed) == len(nnr.open(data).keys())
    loaded = onnx.load(str(out))                     # reads m.onnx.data
    expected = nnr.decode(data)
    assert {t.name: numpy_helper.to_array(t).tobytes() for t in loaded.graph.initializer} == \
        {t.name: numpy_helper.to_array(t).tobytes() for t in expected.graph.initializer}
    assert any(t.data_location == onnx.TensorProto.EXTERNAL
               for t in onnx.load(str(out), load_external_data=False).graph.initializer)


def test_placed_tensors_lend_their_arrays_to_later_ones_only_when_the_library_places_them(monkeypatch, tmp_path):
    """With the compiled kernels, a tensor's array, once the library has copied it into the model
    or the data file, is reused for a later tensor of its size; with a caller's place function,
    which may keep the data, never."""
    from onnx import numpy_helper

    from nnr import buffers

    _compiled(monkeypatch)
    monkeypatch.setattr("nnr.decoder.POOL_MIN_BYTES", 1024)
    # one tensor a batch: batch k is placed before batch k + 2 starts, so on threads too a tensor's
    # array is free before a later one asks (within one batch, that would depend on timing)
    monkeypatch.setattr("nnr.decoder.BATCH_ELEMENTS", 64 * 64)
    pools = []

    class Counted(buffers.BufferPool):
        def __init__(self, *args):
            super().__init__(*args)
            pools.append(self)

    monkeypatch.setattr("nnr.decoder.BufferPool", Counted)
    weights = {f"w{i}": np.random.default_rng(i).laplace(0, 0.02, (64, 64)).astype(np.float32) for i in range(6)}
    big = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", name], [f"y{name}"]) for name in weights], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [64, 64])],
        [onnx.helper.make_tensor_value_info(f"y{name}", onnx.TensorProto.FLOAT, [64, 64]) for name in weights],
        [numpy_helper.from_array(w, name) for name, w in weights.items()]))
    data = nnr.encode(big, probe=False)
    monkeypatch.setattr("nnr.decoder.COMPILED_MIN_BYTES", 1 << 40)
    expected = {t.name: numpy_helper.to_array(t).tobytes() for t in nnr.decode(data).graph.initializer}   # numpy path
    monkeypatch.setattr("nnr.decoder.COMPILED_MIN_BYTES", 0)
    for threads in (1, 2):
        pools.clear()
        got = nnr.decode(data, threads=threads)
        assert {t.name: numpy_helper.to_array(t).tobytes() for t in got.graph.initializer} == expected
        assert sum(p.reused for p in pools) > 0   # six tensors of one shape: arrays came back
        pools.clear()
        out = tmp_path / f"t{threads}" / "m.onnx"
        out.parent.mkdir()
        nnr.decode_to_file(data, out, external_data=True, threads=threads)
        assert {t.name: numpy_helper.to_array(t).tobytes() for t in onnx.load(str(out)).graph.initializer} == expected
        assert sum(p.reused for p in pools) > 0
        kept = {}
        pools.clear()
        nnr.open(data).model(place=lambda tensor, values, typed: kept.__setitem__(tensor.name, values), threads=threads)
        assert {name: bytes(values) for name, values in kept.items()} == expected
        assert pools == [] or sum(p.reused for p in pools) == 0


def test_a_buffer_pool_hands_back_exact_sizes_within_its_bytes_and_only_its_own_kind():
    from nnr.buffers import BufferPool

    pool = BufferPool(np.int32, max_bytes=100, min_bytes=8)
    arrays = [np.empty(10, np.int32) for _ in range(3)]   # 40 bytes each
    for a in arrays:
        pool.give(memoryview(a.view(np.float32).view(np.uint8)))   # how a decoded tensor is placed
    assert pool.take(10, np.int32) is arrays[1] and pool.take(10, np.int32) is arrays[2]   # the oldest went
    assert pool.take(10, np.int32) is not arrays[0] and pool.take(11, np.int32).size == 11
    for other in (np.empty(26, np.int32), np.empty(1, np.int32), np.empty(10, np.float32), np.empty((2, 5), np.int32),
                  np.empty(20, np.int32)[::2], np.frombuffer(bytes(40), np.int32), b"bytes"):
        pool.give(other)   # too large, too small, another dtype or shape, a view, read-only, not an array
    released = memoryview(np.empty(10, np.int32))
    released.release()
    pool.give(released)
    assert pool.take(1, np.int32).size == 1 and pool.take(10, np.float32).dtype == np.float32
    assert pool.take(10, np.int32) is not None and pool.reused == 2


@pytest.mark.parametrize("compiled", [False, True])
def test_the_data_file_is_the_same_whatever_the_thread_count(tmp_path, monkeypatch, compiled):
    """Threads decode tensors in whatever order they finish, the calling thread writes them in
    model order: the two files are byte for byte those of one thread."""
    from conformance.toy_models import constants_and_subgraphs

    if compiled:
        _compiled(monkeypatch)
    for model in (mlp(), constants_and_subgraphs()):
        data = nnr.encode(model, probe=False)
        files = []
        for threads in (1, 2, 3):
            out = tmp_path / f"t{threads}" / "m.onnx"
            out.parent.mkdir(exist_ok=True)
            nnr.decode_to_file(data, out, external_data=True, threads=threads)
            files.append((out.read_bytes(), (out.parent / "m.onnx.data").read_bytes()))
        assert files[0] == files[1] == files[2] and len(files[0][1]) > 1024


def test_a_large_data_file_is_sent_to_disk_while_it_is_written(tmp_path, monkeypatch):
    """Every WRITE_BEHIND_BYTES written, the OS is asked to start writing the data file out
    (advice: a failing call changes nothing), and the model comes out the same."""
    import errno
    import os

    from nnr.formats import fileio

    if not hasattr(os, "posix_fadvise"):
        pytest.skip("no posix_fadvise on this platform: nothing to advise")
    monkeypatch.setattr(fileio, "WRITE_BEHIND_BYTES", 1000)
    advised = []

    def spy(fd, offset, length, advice):
        info = os.fstat(fd)
        advised.append((info.st_ino, info.st_size, advice))
        raise OSError(errno.EINVAL, "advice refused")   # advice only: the decode goes on

    monkeypatch.setattr(os, "posix_fadvise", spy)
    data = nnr.encode(mlp(), lossless=True)
    out = tmp_path / "m.onnx"
    nnr.decode_to_file(data, out, external_data=True)
    written = (tmp_path / "m.onnx.data").stat()
    sizes = [size for inode, size, advice in advised if inode == written.st_ino and advice == os.POSIX_FADV_DONTNEED]
    assert sizes and sizes == sorted(sizes) and 0 < sizes[0] < written.st_size   # while it was written
    expected = nnr.decode(data)
    assert {t.name: t.raw_data for t in onnx.load(str(out)).graph.initializer} == \
        {t.name: onnx.numpy_helper.to_array(t).tobytes() for t in expected.graph.initializer}


@pytest.mark.parametrize("failing", ["data fsync", "data rename", "model rename"])
def test_a_failure_writing_either_file_leaves_neither(tmp_path, monkeypatch, failing):
    """The data file is synced and renamed into place before the model file is written; a
    failure at any of those steps is an error naming the file, and leaves no file behind (a
    model file pointing at missing or older data would load wrong weights)."""
    import errno
    import os

    data = nnr.encode(mlp(), lossless=True)
    real_fsync, real_replace = os.fsync, os.replace
    data_fds = set()

    def fsync(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else ""
        if ".m.onnx.data." in name or (not name and not data_fds):
            data_fds.add(fd)
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    def replace(src, dst):
        if str(dst).endswith("m.onnx.data" if failing == "data rename" else "m.onnx"):
            raise OSError(errno.EACCES, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync" if failing == "data fsync" else "replace", fsync if failing == "data fsync" else replace)
    with pytest.raises(nnr.OutputError) as info:
        nnr.decode_to_file(data, tmp_path / "m.onnx", external_data=True)
    assert ("m.onnx.data" in str(info.value)) == (failing != "model rename") and "m.onnx" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_external_data_decode_leaves_no_file(tmp_path, monkeypatch):
    from nnr.formats.onnx_io import ExternalData

    def broken(self, model):
        raise nnr.OutputError("disk full")

    monkeypatch.setattr(ExternalData, "save", broken)
    with pytest.raises(nnr.OutputError):
        nnr.decode_to_file(nnr.encode(mlp(), lossless=True), tmp_path / "m.onnx", external_data=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs", [{"probe": False}, {"lossless": True}, {}])
def test_the_file_is_the_same_whatever_the_thread_count(kwargs):
    from conformance.toy_models import complex_linear, constants_and_subgraphs

    for model in (mlp(), constants_and_subgraphs(), complex_linear()):
        files = {threads: nnr.encode(model, threads=threads, **kwargs) for threads in (1, 2, 5)}
        assert files[1] == files[2] == files[5]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(nnr.OptionError, match="threads"):
            nnr.encode(mlp(), threads=bad)


def _outcome(data: bytes, threads: int) -> str:
    try:
        return hashlib.sha256(nnr.decode(data, threads=threads).SerializeToString()).hexdigest()
    except nnr.NnrError as exc:
        return f"{type(exc).__name__}: {exc}"


def _compiled(monkeypatch) -> None:
    """Every file decodes with the compiled lock step (skipped where numba's JIT is off)."""
    import numba

    from nnr.decoder import compiled_lock_step

    if numba.config.DISABLE_JIT:
        pytest.skip("numba's JIT is off: decoders use the numpy lock step")
    monkeypatch.setattr("nnr.decoder.COMPILED_MIN_BYTES", 0)
    assert compiled_lock_step(1)


@pytest.mark.parametrize("compiled", [False, True])
def test_decoding_gives_the_same_model_or_error_whatever_the_thread_count(monkeypatch, compiled):
    """Also with the compiled lock step: the same model, or the same error, as the numpy one."""
    from pathlib import Path

    from nnr.formats.container import FORMAT_VERSION

    root = Path(__file__).resolve().parents[1] / "conformance/vectors"
    files = [p for v in (FORMAT_VERSION - 1, FORMAT_VERSION) for p in sorted((root / f"v{v}").glob("*.nnr"))
             + sorted((root / "robustness").glob(f"v{v}_*.nnr"))]
    files += sorted((root / "hostile").glob("*.nnr"))
    numpy_one = {path: _outcome(path.read_bytes(), 1) for path in files} if compiled else {}
    if compiled:
        _compiled(monkeypatch)
    outcomes = set()
    for path in files:
        data = path.read_bytes()
        one = _outcome(data, 1)
        assert _outcome(data, 2) == one == _outcome(data, 3), path.name
        assert one == numpy_one.get(path, one), path.name
        outcomes.add(one.split(":")[0])
    assert "CorruptionError" in outcomes and len(outcomes) > 10   # models decoded, and refusals
    for bad in (0, -1, 2.5, True):
        with pytest.raises(nnr.OptionError, match="threads"):
            nnr.decode(nnr.encode(mlp(), probe=False), threads=bad)



def _failure(data: bytes, threads: int, progress=None) -> list[str]:
    """The exception a decode raises, with the chain of exceptions it was raised during."""
    try:
        nnr.open(data).model(progress, threads=threads)
    except Exception as exc:  # noqa: BLE001 - the outcome is what is compared
        chain = []
        while exc is not None:
            chain.append(f"{type(exc).__name__}: {exc}")
            exc = exc.__context__
        return chain
    return ["decoded"]


class _Stop(Exception):
    pass


def _stop(done: int, total: int, name: str) -> None:
    raise _Stop(name)


@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("batch_elements", [None, 1000])
def test_a_file_damaged_in_two_tensors_fails_alike_whatever_the_thread_count(monkeypatch, batch_elements, compiled):
    """Threads lock-step a batch's tensors in several waves, and the next batch while the one
    before is reconstructed (with the compiled lock step: decode each tensor on the pool, while
    the batch before is placed); when two tensors are damaged, the error raised (and what it was
    raised during) must still be the one-thread decode's, and so must a progress callback's."""
    from conformance.vectors import _rebuilt, _unit_edit

    if batch_elements:   # a batch per tensor: the batches overlap
        monkeypatch.setattr("nnr.decoder.BATCH_ELEMENTS", batch_elements)
    good = nnr.encode(mlp(seed=3, hidden=256), probe=False)
    units = list(nnr.open(good).units())
    big = [i for i, u in enumerate(units) if u.numel > 1000]
    assert len(big) >= 2
    cases = []
    for back_a in (1, 2, 7, 40):
        for back_b in (1, 3, 30):
            a, b = big[0], big[-1]
            body_a, body_b = bytearray(units[a].body), bytearray(units[b].body)
            body_a[-back_a] ^= 0x5A
            body_b[-back_b] ^= 0x21
            damaged = _rebuilt(_rebuilt(good, _unit_edit(a, body=bytes(body_a))), _unit_edit(b, body=bytes(body_b)))
            cases.append((damaged, _rebuilt(good, _unit_edit(b, body=bytes(body_b)))))
    numpy_one = [(_failure(damaged, 1), _failure(only_b, 1, _stop)) for damaged, only_b in cases]
    if compiled:   # each tensor lock-stepped on its own: a failing batch is decoded again to find the numpy error
        _compiled(monkeypatch)
    outcomes = set()
    for (damaged, only_b), want in zip(cases, numpy_one):
        one = _failure(damaged, 1)
        assert _failure(damaged, 2) == one == _failure(damaged, 3) and one == want[0]
        outcomes.add(one[0])
        one = _failure(only_b, 1, _stop)
        assert _failure(only_b, 2, _stop) == one == _failure(only_b, 3, _stop) and one == want[1]
        assert one[0].startswith("_Stop" if batch_elements else "CorruptionError")
    assert len(outcomes) > 1 and all(o.startswith("CorruptionError") for o in outcomes), outcomes


def test_reconstruction_option_defaults_to_gain_and_old_records_replay_as_mse():
    from nnr.options import EncoderOptions

    assert EncoderOptions().reconstruction == "gain" == EncoderOptions.build().reconstruction
    assert EncoderOptions().to_json()["reconstruction"] == "gain"
    old = EncoderOptions(reconstruction="mse").to_json()
    assert "reconstruction" not in old                      # the text files had before the option
    assert EncoderOptions.from_json(old).reconstruction == "mse"
    with pytest.raises(nnr.OptionError, match="reconstruction must be one of"):
        EncoderOptions(reconstruction="median")
    gain, mse = nnr.decode(nnr.encode(mlp(), qp=4)), nnr.decode(nnr.encode(mlp(), qp=4, reconstruction="mse"))
    from onnx import numpy_helper
    src = {t.name: numpy_helper.to_array(t) for t in mlp().graph.initializer}
    for name in ("fc1.weight", "fc2.weight"):
        w = src[name].astype(np.float64).ravel()
        proj = {k: float(numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == name))
                         .astype(np.float64).ravel() @ w / (w @ w)) for k, m in (("gain", gain), ("mse", mse))}
        assert abs(proj["gain"] - 1) < abs(proj["mse"] - 1)


@pytest.mark.parametrize("model, options", [
    (mlp(seed=4), {}),
    (mlp(seed=4, typed=True), {}),
    (mlp(seed=4, dtype=TensorProto.FLOAT16), {}),
    (mlp(seed=4, row_scales=True), {"step_rule": "channel"}),
    (mlp(seed=4), {"lossless": True}),
])
def test_memory_needed_is_the_least_budget_that_decodes_the_file(model, options):
    from nnr.decoder import OWN_OUTPUT_MEMORY

    data = nnr.encode(model, probe=False, **options)
    needed = nnr.open(data, OWN_OUTPUT_MEMORY).memory_needed()
    assert needed > 0
    nnr.decode(data, max_memory=needed)
    with pytest.raises(nnr.LimitError):
        nnr.decode(data, max_memory=needed - 1)


@pytest.mark.parametrize("record", [pytest.param(p, id=f"{p.parent.name}/{p.stem}") for p in vector_files()])
def test_memory_needed_is_exact_on_every_reference_vector(record):
    """Every format version and coding the vectors hold (codebook, minifloat, complex, context
    tables, the v1–v4 stack coder...): memory_needed() is the least budget that decodes the file."""
    from nnr.decoder import OWN_OUTPUT_MEMORY

    data = record.with_suffix(".nnr").read_bytes()
    needed = nnr.open(data, OWN_OUTPUT_MEMORY).memory_needed()
    nnr.decode(data, max_memory=needed)
    with pytest.raises(nnr.LimitError):
        nnr.decode(data, max_memory=needed - 1)


def test_only_large_files_with_numba_and_its_jit_decode_with_the_compiled_lock_step(monkeypatch):
    import sys

    import numba

    from nnr.decoder import COMPILED_MIN_BYTES, compiled_lock_step

    assert not compiled_lock_step(COMPILED_MIN_BYTES - 1)
    assert compiled_lock_step(COMPILED_MIN_BYTES) == (not numba.config.DISABLE_JIT)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", True)   # the kernel would run as Python
    assert not compiled_lock_step(COMPILED_MIN_BYTES)
    monkeypatch.setattr(numba.config, "DISABLE_JIT", False)
    monkeypatch.setitem(sys.modules, "numba", None)          # a decode-only install
    assert not compiled_lock_step(COMPILED_MIN_BYTES)


def test_a_tensor_filled_from_a_buffer_holds_exactly_its_bytes(monkeypatch):
    """fill_tensor frames a buffer as a serialized raw_data field and merges it (one copy under
    the interpreter lock); the result must be what assigning the bytes gives, with length
    prefixes of one to three bytes, and replace what the tensor held. A buffer that is not
    contiguous, or too large for protobuf's parser, is assigned as bytes."""
    import numpy as np
    from onnx import TensorProto

    from nnr.formats.onnx_io import fill_tensor

    rng = np.random.default_rng(37)
    for n in (0, 1, 127, 128, 300, 16383, 16384, 70_000):
        data = rng.integers(0, 256, size=n, dtype=np.uint8)
        framed, assigned = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[n]), TensorProto()
        framed.raw_data = b"old bytes"
        fill_tensor(framed, memoryview(data))
        assigned.CopyFrom(framed)
        assigned.raw_data = data.tobytes()
        assert framed.raw_data == data.tobytes() and framed.SerializeToString() == assigned.SerializeToString()
        assert framed.HasField("raw_data") and framed.name == "w" and list(framed.dims) == [n]
        data[:] = 0   # the tensor holds a copy
        assert framed.raw_data == assigned.raw_data
    wide = np.arange(12, dtype=np.uint8).reshape(3, 4)
    for data, limit in ((memoryview(wide[:, ::2]), None), (memoryview(wide), 5)):   # not contiguous; too large
        if limit is not None:
            monkeypatch.setattr("nnr.formats.onnx_io.MAX_MERGED_BYTES", limit)
        tensor = TensorProto(raw_data=b"old")
        fill_tensor(tensor, data)
        assert tensor.raw_data == bytes(data)
