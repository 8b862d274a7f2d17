"""The encoding pipeline: ONNX → tensors → quantize or lossless-code → container bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from onnx import ModelProto

from nnr.codec import exactmath
from nnr.codec.allocation import steps_for
from nnr.codec.floatcast import compute_dtype, snr_db, to_float64, to_storage
from nnr.codec.floatplanes import encode_float_fields
from nnr.codec.lossy_encode import Feedback, LevelOverflow, encode_lossy
from nnr.codec.quantizers import encode_deadzone, encode_minifloat, encode_mulaw
from nnr.codec.quantizer_spec import parse as parse_quantizer
from nnr.formats.container import (CODING_CODEBOOK, CODING_FLOAT_LOSSLESS, CODING_LOSSY, CODING_MINIFLOAT, CODING_RAW,
                               ContainerWriter, TensorUnit)
from nnr.formats.fileio import atomic_writer
from nnr.formats.onnx_io import (COMPLEX_TYPES, COMPONENT_DTYPE, FLOAT_TYPES, STORAGE_DTYPES, is_external,
                             read_model, strip_tensor, tensor_bytes, tensor_slots, uses_typed_field,
                             with_inline_data)

from . import __version__
from .errors import OptionError, UnsupportedModelError
from .hessians import layer_hessians
from .pruning import PruneReport, prune_model
from .removal import remove_channels
from .options import EncoderOptions
from .probe import CHECK_TOLERANCE_DB, DEFAULT_SNR_DB, FALLBACK_QP_OFFSET, MAX_RETRIES as MAX_PROBE_RETRIES
from .probe import Probe, ProbeReport, ProbeUnavailable, next_level, plan, snr_of
from .tensorcodec import FLOAT_FORMAT_OF
from .threads import available_cores, bounded_map, resolve as resolve_threads

Progress = Callable[[int, int, str], None]


def code_float(name: str, storage: np.ndarray, fmt: str, opts: EncoderOptions,
               feedback: Feedback | None = None) -> tuple[int, bytes, float, np.ndarray]:
    """Code one float tensor: (coding, body, weight SNR in dB, what the decoder will rebuild).

    ``feedback`` (the layer's input statistics) is used when ``opts.error_feedback`` is set."""
    values = to_float64(storage, fmt)
    finite = bool(np.all(np.isfinite(values)))
    if not finite and opts.nonfinite == "refuse":
        raise UnsupportedModelError(f"tensor {name!r} holds NaN or Inf values; encode with "
                                    "nonfinite='lossless' to keep them exactly")
    if opts.lossless or not finite or not np.any(values):
        return CODING_FLOAT_LOSSLESS, encode_float_fields(storage, storage.dtype.itemsize), float("inf"), storage
    quantizer = parse_quantizer(opts.quantizer)
    steps = steps_for(values, opts.qp_of(name), opts.rule_of(name), opts.vector_qp, opts.size_exponent)
    out_dtype = compute_dtype(fmt)
    try:
        if quantizer.kind == "ecsq":
            fb = feedback if opts.error_feedback and _fits(feedback, values, steps) else None
            coding, result = CODING_LOSSY, encode_lossy(values, steps, lam=opts.rdo_lambda, out_dtype=out_dtype,
                                                        feedback=fb, reconstruction=opts.reconstruction)
            body, recon = result.body, result.reconstruction
        elif quantizer.kind in ("midtread", "midrise", "deadzone"):
            result = encode_deadzone(values, steps, quantizer.delta, out_dtype)
            coding, body, recon = CODING_LOSSY, result.body, result.reconstruction
        elif quantizer.kind == "mulaw":
            step = exactmath.exp(float(np.mean(exactmath.log(steps))))
            coding, (body, recon) = CODING_CODEBOOK, encode_mulaw(values, step, quantizer.mu, out_dtype)
        else:
            coding = CODING_MINIFLOAT
            body, recon = encode_minifloat(values, quantizer.exponent_bits, quantizer.mantissa_bits, out_dtype)
    except LevelOverflow:  # outliers too far out for this step: keep the tensor exact
        return CODING_FLOAT_LOSSLESS, encode_float_fields(storage, storage.dtype.itemsize), float("inf"), storage
    rebuilt = to_storage(recon, fmt)
    return coding, body, snr_db(values, to_float64(rebuilt, fmt)), rebuilt


def _fits(fb: Feedback | None, values: np.ndarray, steps: np.ndarray) -> bool:
    """Whether layer statistics ``fb`` describe a weight of this shape (and step layout)."""
    if fb is None or values.ndim < 2:
        return False
    rows, d = (values.shape[-1], values.size // values.shape[-1]) if fb.transposed else \
        (values.shape[0], values.size // values.shape[0])
    groups = fb.hessian.shape[0]
    return (fb.hessian.shape[1:] == (d, d) and rows % groups == 0
            and (steps.size == 1 or (steps.size == rows and not fb.transposed)))


def _prune(proto: ModelProto, base_dir, opts: EncoderOptions,
           calibration: dict[str, np.ndarray] | None) -> PruneReport:
    """Zero (and with ``prune_remove`` remove) weights of ``proto`` in place, as ``opts`` say."""
    report = prune_model(proto, opts.prune, global_threshold=opts.prune_global, criterion=opts.prune_criterion,
                         include=opts.prune_include, exclude=opts.prune_exclude, calibration=calibration,
                         steps=opts.prune_steps, base_dir=base_dir)
    if opts.prune_remove:
        report.removal = remove_channels(proto, {t.name: t.dropped for t in report.tensors if t.dropped is not None},
                                         opts.prune_remove_multiple)
        if report.removal.channels_removed == 0:
            reasons = "; ".join(f"{w}: {why}" for w, (_, why) in report.removal.zeroed.items()) or "none pruned"
            raise UnsupportedModelError(f"--remove: no pruned channel can be removed exactly from this graph "
                                        f"({reasons}). Prune without --remove to zero them instead.")
    return report


LEVEL_KEYS = frozenset({"qp", "lossless", "tensor_qp", "channel_steps", "quantizer", "error_feedback", "prune"})
"""Keyword options that choose the coding level or method themselves: given any of them, the
probe stays off unless asked for (``probe=True``)."""


def probe_applies(opts: EncoderOptions) -> bool:
    """Whether the probe can set the steps of ``opts``: the ecsq quantizer, lossy, no error
    feedback and no pruning (whose losses it would not see)."""
    return not (opts.lossless or opts.error_feedback or opts.prune or parse_quantizer(opts.quantizer).kind != "ecsq")


def encode(model: str | os.PathLike | bytes | ModelProto, options: EncoderOptions | None = None,
           progress: Progress | None = None, *, calibration: dict[str, np.ndarray] | None = None,
           feedback: dict[str, Feedback] | None = None,
           on_pruned: Callable[[PruneReport], None] | None = None, probe: bool | None = None,
           target_snr_db: float | None = None, on_probe: Callable[[ProbeReport], None] | None = None,
           threads: int | None = None, **kwargs) -> bytes:
    """Encode an ONNX model (path, bytes or ModelProto) to .nnr bytes (encode_to_file writes
    a file instead, without holding the coded tensors in memory).

    Options come as an EncoderOptions or as keywords (``qp=-20``, ``lossless=True``, ...).
    With neither a level nor a method given (no options object, none of LEVEL_KEYS), the
    probe (nnr.probe) sets each tensor's step from how much the model's output moves on
    synthetic inputs, aiming at ``target_snr_db`` there; ``probe=False`` keeps the data-free
    step rule, ``probe=True`` asks for the probe with any options. When the model cannot run
    on synthetic inputs the data-free rule is used; ``on_probe`` receives a ProbeReport either way.
    With ``error_feedback`` the layer statistics come from ``calibration`` (input name →
    array, batch along axis 0) or ready-made as ``feedback`` (nnr.hessians.layer_hessians).
    With ``prune``, weights are zeroed first (nnr.pruning; ``filters:activation`` ranks on
    ``calibration``) and ``on_pruned`` receives the report. The input model is not modified.
    Tensors are coded on ``threads`` threads (default: every core this process may use); the
    bytes are the same whatever the count.
    """
    out = io.BytesIO()
    _encode(model, out, None, options, progress, calibration=calibration, feedback=feedback, on_pruned=on_pruned,
            probe=probe, target_snr_db=target_snr_db, on_probe=on_probe, threads=threads, **kwargs)
    return out.getvalue()


def encode_to_file(model: str | os.PathLike | bytes | ModelProto, output: str | os.PathLike,
                   options: EncoderOptions | None = None, progress: Progress | None = None, **kwargs) -> int:
    """Encode like ``encode`` into the file ``output``, written atomically (on any error no
    file is left). Each tensor's coded unit goes to a temporary file beside ``output`` as it is
    made, so memory holds the model and one tensor's work, not the coded file. Returns the
    file's size in bytes."""
    spill_dir = Path(output).parent if str(Path(output).parent) else Path(".")
    with atomic_writer(output) as fh:
        return _encode(model, fh, spill_dir, options, progress, **kwargs)


def _encode(model: str | os.PathLike | bytes | ModelProto, out: BinaryIO, spill_dir: Path | None,
            options: EncoderOptions | None = None, progress: Progress | None = None, *,
            calibration: dict[str, np.ndarray] | None = None, feedback: dict[str, Feedback] | None = None,
            on_pruned: Callable[[PruneReport], None] | None = None, probe: bool | None = None,
            target_snr_db: float | None = None, on_probe: Callable[[ProbeReport], None] | None = None,
            threads: int | None = None, **kwargs) -> int:
    """encode's pipeline, writing the container to ``out``; coded units spill to temporary
    files in ``spill_dir`` (memory when None). Returns the bytes written."""
    if options is not None and kwargs:
        raise TypeError("pass either options or keyword options, not both")
    threads = resolve_threads(threads)
    if probe is None:
        probe = options is None and not (LEVEL_KEYS & kwargs.keys())
    opts = options if options is not None else EncoderOptions.build(**kwargs)
    target = DEFAULT_SNR_DB if target_snr_db is None else float(target_snr_db)
    if probe and not probe_applies(opts):
        raise OptionError("the probe sets steps for the default ecsq quantizer of an unpruned model; it does not "
                          "combine with lossless, error feedback, pruning or another quantizer")
    if target_snr_db is not None and not probe:
        raise OptionError("a target output SNR (--synthetic-snr) is the probe's aim; it does not combine with "
                          "options that set the steps otherwise (--data-free, --qp, --lossless, --options, "
                          "--quantizer, --error-feedback, --prune)")
    if not math.isfinite(target) or not 0 < target <= 120:
        raise OptionError(f"the probe's target output SNR must be in (0, 120] dB, got {target_snr_db!r}")
    proto, base_dir = read_model(model)
    if isinstance(model, ModelProto):
        proto = ModelProto()
        proto.CopyFrom(model)
    had_external = any(is_external(s.tensor) for s in tensor_slots(proto))
    if opts.prune:
        if had_external:
            proto = with_inline_data(proto, base_dir)
        report = _prune(proto, base_dir, opts, calibration)
        if on_pruned is not None:
            on_pruned(report)
    if opts.error_feedback and feedback is None:
        if calibration is None:
            raise OptionError("error_feedback needs calibration inputs: give --calibration (or calibration=)")
        feedback = layer_hessians(with_inline_data(proto, base_dir), calibration)
    feedback = feedback or {}
    prober, probed, requested = None, None, opts
    if probe:
        opts, prober, probed = _plan(proto, base_dir, had_external, opts, target, progress, threads)
    history: list[tuple[float, float]] = probed.levels if probed is not None else []
    best = None
    with contextlib.ExitStack() as spills:
        while True:
            work = proto
            if prober is not None:
                work = ModelProto()
                work.CopyFrom(proto)
            spill = spills.enter_context(tempfile.TemporaryFile(dir=spill_dir)) if spill_dir is not None else None
            writer = ContainerWriter(spill=spill)
            typed_fields, rebuilt = _code_tensors(work, base_dir, opts, feedback, progress, prober is not None, writer,
                                                  threads)
            if prober is None:
                break
            try:
                snr = snr_of(prober.distortion(rebuilt))
            except Exception as exc:  # onnxruntime refuses the coded weights: code with the data-free rule
                opts, prober, probed = _fallback(requested, target,
                                                 f"onnxruntime failed checking the coded model: {exc}")
                continue
            del rebuilt
            history.append((opts.qp, snr))
            met = snr >= target - CHECK_TOLERANCE_DB
            coded = (True, -writer.body_bytes) if met else (False, snr)
            if best is None or coded > best[0]:  # met beats missed; then smaller if met, else closer
                if best is not None and best[-1] is not None:
                    best[-1].close()  # the spilled units of the attempt it replaces
                best = (coded, snr, opts, work, writer, typed_fields, spill)
            elif spill is not None:
                spill.close()
            level = next_level(history, target)
            if level is None or len(history) > MAX_PROBE_RETRIES or any(q == level for q, _ in history):
                _, probed.expected_snr_db, opts, work, writer, typed_fields, _ = best
                break
            opts = dataclasses.replace(opts, qp=level)
        if probed is not None and on_probe is not None:
            on_probe(probed)
        meta = {
            "producer": f"nnr {__version__}",
            "options": opts.to_json(),
            "external_data": had_external,
            "slots": len(tensor_slots(proto)),
            "typed_fields": typed_fields,
        }
        return writer.finish(out, meta, work.SerializeToString())


def _plan(proto: ModelProto, base_dir, had_external: bool, opts: EncoderOptions, target: float,
          progress: Progress | None, threads: int) -> tuple[EncoderOptions, Probe | None, ProbeReport]:
    """The probe's options; when the model can't be probed, the data-free rule's one step
    finer than asked (nothing was measured, so the default stays on the safe side)."""
    try:
        # the probe runs one onnxruntime run per thread at once: more than the cores only adds memory
        return plan(proto, opts, target, progress, base_dir=base_dir, threads=min(threads, available_cores()))
    except ProbeUnavailable as exc:
        return _fallback(opts, target, str(exc))


def _fallback(requested: EncoderOptions, target: float, why: str) -> tuple[EncoderOptions, None, ProbeReport]:
    """The data-free rule one step finer than ``requested`` (the options before the probe)."""
    safer = dataclasses.replace(requested, qp=max(-80.0, requested.qp + FALLBACK_QP_OFFSET))
    first = why.strip().splitlines()[0][:200] if why.strip() else "unknown reason"
    return safer, None, ProbeReport(target, notice=first, fallback_qp=safer.qp)


def _code_tensors(proto: ModelProto, base_dir, opts: EncoderOptions, feedback: dict[str, Feedback],
                  progress: Progress | None, keep: bool, writer: ContainerWriter,
                  threads: int = 1) -> tuple[list[int], dict[int, np.ndarray]]:
    """Code every tensor of ``proto`` into ``writer`` (stripping each from the graph): returns the
    slots that used typed fields and (with ``keep``) what the decoder will rebuild of each lossy
    float slot. Tensors are read here, in slot order, and coded on ``threads`` threads (the
    numba kernels release the GIL); units are written in slot order, so the file is the same
    whatever the thread count."""
    slots = tensor_slots(proto)
    typed_fields: list[int] = []
    rebuilt: dict[int, np.ndarray] = {}

    def jobs():
        for i, slot in enumerate(slots):
            t = slot.tensor
            if t.data_type not in STORAGE_DTYPES:
                continue
            numel = int(np.prod(t.dims, dtype=np.int64)) if t.dims else 1
            is_float = t.data_type in FLOAT_TYPES or t.data_type in COMPLEX_TYPES
            if not is_external(t) and (not is_float or numel < opts.min_elements):
                continue
            storage = np.frombuffer(tensor_bytes(t, base_dir), dtype=STORAGE_DTYPES[t.data_type])
            yield i, slot, t.data_type, tuple(int(d) for d in t.dims), storage

    def code(job):
        i, slot, dtype, dims, storage = job
        return i, slot, dtype, dims, _code_storage(slot.name, dtype, dims, storage, opts, feedback.get(slot.name))

    for i, slot, dtype, dims, (coding, body, snr, recon) in bounded_map(code, jobs(), threads if threads > 1 else 0, "nnr-encode"):
        if progress is not None:
            progress(i, len(slots), slot.name)
        if keep and recon is not None:
            rebuilt[slot.index] = recon
        writer.add(TensorUnit(slot.index, slot.name, dtype, dims, coding, body, snr))
        if uses_typed_field(slot.tensor):
            typed_fields.append(slot.index)
        strip_tensor(slot.tensor)
    if progress is not None:
        progress(len(slots), len(slots), "")
    return typed_fields, rebuilt


def _code_storage(name: str, dtype: int, dims: tuple[int, ...], storage: np.ndarray, opts: EncoderOptions,
                  feedback: Feedback | None) -> tuple[int, bytes, float, np.ndarray | None]:
    """One tensor's (coding, body, SNR, what the decoder rebuilds of a lossy float tensor or None)."""
    if dtype in COMPLEX_TYPES:  # coded as the float tensor of its parts, shape dims + [2]
        part = COMPONENT_DTYPE[dtype]
        coding, body, snr, _ = code_float(name, storage.view(STORAGE_DTYPES[part]).reshape(dims + (2,)),
                                          FLOAT_FORMAT_OF[part], opts)
        return coding, body, snr, None
    if dtype in FLOAT_TYPES:
        coding, body, snr, recon = code_float(name, storage.reshape(dims), FLOAT_FORMAT_OF[dtype], opts, feedback)
        return coding, body, snr, (None if coding == CODING_FLOAT_LOSSLESS else recon)
    return CODING_RAW, storage.tobytes(), float("nan"), None
