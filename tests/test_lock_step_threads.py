"""tools/lock_step_threads.py: a decode's lock steps recorded, cut in halves and timed three ways."""

import pytest

import nnr
from conformance.toy_models import mlp
from tools import lock_step_threads as tool


def test_lock_steps_are_recorded_cut_in_halves_and_timed():
    data = nnr.encode(mlp(seed=4, hidden=512), probe=False)
    batches = tool.recorded_batches(data)
    assert batches and all(batches)
    for blocks in batches:
        first, second = tool.halves(blocks)
        assert first + second == blocks and first
    tool.check_halves(batches)
    seconds = tool.measure(batches, repeat=1)
    assert list(seconds) == ["whole batch, one thread", "halves one after the other, one thread",
                             "halves at once, two threads"] and all(s > 0 for s in seconds.values())
    result = {"size": "toy", "file_bytes": len(data), "batches": len(batches), "symbols": 1, "lanes": 1,
              "repeat": 1, "seconds": seconds}
    text = tool.table(result, "cmd")
    assert text.startswith("```sh\ncmd\n```") and text.count("| halves") == 2 and "| 1.00× |" in text


def test_halves_that_decode_otherwise_are_reported(monkeypatch):
    batches = tool.recorded_batches(nnr.encode(mlp(seed=4, hidden=512), probe=False))
    monkeypatch.setattr(tool, "halves", lambda blocks: (blocks[1:], blocks[:1]))   # out of order: other symbols
    with pytest.raises(SystemExit, match="other symbols"):
        tool.check_halves([b for b in batches if len(b) > 1])
    with pytest.raises(SystemExit, match="at least 1"):
        tool.main(["--repeat", "0"])
