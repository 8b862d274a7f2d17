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

from .console import common_flags, print_json, require_encoder
from .errors import InputError, NnrError

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "conformance" / "models" / "efficientnet_lite0.onnx"
PHOTOS = ROOT / "conformance" / "data" / "imagenet"


def main(argv: list[str] | None = None, prog: str = "nnr-demo") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    ap.add_argument("--qp", type=float, default=None, help="quality parameter (default: nnr's default)")
    ap.add_argument("--keep", type=Path, help="directory to keep the .nnr and decoded .onnx in (the demo's files there are replaced)")
    common_flags(ap, "the sizes, times and fidelity")
    args = ap.parse_args(argv)
    try:
        result = _demo(args.qp, args.keep, args.quiet)
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if result is None:
        return 1
    if args.json:
        print_json(result)
    else:
        print(render(result))
    return 0


def _demo(qp: float | None, keep: Path | None, quiet: bool) -> dict | None:
    """Encode, decode and score the embedded model; the numbers, or None when a step failed
    (it has printed why)."""
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
        quiet_flag = ["-q"] if quiet else []
        argv = [str(MODEL), "-o", str(nnr_path), "-f", *quiet_flag] + ([] if qp is None else ["--qp", str(qp)])
        t0 = time.perf_counter()
        if encode_main(argv):
            return None
        t1 = time.perf_counter()
        if decode_main([str(nnr_path), "-o", str(onnx_path), "-f", *quiet_flag]):
            return None
        t2 = time.perf_counter()
        photos = labelled_photos(PHOTOS)
        x, y = crops(photos)
        if not quiet:
            print(f"scoring both models on {len(x)} crops of {len(photos)} labelled photos", file=sys.stderr)
        rep = compare_classifiers(str(MODEL), str(onnx_path), {"image": x}, y)
        return {"model": str(MODEL.relative_to(ROOT)), "original_bytes": MODEL.stat().st_size,
                "nnr_bytes": nnr_path.stat().st_size, "encode_seconds": round(t1 - t0, 3),
                "decode_seconds": round(t2 - t1, 3), "inputs": rep.n_inputs, "photos": len(photos),
                "accuracy_original": rep.accuracy_original, "accuracy_decoded": rep.accuracy_decoded,
                "agreement": rep.agreement, "output_snr_db": rep.output_snr_db}


def render(r: dict) -> str:
    """The demo's numbers as the text it prints."""
    src, packed = r["original_bytes"], r["nnr_bytes"]
    return "\n".join([
        f"model            {r['model']}",
        f"original size    {src:>10,d} bytes",
        f".nnr size        {packed:>10,d} bytes  ({packed / src:.1%} of the original, {src / packed:.2f}x smaller)",
        f"encode / decode  {r['encode_seconds']:.1f} s / {r['decode_seconds']:.1f} s",
        f"inputs           {r['inputs']} crops of {r['photos']} labelled photos",
        f"top-1 accuracy   original {r['accuracy_original']:.1%}, decoded {r['accuracy_decoded']:.1%}",
        f"top-1 agreement  {r['agreement']:.1%} (decoded vs original)",
        f"output SNR       {r['output_snr_db']:.1f} dB"])


if __name__ == "__main__":
    sys.exit(main())
