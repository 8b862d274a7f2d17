"""Round trips of real trained models that keep their weights in Constant nodes and in
If subgraphs (silero-vad, PP-OCR), beyond the EfficientNet tests."""

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnr
from conformance.corpus import model_path
from formats.onnx_io import tensor_slots
from nnr.fidelity import run, session, top1_agreement
from nnr.images import crops, labelled_photos
from tests.conftest import PHOTOS, skeleton


SENTENCES = ("Compressed networks keep their accuracy.", "The decoder is bit exact on every platform.",
             "Seven small models were measured today.")


def _speech(sr: int = 16000) -> np.ndarray:
    """Real synthetic speech (espeak-ng) with pauses between sentences, resampled to 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed for the VAD test: apt-get install espeak-ng (.ci/run does)")
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", str(wav), text], check=True)
            with wave.open(str(wav)) as w:
                rate = w.getframerate()
                pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
            t_out = np.arange(int(pcm.size * sr / rate)) / sr
            parts += [np.interp(t_out, np.arange(pcm.size) / rate, pcm), np.zeros(sr // 2)]
    noise = np.random.default_rng(0).standard_normal(sum(p.size for p in parts)) * 0.002
    return (np.concatenate(parts) + noise).astype(np.float32)


def _vad_probs(sess, audio: np.ndarray) -> np.ndarray:
    """Speech probability per 512-sample chunk, fed as silero-vad's own wrapper does
    (64 samples of context before each chunk, recurrent state carried over)."""
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, 64), dtype=np.float32)
    probs = []
    for i in range(0, audio.size - 512 + 1, 512):
        x = np.concatenate([context, audio[None, i:i + 512]], axis=1)
        out, state = sess.run(None, {"input": x, "state": state, "sr": np.array(16000, dtype=np.int64)})
        context = x[:, -64:]
        probs.append(float(out.ravel()[0]))
    return np.array(probs)


def test_silero_vad_weights_in_if_subgraphs():
    path = model_path("silero_vad")
    original = onnx.load(path)
    data = nnr.encode(path)
    assert len(data) < 0.35 * path.stat().st_size
    assert any("/then_branch" in p or "/else_branch" in p
               for p in (s.path for s in tensor_slots(original)))
    decoded = nnr.decode(data)
    onnx.checker.check_model(decoded)
    assert skeleton(decoded) == skeleton(original)
    audio = _speech()
    ref = _vad_probs(session(str(path)), audio)
    out = _vad_probs(session(decoded), audio)
    assert ref.max() > 0.5 and ref.min() < 0.5  # the signal exercises both decisions
    assert np.mean((ref > 0.5) == (out > 0.5)) >= 0.97
    assert np.abs(ref - out).max() < 0.1


def test_ppocr_classifier_weights_in_constant_nodes():
    path = model_path("ppocr_cls")
    original = onnx.load(path)
    assert len(original.graph.initializer) == 0
    data = nnr.encode(path)
    assert len(data) < 0.4 * path.stat().st_size  # small tensors: the default keeps ~38 dB output SNR
    decoded = nnr.decode(data)
    onnx.checker.check_model(decoded)
    assert skeleton(decoded) == skeleton(original)
    x, _ = crops(labelled_photos(PHOTOS), size=48, n_crops=2)
    x = np.concatenate([x, x], axis=3)[:, :, :, :192 // 2 * 2]  # 48×96 → widen to 48×192
    x = np.concatenate([x, x], axis=3)[:, :, :, :192]
    ref = run(session(str(path)), {"x": x})
    out = run(session(decoded), {"x": x})
    assert top1_agreement(ref, out) >= 0.95


@pytest.mark.parametrize("name", ["ppocr_det", "ppocr_rec"])
def test_ppocr_models_lossless_are_bit_exact(name):
    path = model_path(name)
    data = nnr.encode(path, lossless=True)
    assert len(data) < path.stat().st_size
    assert nnr.decode(data).SerializeToString() == onnx.load(path).SerializeToString()
