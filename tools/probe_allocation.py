"""How much of the probe's per-tensor allocation to trust: its offsets scaled by weights w.

    python tools/probe_allocation.py --models crepe_tiny,mnist_cnn --weights 0,0.5,1 \\
        --markdown docs/probe_allocation.md

The probe (nnr.probe) measures each weight tensor's output sensitivity s on synthetic inputs;
the high-rate optimum gives it the step c/√s, i.e. a qp offset d from the common level. The
encoder applies w·d with w = nnr.probe.OFFSET_WEIGHT (clipped to ±MAX_OFFSET). Here each w
is measured on its own: the offsets w·d are fixed and the common level is swept over qp
(as tools/compare_nncodec.py sweeps the data-free rule, which is w = 0), each point decoded
and run on the model's real inputs; the table gives the smallest whole file meeting each
threshold of compare_nncodec.py. Sweeping the level directly, rather than the probe's
target SNR, keeps the target-to-real mapping out of the comparison.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402
from tools.compare_nncodec import (QP_LIMITS, THRESHOLDS, Point, best_point, parse_qps,  # noqa: E402
                                   select_models, sweep, threshold_metric)


def ideal_offsets(model) -> dict[str, float]:
    """The probe's unweighted, unclipped per-tensor qp offsets (tensor name → d)."""
    from nnr.options import EncoderOptions
    from nnr.probe import plan

    opts, _, _ = plan(model, EncoderOptions(), offset_weight=1.0, max_offset=float("inf"))
    return dict(opts.tensor_qp)


def weighted(offsets: dict[str, float], w: float) -> dict[str, float]:
    """Offsets scaled by ``w``, clipped and gridded as the encoder does."""
    from nnr.probe import MAX_OFFSET, _grid

    out = {n: _grid(max(-MAX_OFFSET, min(MAX_OFFSET, w * d))) for n, d in offsets.items()}
    return {n: q for n, q in out.items() if q != 0.0}


def measure(name: str, manifest, weights: list[float], qps: list[float], log) -> dict:
    import time

    import nnr
    from nnr.decoder import OWN_OUTPUT_MEMORY
    from conformance.corpus import load_model
    from conformance.tasks import TASKS
    from nnr.formats.onnx_io import read_model
    from nnr.options import EncoderOptions

    task = TASKS[manifest.models[name].task]
    metric = threshold_metric(task.primary)
    model, path = load_model(name, manifest)
    source = path or model
    ref = task.infer(model)
    offsets = ideal_offsets(read_model(source)[0])
    result = {"metric": metric, "tensors": len(offsets), "weights": {}}
    for w in weights:
        tensor_qp = weighted(offsets, w)

        def point(qp: float) -> Point:
            t0 = time.perf_counter()
            data = nnr.encode(source, EncoderOptions(qp=qp, tensor_qp=tensor_qp), probe=False)
            decoded = nnr.decode(data, max_memory=OWN_OUTPUT_MEMORY)   # coarse points are below the default's bits
            metrics = {k: float(v) for k, v in task.measure(ref, task.infer(decoded)).items()}
            p = Point(qp, len(data), metrics, time.perf_counter() - t0)
            log(f"w {w:g} qp {qp:g}: {p.bytes:,} B, {metric} {metrics.get(metric, float('nan')):.4f}")
            return p

        points = sweep(point, qps, metric, QP_LIMITS["nnr"], log)
        result["weights"][w] = {level: (lambda b: b and {"qp": b.qp, "bytes": b.bytes})(best_point(points, metric, level))
                                for level in THRESHOLDS}
    return result


def render(command: str, results: dict[str, dict], weights: list[float]) -> str:
    head = " | ".join(f"{level}: w = {w:g}" for level in THRESHOLDS for w in weights)
    lines = ["```sh", command, "```", "",
             "Smallest whole file (bytes) meeting each threshold, with the probe's offsets scaled by w "
             "(w = 0 is the data-free rule) and the common level swept over qp.", "",
             f"| model | {head} |", "|---|" + "--:|" * (len(weights) * len(THRESHOLDS))]
    for name, r in results.items():
        cells = []
        for level in THRESHOLDS:
            sizes = {w: (r["weights"][w][level] or {}).get("bytes") for w in weights}
            best = min((b for b in sizes.values() if b), default=None)
            cells += [("–" if b is None else (f"**{b:,}**" if b == best else f"{b:,}")) for b in sizes.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from conformance.corpus import load_manifest

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", required=True, help="comma list of corpus models the probe can run")
    ap.add_argument("--weights", default="0,0.5,1", help="offset weights w (default 0,0.5,1)")
    ap.add_argument("--qps", default="-32:-8:2", help="common levels: FIRST:LAST:STEP or a comma list, "
                    "extended like compare_nncodec.py's sweeps (default -32:-8:2)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    weights = parse_qps(args.weights)
    if any(w < 0 for w in weights):
        raise SystemExit("probe_allocation: offset weights must be >= 0")
    qps = parse_qps(args.qps)
    results = {}
    for name in select_models(args.models, manifest):
        results[name] = measure(name, manifest, weights, qps,
                                lambda msg, n=name: print(f"[{n}] {msg}", file=sys.stderr, flush=True))
    command = shlex.join(["python", "tools/probe_allocation.py", *argv])
    if args.json:
        args.json.write_text(json.dumps({"command": command, "models": results}, indent=1) + "\n")
    emit(render(command, results, weights), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
