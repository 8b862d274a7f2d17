"""The ``nnr`` command: ``nnr encode | decode | info | batch | analyze | search | conformance | demo``.

Each command is also installed under its old name (``nnr-encode`` …). Each ``*_main(argv)``
returns an exit code. User mistakes print one line ``nnr <command>: error: …`` on stderr
and exit non-zero; they never print a traceback and never leave a partial output file.

Every command takes ``--version``, ``-q`` and ``--json`` (nnr.console) and uses its streams
the same way: stdout carries the result (a table or summary, or with ``--json`` one JSON
document instead; or the data itself for ``-o -``), stderr carries progress, notices and
the one-line summary, which ``-q`` silences. Errors and warnings (a file that needs a raised
``--max-memory`` to decode, a goal missed on held-out inputs) always print.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .console import common_flags, metadata_json, printable, print_json, progress_bar, require_encoder
from .errors import FormatError, NnrError, OptionError, OutputError, first_line


def _run(prog: str, fn: Callable[[], int]) -> int:
    try:
        return fn()
    except NnrError as exc:
        print(f"{prog}: error: {printable(exc)}", file=sys.stderr)
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


def _refuse_overwrite(output: str, *inputs: str) -> None:
    """Refuse an output path that is one of the inputs (by any name), which writing would destroy."""
    for src in inputs:
        try:
            same = os.path.samefile(src, output)
        except (OSError, ValueError):  # one of them does not exist (or is not a valid path)
            continue
        if same:
            raise OptionError(f"{output}: is the input file {src}; write the output to another path")


STDIO = "-"
"""An input or output path of ``-`` is standard input or output."""


def _source(arg: str) -> tuple[str | bytes, str]:
    """(what to read, how to name it in messages): the path, or stdin's bytes for ``-``."""
    if arg == STDIO:
        return sys.stdin.buffer.read(), "<stdin>"
    return arg, arg


def _write(output: str, data: bytes) -> None:
    """``data`` to the output file (atomically) or to stdout for ``-``."""
    from nnr.formats.fileio import write_bytes_atomic

    if output == STDIO:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        write_bytes_atomic(output, data)


def _refuse_existing(output: str, force: bool) -> None:
    """Refuse to replace an existing output unless -f was given (as zstd and gzip do)."""
    if output == STDIO:
        return
    if not force and os.path.lexists(output) and not os.path.isdir(output):  # a folder fails to write later
        raise OptionError(f"{output}: already exists; use -f to replace it")


def _memory_size(text: str) -> int:
    """A --max-memory value in bytes (nnr.sizes): a bad one is a usage error."""
    from .sizes import parse_size

    try:
        return parse_size(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def encode_main(argv: Sequence[str] | None = None, prog: str = "nnr-encode") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Compress an ONNX model into an .nnr bitstream. The default quality aims at "
                    "transparency and needs no data: nnr runs the model on synthetic inputs made "
                    "from its input signature and gives each tensor the precision the output "
                    "tolerates (output SNR about 36 dB on those inputs; see --synthetic-snr).",
        epilog="Quality: --qp sets every step relative to the weights' own scale with the "
               "data-free step rule instead; each +4 doubles the steps (about 1 bit/weight less), "
               "each -4 halves them. Use --lossless to keep every float bit. A model whose inputs "
               "cannot be made up (dynamic sizes with no hint, strings, ops onnxruntime lacks) is "
               "coded with the data-free rule, with a one-line notice.")
    p.add_argument("input", help="ONNX model (.onnx; - reads standard input); external data files are found beside it")
    p.add_argument("-o", "--output", required=True, help="output .nnr file (written atomically; - for standard output)")
    p.add_argument("-f", "--force", action="store_true", help="replace OUTPUT if it exists")
    p.add_argument("--qp", type=float, default=None,
                   help="quality parameter (default -32); larger is smaller and coarser")
    p.add_argument("--lossless", action="store_true", help="bit-exact floats (each word's exponent and leading mantissa bits entropy-coded)")
    p.add_argument("--synthetic-snr", type=float, default=None, metavar="DB",
                   help="output SNR the default aims at on synthetic inputs (default 36; real inputs "
                        "usually fare better); larger is finer and bigger")
    p.add_argument("--data-free", action="store_true",
                   help="skip the probe: the data-free step rule at --qp (the same bytes on every machine)")
    p.add_argument("--probe-channels", action="store_true",
                   help="let the probe give a tensor per-channel steps (along axis 0) where they move "
                        "its synthetic outputs over 20 %% less at the same entropy; it measures each "
                        "such tensor twice, so the probe takes longer (measured, not the default: "
                        "docs/techniques.md, section 10)")
    p.add_argument("--step-rule", choices=("scale", "channel", "uniform"), default=None,
                   help="steps relative to each tensor's scale (default), to each output "
                        "channel's, or one absolute step for all tensors (NNC-like)")
    p.add_argument("--size-exponent", type=float, default=None,
                   help="steps grow as (tensor size / 4096)**x (default 0.5; 0 disables)")
    p.add_argument("--options", metavar="JSON",
                   help="replay encoder options from a JSON file: an options object, or a point of "
                        "nnr-search --json (an object with an 'options' key); an object without "
                        "'reconstruction' replays as 'mse', as files before nnr 0.7.1 were coded")
    p.add_argument("--quantizer", default=None, metavar="Q",
                   help="ecsq (default: rate-distortion optimised deadzone), midtread, midrise, "
                        "deadzone:DELTA, mulaw:MU, minifloat:EeMm, fp16, e4m3 or e5m2 "
                        "(formulas in formats/SPEC.md)")
    p.add_argument("--rdo-lambda", type=float, default=None,
                   help="rate-distortion Lagrangian in step^2 per bit (default 0.1; 0 = rounding)")
    p.add_argument("--reconstruction", choices=("gain", "mse"), default=None,
                   help="where nonzero levels land: keep each tensor's gain (default; errors do not "
                        "compound into a shrinking output) or least squared weight error")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="code tensors on N threads (default: every core this process may use); the file is "
                        "the same whatever N")
    p.add_argument("--refuse-nonfinite", action="store_true",
                   help="fail on NaN/Inf weights instead of coding those tensors losslessly")
    pr = p.add_argument_group(
        "pruning", "Zero weights before quantizing; the coder stores the zeros almost for free. No "
        "retraining: check fidelity (e.g. with --calibration and a rate-control goal, or tools/study_pruning.py).")
    pr.add_argument("--prune", metavar="SPEC",
                    help="magnitude:F (drop the fraction F of smallest weights of each layer), std:G (drop "
                         "|w| < G*sigma per layer), filters:RANKING:F (drop the fraction F of output channels of "
                         "each Conv/Gemm/MatMul; RANKING l1, l2, random:SEED or activation, which needs --calibration)")
    pr.add_argument("--global", dest="prune_global", action="store_true",
                    help="magnitude pruning with one threshold across all layers instead of one per layer")
    pr.add_argument("--criterion", choices=("modulus", "phase", "real", "imag"), default=None,
                    help="how complex weights are ranked (default modulus)")
    pr.add_argument("--prune-include", action="append", metavar="PATTERN", default=None,
                    help="also prune float tensors whose name matches (fnmatch; repeatable), e.g. '*embed*'")
    pr.add_argument("--prune-exclude", action="append", metavar="PATTERN", default=None,
                    help="never prune tensors whose name matches (repeatable)")
    pr.add_argument("--remove", dest="prune_remove", action="store_true",
                    help="with filters pruning: physically remove the pruned channels where the graph allows "
                         "it exactly (Conv/Gemm -> BatchNorm/activation/pool -> Conv/Gemm chains), zero the rest; "
                         "reports the parameter reduction and the measured inference speed-up")
    pr.add_argument("--remove-multiple", dest="prune_remove_multiple", type=int, default=None, metavar="M",
                    help="with --remove: keep each layer's channel count a multiple of M (default 8, which "
                         "onnxruntime's CPU convolutions run fastest; 1 removes every removable channel)")
    pr.add_argument("--prune-steps", type=int, default=None, metavar="N",
                    help="reach the target in N steps, re-measuring importance after each (default 1: one shot)")
    rc = p.add_argument_group(
        "rate control", "Search for the smallest file that meets a fidelity constraint on calibration "
        "inputs, or for a file of a given size. With --calibration, precision follows each tensor's "
        "measured sensitivity and biases absorb the mean shift quantization causes.")
    rc.add_argument("--calibration", metavar="NPZ",
                    help="model inputs: one array per graph input (batch on axis 0), optional integer 'labels'")
    goal = rc.add_mutually_exclusive_group()
    goal.add_argument("--min-agreement", type=float, metavar="A",
                      help="top-1 agreement with the original, e.g. 0.99 (judged in expectation over "
                           "the measured output noise)")
    goal.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                      help="top-1 accuracy may drop by at most this many percentage points (needs labels; judged "
                           "as counted and in expectation over the measured output noise)")
    goal.add_argument("--min-snr", type=float, metavar="DB",
                      help="output SNR of the first floating-point output, in dB")
    goal.add_argument("--target-size", metavar="SIZE", help="file size to hit within 2%%, e.g. 1.5MB or 800KB")
    goal.add_argument("--bits-per-weight", type=float, metavar="B",
                      help="file size as bits per coded float weight, within 2%%")
    rc.add_argument("--holdout", type=float, default=0.25, metavar="F",
                    help="fraction of calibration inputs kept out of the search to verify the result (default 0.25)")
    rc.add_argument("--budget-seconds", type=float, default=600.0, metavar="S",
                    help="stop searching after S seconds with the best file found (default 600)")
    rc.add_argument("--no-bias-correction", action="store_true", help="leave biases as they are")
    rc.add_argument("--prune-levels", metavar="SPECS",
                    help="with a fidelity goal, also search these pruning levels (comma-separated --prune specs, "
                         "e.g. magnitude:0.3,magnitude:0.5; --global etc. apply to each) and keep the smallest "
                         "file that meets the goal, pruned or not")
    rc.add_argument("--error-feedback", action="store_true",
                    help="round Conv/Gemm/MatMul weights with error feedback through each layer's input "
                         "statistics (GPTQ-style; the outputs move less at the same size). The statistics "
                         "come from the first half of the search inputs and the search judges on the "
                         "second half. Also replays an --options file that has it, given the same --calibration")
    rc.add_argument("--report", metavar="JSON", help="write every setting tried and the result as JSON")
    common_flags(p, "the summary (sizes, lossy or lossless, the options stored in the file, the probe's "
                    "expected fidelity)")
    args = p.parse_args(argv)
    # Rules on option values and their combinations live in the API (EncoderOptions, encode,
    # ratecontrol, Constraint, Calibration), where library users get them too; the CLI only
    # refuses flags that the chosen mode would silently ignore.
    searching = args.prune_levels is not None or any(
        v is not None for v in (args.min_agreement, args.max_accuracy_drop, args.min_snr, args.target_size,
                                args.bits_per_weight))
    if searching and (args.qp is not None or args.lossless):
        p.error("--qp and --lossless are chosen by the search; drop them or the rate-control goal")
    if searching and (args.synthetic_snr is not None or args.data_free):
        p.error("--synthetic-snr and --data-free choose how the default sets steps; a rate-control goal "
                "searches them instead")
    if args.prune_levels is not None and args.options:
        p.error("--prune-levels searches the pruning level; --options replays a setting whole")
    if args.json and args.output == STDIO:
        p.error("--json and -o - would both write to standard output; write the .nnr file to a path")

    def run() -> int:
        require_encoder()
        from .encoder import probe_applies

        opts, prune_options = _encoder_options(p, args)
        if args.calibration and not searching and not opts.needs_calibration:
            p.error("--calibration needs a goal: --min-agreement, --max-accuracy-drop, --min-snr, "
                    "--target-size or --bits-per-weight (or --error-feedback)")
        probing = not (args.data_free or searching or args.options or args.qp is not None) and probe_applies(opts)
        if args.probe_channels and not probing:
            p.error("--probe-channels steers the probe, which does not run with --qp, --data-free, --options, "
                    "a rate-control goal, --lossless, --error-feedback, --prune or another --quantizer")
        _refuse_overwrite(args.output, args.input, *filter(None, (args.options, args.calibration)))
        _refuse_existing(args.output, args.force)
        args.input, shown = _source(args.input)
        t0 = time.perf_counter()
        probed = []
        if searching:
            data = _rate_controlled(args, opts, prune_options)
        else:
            data = _encode(args, opts, probing, probed)
        if data is not None:
            _write(args.output, data)
        _encoded(args, shown, data, time.perf_counter() - t0, probed[0] if probed else None)
        return 0

    return _run(prog, run)


def _encoder_options(p: argparse.ArgumentParser, args: argparse.Namespace):
    """(EncoderOptions, the pruning options that go with every --prune-levels level) from the
    flags, or from the --options file it replays."""
    from .options import EncoderOptions

    kw = {k: v for k, v in (("qp", args.qp), ("step_rule", args.step_rule), ("size_exponent", args.size_exponent),
                             ("rdo_lambda", args.rdo_lambda), ("reconstruction", args.reconstruction),
                             ("quantizer", args.quantizer),
                             ("prune", args.prune), ("prune_global", args.prune_global or None),
                             ("prune_remove", args.prune_remove or None),
                             ("prune_remove_multiple", args.prune_remove_multiple),
                             ("prune_criterion", args.criterion), ("prune_steps", args.prune_steps),
                             ("prune_include", args.prune_include), ("prune_exclude", args.prune_exclude),
                             ("lossless", args.lossless or None), ("error_feedback", args.error_feedback or None),
                             ("probe_channels", args.probe_channels or None),
                             ("nonfinite", "refuse" if args.refuse_nonfinite else None)) if v is not None}
    prune_options = {}
    if args.prune_levels is not None:
        prune_options = {k: kw.pop(k) for k in ("prune_global", "prune_criterion", "prune_steps", "prune_include",
                                                "prune_exclude") if k in kw}
    if args.options:
        if kw:
            p.error("--options replays a whole setting; drop the other quality options")
        return EncoderOptions.from_json(_read_options(args.options)), prune_options
    return EncoderOptions.build(**kw), prune_options


def _encode(args: argparse.Namespace, opts, probing: bool, probed: list) -> bytes | None:
    """Encode without a rate-control goal: the bytes for -o -, else None (streamed to the file,
    so the coded tensors are never all in memory). The probe's report is appended to ``probed``."""
    from .encoder import encode, encode_to_file

    def on_probe(r) -> None:
        probed.append(r)
        _say(args, r.summary())

    calibration = _fit_inputs(args) if args.calibration and opts.needs_calibration else None
    kwargs = dict(progress=None if args.quiet else progress_bar(), calibration=calibration,
                  on_pruned=lambda r: _say(args, r.summary()), probe=probing, target_snr_db=args.synthetic_snr,
                  on_probe=on_probe, threads=args.threads)
    if args.output == STDIO:
        return encode(args.input, opts, **kwargs)
    encode_to_file(args.input, args.output, opts, **kwargs)
    return None


def _encoded(args: argparse.Namespace, shown: str, data: bytes | None, seconds: float, probed) -> None:
    """After encoding: the channel-removal speed-up, the summary line, and the --json document."""
    from nnr.formats.onnx_io import model_bytes_on_disk

    from .decoder import OWN_OUTPUT_MEMORY, default_memory_limit
    from .decoder import open as nnr_open
    from .options import EncoderOptions

    written = data if data is not None else args.output
    coded = nnr_open(written, OWN_OUTPUT_MEMORY)
    stored = EncoderOptions.from_json(coded.metadata()["options"])
    if stored.prune_remove and not args.quiet:
        _report_speedup(args, written)
    lossy = not stored.lossless or bool(stored.prune)
    src = len(args.input) if isinstance(args.input, bytes) else model_bytes_on_disk(args.input)
    size = len(data) if data is not None else os.path.getsize(args.output)
    _say(args, f"{printable(shown)} ({_human(src)}) -> {printable(args.output)} ({_human(size)}, "
               f"{src / max(size, 1):.2f}x smaller, {'lossy' if lossy else 'lossless'}) in {seconds:.1f} s")
    needed = coded.memory_needed()
    if needed > default_memory_limit(size):
        _warn(f"decode this file with --max-memory {-(-needed // 10**6)}MB or more: it decodes to more than the "
              f"default memory limit allows (max(64 MiB, 1024 x the file's size) = {default_memory_limit(size):,} "
              f"bytes; it needs {needed:,})")
    if args.json:
        print_json({"input": shown, "output": args.output, "input_bytes": src, "output_bytes": size, "lossy": lossy,
                    "seconds": round(seconds, 3), "decode_memory": needed, "options": stored.to_json(),
                    "probe": dataclasses.asdict(probed) if probed is not None else None})


def _say(args: argparse.Namespace, message: str) -> None:
    """A notice or summary line on stderr, unless -q."""
    if not args.quiet:
        print(printable(message, True), file=sys.stderr)


def _warn(message: str) -> None:
    """A warning on stderr, even with -q: the output is written but falls short of what the user
    will expect of it (it needs a raised --max-memory, or misses the goal on held-out inputs)."""
    print(printable(f"warning: {message}", True), file=sys.stderr)


def _report_speedup(args: argparse.Namespace, data: bytes | str) -> None:
    """Time the original and the channel-removed model in onnxruntime (one batch) and print it."""
    from nnr.formats.onnx_io import read_model

    from .decoder import OWN_OUTPUT_MEMORY, decode
    from .removal import inference_ms, synthetic_inputs

    original, _ = read_model(args.input)
    if args.calibration:
        from .calibration import load_calibration

        feed = {k: v[:1] for k, v in load_calibration(args.calibration, original).inputs.items()}
    else:
        feed = synthetic_inputs(original)
    if feed is None:
        print("inference speed not measured: give --calibration inputs for this model", file=sys.stderr)
        return
    try:
        before, after = inference_ms(original, feed), inference_ms(decode(data, max_memory=OWN_OUTPUT_MEMORY), feed)
    except Exception as exc:  # onnxruntime refuses the inputs or a model: the file is written all the same
        print(printable(f"inference speed not measured: {first_line(exc)}"), file=sys.stderr)
        return
    shape = "; ".join(f"{k} {'x'.join(map(str, v.shape))}" for k, v in feed.items())
    print(f"inference ({shape}, median of 30 onnxruntime runs): {before:.3f} ms -> {after:.3f} ms "
          f"({before / after:.2f}x)", file=sys.stderr)


def _read_options(path: str) -> dict:
    from nnr.formats.fileio import read_input

    from .errors import InputError

    try:
        doc = json.loads(read_input(path, "an options .json file"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not JSON ({exc})") from exc
    if isinstance(doc, dict) and isinstance(doc.get("options"), dict):
        doc = doc["options"]
    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a JSON object of encoder options")
    return doc


def _fit_inputs(args: argparse.Namespace) -> dict:
    """The calibration inputs error feedback and activation-ranked pruning fit on: the first
    half of the search part, as in the rate-control search, so --options replays a searched
    file byte for byte."""
    from nnr.formats.onnx_io import read_model

    from .calibration import load_calibration

    model, _ = read_model(args.input)
    search_part, _ = load_calibration(args.calibration, model).split(args.holdout)
    return search_part.halves()[0].inputs


def _rate_controlled(args: argparse.Namespace, base, prune_options: dict) -> bytes:
    """Run the rate-control search for nnr-encode and print what it found."""
    from nnr.formats.onnx_io import read_model
    from nnr.formats.fileio import write_bytes_atomic

    from . import ratecontrol as rc
    from .calibration import load_calibration
    from .evaluation import Constraint, describe_metrics
    from .sizes import parse_size

    constraint = target = None
    if args.min_agreement is not None:
        constraint = Constraint("agreement", args.min_agreement)
    elif args.max_accuracy_drop is not None:
        constraint = Constraint("accuracy_drop_pct", args.max_accuracy_drop)
    elif args.min_snr is not None:
        constraint = Constraint("snr_db", args.min_snr)
    elif args.target_size is not None:
        target = parse_size(args.target_size)
    model, _ = read_model(args.input)
    if args.bits_per_weight is not None:
        target = rc.bits_target(model, base, args.bits_per_weight)
    cal = held = None
    if args.calibration:
        cal, held = load_calibration(args.calibration, model).split(args.holdout)
    def say(msg: str) -> None:
        _say(args, msg)

    t0 = time.perf_counter()
    common = dict(cal=cal, held=held, bias_correction=not args.no_bias_correction,
                  budget_seconds=args.budget_seconds, progress=None if args.quiet else progress_bar(), log=say)
    if args.prune_levels is not None:
        levels = [lv.strip() for lv in args.prune_levels.split(",") if lv.strip()]
        res = rc.search_pruning(args.input, base, levels, constraint=constraint, prune_options=prune_options, **common)
    else:
        res = rc.search(args.input, base, constraint=constraint, target_bytes=target, **common)
    say(f"searched {len(res.trials)} settings in {time.perf_counter() - t0:.0f} s"
        + (" (budget reached: best file so far)" if res.out_of_time else ""))
    if target is not None:
        say(f"target {target:,} bytes: got {len(res.data):,} ({100 * (len(res.data) / target - 1):+.1f} %)")
    for label, m, n in (("calibration", res.metrics, len(cal) if cal else 0),
                        ("held-out", res.held_out, len(held) if held else 0)):
        if m:
            say(f"{label} ({n} inputs): {describe_metrics(m)}"
                + ("" if constraint is None else f"  [{constraint}: {'met' if constraint.met(m) else 'NOT met'}]"))
    if constraint is not None and res.held_out and not constraint.met(res.held_out):
        _warn("the held-out inputs miss the constraint; calibrate with more (or more varied) inputs, or ask "
              "for a stricter bound")
    if args.report:
        write_bytes_atomic(args.report, json.dumps(rc.report(res), indent=2).encode())
    return res.data


_MAX_MEMORY_HELP = ("refuse a file that decodes to more than SIZE bytes, e.g. 512MB, 2GiB or 4G (K/M/G count "
                    "1024s, KB/MB/GB 1000s); default max(64 MiB, 1024 x the file's size)")


def decode_main(argv: Sequence[str] | None = None, prog: str = "nnr-decode") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Rebuild a runnable ONNX model from an .nnr bitstream. The result is "
                    "bit-identical on every run and platform.",
        epilog="Exit status: 0 done, 2 bad input or option, 3 damaged .nnr file or (with --check) a "
               "decoded model that fails onnx.checker, 5 output not writable.")
    p.add_argument("input", help=".nnr file (- reads standard input)")
    p.add_argument("-o", "--output", required=True,
                   help="output .onnx file (written atomically; - for standard output, weights inline)")
    p.add_argument("-f", "--force", action="store_true", help="replace OUTPUT (and OUTPUT.data) if it exists")
    ext = p.add_mutually_exclusive_group()
    ext.add_argument("--external-data", dest="external", action="store_true", default=None,
                     help="write weights to OUTPUT.data beside the model (default: as the original)")
    ext.add_argument("--no-external-data", dest="external", action="store_false",
                     help="write a single .onnx file")
    p.add_argument("--check", action="store_true",
                   help="run onnx.checker on the decoded model before writing it; a model that fails "
                        "is not written (exit status 3)")
    p.add_argument("--max-memory", type=_memory_size, metavar="SIZE", help=_MAX_MEMORY_HELP)
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads for entropy decoding and reconstruction (default: every core; the "
                        "model is the same for any count)")
    common_flags(p, "the summary (the files written and their sizes, tensors decoded, seconds)")
    args = p.parse_args(argv)
    if args.json and args.output == STDIO:
        p.error("--json and -o - would both write to standard output; write the model to a path")

    def run() -> int:
        from .decoder import decode_to_file, open as nnr_open

        if args.output == STDIO and args.external:
            raise OptionError("--external-data needs an output file to put the .data file beside; not -")
        _refuse_overwrite(args.output, args.input)
        if args.external is not False:
            _refuse_overwrite(args.output + ".data", args.input)
        _refuse_existing(args.output, args.force)
        source, shown = _source(args.input)
        t0 = time.perf_counter()
        if args.output == STDIO:
            model = nnr_open(source, max_memory=args.max_memory).model(threads=args.threads)
            if args.check:
                import onnx

                _checked(onnx.checker.check_model, model)
            _write(STDIO, model.SerializeToString())
        elif args.check:
            f = nnr_open(source, max_memory=args.max_memory)
            external = args.external if args.external is not None else bool(f.metadata().get("external_data", False))
            _check_and_save(f.model(threads=args.threads), args.output, external)
        else:
            decode_to_file(source, args.output, external_data=args.external, max_memory=args.max_memory,
                           progress=None if args.quiet else progress_bar(), threads=args.threads)
        seconds = time.perf_counter() - t0
        _say(args, f"{printable(shown)} -> {printable(args.output)} in {seconds:.2f} s")
        if args.json:
            f = nnr_open(source, max_memory=args.max_memory)
            external = args.external if args.external is not None else bool(f.metadata().get("external_data"))
            written = [args.output] + ([args.output + ".data"] if external else [])
            print_json({"input": shown, "output": args.output, "checked": args.check, "seconds": round(seconds, 3),
                        "files": {w: os.path.getsize(w) for w in written if os.path.isfile(w)},
                        "tensors": len(f.info())})
        return 0

    return _run(prog, run)


def _check_and_save(model, output: str, external: bool) -> None:
    """Run onnx.checker on the decoded model, then write it; a model that fails leaves no file.
    A model above protobuf's 2 GB limit is checked by path in a temporary folder beside OUTPUT."""
    import onnx
    from google.protobuf.message import EncodeError

    from nnr.formats.onnx_io import save_model

    try:
        _checked(onnx.checker.check_model, model)
    except (EncodeError, ValueError):  # too large to check in memory
        pass
    else:
        save_model(model, output, external_data=external)
        return
    out = Path(output)
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"{output}: cannot write ({exc.strerror})") from exc
    try:
        staged = staging / out.name
        save_model(model, staged, external_data=external)
        _checked(onnx.checker.check_model, str(staged))
        for name in (out.name + ".data", out.name):  # the data first: the model refers to it
            if (staging / name).exists():
                os.replace(staging / name, out.with_name(name))
    except OSError as exc:
        raise OutputError(f"{output}: cannot write ({exc.strerror or exc})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _checked(check: Callable, model) -> None:
    """Call onnx.checker's ``check``; a model it rejects is a FormatError with a one-line message."""
    import onnx

    try:
        check(model)
    except onnx.checker.ValidationError as exc:
        raise FormatError(f"the decoded model fails onnx.checker: {' '.join(str(exc).split())}") from exc


def info_main(argv: Sequence[str] | None = None, prog: str = "nnr-info") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Show how an .nnr file was made and how each tensor is coded.")
    p.add_argument("input", help=".nnr file (- reads standard input)")
    p.add_argument("--max-memory", type=_memory_size, metavar="SIZE", help=_MAX_MEMORY_HELP)
    common_flags(p, "the file's version, size and metadata, and one record per coded tensor (the SNR of a "
                    "lossless tensor is null)")
    args = p.parse_args(argv)

    def run() -> int:
        from .decoder import open as nnr_open

        source, shown = _source(args.input)
        f = nnr_open(source, max_memory=args.max_memory)
        rows = f.info()
        summary = {
            "file": shown,
            "format_version": f.version,
            "file_bytes": len(source) if isinstance(source, bytes) else os.path.getsize(source),
            "metadata": f.metadata(),
            "coded_tensors": len(rows),
            "coded_weights": sum(math.prod(r["shape"]) for r in rows),
        }
        if args.json:
            print_json({**summary, "tensors": rows})
            return 0
        meta = summary["metadata"]
        print(f"{printable(shown)}: nnr format v{f.version}, {_human(summary['file_bytes'])}, "
              f"made by {printable(meta.get('producer', '?'))}")
        print(f"options: {printable(metadata_json(meta.get('options', {}), sort_keys=True))}")
        print(f"{'name':<40} {'dtype':<8} {'shape':<18} {'mode':<8} {'step':>10} {'bits/w':>7} {'SNR dB':>7}")
        for r in rows:
            step = f"{r['step']:.3g}" if r["step"] is not None else ("per-ch" if r["mode"] == "lossy" else "-")
            snr = r["snr_db"]
            snr_s = "-" if snr is None else ("exact" if math.isinf(snr) else f"{snr:.1f}")
            shape = "x".join(map(str, r["shape"])) or "scalar"
            print(f"{printable(r['name'])[:40]:<40} {printable(r['dtype']):<8} {shape:<18} "
                  f"{r['mode']:<8} {step:>10} {r['bits_per_weight']:>7.2f} {snr_s:>7}")
        total_bits = 8 * sum(r["bytes"] for r in rows)
        print(f"{summary['coded_tensors']} coded tensors, {summary['coded_weights']} weights, "
              f"{total_bits / max(summary['coded_weights'], 1):.2f} bits/weight in tensor bodies")
        return 0

    return _run(prog, run)


def batch_main(argv: Sequence[str] | None = None, prog: str = "nnr batch") -> int:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Encode (or decode) every model a manifest lists, one task per model, on local "
                    "processes or on an existing Dask cluster. Each output is written atomically and a "
                    "rerun skips the outputs that exist; a model that fails is reported and the others go on.",
        epilog="MANIFEST lists one model path per line (# starts a comment; relative paths are relative "
               "to the manifest). Outputs are OUT_DIR/<name>.nnr (with --decode, OUT_DIR/<name>.onnx). "
               "With --scheduler every worker must see the same paths. Exit status: 0 every model done "
               "or skipped, 1 some failed, 2 bad manifest or option.")
    p.add_argument("manifest", help="text file listing the models (or .nnr files with --decode)")
    p.add_argument("--out-dir", required=True, help="folder for the outputs (made if missing)")
    p.add_argument("--decode", action="store_true", help="decode .nnr files to ONNX instead of encoding")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local processes (default: one per core, at most one per model)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster whose scheduler is at ADDRESS (e.g. tcp://host:8786); "
                        "needs pip install 'nnr[batch]'")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="threads per model, encoding or decoding (default: the cores divided among the local workers; 1 on Dask)")
    p.add_argument("-f", "--force", action="store_true", help="redo models whose output exists")
    q = p.add_argument_group("encoding (as nnr encode; default: the probe, no data needed)")
    mode = q.add_mutually_exclusive_group()
    mode.add_argument("--data-free", action="store_true", help="the data-free step rule, without the probe")
    mode.add_argument("--lossless", action="store_true", help="bit-exact floats")
    mode.add_argument("--qp", type=float, default=None, help="the data-free rule at this quality offset")
    mode.add_argument("--options", metavar="JSON", help="replay the settings stored by nnr info --json")
    common_flags(p, "one report per model (input, output, status, error, sizes, seconds, worker) and the totals")
    args = p.parse_args(argv)
    if args.decode and (args.data_free or args.lossless or args.qp is not None or args.options):
        p.error("--decode takes no encoding option")
    if args.workers is not None and args.scheduler:
        p.error("--workers sizes the local pool; a Dask cluster sizes itself")

    def run() -> int:
        from . import batch

        if not args.decode:
            require_encoder()
        fields = {"force": args.force, "threads": args.threads}
        if not args.decode:
            from .options import EncoderOptions

            if args.options:
                fields["options"] = EncoderOptions.from_json(_read_options(args.options)).to_json()
            elif args.lossless or args.qp is not None:
                level = {"lossless": True} if args.lossless else {"qp": args.qp}
                fields["options"] = EncoderOptions.build(**level).to_json()
            fields["probe"] = False if args.data_free else None
        tasks = batch.plan(batch.read_manifest(args.manifest), args.out_dir, args.decode, **fields)
        try:
            os.makedirs(args.out_dir, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{args.out_dir}: cannot make the output folder ({exc.strerror or exc})") from exc
        where = f"the Dask cluster at {args.scheduler}" if args.scheduler else "local processes"
        _say(args, f"{len(tasks)} models on {where}")

        def shown(done: int, total: int, r: dict) -> None:
            if r["status"] == batch.FAILED:
                what = r["error"]
            elif r["status"] == batch.SKIPPED:
                what = "skipped (output exists)"
            else:
                what = f"{_human(r['output_bytes'] or 0)} in {r['seconds']:.1f} s"
            _say(args, f"[{done}/{total}] {r['status']:<7} {Path(r['input']).name}: {what}")

        t0 = time.perf_counter()
        reports = batch.run(tasks, workers=args.workers, scheduler=args.scheduler, on_report=shown)
        totals = batch.summary(reports)
        _say(args, f"{totals['ok']} done, {totals['skipped']} skipped, {totals['failed']} failed "
                   f"in {time.perf_counter() - t0:.1f} s")
        if args.json:
            print_json({"models": reports, "totals": totals, "seconds": round(time.perf_counter() - t0, 3)})
        return 1 if totals["failed"] else 0

    return _run(prog, run)


COMMANDS = {
    "encode": ("nnr.cli", "encode_main", "compress an ONNX model into an .nnr file"),
    "decode": ("nnr.cli", "decode_main", "rebuild the ONNX model from an .nnr file"),
    "info": ("nnr.cli", "info_main", "show how an .nnr file was made and how each tensor is coded"),
    "batch": ("nnr.cli", "batch_main", "encode or decode many models on local processes or a Dask cluster"),
    "analyze": ("nnr.analyze", "main", "fit distributions to a model's weights"),
    "search": ("nnr.search", "main", "sweep encoder settings and print the size–fidelity front"),
    "conformance": ("nnr.cli", "conformance_main", "check nnr's promises on real models (source checkout)"),
    "demo": ("nnr.demo", "main", "encode, decode and score EfficientNet-Lite0 (source checkout)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: nnr <command> [options]   (nnr <command> --help for its options)", "",
             "Compress trained neural networks (ONNX) into small, versioned, bit-exact .nnr files.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, _, what) in COMMANDS.items()]
    lines += ["", "  nnr encode model.onnx -o model.nnr      # lossy by default, needs no data",
              "  nnr decode model.nnr -o decoded.onnx"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``nnr <command> …``: dispatch to the command's own parser."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    if args[0] == "--version":
        print(f"nnr {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(f"nnr: error: unknown command {printable(args[0])!r}; choose from {', '.join(COMMANDS)}",
              file=sys.stderr)
        return 2
    return _dispatch(args[0], args[1:], f"nnr {args[0]}")


def _dispatch(command: str, argv: Sequence[str] | None, prog: str) -> int:
    """Import the command's module and run it; a decode-only install says in one line what an
    encoding command needs instead of failing on the missing import."""
    import importlib

    module, name, _ = COMMANDS[command]
    try:
        fn = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("numba", "onnxruntime"):
            raise
        print(f"{prog}: error: needs {exc.name}, which this decode-only install lacks: pip install 'nnr[encode]'",
              file=sys.stderr)
        return 2
    return fn(argv, prog=prog)


def analyze_main(argv: Sequence[str] | None = None, prog: str = "nnr-analyze") -> int:
    return _dispatch("analyze", argv, prog)


def search_main(argv: Sequence[str] | None = None, prog: str = "nnr-search") -> int:
    return _dispatch("search", argv, prog)


def demo_main(argv: Sequence[str] | None = None, prog: str = "nnr-demo") -> int:
    return _dispatch("demo", argv, prog)


def conformance_main(argv: Sequence[str] | None = None, prog: str = "nnr-conformance") -> int:
    """The conformance suite lives in a source checkout (conformance/, with its models and data),
    not in the wheel: run it from there, or say in one line how to get it."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "conformance" / "cli.py").is_file():
        args = list(sys.argv[1:] if argv is None else argv)
        where = ("the conformance suite runs from a source checkout of nnr: clone the repository, then "
                 "pip install -e '.[test]' there")
        if "--version" in args:
            print(f"nnr {__version__}")
            return 0
        if "-h" in args or "--help" in args:
            print(f"usage: {prog} [options]\n\nCheck nnr's promises on real models and the reference files; {where}.")
            return 0
        print(f"{prog}: error: {where}", file=sys.stderr)
        return 2
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from conformance.cli import main as run_suite

    return run_suite(argv, prog=prog)


if __name__ == "__main__":
    sys.exit(main())
