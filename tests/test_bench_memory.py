"""tools/bench_memory.py: the generated model runs, and the tool measures a real encode and decode."""

import json

import numpy as np
import onnx

from tools import bench_memory


def test_generated_model_is_valid_and_its_weights_live_outside(tmp_path):
    path = bench_memory.make_model(tmp_path, 3 * 4 * 12 * 64 * 64, d=64)   # three blocks of 12·d² floats
    model = onnx.load(path, load_external_data=False)
    onnx.checker.check_model(path)
    assert len(model.graph.initializer) == 18 and all(t.data_location == onnx.TensorProto.EXTERNAL
                                                      for t in model.graph.initializer)
    weights = bench_memory._weights(path)
    assert sum(w.nbytes for w in weights.values()) == (tmp_path / "model.onnx.data").stat().st_size
    assert bench_memory.worst_tensor_snr(path, path) == np.inf


def test_the_tool_measures_encode_and_decode(tmp_path):
    out = tmp_path / "m.json"
    assert bench_memory.main(["--sizes", "2MB", "--dir", str(tmp_path), "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert row["encode_peak_rss"] > row["weight_bytes"] / 10 and row["decode_peak_rss"] > 0
    assert 20 < row["worst_tensor_snr_db"] < 80 and row["nnr_bytes"] < row["weight_bytes"]


def test_300mb_of_external_data_streams_through_encode_and_decode(tmp_path):
    """The path of the 2.5 GB benchmark at CI size: each command in its own process, every tensor
    checked. Streaming means the peak does not follow the weights: from 300 MB to 600 MB it grows
    by well under the 300 MB added (a step holding the whole model would add all of it). Both are
    above the decoder's two batches of 2**25 weights, below which it holds less. The decode runs on
    one thread: on several, how far the pool gets ahead of the placing thread moves its peak by up
    to a batch from run to run."""
    out = tmp_path / "m.json"
    assert bench_memory.main(["--sizes", "300MB,600MB", "--dir", str(tmp_path), "--json", str(out),
                              "--decode-flags", "--threads 1"]) == 0
    run = json.loads(out.read_text())
    assert run["decode_flags"] == "--threads 1"
    small, large = run["rows"]
    assert small["weight_bytes"] > 290e6 and large["weight_bytes"] > 590e6
    for row in (small, large):
        assert 20 < row["worst_tensor_snr_db"] < 80 and row["nnr_bytes"] < row["weight_bytes"] / 3
    added = large["weight_bytes"] - small["weight_bytes"]
    assert large["encode_peak_rss"] - small["encode_peak_rss"] < 0.75 * added
    assert large["decode_peak_rss"] - small["decode_peak_rss"] < 0.75 * added
    for data in tmp_path.rglob("*.data"):   # generated weights and decoded copies
        data.unlink()
