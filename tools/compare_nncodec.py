"""Compare nnr with NNCodec (Fraunhofer HHI's implementation of the NNC standard) on
EfficientNet-Lite0: weight bytes against output SNR and top-1 agreement on real photos.

Dev-only: NNCodec needs torch and must stay out of nnr's dependencies. In a side venv
that sees the system packages (torch 2.13.0 from the machine's local wheel, nnr's deps):

    python -m venv --system-site-packages /tmp/nncv && . /tmp/nncv/bin/activate
    pip install --no-deps nncodec==2.1.3 && pip install pandas click tqdm h5py \\
        opencv-python-headless scikit-learn ptflops torchmetrics
    python tools/compare_nncodec.py --markdown docs/nncodec.md

NNCodec imports torchvision's datasets at import time (for its training use cases); this
script only calls its tensor codec (``nncodec.tensor.encode/decode``), so it installs an
empty torchvision stand-in first (PyPI's torchvision does not load beside the local torch).
Both codecs code the same float tensors (nnr's selection: float32, ≥ 16 elements); sizes
are the sum of per-tensor payloads (NNC bitstreams; nnr tensor-unit bodies), plus the whole
.nnr file for nnr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402


def _stub_torchvision() -> None:
    class Anything:
        def __init__(self, *args, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            return Anything()

        def __getattr__(self, name):
            return Anything()

    class Module(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return Anything

    root = Module("torchvision")
    root.__path__ = []
    sys.modules["torchvision"] = root
    for sub in ("datasets", "transforms", "models", "ops", "io"):
        mod = Module(f"torchvision.{sub}")
        mod.__path__ = []
        setattr(root, sub, mod)
        sys.modules[f"torchvision.{sub}"] = mod


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import onnx

    import nnr
    from conformance.inputs import imagenet
    from formats.onnx_io import fill_tensor, strip_tensor, tensor_slots
    from nnr.ratecontrol import Calibration, Evaluator

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nnc-qps", default="-40,-36,-34,-32,-30,-28,-26,-24")
    ap.add_argument("--nnr-qps", default="-40,-36,-32,-28,-26,-24,-22,-20")
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args(argv)

    _stub_torchvision()
    import nncodec.tensor as nnc_tensor

    path = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
    model = onnx.load(path)
    x, y = imagenet()
    evaluator = Evaluator(model, Calibration({"image": x}, y))
    slots = [s for s in tensor_slots(model)
             if s.tensor.data_type == onnx.TensorProto.FLOAT and np.prod(s.tensor.dims) >= 16]
    weights = int(sum(np.prod(s.tensor.dims) for s in slots))
    rows = []
    with tempfile.TemporaryDirectory() as results:
        for qp in (float(v) for v in args.nnc_qps.split(",")):
            work = onnx.ModelProto()
            work.CopyFrom(model)
            work_slots = tensor_slots(work)
            total, t0 = 0, time.perf_counter()
            for s in slots:
                values = onnx.numpy_helper.to_array(s.tensor).astype(np.float32)
                bitstream = nnc_tensor.encode(values, args={"qp": int(qp), "results": results, "verbose": False,
                                                            "tensor_id": "0"})
                total += len(bitstream)
                decoded = nnc_tensor.decode(bitstream)
                decoded = np.asarray(decoded["0"] if isinstance(decoded, dict) else decoded, dtype="<f4")
                target = work_slots[s.index].tensor
                strip_tensor(target)
                fill_tensor(target, decoded.reshape(values.shape).tobytes())
            m = evaluator.measure(work)
            rows.append(("NNCodec 2.1.3", f"qp {qp:g}", total, None, m, time.perf_counter() - t0))
            print(f"NNCodec qp {qp:g}: {total:,} B, SNR {m['snr_db']:.1f} dB", file=sys.stderr)
    for qp in (float(v) for v in args.nnr_qps.split(",")):
        t0 = time.perf_counter()
        data = nnr.encode(path, qp=qp)
        bodies = sum(row["bytes"] for row in nnr.open(data).info())
        m = evaluator.measure(nnr.decode(data))
        rows.append(("nnr", f"qp {qp:g}", bodies, len(data), m, time.perf_counter() - t0))
    lines = [f"EfficientNet-Lite0, {weights:,} float weights; fidelity on 160 crops of the 20 photos.", "",
             "| codec | setting | weight payload bytes | bits/weight | whole file | output SNR | top-1 agreement "
             "(expected) | encode+decode |", "|---|---|---|---|---|---|---|---|"]
    for codec, setting, payload, whole, m, secs in sorted(rows, key=lambda r: (r[0], r[2])):
        lines.append(f"| {codec} | {setting} | {payload:,} | {8 * payload / weights:.2f} | "
                     f"{'–' if whole is None else f'{whole:,}'} | {m['snr_db']:.1f} dB | {m['agreement']:.4f} "
                     f"({m['agreement_expected']:.4f}) | {secs:.1f} s |")
    emit("\n".join(lines) + "\n", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
