"""nnr-search: the Pareto front, its JSON and plot, and replaying a point with nnr-encode --options."""

import json

import numpy as np
import pytest

from conformance.inputs import mnist_test
from nnr.cli import encode_main
from nnr.search import front_table, main, pareto_front, settings
from tests.conftest import ROOT, exit_code

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"


def _p(size, value):
    return {"bytes": size, "metrics": {"m": value}}


def test_pareto_front_keeps_only_undominated_points():
    points = [_p(10, 0.5), _p(20, 0.9), _p(15, 0.4), _p(30, 0.9), _p(25, 0.95), _p(10, 0.6)]
    front = pareto_front(points, "m")
    assert [(p["bytes"], p["metrics"]["m"]) for p in front] == [(10, 0.6), (20, 0.9), (25, 0.95)]


def test_fixed_precision_quantizers_are_tried_once():
    todo = settings(["ecsq", "e4m3"], [-30.0, -20.0])
    assert todo == [{"quantizer": "ecsq", "qp": -30.0}, {"quantizer": "ecsq", "qp": -20.0}, {"quantizer": "e4m3"}]


def test_pruning_levels_cross_every_setting():
    todo = settings(["ecsq", "e4m3"], [-30.0], ("", "magnitude:0.5", "filters:l1:0.1"), prune_global=True)
    assert todo == [
        {"quantizer": "ecsq", "qp": -30.0}, {"quantizer": "e4m3"},
        {"quantizer": "ecsq", "qp": -30.0, "prune": "magnitude:0.5", "prune_global": True},
        {"quantizer": "e4m3", "prune": "magnitude:0.5", "prune_global": True},
        {"quantizer": "ecsq", "qp": -30.0, "prune": "filters:l1:0.1", "prune_global": False},
        {"quantizer": "e4m3", "prune": "filters:l1:0.1", "prune_global": False}]


def test_search_over_pruning_levels_replays(tmp_path, calibration, capsys):
    assert main([str(MNIST), "--calibration", str(calibration), "--quantizers", "ecsq", "--qps=-20",
                 "--prunes", "none,magnitude:0.5", "--global", "--json", "-q"]) == 0
    doc = json.loads(capsys.readouterr().out)
    pruned = [p for p in doc["points"] if p["options"].get("prune")]
    assert len(doc["points"]) == 2 and len(pruned) == 1
    assert pruned[0]["bytes"] < [p for p in doc["points"] if p is not pruned[0]][0]["bytes"]
    point = tmp_path / "point.json"
    point.write_text(json.dumps(pruned[0]))
    replay = tmp_path / "replay.nnr"
    assert encode_main([str(MNIST), "-o", str(replay), "--options", str(point), "-q"]) == 0
    assert replay.stat().st_size == pruned[0]["bytes"]


@pytest.fixture
def calibration(tmp_path):
    x, y = mnist_test()
    path = tmp_path / "cal.npz"
    np.savez(path, image=x[:100], labels=y[:100])
    return path


def test_search_writes_front_and_plot_and_a_point_replays(tmp_path, calibration, capsys):
    argv = [str(MNIST), "--calibration", str(calibration), "--quantizers", "ecsq,deadzone:0.7,e4m3",
            "--qps=-28,-16", "--json", "--plot", str(tmp_path), "-q", "--metric", "snr_db"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert captured.err == ""
    assert len(doc["points"]) == 5 and doc["front"]
    table = front_table(doc)                     # what the command prints without --json
    assert "Pareto front by size and snr_db" in table and len(table.splitlines()) == 2 + len(doc["front"])
    assert doc["front"] == pareto_front(doc["points"], "snr_db")
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    point = tmp_path / "point.json"
    point.write_text(json.dumps(doc["front"][0]))
    replay = tmp_path / "replay.nnr"
    assert encode_main([str(MNIST), "-o", str(replay), "--options", str(point), "-q"]) == 0
    assert replay.stat().st_size == doc["front"][0]["bytes"]


@pytest.mark.parametrize("extra,message", [(["--quantizers", "fancy"], "unknown quantizer"),
                                           (["--qps", "a,b"], "--qps"),
                                           (["--prunes", "none,magnitude:1.5"], "[0, 1)"),
                                           (["--prunes", "none,shrink:0.5"], "unknown pruning method")])
def test_search_errors(calibration, capsys, extra, message):
    code = exit_code(main, [str(MNIST), "--calibration", str(calibration), "-q"] + extra)
    assert code == 2 and message in capsys.readouterr().err


def test_options_replay_refuses_mixing_and_bad_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = tmp_path / "x.nnr"
    assert encode_main([str(MNIST), "-o", str(out), "--options", str(bad)]) == 2
    with pytest.raises(SystemExit):
        encode_main([str(MNIST), "-o", str(out), "--options", str(bad), "--qp", "-20"])
    bad.write_text('{"qp": -20, "colour": "red"}')
    assert encode_main([str(MNIST), "-o", str(out), "--options", str(bad)]) == 2
    assert "unknown encoder option" in capsys.readouterr().err and not out.exists()


def test_the_sweep_decodes_its_own_files_whatever_the_default_memory_limit(tmp_path, monkeypatch):
    import onnx

    import nnr.decoder
    from conformance.toy_models import mlp
    from nnr.calibration import Calibration
    from nnr.search import sweep

    monkeypatch.setattr(nnr.decoder, "DEFAULT_MEMORY_FLOOR", 1 << 10)
    monkeypatch.setattr(nnr.decoder, "MEMORY_PER_FILE_BYTE", 1)
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp(seed=4), str(path))
    x = np.random.default_rng(2).standard_normal((16, 32)).astype(np.float32)
    points, out_of_time = sweep(path, Calibration({"x": x}), [{"qp": -30.0}, {"qp": -10.0}])
    assert not out_of_time and [p["options"]["qp"] for p in points] == [-30.0, -10.0]
    assert points[0]["metrics"]["snr_db"] > points[1]["metrics"]["snr_db"]
