"""The measuring tools' argument handling: compare_nncodec.py's qp lists and variant options,
probe_allocation.py's weighted offsets."""

import pytest

from tools.compare_nncodec import parse_options, parse_qps


def test_qp_lists_as_ranges_or_comma_lists():
    assert parse_qps("-8:-4:2") == [-8.0, -6.0, -4.0]
    assert parse_qps("-4,-12,-4") == [-12.0, -4.0]
    with pytest.raises(SystemExit, match="FIRST:LAST:STEP"):
        parse_qps("-4:-8:2")


def test_variant_options_are_parsed_as_json_and_validated():
    assert parse_options(["vector_qp=-4", "step_rule=channel"]) == {"vector_qp": -4, "step_rule": "channel"}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_options(["vector_qp"])
    with pytest.raises(SystemExit, match="the sweep sets the level"):
        parse_options(["qp=-20"])
    with pytest.raises(SystemExit, match="vector_qp must be"):
        parse_options(["vector_qp=-100"])
    with pytest.raises(SystemExit, match="unknown encoder option"):
        parse_options(["colour=blue"])


def test_probe_offsets_are_scaled_clipped_and_gridded_as_the_encoder_does():
    from nnr.probe import MAX_OFFSET
    from tools.probe_allocation import weighted

    offsets = {"a": 3.0, "b": -40.0, "c": 0.1}
    assert weighted(offsets, 0.0) == {}
    half = weighted(offsets, 0.5)
    assert half == {"a": 1.5, "b": -MAX_OFFSET}  # c rounds to 0 on the 0.25 grid and is dropped
    assert weighted(offsets, 1.0)["a"] == 3.0
