"""tools/lock_step_threads.py: a decode's lock steps recorded, cut in halves and timed three ways."""

from types import SimpleNamespace

import pytest

import nnr
from conformance.toy_models import mlp
from nnr.formats.container import CODING_LOSSY
from tools import lock_step_threads as tool


def test_halves_cut_between_blocks_at_half_the_symbols():
    blocks = [SimpleNamespace(count=c) for c in (4, 4)]
    assert tool.halves(blocks) == (blocks[:1], blocks[1:])
    blocks = [SimpleNamespace(count=1) for _ in range(4)]
    assert tool.halves(blocks) == (blocks[:2], blocks[2:])
    blocks = [SimpleNamespace(count=9), SimpleNamespace(count=1)]
    assert tool.halves(blocks) == (blocks[:1], blocks[1:]) and tool.larger_half([blocks]) == 0.9
    one = [SimpleNamespace(count=5)]
    assert tool.halves(one) == (one, []) and tool.larger_half([one]) == 1.0


def test_lock_steps_are_recorded_cut_in_halves_and_timed():
    data = nnr.encode(mlp(seed=4, hidden=512), probe=False)
    batches = tool.recorded_batches(data)
    lossy = [u for u in nnr.open(data).units() if u.coding == CODING_LOSSY]
    assert batches and sum(b.count for blocks in batches for b in blocks) == sum(u.numel for u in lossy) > 0
    tool.check_halves(batches)
    seconds = tool.measure(batches, repeat=1)
    assert list(seconds) == ["whole batch, one thread", "halves one after the other, one thread",
                             "halves at once, two threads"] and all(s > 0 for s in seconds.values())
    result = {"size": "toy", "file_bytes": len(data), "batches": len(batches), "symbols": 1, "lanes": 1,
              "larger_half": tool.larger_half(batches), "repeat": 1, "seconds": seconds}
    text = tool.table(result, "cmd")
    assert text.startswith("```sh\ncmd\n```") and text.count("| halves") == 2 and "at most" in text


def test_halves_that_decode_otherwise_are_reported(monkeypatch):
    batches = tool.recorded_batches(nnr.encode(mlp(seed=4, hidden=512), probe=False))
    monkeypatch.setattr(tool, "halves", lambda blocks: (blocks[1:], blocks[:1]))   # out of order: other symbols
    with pytest.raises(SystemExit, match="other symbols"):
        tool.check_halves([b for b in batches if len(b) > 1])
    with pytest.raises(SystemExit, match="at least 1"):
        tool.main(["--repeat", "0"])
