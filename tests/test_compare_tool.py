"""tools/compare_nncodec.py's argument parsing: qp lists and the variant options it measures."""

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
