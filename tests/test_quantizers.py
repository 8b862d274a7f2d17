"""The quantizer family: parsing, the formulas each one promises, bit-exact round trips."""

import numpy as np
import pytest

import nnr
from nnr.codec.bytestream import ByteWriter
from nnr.codec.levelcode import encode_levels
from nnr.codec.lossy_decode import decode_codebook, decode_lossy, decode_minifloat, lossy_step, minifloat_magnitudes
from nnr.codec.quantizer_spec import parse
from nnr.codec.quantizers import encode_deadzone, encode_minifloat, encode_mulaw
from conformance.toy_models import mlp
from nnr import ratecontrol as rc
from nnr.errors import CorruptionError, OptionError
from nnr.options import EncoderOptions
from onnx import TensorProto

F32 = np.dtype(np.float32)
X = np.random.default_rng(1).laplace(0, 0.05, size=(48, 40))


@pytest.mark.parametrize("spec,kind", [("ecsq", "ecsq"), ("midtread", "midtread"), ("midrise", "midrise"),
                                       ("deadzone:0.4", "deadzone"), ("mulaw:255", "mulaw"),
                                       ("minifloat:E4M3", "minifloat"), ("fp16", "minifloat"), ("E5M2", "minifloat")])
def test_parse_accepts(spec, kind):
    assert parse(spec).kind == kind


@pytest.mark.parametrize("spec", ["", "deadzone", "deadzone:1.0", "deadzone:-0.1", "mulaw:0", "mulaw:x",
                                  "minifloat:E9M1", "minifloat:E4M13", "minifloat:4.3", "rounding"])
def test_parse_refuses_with_the_accepted_forms(spec):
    with pytest.raises(ValueError, match="deadzone:δ"):
        parse(spec)
    with pytest.raises(OptionError):
        EncoderOptions(quantizer=spec)


@pytest.mark.parametrize("delta", [0.0, 0.25, 0.5, 0.7])
def test_deadzone_decisions_and_reconstruction(delta):
    res = encode_deadzone(X, np.array([0.01]), delta, F32)
    out = decode_lossy(res.body, X.shape, F32)
    assert np.array_equal(out, res.reconstruction)
    step = lossy_step(res.body)
    a = np.abs(X) / step
    q = np.where(a < delta, 0, np.ceil(a - delta))
    recon = np.where(q == 0, 0.0, np.sign(X) * step * (q + delta - 0.5))
    assert np.allclose(out, recon, rtol=0, atol=step / 256 + 1e-7)


def test_midtread_is_rounding_and_midrise_has_no_zero_level():
    step = 2.0 ** -7
    mid = decode_lossy(encode_deadzone(X, np.array([step]), 0.5, F32).body, X.shape, F32)
    assert np.array_equal(mid, (np.sign(X) * np.ceil(np.abs(X) / step - 0.5) * step).astype(F32))
    rise = decode_lossy(encode_deadzone(X, np.array([step]), 0.0, F32).body, X.shape, F32)
    halves = rise / (step / 2)
    assert np.all(np.abs(halves) % 2 == 1)  # odd multiples of step/2: ±Δ/2, ±3Δ/2, …


def test_minifloat_fp16_with_unit_scale_is_ieee_half_rounding():
    x = np.random.default_rng(2).standard_normal(5000) * np.logspace(-9, 4, 5000)
    x[0] = 100_000.0  # largest value sets the scale exponent to 0 (top code is 131 008)
    body, recon = encode_minifloat(x, 5, 10, F32)
    out = decode_minifloat(body, x.shape, np.dtype(np.float64))
    assert np.array_equal(out, recon.astype(np.float64))
    normal = np.abs(x) <= 65504
    assert np.array_equal(out[normal], x[normal].astype(np.float16).astype(np.float64))


@pytest.mark.parametrize("e,m", [(4, 3), (5, 2), (3, 2), (2, 1)])
def test_minifloat_picks_the_nearest_code(e, m):
    body, _ = encode_minifloat(X, e, m, F32)
    out = decode_minifloat(body, X.shape, np.dtype(np.float64))
    scale = np.frombuffer(bytes(body[2:4]), "<i2")[0]
    grid = minifloat_magnitudes(e, m, int(scale))
    nearest = grid[np.abs(np.abs(X)[..., None] - grid).argmin(axis=-1)]
    assert np.allclose(np.abs(out), nearest, rtol=0, atol=1e-12) and np.all(np.isin(np.abs(out), grid))


def test_mulaw_values_come_from_its_table_and_error_is_bounded():
    body, recon = encode_mulaw(X, 0.002, 255.0, F32)
    out = decode_codebook(body, X.shape, F32)
    assert np.array_equal(out, recon)
    amax, k = np.abs(X).max(), int(body[1])  # K < 128 here: its varint is one byte
    y = np.log1p(255 * np.abs(X) / amax) / np.log1p(255)
    y_hat = np.log1p(255 * np.abs(out.astype(np.float64)) / amax) / np.log1p(255)
    assert np.max(np.abs(y - y_hat)) <= 0.5 / k + 1e-6


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16])
@pytest.mark.parametrize("spec", ["midtread", "midrise", "deadzone:0.7", "mulaw:100", "e4m3", "fp16"])
def test_every_quantizer_round_trips_deterministically(spec, dtype):
    model = mlp(seed=5, dtype=dtype)
    data = nnr.encode(model, quantizer=spec)
    assert data == nnr.encode(model, quantizer=spec)
    f = nnr.open(data)
    assert f.metadata()["options"]["quantizer"] == spec
    decoded = nnr.decode(data)
    for row in f.info():
        if row["mode"] != "raw":
            assert row["snr_db"] > 20
    assert len(decoded.graph.initializer) == len(model.graph.initializer)


def _body(*parts) -> bytes:
    w = ByteWriter()
    for kind, value in parts:
        getattr(w, kind)(value)
    return w.getvalue()


def test_malformed_bodies_are_refused():
    levels = encode_levels(np.array([1, -2, 0]))
    bad_table = _body(("u8", 0), ("varint", 2), ("raw", np.array([0.5, 0.25], "<f8").tobytes()), ("raw", levels))
    with pytest.raises(CorruptionError, match="non-decreasing"):
        decode_codebook(bad_table, (3,), F32)
    beyond = _body(("u8", 0), ("varint", 1), ("raw", np.array([0.5], "<f8").tobytes()), ("raw", levels))
    with pytest.raises(CorruptionError, match="beyond"):
        decode_codebook(beyond, (3,), F32)
    with pytest.raises(CorruptionError, match="E0M3"):
        decode_minifloat(_body(("u8", 0), ("u8", 3), ("i16", 0), ("raw", levels)), (3,), F32)
    with pytest.raises(CorruptionError, match="out of range"):
        decode_minifloat(_body(("u8", 1), ("u8", 0), ("i16", 0), ("raw", levels)), (3,), F32)
    with pytest.raises(CorruptionError, match="flags"):
        decode_lossy(_body(("u8", 4), ("u8", 0), ("i16", 0), ("u8", 128), ("raw", levels)), (3,), F32)


def test_rate_control_refuses_a_fixed_precision_quantizer():
    with pytest.raises(OptionError, match="fixed precision"):
        rc.search(mlp(), EncoderOptions(quantizer="e4m3"), target_bytes=1000)
