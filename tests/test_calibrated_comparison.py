"""Calibration inputs for the corpus tasks, and the table of tools/compare_calibrated.py."""

from dataclasses import asdict

import numpy as np
import pytest
from onnx import TensorProto

from conformance import inputs
from conformance.corpus import load_manifest, load_model
from conformance.tasks import CALIBRATION, NO_CALIBRATION, TASKS
from nnr.errors import InputError
from tools.compare_calibrated import CalibratedResult, Searched, constraint_for, merged, render


def test_calibration_text_and_digits_are_disjoint_from_the_evaluation_inputs():
    assert not set(inputs.calibration_sentences()) & set(inputs.sentences())
    lines = inputs.calibration_lines()
    assert len(lines) == 12 and len(set(lines)) == 12
    assert all(0 < len(line) <= 40 for line in lines) and not set(lines) & set(inputs.TEXT_LINES)
    assert not set(inputs.CALIBRATION_SPEECH) & set(inputs.SENTENCES)
    x, _ = inputs.mnist()
    test, _ = inputs.mnist_test()
    cal = inputs.mnist_calibration(200)
    assert cal.shape == (200, 1, 28, 28)
    evaluated = {row.tobytes() for row in test}
    assert not any(row.tobytes() in evaluated for row in cal)


def test_ocr_pages_for_calibration_use_other_photos_and_text():
    evaluated = inputs.text_pages(n=1)
    same_text = inputs.text_pages(n=1, first=4)
    assert same_text.shape == evaluated.shape and np.abs(same_text - evaluated).mean() > 0.1
    with pytest.raises(InputError, match="only 20"):
        inputs.text_pages(n=2, first=19)


def test_calibration_speech_shares_no_frame_with_the_evaluation_speech():
    evaluated = {f.tobytes() for f in inputs.crepe_frames(inputs.speech())}
    frames = inputs.crepe_frames(inputs.speech(sentences=inputs.CALIBRATION_SPEECH, seed=inputs.CALIBRATION_SEED))
    assert not any(f.tobytes() in evaluated for f in frames)


_ELEM = {TensorProto.FLOAT: np.float32, TensorProto.INT64: np.int64}
_MODELS = [(name, e.task) for name, e in load_manifest().models.items() if e.task in CALIBRATION]


@pytest.mark.parametrize("name,task", _MODELS, ids=[n for n, _ in _MODELS])
def test_calibration_inputs_feed_their_models_batched_along_axis_0(name, task):
    """What nnr-encode --calibration needs: one array per graph input, one length, the input's
    type, and onnxruntime runs the model on a batch of them."""
    from nnr import fidelity

    model, _ = load_model(name)
    feeds = CALIBRATION[task]()
    initialisers = {t.name for t in model.graph.initializer}
    graph_inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input if i.name not in initialisers}
    assert set(feeds) == set(graph_inputs)
    assert len({len(a) for a in feeds.values()}) == 1 and len(next(iter(feeds.values()))) >= 8
    for key, array in feeds.items():
        assert array.dtype == _ELEM[graph_inputs[key]]
    out = fidelity.run(fidelity.session(model), {k: v[:2] for k, v in feeds.items()}, batch=2)
    assert len(out) == 2 and np.isfinite(out).all()


def test_every_task_has_calibration_inputs_or_a_reason_why_not():
    assert set(TASKS) - set(CALIBRATION) == set(NO_CALIBRATION) == {"complex_mnist", "vad", "vad_gru"}
    assert not set(CALIBRATION) & set(NO_CALIBRATION)


def test_thresholds_become_the_rate_control_goals_of_nnr_encode():
    assert str(constraint_for("agreement", "strict")) == "top-1 agreement ≥ 0.999"
    assert str(constraint_for("snr_db", "loose")) == "output SNR ≥ 20 dB"


def _searched(level: str, size: int, snr: float, met: bool) -> Searched:
    return Searched(level, f"output SNR ≥ {30 if level == 'strict' else 20} dB", size, 1.0, 3, {"snr_db": snr},
                    None, {"snr_db": snr}, met)


def test_table_reports_ratios_goals_and_misses_on_the_evaluation_inputs():
    nnc = {"strict": {"qp": -30.0, "bytes": 1000}, "loose": {"qp": -20.0, "bytes": 800}}
    results = [CalibratedResult("a", "pitch", "snr_db", 40, [_searched("strict", 500, 31.0, True),
                                                           _searched("loose", 400, 18.0, False)], nnc),
               CalibratedResult("b", "pitch", "snr_db", 40, [_searched("strict", 700, 33.0, True),
                                                           _searched("loose", 500, 21.0, True)], nnc),
               CalibratedResult("v", "vad", "snr_db", 0, [], {}, "no calibration inputs: state")]
    table = render(["python tools/compare_calibrated.py"], results)
    rows = {tuple(c.strip() for c in line.split("|")[1:4]): line for line in table.splitlines()
            if line.startswith("| a ") or line.startswith("| b ")}
    assert "0.500" in rows[("a", "40", "strict")] and rows[("a", "40", "strict")].endswith("| met |")
    assert "18.0 dB ✗" in rows[("a", "40", "loose")] and "missed (fidelity)" in rows[("a", "40", "loose")]
    assert "0.700" in rows[("b", "40", "strict")] and rows[("b", "40", "strict")].endswith("| missed |")
    assert "| v | – |" in table and "no calibration inputs: state" in table
    assert ("strict: nnr's file meets the threshold on the evaluation inputs for 2 of 2 models; over those, "
            f"geometric mean nnr/NNCodec **{(0.5 * 0.7) ** 0.5:.3f}**") in table
    assert "loose: nnr's file meets the threshold on the evaluation inputs for 1 of 2 models; " \
           "over those, geometric mean nnr/NNCodec **0.625**" in table   # b only: a missed
    assert results[0].ratio("loose") == 0.5 and results[2].ratio("strict") is None


def test_an_update_replaces_the_models_measured_again_and_keeps_the_others():
    nnc = {"strict": {"qp": -30.0, "bytes": 1000}}
    old = [CalibratedResult(n, "pitch", "snr_db", 40, [_searched("strict", 600, 31.0, True)], nnc) for n in "abc"]
    earlier = {"commands": ["first"], "models": [asdict(r) for r in old]}
    again = CalibratedResult("b", "pitch", "snr_db", 40, [_searched("strict", 400, 32.0, True)], nnc)
    new = CalibratedResult("d", "pitch", "snr_db", 40, [], {}, "none")
    out = merged(earlier, [again, new])
    assert [r.name for r in out] == ["a", "b", "c", "d"]
    assert out[1].searched[0].bytes == 400 and out[0] == old[0] and out[3] is new
