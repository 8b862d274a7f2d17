"""tools/bench.py --scaling: thread counts timed on a generated model, files checked identical."""

from tools import bench


def test_thread_scaling_rows_cover_each_method_and_count():
    rows = bench.bench_threads("2MB", [1, 2], repeat=1)
    assert {(r["method"], r["threads"]) for r in rows} == {(m, n) for m in ("nnr --data-free", "nnr default")
                                                           for n in (1, 2)}
    assert all(r["seconds"] > 0 and r["encode_MBps"] > 0 and r["decode_MBps"] > 0 for r in rows)
    table = bench.threads_table(rows, "2MB")
    assert table.count("| nnr ") == 4 and table.count("1.00×") >= 4
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
