"""Reference bitstreams: committed .nnr files and the SHA-256 of what they decode to.

    python -m conformance.vectors --update   # maintainers only, after a deliberate format change

Each vector directory ``vectors/v<N>/`` holds, per case, the source model (.onnx), its
.nnr, and a .json with the encoder options and the hashes. Files of earlier versions are
never rewritten: the decoder must reproduce them forever, and the encoder must reproduce
the bytes of the current version's files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto

from formats.container import FORMAT_VERSION

HERE = Path(__file__).resolve().parent
VECTOR_ROOT = HERE / "vectors"


def cases() -> dict:
    """name -> (model builder, encoder options) for the current format version."""
    from .toy_models import constants_and_subgraphs, mlp

    return {
        "mlp_lossy": (lambda: mlp(), {}),
        "mlp_coarse": (lambda: mlp(), {"qp": -12.0}),
        "mlp_lossless": (lambda: mlp(), {"lossless": True}),
        "mlp_fp16": (lambda: mlp(dtype=TensorProto.FLOAT16), {}),
        "mlp_bf16": (lambda: mlp(dtype=TensorProto.BFLOAT16), {}),
        "mlp_fp64_lossless": (lambda: mlp(dtype=TensorProto.DOUBLE), {"lossless": True}),
        "constants_subgraphs": (lambda: constants_and_subgraphs(), {}),
        "per_tensor_uniform": (lambda: mlp(seed=3), {"step_rule": "uniform", "qp": -30.0}),
        "per_channel": (lambda: mlp(seed=4), {"step_rule": "channel"}),
    }


def decoded_hashes(data: bytes) -> dict:
    """SHA-256 of every decoded tensor (by name) and of the decoded model's serialisation."""
    import nnr

    f = nnr.open(data)
    tensors = {name: hashlib.sha256(np.ascontiguousarray(f.get_tensor(name)).tobytes()).hexdigest()
               for name in f.keys()}
    model = hashlib.sha256(f.model().SerializeToString()).hexdigest()
    return {"tensors": tensors, "model": model}


def vector_files() -> list[Path]:
    return sorted(VECTOR_ROOT.glob("v*/*.json"))


def update() -> None:
    import onnx

    import nnr

    out = VECTOR_ROOT / f"v{FORMAT_VERSION}"
    out.mkdir(parents=True, exist_ok=True)
    for name, (build, options) in cases().items():
        model = build()
        onnx.save(model, out / f"{name}.onnx")
        data = nnr.encode(out / f"{name}.onnx", **options)
        (out / f"{name}.nnr").write_bytes(data)
        record = {"format_version": FORMAT_VERSION, "options": options, **decoded_hashes(data)}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        print(f"wrote {out / name}.* ({len(data)} bytes)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--update", action="store_true",
                    help="regenerate the current version's vectors (never older versions)")
    args = ap.parse_args(argv)
    if not args.update:
        ap.print_help()
        return 0
    update()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    sys.exit(main())
