"""The encoder writes the same bytes on every machine: its logarithms and exponentials are
codec.exactmath's (exactly rounded operations only), never numpy's or libm's, whose last bit
depends on the CPU's SIMD path."""

import math
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pytest

from nnr.codec import exactmath
from conformance.vectors import cases, replay, same_bitstream
from nnr.formats.container import FORMAT_VERSION

ROOT = Path(__file__).resolve().parents[1]


def _reference(fn, xs) -> np.ndarray:
    with localcontext() as ctx:
        ctx.prec = 60
        return np.array([float(fn(Decimal(float(x)))) for x in xs])


LN2 = Decimal(2).ln

SAMPLES = {
    "log": (exactmath.log, lambda d: d.ln(), lambda r: np.exp(r.uniform(-40, 40, 400))),
    "log2": (exactmath.log2, lambda d: d.ln() / Decimal(2).ln(), lambda r: np.exp(r.uniform(-40, 40, 400))),
    "log10": (exactmath.log10, lambda d: d.log10(), lambda r: np.exp(r.uniform(-40, 40, 400))),
    "log1p": (exactmath.log1p, lambda d: (1 + d).ln(), lambda r: np.exp(r.uniform(-45, 8, 400))),
    "exp": (exactmath.exp, lambda d: d.exp(), lambda r: r.uniform(-700, 700, 400)),
    "expm1": (exactmath.expm1, lambda d: d.exp() - 1,
              lambda r: np.concatenate([r.uniform(-30, 30, 200), -np.exp(r.uniform(-40, 0, 100)),
                                        np.exp(r.uniform(-40, 0, 100))])),
    "exp2": (exactmath.exp2, lambda d: (d * Decimal(2).ln()).exp(), lambda r: r.uniform(-1000, 1000, 400)),
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_exactmath_is_correctly_rounded_on_samples(name):
    fn, ref, draw = SAMPLES[name]
    xs = draw(np.random.default_rng(7))
    assert np.array_equal(fn(xs), _reference(ref, xs))


def test_logarithms_are_correctly_rounded_where_their_argument_reduction_switches():
    """ln reduces its argument to m/c with c the nearest multiple of 2**-7 to m in [√½, √2):
    values halfway between two such c, at c itself and at the ends of the range."""
    cells = np.arange(90, 182) / 128.0
    half = np.arange(90, 182) / 128.0 + 1 / 256.0
    edges = np.array([0.7071067811865476, 0.7071067811865475, 1.4142135623730951, 1.414213562373095])
    m = np.concatenate([cells, half, np.nextafter(half, 0), np.nextafter(half, 2), edges])
    xs = np.concatenate([m, np.ldexp(m, 37), np.ldexp(m, -300)])
    for fn, ref in ((exactmath.log, lambda d: d.ln()), (exactmath.log2, lambda d: d.ln() / Decimal(2).ln()),
                    (exactmath.log10, lambda d: d.log10())):
        assert np.array_equal(fn(xs), _reference(ref, xs))


def test_exactmath_special_values_and_scalars():
    assert exactmath.exp2(-8.0) == 2.0 ** -8 and exactmath.log2(1024.0) == 10.0
    assert exactmath.power(4.0, 0.5) == 2.0 and exactmath.power(2.0, 10.0) == 1024.0
    assert exactmath.log(1.0) == 0.0 and exactmath.exp(0.0) == 1.0
    assert exactmath.log1p(0.0) == 0.0 and exactmath.expm1(0.0) == 0.0
    assert exactmath.log(0.0) == -math.inf and math.isnan(exactmath.log(-1.0))
    assert exactmath.exp(1000.0) == math.inf and exactmath.exp(-1000.0) == 0.0
    assert isinstance(exactmath.log2(3.0), float)
    assert exactmath.log2(np.array([[2.0, 4.0]])).shape == (1, 2)
    assert exactmath.floor_log2(1.0) == 0 and exactmath.floor_log2(0.75) == -1 and exactmath.floor_log2(2.0 ** 60) == 60
    ys = np.linspace(0.1, 3.0, 50)
    assert np.array_equal(exactmath.power(ys, 0.5), np.sqrt(ys))


TRANSCENDENTAL = ("log", "log2", "log10", "log1p", "exp", "exp2", "expm1", "power", "float_power", "sin", "cos",
                  "tan", "tanh", "arctan", "arctan2", "angle", "hypot", "logaddexp", "logaddexp2")


def _forbid_transcendentals(monkeypatch) -> None:
    """Make numpy's and math's transcendental functions raise, so any use by the encoder shows."""
    def forbidden(*args, **kwargs):
        raise AssertionError("the encoder called a platform-dependent transcendental function")
    for name in TRANSCENDENTAL:
        monkeypatch.setattr(np, name, forbidden)
    for name in ("log", "log2", "log10", "log1p", "exp", "expm1", "pow", "atan2", "hypot", "tanh"):
        monkeypatch.setattr(math, name, forbidden)


@pytest.mark.parametrize("name", sorted(cases()))
def test_data_free_encoder_uses_no_platform_transcendentals(name, monkeypatch):
    """Every reference case, replayed with the options its file carries, encodes to the committed
    bitstream with numpy's and libm's transcendentals disabled (after one ordinary encode, so
    numba has compiled its kernels)."""
    record = ROOT / "conformance/vectors" / f"v{FORMAT_VERSION}" / f"{name}.nnr"
    committed = record.read_bytes()
    assert same_bitstream(replay(record), committed)
    _forbid_transcendentals(monkeypatch)
    assert same_bitstream(replay(record), committed)
