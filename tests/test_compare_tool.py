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


def test_tensor_rd_matches_errors_and_interpolates_bytes_in_log_log():
    import numpy as np

    from tools.tensor_rd import bytes_at, mse, nnr_curve, nnr_tensor, parse_hybrid, step_for

    curve = [(0.0, 100, 1e-2), (2.0, 50, 4e-2)]
    assert bytes_at(curve, 2e-2) == pytest.approx(100 * 0.5 ** 0.5)   # halfway in log error: geometric mean
    assert bytes_at(curve, 1e-1) is None and bytes_at(curve, 0.0) is None
    x = np.random.default_rng(0).laplace(0, 0.05, (64, 48)).astype(np.float32)
    for rule in ("mse", "gain"):
        curve = nnr_curve(x, rule)
        target = sorted(m for _, _, m in curve)[len(curve) // 2]
        got = mse(nnr_tensor(x, step_for(x, target * 0.9, curve, rule), rule)[0], x)
        assert 0.8 * target < got <= 0.9 * target
    assert parse_hybrid("-14", ["a", "b"]) == {"a": -14, "b": -14}
    assert parse_hybrid("b=-20", ["a", "b"]) == {"a": -12, "b": -20}
    with pytest.raises(SystemExit, match="not measured"):
        parse_hybrid("c=-20", ["a", "b"])
    with pytest.raises(SystemExit, match="NAME=QP"):
        parse_hybrid("a=x", ["a"])


def test_compare_runs_picks_each_runs_smallest_passing_file_and_pairs_equal_qps(tmp_path):
    import json

    from tools.compare_runs import main

    def point(qp, size, snr, target=None):
        return {"qp": qp, "bytes": size, "metrics": {"snr_db": snr}, "seconds": 0.0, "payload": None,
                "payload_1d": None, "target": target}

    before = {"m": {"metric": "snr_db", "nnr": [point(-8.0, 100, 31.0), point(-6.0, 80, 21.0)],
                    "nnr_probe": [point(None, 70, 20.5, target=14.0)]}}
    after = {"m": {"metric": "snr_db", "nnr": [point(-8.0, 100, 32.0), point(-6.0, 80, 22.0),
                                               point(-4.0, 60, 20.1)],
                   "nnr_probe": [point(None, 66, 20.2, target=14.0)]}}
    paths = []
    for name, run in (("a", before), ("b", after)):
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps({"models": run}))
    out = tmp_path / "t.md"
    main([str(paths[0]), str(paths[1]), "--markdown", str(out)])
    text = out.read_text()
    assert "| m | 100 (qp -8) | 100 (qp -8) | +0.0 % | 80 (qp -6) | 60 (qp -4) | +25.0 % |" in text
    assert "| m | loose | qp -6 | 80 B, 21.0 dB | 80 B, 22.0 dB |" in text
    main([str(paths[0]), str(paths[1]), "--sweep", "best", "--markdown", str(out)])
    assert "70 (probe 14 dB) | 60 (qp -4) | +14.3 % |" in out.read_text()
    main([str(paths[0]), str(paths[1]), "--sweep", "probe", "--markdown", str(out)])
    text = out.read_text()
    assert "| m | not met | not met | – | 70 (probe 14 dB) | 66 (probe 14 dB) | +5.7 % |" in text   # rule points left out
    assert "| m | loose | probe 14 dB | 70 B, 20.5 dB | 66 B, 20.2 dB |" in text
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SystemExit, match="not a compare_nncodec.py --json run"):
        main([str(tmp_path / "bad.json"), str(paths[1])])


def test_an_update_replaces_the_models_measured_again_and_keeps_the_rest():
    import json

    from tools.compare_nncodec import ModelResult, Point, merged, render, to_json

    def result(name, nnr_bytes):
        snr = {"snr_db": 31.0}
        return ModelResult(name, "task", "snr_db", "sha", 10, Point(None, nnr_bytes, snr, 0.0),
                           [Point(-8.0, nnr_bytes, snr, 0.0)], [Point(-20.0, 200, snr, 0.0, payload=150)],
                           [Point(None, nnr_bytes + 5, snr, 0.0, target=30.0)])

    earlier = json.loads(json.dumps(to_json("first", [result("a", 100), result("b", 120)])))
    loaded = [ModelResult.from_json(d) for d in earlier["models"].values()]
    assert loaded == [result("a", 100), result("b", 120)]
    both = merged(loaded, [result("b", 80), result("c", 90)])
    assert [(r.name, r.nnr[0].bytes) for r in both] == [("a", 100), ("b", 80), ("c", 90)]
    text = render("first\nsecond", both)
    assert text.startswith("```sh\nfirst\nsecond\n```") and "| b | snr_db | 80 |" in text


@pytest.mark.parametrize("doc, message", [
    ({"models": {}}, "not a JSON this tool wrote"),
    ({"command": "c", "nnr": "0.0.1", "nncodec": "2.1.3", "models": {}}, "run the whole corpus again"),
])
def test_an_update_refuses_runs_it_cannot_extend(tmp_path, doc, message):
    import json

    from tools.compare_nncodec import main

    path = tmp_path / "run.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match=message):
        main(["--update", str(path), "--models", "mnist_cnn"])
    with pytest.raises(SystemExit, match="needs --models"):
        main(["--update", str(path)])


def _probe(target, snr, size=None):
    from tools.compare_nncodec import Point

    return Point(None, int(1000 * target) if size is None else size, {"snr_db": snr}, 0.0, target=float(target))


def test_probe_targets_are_refined_where_a_threshold_goes_from_missed_to_met():
    from tools.compare_nncodec import refine_targets

    sweep = [_probe(14, 15.0), _probe(18, 21.0), _probe(22, 26.0), _probe(26, 29.0), _probe(30, 34.0)]
    assert refine_targets(sweep, "snr_db", 1.0) == [15.0, 16.0, 17.0, 27.0, 28.0, 29.0]
    assert refine_targets(sweep, "snr_db", 2.0) == [16.0, 28.0]
    assert refine_targets(sweep, "snr_db", 3.0) == [17.0, 29.0]     # a step that does not divide the gap
    assert refine_targets(sweep, "snr_db", 0.3)[:3] == [14.3, 14.6, 14.9]   # rounded, not 14.899999…
    assert refine_targets(sweep, "snr_db", 0.0) == [] == refine_targets(sweep, "snr_db", -1.0)
    refined = sweep + [_probe(t, 20.0) for t in (15, 16, 17)] + [_probe(t, 29.5) for t in (27, 28, 29)]
    assert refine_targets(refined, "snr_db", 1.0) == []   # measured: nothing left between
    both = [_probe(10, 12.0), _probe(14, 31.0)]           # one pair crosses both thresholds: each target once
    assert refine_targets(both, "snr_db", 1.0) == [11.0, 12.0, 13.0]
    jumpy = [_probe(10, 31.0, 8), _probe(14, 29.0, 6), _probe(18, 32.0, 9), _probe(22, 25.0, 10), _probe(26, 33, 12)]
    assert refine_targets(jumpy, "snr_db", 2.0) == [16.0, 24.0]   # every crossing, even past a smaller passing file
    assert refine_targets([_probe(10, 40.0), _probe(14, 41.0)], "snr_db", 1.0) == []   # met from the start


def test_measuring_a_model_refines_its_probe_sweep(monkeypatch):
    from types import SimpleNamespace

    from onnx import ModelProto

    import tools.compare_nncodec as tool

    monkeypatch.setattr(tool, "_model_task", lambda name, manifest: tool.ModelTask(name, None, "snr_db", ModelProto(),
                                                                                   None, None))
    def point(source, qp, task, ref, target=None, options=None):   # probe: target + 8 dB; rule: -3 dB a qp
        if target is not None:
            return tool.Point(None, int(1000 * target), {"snr_db": target + 8.0}, 0.0, target=target)
        return tool.Point(qp, 1 if qp is None else int(-1000 * qp), {"snr_db": 40.0 if qp is None else -3.0 * qp}, 0.0)

    monkeypatch.setattr(tool, "nnr_point", point)
    monkeypatch.setattr(tool, "nncodec_sweep", lambda *args: ([tool.Point(-20.0, 99, {"snr_db": 40.0}, 0.0)], False))
    manifest = SimpleNamespace(models={"toy": SimpleNamespace(task="t")})
    result = tool.measure_model("toy", manifest, None, [-10.0], [-20.0], False, [10.0, 14.0, 18.0, 22.0])
    assert [p.target for p in result.nnr_probe] == [10, 11, 12, 13, 14, 18, 19, 20, 21, 22]
    assert result.nnr and result.nncodec[0].bytes == 99 and result.nnr_default.target is None
    plain = tool.measure_model("toy", manifest, None, [-10.0], [-20.0], False, [10.0, 14.0, 18.0, 22.0],
                               target_step=0.0)
    assert [p.target for p in plain.nnr_probe] == [10, 14, 18, 22]


def _earlier_run(tmp_path, *names):
    """An earlier run's JSON holding ``names`` (snr_db models), and their results."""
    import json

    from tools.compare_nncodec import ModelResult, Point, to_json

    snr = {"snr_db": 31.0}
    results = [ModelResult(n, "task", "snr_db", "sha", 10, Point(None, 1, snr, 0.0), [Point(-8.0, 100, snr, 0.0)],
                           [Point(-20.0, 200, snr, 0.0, payload=150)],
                           [Point(None, 5, {"snr_db": 18.0}, 0.0, target=10.0),
                            Point(None, 9, {"snr_db": 31.0}, 0.0, target=14.0)], "a note") for n in names]
    path = tmp_path / "run.json"
    path.write_text(json.dumps(to_json("first", results)))
    return path, results


@pytest.mark.parametrize("flag", [["--nnr-targets", "2:46:2"], ["--nnr-qps=-40:-10:1"], ["--nnc-qps=-40:-20:1"],
                                  ["--refresh-nncodec"]])
def test_refining_refuses_the_flags_it_would_ignore(tmp_path, flag):
    from tools.compare_nncodec import main

    path, _ = _earlier_run(tmp_path, "mnist_cnn")
    with pytest.raises(SystemExit, match=f"{flag[0].split('=')[0]} would change them"):
        main(["--update", str(path), "--refine-probe", "--models", "mnist_cnn", *flag])


def test_refining_refuses_what_it_cannot_refine(tmp_path):
    from tools.compare_nncodec import main

    path, _ = _earlier_run(tmp_path, "mnist_cnn")
    with pytest.raises(SystemExit, match="mnist_cnn: the model file differs"):   # the real file's sha256 is not "sha"
        main(["--update", str(path), "--refine-probe", "--models", "mnist_cnn"])
    with pytest.raises(SystemExit, match="give it with --update"):
        main(["--refine-probe", "--models", "mnist_cnn"])
    with pytest.raises(SystemExit, match="has no ppocr_cls to refine"):
        main(["--update", str(path), "--refine-probe", "--models", "ppocr_cls"])
    for step in ("-1", "nan"):
        with pytest.raises(SystemExit, match="0 or more"):
            main(["--update", str(path), "--models", "mnist_cnn", "--nnr-target-step", step])


def test_refining_keeps_an_earlier_run_and_checks_every_model_first(tmp_path, monkeypatch):
    import json

    import tools.compare_nncodec as tool
    from tools.compare_nncodec import ModelResult, Point, main

    path, (first, second) = _earlier_run(tmp_path, "mnist_cnn", "ppocr_cls")
    monkeypatch.setattr(tool, "_model_task", lambda name, manifest: tool.ModelTask(name, None, "snr_db", None, None,
                                                                                   None))
    monkeypatch.setattr(tool, "model_sha256", lambda model, path: "sha")
    defaults = {"mnist_cnn": 31.0 + 0.5 * tool.SAME_SNR_DB, "ppocr_cls": 31.0 + 2 * tool.SAME_SNR_DB}
    monkeypatch.setattr(tool, "_nnr_default", lambda source, task, ref, metric, log, options: Point(
        None, 1, {"snr_db": defaults[log.__self__.name]}, 5.0))
    measured = []
    monkeypatch.setattr(tool, "_probe_point", lambda m, target, options: measured.append((m.name, target)) or Point(
        None, 7, {"snr_db": 40.0}, 0.0, target=target))
    argv = ["--update", str(path), "--refine-probe", "--models", "mnist_cnn,ppocr_cls", "--nnr-target-step", "2"]
    with pytest.raises(SystemExit, match="stale .*\\n  ppocr_cls: nnr's default makes 1 B at snr_db 31.002"):
        main(argv)
    assert measured == []                      # mnist_cnn (within SAME_SNR_DB) waited for ppocr_cls's check
    defaults["ppocr_cls"] = 31.0
    out = tmp_path / "refined.json"
    main(argv + ["--json", str(out), "--markdown", str(tmp_path / "refined.md")])
    assert measured == [("mnist_cnn", 12.0), ("ppocr_cls", 12.0)]
    for earlier in (first, second):
        got = ModelResult.from_json(json.loads(out.read_text())["models"][earlier.name])
        assert [(p.target, p.bytes) for p in got.nnr_probe] == [(10.0, 5), (12.0, 7), (14.0, 9)]
        assert (got.nnr, got.nncodec, got.note, got.nnr_default) == (earlier.nnr, earlier.nncodec, "a note",
                                                                     earlier.nnr_default)   # not the 5 s re-run


def test_tensor_rd_tables_show_coding_ratios_hybrids_and_single_tensor_runs():
    from tools.tensor_rd import render

    model = {"metric": "snr_db", "tensors": 2, "hybrid_qp": -14,
             "coding": {"mse": {"-20": 1.05}, "gain": {"-20": None}},
             "hybrid": {k: {"bytes": b, "metric": v} for k, b, v in
                        (("nncodec", 100, 26.0), ("nnr_mse", 110, 27.3), ("nnr_gain", 111, 27.2))},
             "one_at_a_time": [{"tensor": "w", "shape": [4, 3], "mse": 25.5, "gain": 26.5}]}
    text = render("cmd", [-20], {"m": model})
    assert "| m | 2 | – |" in text                         # a qp without both ratios is left empty
    assert "| m | -14 | snr_db | 100 B, 26.0 dB | 110 B, 27.3 dB | 111 B, 27.2 dB |" in text
    assert "| m | w | (4, 3) | 26.00 dB | 25.50 dB | 26.50 dB |" in text
    assert "One tensor at a time" not in render("cmd", [-20], {"m": {**model, "one_at_a_time": []}})


def test_a_sweep_point_decodes_its_own_file_whatever_the_default_memory_limit(monkeypatch):
    """A coarse point can need more than the default budget to decode (as minilm_l3 at qp -4
    did); the tool decodes its own fresh file without that limit."""
    import numpy as np

    import nnr.decoder
    from conformance.toy_models import mlp
    from tools.compare_nncodec import nnr_point

    class Task:
        def infer(self, model):
            from nnr.fidelity import session

            return session(model).run(None, {"x": np.ones((2, 32), np.float32)})[0]

        def measure(self, ref, out):
            return {"snr_db": float(10 * np.log10(np.sum(ref ** 2) / max(np.sum((out - ref) ** 2), 1e-30)))}

    monkeypatch.setattr(nnr.decoder, "DEFAULT_MEMORY_FLOOR", 1 << 10)
    monkeypatch.setattr(nnr.decoder, "MEMORY_PER_FILE_BYTE", 1)
    model = mlp(seed=4)
    with pytest.raises(nnr.LimitError):
        nnr.decode(nnr.encode(model, qp=-10.0))
    point = nnr_point(model, -10.0, Task(), Task().infer(model))
    assert point.qp == -10.0 and point.bytes > 0 and np.isfinite(point.metrics["snr_db"])
