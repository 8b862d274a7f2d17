"""nnr batch: many models on a local process pool or a Dask cluster, one report per model,
atomic outputs that a rerun skips, and one failure that stops nothing else."""

import json
import sys

import onnx
import pytest

import nnr
from conformance.corpus import model_path
from conformance.toy_models import mlp
from nnr import batch
from nnr.cli import main
from nnr.errors import InputError, OptionError

CORPUS = ("mnist_cnn", "akiki_vad", "ppocr_cls")


def _manifest(tmp_path, lines) -> str:
    path = tmp_path / "models.txt"
    path.write_text("\n".join(map(str, lines)) + "\n")
    return str(path)


def _run_json(capsys, argv) -> tuple[int, dict]:
    rc = main(["batch", *argv, "--json", "-q"])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, json.loads(captured.out)


def test_manifest_skips_comments_and_resolves_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    text = "# fleet\n\nsub/a.onnx  # first\n/abs/b.onnx\n"
    (tmp_path / "sub" / "list.txt").write_text(text)
    assert batch.read_manifest(tmp_path / "sub" / "list.txt") == [str(tmp_path / "sub" / "sub" / "a.onnx"),
                                                                  "/abs/b.onnx"]


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_manifest_without_models_is_refused(tmp_path, text):
    (tmp_path / "m.txt").write_text(text)
    with pytest.raises(InputError, match="lists no model"):
        batch.read_manifest(tmp_path / "m.txt")
    with pytest.raises(InputError, match="no such manifest"):
        batch.read_manifest(tmp_path / "missing.txt")


def test_two_models_writing_one_output_are_refused(tmp_path):
    with pytest.raises(OptionError, match="would both write"):
        batch.plan(["/x/model.onnx", "/y/model.onnx"], tmp_path)


def test_local_pool_reports_each_model_and_a_failure_stops_nothing(tmp_path, capsys):
    good = tmp_path / "mlp.onnx"
    onnx.save(mlp(), good)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    sources = [good, tmp_path / "missing.onnx", garbage, model_path("mnist_cnn")]
    out = tmp_path / "out"
    rc, doc = _run_json(capsys, [_manifest(tmp_path, sources), "--out-dir", str(out), "--workers", "2"])
    assert rc == 1
    status = {r["input"].rsplit("/", 1)[-1]: r for r in doc["models"]}
    assert [r["input"] for r in doc["models"]] == [str(s) for s in sources]  # the manifest's order
    assert status["missing.onnx"]["status"] == "failed" and "no such file" in status["missing.onnx"]["error"]
    assert status["garbage.onnx"]["status"] == "failed" and "internal error" not in status["garbage.onnx"]["error"]
    assert doc["totals"] == {"tasks": 4, "ok": 2, "skipped": 0, "failed": 2,
                             "input_bytes": status["mlp.onnx"]["input_bytes"] + status["mnist_cnn.onnx"]["input_bytes"],
                             "output_bytes": status["mlp.onnx"]["output_bytes"]
                             + status["mnist_cnn.onnx"]["output_bytes"]}
    assert sorted(p.name for p in out.iterdir()) == ["mlp.nnr", "mnist_cnn.nnr"]  # nothing partial
    # the default encoder, as nnr encode makes it on one process
    assert (out / "mnist_cnn.nnr").read_bytes() == nnr.encode(str(model_path("mnist_cnn")))
    assert status["mnist_cnn.onnx"]["output_bytes"] == (out / "mnist_cnn.nnr").stat().st_size

    rc, again = _run_json(capsys, [_manifest(tmp_path, sources[:1] + sources[3:]), "--out-dir", str(out)])
    assert rc == 0 and [r["status"] for r in again["models"]] == ["skipped", "skipped"]
    rc, forced = _run_json(capsys, [_manifest(tmp_path, sources[:1]), "--out-dir", str(out), "-f", "--lossless"])
    assert rc == 0 and forced["models"][0]["status"] == "ok"
    assert nnr.open(str(out / "mlp.nnr")).metadata()["options"]["lossless"] is True


def test_decode_batch_writes_models_that_check(tmp_path, capsys):
    src = tmp_path / "mlp.onnx"
    onnx.save(mlp(), src)
    (tmp_path / "mlp.nnr").write_bytes(nnr.encode(str(src), probe=False))
    rc, doc = _run_json(capsys, [_manifest(tmp_path, ["mlp.nnr"]), "--out-dir", str(tmp_path / "dec"), "--decode",
                                 "--workers", "1"])
    assert rc == 0 and doc["models"][0]["status"] == "ok"
    onnx.checker.check_model(str(tmp_path / "dec" / "mlp.onnx"))


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    manifest = _manifest(tmp_path, ["a.nnr"])
    with pytest.raises(SystemExit) as e:
        main(["batch", manifest, "--out-dir", str(tmp_path), "--decode", "--lossless"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["batch", manifest, "--out-dir", str(tmp_path), "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"])
    assert main(["batch", str(tmp_path / "none.txt"), "--out-dir", str(tmp_path)]) == 2
    assert "no such manifest" in capsys.readouterr().err


def test_scheduler_without_distributed_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(OptionError, match=r"nnr\[batch\]"):
        batch.run(batch.plan(["/x/a.onnx"], tmp_path), scheduler="tcp://127.0.0.1:1")


def test_a_dead_worker_fails_its_task_only():
    class Lost:
        def result(self):
            raise RuntimeError("worker killed")

    report = batch._collected(Lost(), batch.Task("/x/a.onnx", "/y/a.nnr"))
    assert report["status"] == "failed" and "died" in report["error"]


def test_dask_local_cluster_encodes_three_corpus_models(tmp_path, capsys):
    distributed = pytest.importorskip("distributed")
    sources = [model_path(name) for name in CORPUS]
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        rc, doc = _run_json(capsys, [_manifest(tmp_path, sources), "--out-dir", str(out), "--data-free",
                                     "--scheduler", cluster.scheduler_address])
    assert rc == 0 and doc["totals"]["ok"] == 3
    assert len({r["worker"] for r in doc["models"]}) >= 1
    for src, report in zip(sources, doc["models"]):
        written = out / (src.stem + ".nnr")
        assert report["status"] == "ok" and report["output"] == str(written)
        assert written.read_bytes() == nnr.encode(str(src), probe=False)  # as one process makes it
