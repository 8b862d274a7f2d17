"""tools/dq_potential.py: its dependent quantizer is the 4-state machine it describes, its
Viterbi search is optimal, and its bodies are measured with nnr's own level coder."""

import itertools
import math

import numpy as np

from tools.dq_potential import (TRANSITIONS, _viterbi, code_dq, dq_quantize, dq_reconstruction,
                                equal_snr_saving, level_block, pick, states_of)
from tools.where_bytes_go import entropy_bytes


def _replay(levels: np.ndarray) -> np.ndarray:
    states, s = np.empty(levels.size, np.int64), 0
    for i, k in enumerate(np.abs(levels).tolist()):
        states[i] = s
        s = TRANSITIONS[s, k & 1]
    return states


def test_states_replay_like_the_state_machine():
    rng = np.random.default_rng(3)
    for _ in range(300):
        levels = rng.integers(-6, 7, size=int(rng.integers(1, 60)))
        assert np.array_equal(states_of(levels), _replay(levels))


def test_viterbi_beats_every_greedy_path():
    rng = np.random.default_rng(4)
    v = rng.laplace(scale=3.0, size=400)
    bits = np.zeros(64)   # λ = 0: pure squared error
    levels, states = _viterbi(v, 0.0, bits, TRANSITIONS)
    assert np.array_equal(states, _replay(levels))
    best = float(np.sum((np.abs(v) - np.abs(dq_reconstruction(levels, states))) ** 2))
    s, greedy = 0, 0.0
    for a in np.abs(v):   # the nearest reconstruction of the current state's quantizer, level by level
        odd = s >> 1
        k = min(range(64), key=lambda k: (a - (0.0 if k == 0 else 2.0 * k - odd)) ** 2)
        greedy += (a - (0.0 if k == 0 else 2.0 * k - odd)) ** 2
        s = TRANSITIONS[s, k & 1]
    assert best <= greedy + 1e-9
    assert np.all(np.sign(levels) * np.sign(v) >= 0)


def test_viterbi_finds_the_cheapest_path_of_all():
    rng = np.random.default_rng(7)
    for _ in range(20):
        v = np.clip(rng.laplace(scale=2.0, size=4), -10.0, 10.0)   # optimal levels stay below 7
        bits = np.array([1.0, 2.5, 3.5, 4.5, 5.5, 6.5, 7.0, 7.5])
        lam = float(rng.uniform(0.0, 2.0))
        levels, states = _viterbi(v, lam, bits, TRANSITIONS)

        def cost(mags) -> float:
            s, total = 0, 0.0
            for a, k in zip(np.abs(v), mags):
                r = 0.0 if k == 0 else 2.0 * k - (s >> 1)
                total += (a - r) ** 2 + lam * bits[min(k, bits.size - 1)]
                s = TRANSITIONS[s, k & 1]
            return total
        best = min(cost(m) for m in itertools.product(range(8), repeat=v.size))
        assert math.isclose(cost(np.abs(levels)), best, rel_tol=1e-12, abs_tol=1e-12)


def test_dq_uses_fewer_bits_than_rounding_for_the_same_error_on_laplacian_data():
    rng = np.random.default_rng(5)
    x = rng.laplace(scale=1.0, size=60000)
    levels, states = dq_quantize(x, 0.25, 0.0)
    dq_err = float(np.mean((dq_reconstruction(levels, states) * 0.25 - x) ** 2))
    dq_bits = 8 * entropy_bytes(np.abs(levels)) + np.count_nonzero(levels)
    # uniform rounding with the step that gives the same squared error
    step = float(np.sqrt(12.0 * dq_err))
    q = np.round(x / step).astype(np.int64)
    assert abs(float(np.mean((q * step - x) ** 2)) / dq_err - 1.0) < 0.05
    sq_bits = 8 * entropy_bytes(np.abs(q)) + np.count_nonzero(q)
    assert dq_bits < 0.98 * sq_bits


def test_code_dq_keeps_the_gain_and_codes_with_nnr():
    from nnr.codec.lossy_encode import encode_lossy
    from nnr.codec.lossy_decode import lossy_step

    rng = np.random.default_rng(6)
    x = rng.laplace(scale=0.02, size=(64, 48))
    ecsq = encode_lossy(x, 0.01)
    recon, body, saved = code_dq(x, ecsq.body, float(lossy_step(ecsq.body)), 0.2)
    assert recon.shape == x.shape
    assert abs(float(np.sum(recon * x)) / float(np.sum(x * x)) - 1.0) < 1.0 / 128
    _, levels = level_block(body, x.size)   # the body carries the DQ levels, which rebuild recon
    scale = float(np.sum(x * x)) / float(np.sum(dq_reconstruction(levels, states_of(levels)).reshape(x.shape) * x))
    ratio = recon / np.where(levels.reshape(x.shape) == 0, np.nan, dq_reconstruction(levels, states_of(levels)).reshape(x.shape))
    assert np.nanmax(np.abs(ratio / scale - 1.0)) < 1.0 / 128
    assert np.all(recon[levels.reshape(x.shape) == 0] == 0)
    assert saved >= 0.0
    assert float(np.mean((recon - x) ** 2)) < float(np.mean(x * x))


def test_picks_and_equal_snr_saving():
    points = [{"qp": q, "ecsq_bytes": 1000 - 100 * i, "dq_bytes": 950 - 100 * i, "state_saves": 10.0,
               "ecsq_err": 1.0 + i, "dq_err": 1.0 + i, "energy": 100.0,
               "ecsq_metric": 35.0 - 4 * i, "dq_metric": 34.0 - 4 * i} for i, q in enumerate([-12, -10, -8, -6])]
    strict = pick(points, "snr_db", "strict", "ecsq")
    assert strict["qp"] == -10 and strict["bytes"] == 900
    assert pick(points, "snr_db", "strict", "dq")["bytes"] == 850
    assert pick(points, "snr_db", "strict", "dq_state")["bytes"] == 840
    assert pick(points, "snr_db", "loose", "dq")["qp"] == -6
    assert pick([dict(p, dq_metric=10.0) for p in points], "snr_db", "loose", "dq") is None
    expected = np.mean([1.0 - (950 - 100 * i) / (1000 - 100 * i) for i in range(4)])   # same error, fewer bytes
    assert math.isclose(equal_snr_saving(points), expected, rel_tol=1e-9)
