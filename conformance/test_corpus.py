"""The fast tier of the conformance suite as tests: each (model, operating point) of the
manifest's fast lists is encoded, decoded and checked against its size ceiling and fidelity
floors on real inputs. ``nnr-conformance --full`` runs every point."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conformance.corpus import load_manifest  # noqa: E402
from conformance.suite import Corpus, check, plan  # noqa: E402

MANIFEST = load_manifest()
FAST = plan(MANIFEST, full=False)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return Corpus(MANIFEST)


def test_corpus_has_five_kinds_of_model_and_an_fp16_one():
    tasks = {e.task for e in MANIFEST.models.values()}
    assert len(MANIFEST.models) >= 5 and len(tasks) >= 5
    assert any(e.source.get("transform") == "float16" for e in MANIFEST.models.values())
    places = set().union(*(e.weights_in for e in MANIFEST.models.values()))
    assert {"initializers", "Constant nodes", "subgraphs"} <= places


def test_every_model_has_every_operating_point_and_is_in_the_fast_tier():
    for entry in MANIFEST.models.values():
        assert set(entry.limits) == set(MANIFEST.points), entry.name
        assert "transparent" in entry.fast, entry.name


@pytest.mark.parametrize("entry,point", FAST, ids=[f"{e.name}@{p}" for e, p in FAST])
def test_fast_tier(corpus, entry, point):
    result = check(corpus, entry, point)
    assert result.passed, "; ".join(result.violations)
    if MANIFEST.points[point].get("lossless"):
        assert result.metrics["snr_db"] == float("inf")


def test_corpus_covers_the_families_people_ship():
    tasks = {e.task for e in MANIFEST.models.values()}
    assert {"sentence_embedding", "vad_gru", "pitch"} <= tasks  # transformer, recurrent, 1-D audio CNN


def test_a_probe_estimate_above_the_real_fidelity_is_a_violation(corpus, monkeypatch):
    import nnr
    from nnr.probe import ProbeReport
    from conformance import suite

    real_encode = nnr.encode

    def boasting(source, on_probe=None, **options):
        data = real_encode(source, **options)
        if on_probe is not None:
            on_probe(ProbeReport(36.0, tensors=1, expected_snr_db=200.0))
        return data

    monkeypatch.setattr(suite.nnr, "encode", boasting)
    result = check(corpus, MANIFEST.models["mnist_cnn"], "transparent")
    assert any("below the probe's estimate 200.0 dB" in v for v in result.violations)
    assert result.metrics["expected_snr_db"] == 200.0
