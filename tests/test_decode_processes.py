"""tools/decode_processes.py: tensors shared out to worker processes rebuild the decoder's bytes."""

import pytest

import nnr
from conformance.toy_models import mlp
from tools import decode_processes as tool


def test_worker_shares_rebuild_every_tensor_at_its_offset(tmp_path):
    path = tmp_path / "m.nnr"
    nnr.encode_to_file(mlp(seed=5, hidden=256), path, probe=False)
    shares, size = tool.layout(path, 2)
    assert all(shares) and sorted(n for share in shares for n, _ in share) == sorted(nnr.open(path).keys())
    f = nnr.open(path)
    assert size == sum(len(f.get_bytes(n)) for n in f.keys())
    data = tmp_path / "w.data"
    data.write_bytes(bytes(size))
    for share in shares:
        tool.decode_share(str(path), share, str(data))
    tool.check(path, shares, data)
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 1
    data.write_bytes(bytes(raw))
    with pytest.raises(SystemExit, match="differs"):
        tool.check(path, shares, data)


def test_worker_processes_are_started_and_a_failure_is_reported(tmp_path):
    tool.run_processes(tool.import_only, [()])
    with pytest.raises(SystemExit, match="worker process failed"):
        tool.run_processes(tool.decode_share, [(str(tmp_path / "missing.nnr"), [], str(tmp_path / "x.data"))])
    rows = [{"weight_bytes": 10 ** 6, "processes": 2, "repeat": 1,
             "seconds": {"one thread": 2.0, "processes": 1.0, "start-up": 0.5}}]
    assert "| 1 MB | 2.00 | 1.00 | 2.00× | 0.50 |" in tool.table(rows, "cmd")
    with pytest.raises(SystemExit, match="at least 1"):
        tool.main(["--processes", "0"])
