"""tools/where_bytes_go.py accounts for every byte of a file, and its entropy bounds are sound."""

import numpy as np

import nnr
from conformance.toy_models import complex_linear, mlp
from tools.where_bytes_go import entropy_bytes, neighbour_context, split_file, table_bytes


def test_every_byte_is_accounted_for():
    cases = [(mlp(seed=5), {"qp": -20}), (mlp(seed=5), {"qp": -30, "step_rule": "channel"}),
             (mlp(seed=5), {"lossless": True}), (complex_linear(), {"qp": -20})]
    for model, options in cases:
        data = nnr.encode(model, **options)
        s = split_file("mlp", "test", data)
        assert s.container + s.side + s.words + s.other == s.total == len(data)
        assert s.meta > 0 and s.graph > 0 and s.index > 0 and s.units > 0
        assert s.container == s.meta + s.graph + s.index + 32
        if options.get("lossless"):
            assert s.words == 0 and s.other > 0
        else:
            assert s.other == 0 and s.words > 0 and 0 < s.context <= s.order0 + 1e-9


def test_entropy_bounds():
    assert entropy_bytes(np.zeros(1000, dtype=np.int32)) == 0.0
    two = np.tile([1, -1], 400)
    assert abs(entropy_bytes(two) - 100.0) < 1e-9  # 800 symbols × 1 bit
    runs = np.repeat([0, 1, 0, 2], 250)  # long runs: the neighbours' magnitudes predict almost everything
    assert entropy_bytes(runs, neighbour_context(runs)) < 0.05 * entropy_bytes(runs)


def test_static_tables_cost_at_least_the_entropy():
    rng = np.random.default_rng(1)
    levels = np.round(rng.laplace(scale=2.0, size=5000)).astype(np.int32)
    assert table_bytes(levels) >= entropy_bytes(levels)
    ctx = neighbour_context(levels)
    assert table_bytes(levels, ctx) >= entropy_bytes(levels, ctx)
    assert table_bytes(levels, ctx) > table_bytes(levels)  # independent levels: contexts only add tables


def test_context_tables_are_costed_against_one_table_exactly():
    from conformance.toy_models import mlp as toy

    scaled = nnr.encode(toy(seed=30, hidden=256, row_scales=True), qp=-8, probe=False)  # fc1 takes context tables
    s = split_file("mlp", "test", scaled)
    assert s.context_blocks >= 1 and s.one_table > s.blocks > 0
    plain = split_file("mlp", "test", nnr.encode(mlp(seed=5), qp=-20, probe=False))
    assert plain.context_blocks == 0 and plain.one_table == plain.blocks   # one table: the same bytes
