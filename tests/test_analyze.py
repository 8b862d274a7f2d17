"""Distribution fitting (codec.distributions) and the nnr-analyze command."""

import json

import numpy as np
import pytest

from nnr.codec.distributions import FAMILIES, fit_all, fit_params, pdf
from nnr.analyze import curves_table, main
from tests.conftest import ROOT

MNIST = ROOT / "conformance" / "models" / "mnist_cnn.onnx"
RNG = np.random.default_rng(0)
SAMPLES = {"laplace": RNG.laplace(0.1, 0.5, 20000), "gaussian": RNG.normal(-0.2, 2.0, 20000),
           "cauchy": RNG.standard_cauchy(20000) * 0.3, "uniform": RNG.uniform(-1, 3, 20000)}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_density_integrates_to_one(family):
    params = fit_params(family, SAMPLES["laplace"])
    t = np.linspace(-200, 200, 2_000_001)
    assert np.sum(pdf(family, params, t)) * (t[1] - t[0]) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize("truth", sorted(SAMPLES))
def test_the_true_family_beats_the_others(truth):
    kl = {f.family: f.kl for f in fit_all(SAMPLES[truth])}
    others = [kl[f] for f in FAMILIES if f not in (truth, "generalized_gaussian")]
    assert kl[truth] < min(others)


@pytest.mark.parametrize("truth,beta", [("laplace", 1.0), ("gaussian", 2.0)])
def test_generalized_gaussian_shape_recovers_laplace_and_gauss(truth, beta):
    assert fit_params("generalized_gaussian", SAMPLES[truth])["shape"] == pytest.approx(beta, abs=0.1)


def test_cli_table_json_and_plots(tmp_path, capsys):
    plots = tmp_path / "plots"
    assert main([str(MNIST)]) == 0
    table = capsys.readouterr().out
    assert "all weights pooled" in table and "best fit per tensor" in table
    assert main([str(MNIST), "--json", "--plot", str(plots), "--plot-tensors", "2", "--curves", "-q"]) == 0
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert captured.err == ""
    assert doc["weights"] == sum(t["weights"] for t in doc["tensors"])
    assert all(t["best"] == t["fits"][0]["family"] for t in doc["tensors"])
    pngs = sorted(plots.glob("*.png"))
    assert len(pngs) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    curves = doc["quantizer_curves"]
    assert "4 bits" in curves_table(curves)     # the table the command prints without --json
    assert set(curves) == {"ecsq", "midtread", "midrise", "deadzone:0.25", "deadzone:0.7", "mulaw:255", "minifloat"}
    series = [points for name, points in curves.items() if name != "minifloat"]
    for e in ("E4", "E5"):  # minifloats with the same exponent width: one mantissa bit more, one step finer
        series.append([p for p in curves["minifloat"] if p["setting"].startswith(f"minifloat:{e}")])
    for points in series:  # a coarser setting never costs more bits
        by_snr = sorted(points, key=lambda p: p["snr_db"])
        rates = [p["bits_per_weight"] for p in by_snr]
        assert len(rates) >= 3 and all(a <= b + 1e-9 for a, b in zip(rates, rates[1:], strict=False))


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main([str(bad)]) == 2
    assert main([str(MNIST), "--min-elements", "100000000"]) == 2
    err = capsys.readouterr().err
    assert err.count("nnr-analyze: error:") == 2 and "Traceback" not in err


def test_plotting_leaves_the_callers_matplotlib_alone(tmp_path):
    """A notebook or GUI calling nnr keeps its backend and pyplot state: figures are plain Figures."""
    import os
    import subprocess
    import sys
    code = ("import sys, matplotlib; from nnr.analyze import main; "
            f"assert main([{str(MNIST)!r}, '--plot', {str(tmp_path / 'plots')!r}]) == 0; "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "MPLBACKEND": "pdf"}).stdout.split()
    assert out[-2:] == ["pdf", "False"]
    assert any((tmp_path / "plots").glob("*.png"))
