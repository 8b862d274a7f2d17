"""tools/bench.py: --scaling (thread counts timed on a generated model, files checked identical) and the --baseline harness."""

from conformance.toy_models import mlp
from tools import bench


def test_thread_scaling_rows_cover_each_method_and_count():
    rows = bench.bench_threads("2MB", [1, 2], repeat=1)
    assert {(r["method"], r["threads"]) for r in rows} == {(m, n) for m in ("nnr --data-free", "nnr default")
                                                           for n in (1, 2)}
    assert all(r["seconds"] > 0 and r["encode_MBps"] > 0 and r["decode_MBps"] > 0 for r in rows)
    assert all(r["decode_alone_seconds"] > 0 and r["concurrent_decode_seconds"] > 0 for r in rows if r["threads"] == 2)
    assert all(r["to_file_seconds"] > 0 for r in rows)
    table = bench.threads_table(rows, "2MB")
    assert table.count("| nnr ") == 4 and table.count("1.00×") >= 8   # speed-ups and ceiling of the 1-thread rows
    for r in rows:
        for key in ("encode_steal", "decode_steal"):
            assert r[key] is None or 0.0 <= r[key] <= 1.0


def test_stolen_share_comes_from_the_machine_counters(monkeypatch):
    ticks = iter([(1000, 10), (1400, 110)])
    monkeypatch.setattr(bench, "cpu_ticks", lambda: next(ticks))
    seconds, stolen = bench.timed_steal(lambda: None, repeat=1)
    assert seconds >= 0 and stolen == 0.25
    monkeypatch.setattr(bench, "cpu_ticks", lambda: None)
    assert bench.timed_steal(lambda: None, repeat=1)[1] is None


def test_cpu_ticks_reads_the_steal_field_and_leaves_idle_out(tmp_path):
    stat = tmp_path / "stat"   # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text("cpu  100 2 30 5000 40 6 7 80 9 0\ncpu0 50 1 15 2500 20 3 3 40 4 0\n")
    assert bench.cpu_ticks(stat) == (100 + 2 + 30 + 6 + 7 + 80, 80)
    stat.write_text("cpu  1 2 3\n")
    assert bench.cpu_ticks(stat) is None
    assert bench.cpu_ticks(tmp_path / "missing") is None


def test_ceiling_is_the_speed_up_of_independent_processes():
    two = {"threads": 2, "decode_alone_seconds": 2.0, "concurrent_decode_seconds": 2.5}   # two at once: 2.5 s
    assert bench.ceiling(two) == 2 * 2.0 / 2.5
    assert bench.ceiling({"threads": 1}) == 1.0
    assert bench.ceiling({"threads": 2}) is None


def test_timed_rounds_alternates_and_counts_steal_per_function(monkeypatch):
    calls = []
    ticks = iter([(0, 0), (100, 10), (100, 10), (300, 10), (300, 10), (400, 30), (400, 30), (600, 30)])
    monkeypatch.setattr(bench, "cpu_ticks", lambda: next(ticks))
    got = bench.timed_rounds({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeat=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]   # a warm-up each, then rounds in turn
    assert got["a"][1] == (10 + 20) / (100 + 100) and got["b"][1] == 0.0


def test_concurrent_decodes_times_every_round(tmp_path):
    path = _toy_file(tmp_path)
    alone, at_once = bench.concurrent_decodes(path, 2, repeat=2)
    assert alone > 0 and at_once > 0


def test_concurrent_decodes_stops_when_a_worker_fails(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="concurrent decode"):
        bench.concurrent_decodes(tmp_path / "missing.nnr", 2, repeat=1)


def test_concurrent_decodes_stops_at_once_when_one_worker_of_several_fails(tmp_path):
    import time

    import pytest

    good = _toy_file(tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(SystemExit, match="concurrent decode"):   # worker 0 waits at the barrier for worker 1
        bench.concurrent_decodes(good, 2, repeat=1, paths=[good, tmp_path / "missing.nnr"])
    assert time.perf_counter() - t0 < 50   # the waiting worker is released, not given a minute to finish
    import multiprocessing

    assert not multiprocessing.active_children()


def _toy_file(tmp_path):
    import nnr

    path = tmp_path / "m.nnr"
    nnr.encode_to_file(mlp(), path, probe=False)
    return path


def test_baseline_harness_imports_every_layer_from_the_tree(tmp_path):
    import subprocess
    import sys

    for folder in ("nnr", "codec", "formats"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text(f"WHERE = {folder!r}\n")
    (tmp_path / "codec" / "levelcode.py").write_text("TREE = True\n")
    probe = "import nnr, nnr.codec, nnr.formats, nnr.codec.levelcode as lc; print(nnr.WHERE, nnr.codec.WHERE, " \
            "nnr.formats.WHERE, lc.TREE, lc.__file__)"
    out = subprocess.run([sys.executable, "-c", bench.TREE_IMPORTS + probe, str(tmp_path)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[:4] == ["nnr", "codec", "formats", "True"] and out[4].startswith(str(tmp_path))


def test_baseline_rows_at_head_match_this_checkout(tmp_path):
    import onnx
    import pytest

    path = tmp_path / "m.onnx"
    onnx.save(mlp(seed=1), path)
    rows = bench.bench_baseline({"name": "toy", "path": path}, "HEAD", repeat=2)
    by_method = {r["method"]: r for r in rows}
    assert len(rows) == 6
    for method in ("nnr default", "nnr --lossless"):
        at_head, here = by_method[f"{method} at HEAD"], by_method[f"{method} at this checkout"]
        assert at_head["encode_MBps"] > 0 and here["decode_MBps"] > 0
    if _dirty_codec():
        pytest.skip("uncommitted changes to nnr, codec or formats: HEAD's files may differ from this checkout's")
    for method in ("nnr default", "nnr --lossless"):   # HEAD's code is this checkout's: the same files
        assert by_method[f"{method} at HEAD"]["bytes"] == by_method[f"{method} at this checkout"]["bytes"]


def _dirty_codec() -> bool:
    import subprocess

    return bool(subprocess.run(["git", "-C", str(bench.ROOT), "status", "--porcelain", "nnr", "codec", "formats"],
                               capture_output=True, text=True).stdout.strip())
