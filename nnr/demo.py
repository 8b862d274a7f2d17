"""nnr-demo: the main job on the embedded default model, with accuracy on shipped photos.

Encodes the committed EfficientNet-Lite0 at the default quality, decodes it, and reports
sizes and the decoded model's top-1 accuracy and agreement with the original on 8 crops of
each of the 20 committed labelled ImageNet photos. Needs the repository checkout (the model
and photos live in conformance/), the encoder and Pillow (``pip install -e ".[encode,eval]"``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from . import __version__
from .cli import require_encoder
from .errors import InputError, NnrError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
PHOTOS = ROOT / "conformance" / "data" / "imagenet"


def main(argv: list[str] | None = None, prog: str = "nnr-demo") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"nnr {__version__}")
    ap.add_argument("--qp", type=float, default=None, help="quality parameter (default: nnr's default)")
    ap.add_argument("--keep", type=Path, help="directory to keep the .nnr and decoded .onnx in")
    args = ap.parse_args(argv)
    try:
        return _demo(args.qp, args.keep)
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _demo(qp: float | None, keep: Path | None) -> int:
    if not MODEL.exists() or not PHOTOS.is_dir():
        raise InputError("the demo runs from a source checkout of nnr (its model and photos live in "
                         "conformance/): clone the repository, then pip install -e '.[encode,eval]' there")
    require_encoder()
    try:
        import PIL  # noqa: F401
    except ImportError as exc:
        raise InputError('the demo needs Pillow: pip install -e ".[encode,eval]"') from exc
    from .cli import encode_main, decode_main
    from .fidelity import compare_classifiers
    from .images import crops, labelled_photos

    with tempfile.TemporaryDirectory() as tmp:
        out_dir = keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        nnr_path, onnx_path = out_dir / "efficientnet_lite0.nnr", out_dir / "efficientnet_lite0.decoded.onnx"
        argv = [str(MODEL), "-o", str(nnr_path), "-q"] + ([] if qp is None else ["--qp", str(qp)])
        t0 = time.perf_counter()
        if encode_main(argv):
            return 1
        t1 = time.perf_counter()
        if decode_main([str(nnr_path), "-o", str(onnx_path), "-q"]):
            return 1
        t2 = time.perf_counter()
        photos = labelled_photos(PHOTOS)
        x, y = crops(photos)
        rep = compare_classifiers(str(MODEL), str(onnx_path), {"image": x}, y)
        src, packed = MODEL.stat().st_size, nnr_path.stat().st_size
        print(f"model            {MODEL.relative_to(ROOT)}")
        print(f"original size    {src:>10,d} bytes")
        print(f".nnr size        {packed:>10,d} bytes  ({packed / src:.1%} of the original, "
              f"{src / packed:.2f}x smaller)")
        print(f"encode / decode  {t1 - t0:.1f} s / {t2 - t1:.1f} s")
        print(f"inputs           {rep.n_inputs} crops of {len(photos)} labelled photos")
        print(f"top-1 accuracy   original {rep.accuracy_original:.1%}, decoded {rep.accuracy_decoded:.1%}")
        print(f"top-1 agreement  {rep.agreement:.1%} (decoded vs original)")
        print(f"output SNR       {rep.output_snr_db:.1f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
