"""Command-line tools: nnr-encode, nnr-decode, nnr-info. Each ``main(argv)`` returns an exit code.

User mistakes print one line ``nnr-…: error: …`` on stderr and exit non-zero; they never
print a traceback and never leave a partial output file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import NnrError


def _progress(stream=sys.stderr) -> Callable[[int, int, str], None]:
    """A one-line progress display on a terminal; silent when stderr is not a TTY."""
    if not stream.isatty():
        return lambda done, total, name: None

    def show(done: int, total: int, name: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name[:40]:<40}")
        if done >= total:
            stream.write("\r" + " " * (width + 60) + "\r")
        stream.flush()

    return show


def _run(prog: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def encode_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nnr-encode",
        description="Compress an ONNX model into an .nnr bitstream. The default quality is "
                    "transparent (top-1 unchanged on real images for EfficientNet-Lite0) "
                    "and needs no data.",
        epilog="Quality: --qp sets every step relative to the weights' own scale; each +4 "
               "doubles the steps (about 1 bit/weight less), each -4 halves them. "
               "Use --lossless to keep every float bit.")
    p.add_argument("input", help="ONNX model (.onnx); external data files are found beside it")
    p.add_argument("-o", "--output", required=True, help="output .nnr file (written atomically)")
    p.add_argument("--qp", type=float, default=None,
                   help="quality parameter (default -32); larger is smaller and coarser")
    p.add_argument("--lossless", action="store_true", help="bit-exact floats (byte-plane coding)")
    p.add_argument("--step-rule", choices=("scale", "channel", "uniform"), default=None,
                   help="steps relative to each tensor's scale (default), to each output "
                        "channel's, or one absolute step for all tensors (NNC-like)")
    p.add_argument("--size-exponent", type=float, default=None,
                   help="steps grow as (tensor size / 4096)**x (default 0.5; 0 disables)")
    p.add_argument("--rdo-lambda", type=float, default=None,
                   help="rate-distortion Lagrangian in step^2 per bit (default 0.1; 0 = rounding)")
    p.add_argument("--refuse-nonfinite", action="store_true",
                   help="fail on NaN/Inf weights instead of coding those tensors losslessly")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--version", action="version", version=f"nnr {__version__}")
    args = p.parse_args(argv)

    def run() -> int:
        from .encoder import encode
        from .options import EncoderOptions
        from formats.fileio import write_bytes_atomic

        kw = {k: v for k, v in (("qp", args.qp), ("step_rule", args.step_rule),
                                 ("size_exponent", args.size_exponent),
                                 ("rdo_lambda", args.rdo_lambda)) if v is not None}
        if args.lossless:
            kw["lossless"] = True
        if args.refuse_nonfinite:
            kw["nonfinite"] = "refuse"
        opts = EncoderOptions.build(**kw)
        t0 = time.perf_counter()
        data = encode(args.input, opts, progress=None if args.quiet else _progress())
        write_bytes_atomic(args.output, data)
        if not args.quiet:
            src = Path(args.input).stat().st_size
            print(f"{args.input} ({_human(src)}) -> {args.output} ({_human(len(data))}, "
                  f"{src / max(len(data), 1):.2f}x smaller) in {time.perf_counter() - t0:.1f} s",
                  file=sys.stderr)
        return 0

    return _run("nnr-encode", run)


def decode_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nnr-decode",
        description="Rebuild a runnable ONNX model from an .nnr bitstream. The result is "
                    "bit-identical on every run and platform.")
    p.add_argument("input", help=".nnr file")
    p.add_argument("-o", "--output", required=True, help="output .onnx file (written atomically)")
    ext = p.add_mutually_exclusive_group()
    ext.add_argument("--external-data", dest="external", action="store_true", default=None,
                     help="write weights to OUTPUT.data beside the model (default: as the original)")
    ext.add_argument("--no-external-data", dest="external", action="store_false",
                     help="write a single .onnx file")
    p.add_argument("--check", action="store_true", help="run onnx.checker on the decoded model")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--version", action="version", version=f"nnr {__version__}")
    args = p.parse_args(argv)

    def run() -> int:
        from .decoder import decode_to_file

        t0 = time.perf_counter()
        model = decode_to_file(args.input, args.output, external_data=args.external)
        if args.check:
            import onnx
            onnx.checker.check_model(model)
        if not args.quiet:
            print(f"{args.input} -> {args.output} in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return 0

    return _run("nnr-decode", run)


def info_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="nnr-info",
        description="Show how an .nnr file was made and how each tensor is coded.")
    p.add_argument("input", help=".nnr file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--version", action="version", version=f"nnr {__version__}")
    args = p.parse_args(argv)

    def run() -> int:
        from .decoder import open as nnr_open

        f = nnr_open(args.input)
        rows = f.info()
        summary = {
            "file": str(args.input),
            "format_version": f.version,
            "file_bytes": os.path.getsize(args.input) if not isinstance(args.input, bytes) else None,
            "metadata": f.metadata(),
            "coded_tensors": len(rows),
            "coded_weights": sum(math.prod(r["shape"]) for r in rows),
        }
        if args.json:
            print(json.dumps({**summary, "tensors": rows}, indent=2, allow_nan=False,
                             default=str))
            return 0
        meta = summary["metadata"]
        print(f"{args.input}: nnr format v{f.version}, {_human(summary['file_bytes'])}, "
              f"made by {meta.get('producer', '?')}")
        print(f"options: {json.dumps(meta.get('options', {}), sort_keys=True)}")
        print(f"{'name':<40} {'dtype':<8} {'shape':<18} {'mode':<8} {'step':>10} {'bits/w':>7} {'SNR dB':>7}")
        for r in rows:
            step = f"{r['step']:.3g}" if r["step"] is not None else ("per-ch" if r["mode"] == "lossy" else "-")
            snr = r["snr_db"]
            snr_s = "-" if snr is None else ("exact" if math.isinf(snr) else f"{snr:.1f}")
            print(f"{r['name'][:40]:<40} {r['dtype']:<8} {'x'.join(map(str, r['shape'])) or 'scalar':<18} "
                  f"{r['mode']:<8} {step:>10} {r['bits_per_weight']:>7.2f} {snr_s:>7}")
        total_bits = 8 * sum(r["bytes"] for r in rows)
        print(f"{summary['coded_tensors']} coded tensors, {summary['coded_weights']} weights, "
              f"{total_bits / max(summary['coded_weights'], 1):.2f} bits/weight in tensor bodies")
        return 0

    return _run("nnr-info", run)
