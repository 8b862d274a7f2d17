"""tools/bench.py --scaling: thread counts timed on a generated model, files checked identical."""

from tools import bench


def test_thread_scaling_rows_cover_each_method_and_count():
    rows = bench.bench_threads("2MB", [1, 2], repeat=1)
    assert {(r["method"], r["threads"]) for r in rows} == {(m, n) for m in ("nnr --data-free", "nnr default")
                                                           for n in (1, 2)}
    assert all(r["seconds"] > 0 and r["encode_MBps"] > 0 and r["decode_MBps"] > 0 for r in rows)
    table = bench.threads_table(rows, "2MB")
    assert table.count("| nnr ") == 4 and table.count("1.00×") >= 4
