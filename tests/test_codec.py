"""Property and unit tests of the numerical core: coders round-trip, quantizers bound errors."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from nnr.codec.bytestream import ByteReader, ByteWriter
from nnr.codec.entropy import ans_encode, best_table, best_tables, cost_bits, costs_bits, geometric_freqs
from nnr.codec.rans import stack_decode
from nnr.codec.floatcast import bfloat16_bits
from nnr.codec.floatplanes import _read_runs, _write_runs, decode_float_fields, decode_float_planes, encode_float_fields, encode_float_planes
from nnr.codec.levelcode import CONTEXT_LANES, LANES, decode_levels, encode_levels
from nnr.codec.lossy_decode import decode_lossy
from nnr.codec.lossy_encode import LevelOverflow, dyadic_steps, encode_lossy
from nnr.errors import CorruptionError

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7)


@given(hnp.arrays(np.int64, st.integers(0, 3000), elements=st.integers(-(2**31) + 1, 2**31 - 1)))
@settings(max_examples=60, deadline=None)
def test_levels_round_trip_any_integers(levels):
    block = encode_levels(levels)
    r = ByteReader(block)
    out = decode_levels(r, levels.size)
    r.expect_end()
    np.testing.assert_array_equal(out, levels)


@given(hnp.arrays(np.int64, st.integers(1, 5000),
                  elements=st.integers(-40, 40) | st.sampled_from([0, 0, 0, 1, -1])))
@settings(max_examples=40, deadline=None)
def test_levels_round_trip_laplacian_like(levels):
    out = decode_levels(ByteReader(encode_levels(levels)), levels.size)
    np.testing.assert_array_equal(out, levels)


def _table_count(block: bytes) -> int:
    r = ByteReader(block)
    r.varint()
    r.u8()
    return r.u8()


@given(hnp.arrays(np.int64, st.integers(1, 6000), elements=st.integers(-9, 9)),
       st.integers(1, 64), st.sampled_from([0, 1, 2]))
@settings(max_examples=40, deadline=None)
def test_levels_with_runs_of_scale_round_trip_in_every_dialect(levels, run, fine_bits):
    from nnr.codec.levelcode import CONTEXT_LANES, LANES

    levels = levels * np.repeat(np.arange(levels.size // run + 1) % 4, run)[:levels.size]  # runs of zeros, runs of large
    for dialect in (CONTEXT_LANES, LANES):
        block = encode_levels(levels, fine_bits=fine_bits, lanes=dialect)
        r = ByteReader(block)
        np.testing.assert_array_equal(decode_levels(r, levels.size, dialect), levels)
        r.expect_end()


@pytest.mark.parametrize("fine_bits", [1, 3, 8, 9, 11])
def test_fine_bits_round_trip_around_escapes(fine_bits):
    # the low bits are gathered in bytes up to 8 planes, in int32 beyond; escapes carry none
    rng = np.random.default_rng(fine_bits)
    levels = np.round(rng.laplace(0.0, 2.0 ** (fine_bits + 2), 20000)).astype(np.int64)
    k = 1 << (fine_bits + 3)
    levels[rng.choice(levels.size, 300, replace=False)] = rng.integers(k + 1, 40 * k, 300) * rng.choice([-1, 1], 300)
    levels[:5] = k + 7                                   # escapes at the start, back to back
    levels[-3:] = -(k + 1)                               # and at the end
    for dialect in (CONTEXT_LANES, LANES):
        block = encode_levels(levels, k=k, fine_bits=fine_bits, lanes=dialect)
        r = ByteReader(block)
        np.testing.assert_array_equal(decode_levels(r, levels.size, dialect), levels)
        r.expect_end()


def test_level_blocks_take_context_tables_only_where_they_pay():
    from nnr.codec.levelcode import LANES

    rng = np.random.default_rng(0)
    scale = np.repeat(np.exp2(rng.uniform(-3, 3, 256)), 64)      # rows of one scale, as in trained layers
    rows = np.round(rng.laplace(0.0, scale)).astype(np.int64)
    iid = np.round(rng.laplace(0.0, 2.0, rows.size)).astype(np.int64)
    for levels, wanted in ((rows, True), (iid, False)):
        block, one_table = encode_levels(levels), encode_levels(levels, lanes=LANES)
        assert (_table_count(block) > 1) == wanted
        np.testing.assert_array_equal(decode_levels(ByteReader(block), levels.size), levels)
        if wanted:
            assert len(block) < 0.95 * len(one_table)
        else:
            assert len(block) == len(one_table) + 1   # the table count byte


@pytest.mark.parametrize("width", [2, 4, 8])
@given(data=st.binary(min_size=0, max_size=4000))
@settings(max_examples=30, deadline=None)
def test_float_planes_are_lossless_for_any_bits(width, data):
    data = data[: len(data) - len(data) % width]
    body = encode_float_planes(data, width)
    assert decode_float_planes(body, len(data) // width) == data


@pytest.mark.parametrize("width", [2, 4, 8])
@given(data=st.binary(min_size=0, max_size=4000))
@settings(max_examples=30, deadline=None)
def test_float_fields_are_lossless_for_any_bits(width, data):
    data = data[: len(data) - len(data) % width]
    assert decode_float_fields(encode_float_fields(data, width), len(data) // width) == data


@pytest.mark.parametrize("encode, decode", [(encode_float_planes, decode_float_planes),
                                            (encode_float_fields, decode_float_fields)])
def test_float_planes_keep_nan_payloads_and_infinities(encode, decode):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, 1e-45, 3.4e38], dtype=np.float32)
    x = np.concatenate([x, np.frombuffer(np.uint32(0x7FC00123).tobytes(), np.float32)])
    assert decode(encode(x.tobytes(), 4), x.size) == x.tobytes()


def _laplace_bf16(n: int, seed: int = 0) -> np.ndarray:
    return bfloat16_bits(np.random.default_rng(seed).laplace(0, 0.02, n).astype(np.float32))


def test_float_fields_code_exponent_with_leading_mantissa_bits_smaller_than_byte_planes():
    words = _laplace_bf16(200_000)
    body = encode_float_fields(words, 2)
    assert body[1] == 2 and body[2] > 8            # a top plane wider than the exponent byte
    assert len(body) < 0.995 * len(encode_float_planes(words, 2))
    assert decode_float_fields(body, words.size) == words.tobytes()


def _fields(width: int, planes: list[bytes]) -> bytes:
    return bytes([width, len(planes)]) + b"".join(planes)


@pytest.mark.parametrize("body, what", [
    (_fields(2, [bytes([8, 0]) + bytes(3)]), "leave 8"),                           # planes short of 16 bits
    (_fields(2, [bytes([13, 0])]), "13 bits"),                                     # wider than 12
    (_fields(2, [bytes([0, 0])]), "0 bits"),
    (_fields(2, [bytes([8, 0]) + bytes(3), bytes([8, 2])]), "mode 2"),
    (_fields(2, [bytes([8, 0]) + bytes(3), bytes([12, 1])]), "12 bits where 8"),   # past 16 bits
    (_fields(2, [bytes([8, 0]) + bytes(3), bytes([4, 0, 8, 0, 0, 0]), bytes([4, 0]) + bytes(4)]), "unused bits"),
    (_fields(2, [bytes([8, 1, 0])]), "0 runs"),                                    # no symbol listed
    (_fields(2, [bytes([8, 1, 1, 0, 0])]), "run 0"),                               # a run of length 0
    (_fields(2, [bytes([8, 1, 2, 0, 1, 5, 0, 1, 5])]), "run 1"),                   # gap 0 after a run
    (_fields(2, [bytes([8, 1, 1, 255, 1, 2, 1])]), "run 0"),                       # run past 256
    (_fields(2, [bytes([8, 1, 1, 0, 1, 0])]), "frequency"),                        # frequency 0
    (bytes([2, 0]), "0 planes"),
    (bytes([2, 17]), "17 planes"),
    (_fields(2, [bytes([8, 0]) + bytes(3), bytes([8, 0]) + bytes(3)]) + b"x", "trailing"),
])
def test_malformed_float_fields_are_refused(body, what):
    with pytest.raises(CorruptionError) as err:
        decode_float_fields(body, 3)
    assert what in str(err.value)


@given(hnp.arrays(np.float64, shapes, elements=st.floats(-1e6, 1e6, allow_nan=False, width=32)),
       st.floats(1e-4, 10.0), st.sampled_from([0.0, 0.1, 0.5]))
@settings(max_examples=60, deadline=None)
def test_lossy_round_trip_is_exact_and_bounded(x, step, lam):
    try:
        res = encode_lossy(x, step, lam=lam)
    except LevelOverflow:
        assert np.abs(x).max() / step > 2**30
        return
    out = decode_lossy(res.body, x.shape, np.dtype(np.float32))
    assert out.shape == x.shape
    np.testing.assert_array_equal(out, res.reconstruction)
    # RDO may move a value to zero or the neighbouring level, never further than 1.5 steps
    # (plus float32 rounding of the reconstruction).
    assert np.all(np.abs(out.astype(np.float64) - x) <= 1.5 * res.step + 1e-6 * np.abs(x) + 1e-30)


def test_lossy_per_channel_steps_follow_channel_scale():
    rng = np.random.default_rng(0)
    x = rng.laplace(0, 1, (8, 100)) * np.logspace(-3, 0, 8)[:, None]
    steps = np.abs(x).mean(axis=1) / 16
    res = encode_lossy(x, steps)
    out = decode_lossy(res.body, x.shape, np.dtype(np.float64))
    rel = np.sqrt(((out - x) ** 2).mean(axis=1)) / np.abs(x).mean(axis=1)
    assert rel.max() < 4 * rel.min()  # every channel gets a similar relative error


def test_lossy_huge_outliers_are_escaped_exactly_enough():
    x = np.zeros(1000)
    x[::97] = 1e7
    x[5] = -1.5e9
    res = encode_lossy(x, 1.0, lam=0.0)
    out = decode_lossy(res.body, x.shape, np.dtype(np.float64))
    assert np.max(np.abs(out - x)) <= 1.0


def test_dyadic_steps_are_exact_and_close():
    want = np.array([1e-9, 0.0123, 0.5, 3.0])
    mant, shifts, e = dyadic_steps(want)
    steps = np.ldexp(mant.astype(np.float64), e - 8 - shifts)
    assert np.all(np.abs(steps - want) <= want / 200)


def test_geometric_table_is_integer_and_symmetric():
    f = geometric_freqs(5, 1000, 300, 32768, 2)
    assert f.dtype == np.int64
    assert list(f) == [18, 37, 75, 150, 300, 1000, 300, 150, 75, 37, 18, 2]


def test_costs_estimated_together_equal_costs_estimated_one_by_one():
    """Batching the exact logarithm over many tables must not move any estimate by a bit:
    the encoder's choices, and so its bytes, depend on them."""
    r = np.random.default_rng(3)
    tables = [(r.integers(0, 50, n), r.integers(1, 4000, n)) for n in (1, 2, 7, 300, 4096)]
    tables += [(np.zeros(5, dtype=np.int64), np.arange(1, 6)),          # no symbol used
               (np.array([4, 0, 9]), np.array([0, 0, 5]))]                # a used symbol without frequency
    together = costs_bits(tables)
    assert together == [costs_bits([t])[0] for t in tables] == [cost_bits(*t) for t in tables]
    assert together[-2] == 0.0 and together[3] > 0
    counts = [r.integers(0, 30, 12) for _ in range(5)] + [np.zeros(12, dtype=np.int64)]
    for geometric in (True, False):
        many = best_tables(counts, 5, allow_geometric=geometric)
        for got, c in zip(many, counts):
            want = best_table(c, 5, allow_geometric=geometric)
            assert got[0] == want[0] and got[2] == want[2] and np.array_equal(got[1], want[1])


def test_cost_estimates_are_pinned():
    """Values the encoder computed before its estimates were batched (73f50b4): its choices
    between tables, and so its bytes, rest on these exact floats."""
    assert cost_bits(np.array([5, 0, 3, 1]), np.array([7, 2, 5, 1])) == 14.15945646552656
    assert cost_bits(np.array([4, 0, 9]), np.array([0, 0, 5])) == 96.00000223577433   # the floor
    assert cost_bits(np.array([1000, 10, 1]), np.array([4000, 90, 5])) == 98.61911790991195
    laplace = np.array([167, 304, 554, 1007, 1830, 3328, 6050, 11000, 20000, 11000, 6050, 3328, 1830, 1007, 554,
                        304, 167, 3])
    kind, params, bits = best_table(laplace, 8)
    assert (kind, params, bits) == (0, (20000, 11250, 35119, 3), 211885.418413937)   # geometric
    kind, params, bits = best_table(laplace, 8, allow_geometric=False)
    assert kind == 1 and bits == 211969.6689733801
    assert params.tolist() == [34, 62, 113, 206, 375, 681, 1239, 2252, 4095, 2252, 1239, 681, 375, 206, 113, 62, 34, 1]


def test_lossless_plane_table_is_runs_of_used_symbols_after_gaps():
    used, freqs = np.array([0, 1, 2, 5, 6, 9]), np.array([3, 1, 2, 7, 1, 300])
    w = ByteWriter()
    _write_runs(w, used, freqs)
    # 3 runs: (gap 0, 3 symbols), (gap 2, 2 symbols), (gap 2, 1 symbol); 300 is two varint bytes
    assert w.getvalue() == bytes([3, 0, 3, 3, 1, 2, 2, 2, 7, 1, 2, 1, 0xAC, 0x02])
    symbols, back = _read_runs(ByteReader(w.getvalue()), 4, 314)
    assert symbols.tolist() == used.tolist() and back.tolist() == freqs.tolist()
    w = ByteWriter()
    _write_runs(w, np.array([200, 201]), np.array([5, 9]))   # one run, after a gap of 200 (two varint bytes)
    assert w.getvalue() == bytes([1, 0xC8, 0x01, 2, 5, 9])
    w = ByteWriter()
    _write_runs(w, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert w.getvalue() == b"\x00"


def test_ans_words_are_pinned():
    """constriction's coded words for a fixed input: catches semantic drift of the coder."""
    symbols = np.array([0, 1, 2, 1, 0, 0, 3, 1], dtype=np.int32)
    words = ans_encode(symbols, np.array([5, 3, 2, 1]))
    assert words.tolist() == PINNED_WORDS
    np.testing.assert_array_equal(stack_decode(words, np.array([5, 3, 2, 1]), 8), symbols)


PINNED_WORDS = [1583164786, 15]  # constriction 0.4/0.5 ANS, perfect=False


def test_ans_rejects_garbage_with_corruption_error():
    with pytest.raises(CorruptionError):
        stack_decode(np.array([0xFFFFFFFF, 0x12345678, 7], dtype=np.uint32), np.array([5, 3, 2, 1]), 50)


def test_bfloat16_rounding_is_nearest_even():
    x = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.inf], dtype=np.float32)
    bits = bfloat16_bits(x)
    back = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_array_equal(back, [1.0, 1.0, 1.015625, -2.5, np.inf])


def test_byte_reader_refuses_overruns():
    w = ByteWriter()
    w.varint(300)
    r = ByteReader(w.getvalue()[:1])
    with pytest.raises(CorruptionError):
        r.varint()
    with pytest.raises(CorruptionError):
        ByteReader(b"\x05").varints(10)


def test_gain_reconstruction_keeps_the_tensor_projection_where_mse_shrinks_it():
    x = np.random.default_rng(3).laplace(0, 1.0, 20_000)
    step = 1.6  # coarse: most weights quantize to zero, where shrinkage is largest
    gain, mse = (encode_lossy(x, step, reconstruction=r) for r in ("gain", "mse"))
    assert gain.body[2:] == mse.body[2:] and gain.theta < 0 <= mse.theta  # same levels, other offset
    ratio = {r: float(res.reconstruction.astype(np.float64) @ x / (x @ x)) for r, res in (("gain", gain), ("mse", mse))}
    assert abs(ratio["gain"] - 1.0) < 0.01 < 1.0 - ratio["mse"]
    err = {r: float(((res.reconstruction - x) ** 2).mean()) for r, res in (("gain", gain), ("mse", mse))}
    assert err["mse"] < err["gain"]      # the price: a little more squared error per weight
    for res in (gain, mse):
        np.testing.assert_array_equal(decode_lossy(res.body, x.shape, np.dtype(np.float32)), res.reconstruction)


def test_gain_offset_stays_inside_the_level_cell():
    x = np.full(1000, 0.45)  # rounds to zero: full gain would need an offset beyond half a step
    x[::50] = 2.0
    x[1::50] = 0.9
    from nnr.codec.quantize import laplace_bits, rdo_quantize
    rdo = rdo_quantize(x, np.array([1.0]), x.size, 0.0, 0.0, laplace_bits(1.0, 4))
    assert rdo.gain_offset == -0.5 and 0.0 <= rdo.mse_offset <= 0.5
    with pytest.raises(ValueError, match="reconstruction"):
        encode_lossy(x, 1.0, reconstruction="median")


def test_gain_reconstruction_with_per_channel_steps_keeps_the_projection_in_weight_units():
    rng = np.random.default_rng(5)
    x = rng.laplace(0, 1.0, (6, 4000)) * np.array([0.05, 0.1, 0.3, 1.0, 3.0, 10.0])[:, None]
    # coarse steps on the large channels: their shrinkage dominates x̂·x, which an offset
    # fitted in step units (each channel counted alike) would not give back
    steps = np.abs(x).mean(axis=1) * np.array([0.3, 0.3, 0.3, 3.0, 3.0, 3.0])
    res = encode_lossy(x, steps, reconstruction="gain")
    y = res.reconstruction.astype(np.float64)
    assert abs(float((y * x).sum() / (x * x).sum()) - 1.0) < 2e-3


@pytest.mark.parametrize("lo, hi", [(-40, 25), (3, 90), (-90, -7), (0, 0), (-5, 0), (0, 5)])
def test_levels_looked_up_in_pieces_reconstruct_as_the_formula_does(monkeypatch, lo, hi):
    """dequantize evaluates the formula once per distinct level and looks the levels up a piece
    at a time; pieces that cut anywhere, and level ranges on either side of 0, give the formula's bits."""
    from nnr.codec import lossy_decode

    monkeypatch.setattr(lossy_decode, "LOOKUP_ELEMENTS", 7)
    rng = np.random.default_rng(41)
    levels = rng.integers(lo, hi + 1, size=1000).astype(np.int32)
    levels[:2] = lo, hi
    step = lossy_decode.step_values(np.array([173]), -9).reshape(())
    for dtype in (np.float32, np.float16):
        got = lossy_decode.dequantize(levels, 37, step, (10, 100), np.dtype(dtype))
        want = lossy_decode._reconstruct(levels.astype(np.int64), 37, np.ldexp(step, -8)).astype(dtype)
        assert got.shape == (10, 100) and got.dtype == dtype
        np.testing.assert_array_equal(got.reshape(-1).view(np.uint8), want.view(np.uint8))


def _compiled_and_numpy(job, symbols: np.ndarray, theta: int, steps: np.ndarray, dtype) -> tuple:
    """(compiled reconstruction, numpy's) of one level block: values as bytes, or the error."""
    from nnr.codec import lossy_decode

    def outcome(fn):
        try:
            with np.errstate(over="ignore"):
                values = fn()
            return None if values is None else values.astype(dtype, copy=False).tobytes()
        except CorruptionError as exc:
            return str(exc)

    return (outcome(lambda: lossy_decode._compiled_dequantize(job, symbols.copy(), theta, steps, np.dtype(dtype))),
            outcome(lambda: lossy_decode.dequantize(job.finish(symbols.copy()), theta, steps, (symbols.size,),
                                                    np.dtype(dtype)).reshape(-1)))


@pytest.mark.parametrize("fine_bits", [0, 1, 3, 8, 9, 13])
def test_compiled_reconstruction_gives_numpy_s_values_or_error(fine_bits):
    """The one-pass compiled reconstruction (codec.lossy_jit) gives dequantize(finish(...))'s
    bits, with escapes anywhere, any fine bit count, overflow to ±inf, and numpy's error for a
    wrong escape count or an escaped level out of range."""
    import importlib

    from nnr.codec import lossy_decode
    from nnr.codec.levelcode import MAX_LANE_K, read_levels
    from nnr.codec.rans import decode_blocks

    importlib.import_module("nnr.codec.lossy_jit")   # registers the compiled reconstruction
    rng = np.random.default_rng(53 + fine_bits)
    compared = 0
    for trial in range(12):
        count = int(rng.integers(3000, 9000)) + (16 << fine_bits)
        levels = np.round(rng.laplace(0, 1.5 * 2 ** fine_bits, count)).astype(np.int64)
        if trial % 3:
            at = rng.integers(0, count, size=int(rng.integers(1, 9)))
            levels[at] = rng.choice([-1, 1], at.size) * rng.integers(50 << fine_bits, 10 ** 6, at.size)
        k = min(max(int(np.percentile(np.abs(levels), 99)), 2 ** fine_bits), MAX_LANE_K)
        r = ByteReader(encode_levels(levels, k=k, fine_bits=fine_bits))
        job = read_levels(r, count, CONTEXT_LANES)
        symbols = decode_blocks([job.ans])[0]
        assert symbols.dtype == np.int32
        theta = int(rng.integers(-60, 61))
        steps = lossy_decode.step_values(np.array([int(rng.integers(1, 256))]), int(rng.integers(-30, 140)))
        for dtype in (np.float32, np.float64):
            compiled, numpy_ = _compiled_and_numpy(job, symbols, theta, steps, dtype)
            if (job.n_sym - 1) << fine_bits > count:
                assert compiled is None   # a table larger than the tensor: numpy reconstructs it
                continue
            assert compiled == numpy_ and isinstance(numpy_, bytes), trial
            compared += 1
            own = symbols.copy()
            with np.errstate(over="ignore"):
                values = lossy_decode._compiled_dequantize(job, own, theta, steps, np.dtype(dtype))
            assert np.shares_memory(values, own) == (dtype == np.float32)   # float32 values overwrite the symbols
        if job.escapes.size and (job.n_sym - 1) << fine_bits <= count:
            wrong = [(job.escapes[:-1], symbols), (np.append(job.escapes, np.uint64(4)), symbols),
                     (job.escapes | np.uint64(1 << 40), symbols)]
            plain = np.flatnonzero(symbols != job.n_sym - 1)
            extra = symbols.copy()
            extra[plain[-1]] = job.n_sym - 1   # one escape symbol more than escape values
            wrong.append((job.escapes, extra))
            for escapes, syms in wrong:
                job.escapes = escapes
                compiled, numpy_ = _compiled_and_numpy(job, syms, theta, steps, np.float32)
                assert isinstance(numpy_, str) and compiled == numpy_
    assert compared >= 12   # most trials took the compiled path
