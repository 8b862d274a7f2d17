"""What dependent (trellis-coded) quantization would save over nnr's RDO deadzone quantizer, at
equal fidelity on each corpus model's real inputs, before any format carries it.

    python tools/dq_potential.py --markdown docs/dq_potential.md --json docs/dq_potential.json

Dependent quantization (NNC's, after VVC's) switches between two scalar quantizers with a
4-state machine driven by the parity of each level: Q0 reconstructs even multiples of Δ
(2k·Δ), Q1 odd ones ((2k − sgn k)·Δ), and the state after a level is TRANSITIONS[state][|k| & 1]
(start state 0). The encoder picks all levels of a tensor jointly with a Viterbi search over
the states (cost: squared error + λ·bits), so the reconstructions form a denser lattice than
either quantizer alone for the bits spent.

For every weight nnr quantizes (≥ 2-D float tensors) at each qp of a sweep, with the
data-free rule's step of the default options:

* **ecsq**: nnr's tensor coder as it is (codec.lossy_encode via nnr.encoder.code_float);
  bytes are its bodies.
* **dq**: the Viterbi search with Δ = step / 2 and one rate table (the magnitudes' code
  lengths, re-estimated from counts three times; the encoder's ECSQ search does it once), and
  λ = 0.2 Δ² per bit by default, i.e. 0.05 step² (ECSQ's is 0.1 step²); Δ then scaled to
  keep each tensor's gain (Σ x̂·x = Σ x², the default reconstruction's principle) and snapped
  to the format's 8-bit step mantissa. Bytes are exact for a body that differs from today's
  only in a flag: each ECSQ body with its level block replaced by nnr's level coder run on
  the DQ levels (codec.levelcode.encode_levels, context tables and all).
* **dq + state contexts**: the same levels if their magnitudes were coded with a table per
  quantizer (state < 2 or not, NNC's context split): the dq bytes minus the drop in empirical
  conditional entropy that split gives (an estimate, table bytes not counted).

1-D tensors (biases, norms) keep their exact values in every model, so differences come from
the quantizer alone. Each threshold's pick is the smallest payload on the sweep that meets it
(the thresholds of tools/compare_nncodec.py); "equal weight SNR" interpolates dq's bytes at
ecsq's weight SNR (the coding gain without the model in the loop).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numba
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import compare_nncodec as cn  # noqa: E402
from tools._emit import emit  # noqa: E402
from tools.where_bytes_go import entropy_bytes  # noqa: E402

TRANSITIONS = np.array([[0, 2], [2, 0], [1, 3], [3, 1]], dtype=np.int64)
RATE_PASSES = 3


@numba.njit(cache=True, nogil=True)
def _viterbi(v: np.ndarray, lam: float, bits: np.ndarray, trans: np.ndarray):
    """Levels (signed) and the state each was coded in, minimising Σ (|v| − r)² + lam·bits[|k|]."""
    n = v.size
    kmax = bits.size - 1
    inf = 1e300
    cost = np.full(4, inf)
    cost[0] = 0.0
    new = np.empty(4)
    from_state = np.zeros((n, 4), np.int8)
    level = np.zeros((n, 4), np.int64)
    for i in range(n):
        a = abs(v[i])
        new[:] = inf
        for s in range(4):
            if cost[s] >= inf:
                continue
            odd = s >> 1
            k0 = np.int64((a + odd) / 2.0)
            for t in range(3):
                k = 0 if t == 0 else k0 + t - 1
                if t == 1 and k0 == 0:
                    continue
                r = 0.0 if k == 0 else 2.0 * k - odd
                c = cost[s] + (a - r) * (a - r) + lam * bits[min(k, kmax)]
                ns = trans[s, k & 1]
                if c < new[ns]:
                    new[ns] = c
                    from_state[i, ns] = s
                    level[i, ns] = k
        cost[:] = new
    s = np.argmin(cost)
    out = np.empty(n, np.int64)
    states = np.empty(n, np.int64)
    for i in range(n - 1, -1, -1):
        k = level[i, s]
        out[i] = -k if v[i] < 0 else k
        s = from_state[i, s]
        states[i] = s
    return out, states


def dq_reconstruction(levels: np.ndarray, states: np.ndarray) -> np.ndarray:
    """Reconstruction in units of Δ: 2k (Q0, states 0–1) or 2k − sgn k (Q1, states 2–3)."""
    odd = (states >> 1).astype(np.float64)
    return 2.0 * levels - np.sign(levels) * odd


STATE_AT = np.array([0, 2, 3, 1], dtype=np.int64)   # state at position u of the cycle 0 → 2 → 3 → 1


def states_of(levels: np.ndarray) -> np.ndarray:
    """The state each level is coded in, replayed from the parities as a decoder would, without
    a loop: on the cycle 0 → 2 → 3 → 1 an odd level moves the state one position on (u + 1)
    and an even one mirrors it (−u), so u = ε·c with ε = (−1)^(even levels so far) and c the
    sum of ε over the odd levels so far (exclusive prefix sums, mod 4)."""
    odd = np.abs(np.asarray(levels, dtype=np.int64)).ravel() & 1
    even_before = np.cumsum(1 - odd) - (1 - odd)
    eps = 1 - 2 * (even_before & 1)
    step = odd * eps
    c = np.cumsum(step) - step
    return STATE_AT[(eps * c) % 4]


def dq_quantize(x: np.ndarray, delta: float, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(levels, states) of ``x`` with step Δ = ``delta``, rate table re-estimated RATE_PASSES times."""
    from nnr.codec.quantize import bits_from_counts, laplace_bits

    v = np.ascontiguousarray(x, dtype=np.float64).ravel() / delta
    kmax = int(min(np.abs(v).max() / 2.0 + 2.0, 4096.0))
    bits = laplace_bits(float(np.mean(np.abs(v))) / 2.0, kmax)
    for _ in range(RATE_PASSES):
        levels, states = _viterbi(v, float(lam), bits, TRANSITIONS)
        bits = bits_from_counts(np.bincount(np.minimum(np.abs(levels), kmax), minlength=kmax + 1))
    return levels, states


def level_block(body: bytes, count: int) -> tuple[int, np.ndarray]:
    """(offset of the main level block, its levels) of an ECSQ body."""
    from nnr.codec.bytestream import ByteReader
    from nnr.codec.levelcode import decode_levels
    from nnr.codec.lossy_decode import main_block_offset

    _, offset = main_block_offset(body)
    return offset, decode_levels(ByteReader(bytes(body[offset:]), "level block"), count)


def code_dq(x: np.ndarray, ecsq_body: bytes, step: float, lam: float) -> tuple[np.ndarray, bytes, float]:
    """(reconstruction, body, bytes state contexts would save) of one tensor: the body is the
    ECSQ body with its main level block, its last part, coded from the DQ levels instead."""
    from nnr.codec.levelcode import encode_levels
    from nnr.codec.lossy_decode import step_values
    from nnr.codec.lossy_encode import dyadic_steps

    levels, states = dq_quantize(x, step / 2.0, lam)
    if not np.array_equal(states_of(levels), states):
        raise RuntimeError("the Viterbi path's states differ from the states its levels replay to")
    r = dq_reconstruction(levels, states).reshape(x.shape)
    proj = float(np.sum(r * x))
    delta = float(np.sum(x * x)) / proj if proj > 0 else step / 2.0
    mant, shifts, e = dyadic_steps(np.array([delta]))
    delta = float(step_values(mant, e - shifts)[0])
    offset, old = level_block(ecsq_body, x.size)
    if old.size != x.size:
        raise RuntimeError("the ECSQ body's main level block is not its last part")
    body = bytes(ecsq_body[:offset]) + encode_levels(levels)
    mags = np.abs(levels)
    saved = entropy_bytes(mags) - entropy_bytes(mags, states >> 1)
    return r * delta, body, saved


def measure(name: str, manifest: Any, qps: list[float], lam: float, log: Callable[[str], None]) -> dict:
    from onnx import ModelProto

    from conformance.corpus import load_model
    from conformance.tasks import TASKS
    from nnr.codec.floatcast import to_float64, to_storage
    from nnr.encoder import code_float
    from nnr.codec.lossy_decode import lossy_step
    from nnr.formats.container import CODING_LOSSY
    from nnr.formats.onnx_io import fill_tensor, strip_tensor, tensor_slots
    from nnr.options import EncoderOptions
    from nnr.probe import float_weights

    task = TASKS[manifest.models[name].task]
    metric = cn.threshold_metric(task.primary)
    model, path = load_model(name, manifest)
    ref = task.infer(model)
    weights = float_weights(model, path.parent if path else None, EncoderOptions())

    def run(rebuilt: dict[int, np.ndarray]) -> float:
        work = ModelProto()
        work.CopyFrom(model)
        slots = tensor_slots(work)
        for slot, storage in rebuilt.items():
            strip_tensor(slots[slot].tensor)
            fill_tensor(slots[slot].tensor, storage.tobytes())
        return float(task.measure(ref, task.infer(work))[metric])

    points = []
    for qp in qps:
        t0 = time.monotonic()
        opts = EncoderOptions(qp=qp)
        ecsq, dq = {}, {}
        row = {"qp": qp, "ecsq_bytes": 0, "dq_bytes": 0, "state_saves": 0.0, "ecsq_err": 0.0, "dq_err": 0.0,
               "energy": 0.0}
        for w in weights:
            x = to_float64(w.storage, w.fmt)
            coding, body, _, rebuilt = code_float(w.name, w.storage, w.fmt, opts)
            ecsq[w.slot] = rebuilt
            row["ecsq_bytes"] += len(body)
            row["energy"] += float(np.sum(x * x))
            row["ecsq_err"] += float(np.sum((to_float64(rebuilt, w.fmt) - x) ** 2))
            step = lossy_step(body) if coding == CODING_LOSSY else None
            if step is None:   # kept exact (range too wide for the step), or per-channel steps: alike in both
                dq[w.slot] = rebuilt
                row["dq_bytes"] += len(body)
                continue
            r, dq_body, saved = code_dq(x, body, float(step), lam)
            size = len(dq_body)
            dq[w.slot] = to_storage(r, w.fmt).reshape(w.storage.shape)
            row["dq_bytes"] += size
            row["state_saves"] += saved
            row["dq_err"] += float(np.sum((to_float64(dq[w.slot], w.fmt) - x) ** 2))
        row["ecsq_metric"] = run(ecsq)
        row["dq_metric"] = run(dq)
        points.append(row)
        log(f"[{name}] qp {qp:g}: ecsq {row['ecsq_bytes']:,} B {row['ecsq_metric']:.4g}, "
            f"dq {row['dq_bytes']:,} B {row['dq_metric']:.4g} (state contexts −{row['state_saves']:,.0f} B), "
            f"{time.monotonic() - t0:.1f} s")
    return {"metric": metric, "weights": sum(w.numel for w in weights), "tensors": len(weights), "points": points}


def pick(points: list[dict], metric: str, level: str, codec: str) -> dict | None:
    """Smallest payload of ``codec`` meeting ``level``."""
    side = "ecsq" if codec == "ecsq" else "dq"

    def size(p: dict) -> float:
        return p[f"{side}_bytes"] - (p["state_saves"] if codec == "dq_state" else 0.0)
    ok = [p for p in points if p[f"{side}_metric"] >= cn.THRESHOLDS[level][metric]]
    if not ok:
        return None
    best = min(ok, key=size)
    return {"qp": best["qp"], "bytes": size(best), "metric": best[f"{side}_metric"]}


def weight_snr(err: float, energy: float) -> float:
    return 10.0 * math.log10(energy / err) if err > 0 else math.inf


def equal_snr_saving(points: list[dict]) -> float | None:
    """Mean share of bytes dq saves at ecsq's weight SNR, over the sweep points inside dq's range."""
    d = sorted((weight_snr(p["dq_err"], p["energy"]), math.log(p["dq_bytes"])) for p in points if p["dq_err"] > 0)
    if len(d) < 2:
        return None
    snr = np.array([a for a, _ in d])
    logb = np.array([b for _, b in d])
    shares = []
    for p in points:
        s = weight_snr(p["ecsq_err"], p["energy"])
        if snr[0] <= s <= snr[-1]:
            shares.append(1.0 - math.exp(float(np.interp(s, snr, logb))) / p["ecsq_bytes"])
    return float(np.mean(shares)) if shares else None


def render(command: str, results: dict[str, dict]) -> str:
    def cell(p: dict | None, metric: str) -> str:
        if p is None:
            return "not met"
        value = f"{p['metric']:.4f}" if metric == "agreement" else f"{p['metric']:.1f} dB"
        return f"{p['bytes']:,.0f} (qp {p['qp']:g}, {value})"

    def saves(a: dict | None, b: dict | None) -> str:
        return "–" if a is None or b is None else f"{100.0 * (1.0 - b['bytes'] / a['bytes']):+.1f} %"

    lines = ["```sh", command, "```", "",
             "Payload of the ≥ 2-D tensors (bytes) at each threshold's pick: nnr's ECSQ, dependent "
             "quantization with today's level coder (exact), and with a table per quantizer "
             "(estimate); \"saves\" is against ECSQ. Last column: dq's saving at equal weight SNR, "
             "averaged over the sweep.", "",
             "| model | threshold | ecsq | dq | saves | dq + state contexts | saves | equal weight SNR |",
             "|---|---|--:|--:|--:|--:|--:|--:|"]
    allsaves = {"dq": [], "dq_state": []}
    for name, m in results.items():
        eq = equal_snr_saving(m["points"])
        for level in ("strict", "loose"):
            a, b, c = (pick(m["points"], m["metric"], level, k) for k in ("ecsq", "dq", "dq_state"))
            for k, p in (("dq", b), ("dq_state", c)):
                if a is not None and p is not None:
                    allsaves[k].append(p["bytes"] / a["bytes"])
            lines.append(f"| {name} | {level} | {cell(a, m['metric'])} | {cell(b, m['metric'])} | {saves(a, b)} | "
                         f"{cell(c, m['metric'])} | {saves(a, c)} | "
                         f"{'–' if eq is None else f'{100 * eq:+.1f} %'} |")
    for k, label in (("dq", "dq"), ("dq_state", "dq + state contexts")):
        v = allsaves[k]
        if v:
            g = math.exp(sum(math.log(x) for x in v) / len(v))
            lines.append("")
            lines.append(f"Geometric mean of {label} ÷ ecsq over the {len(v)} cells met by both: **{g:.3f}**.")
    return "\n".join(lines) + "\n"


def qps_around(name: str, run: dict, margin: int) -> list[float]:
    """The data-free rule's strict and loose picks of a compare_nncodec run, widened by ``margin``."""
    m = run["models"][name]
    picks = [cn.best_point([cn.Point.from_json(p) for p in m["nnr"]], m["metric"], level) for level in ("strict", "loose")]
    qs = [p.qp for p in picks if p is not None]
    if not qs:
        return [float(q) for q in range(-40, -4, 2)]
    return [float(q) for q in range(int(min(qs)) - margin, int(max(qs)) + margin + 1)]


def main(argv: list[str] | None = None) -> int:
    from conformance.corpus import load_manifest, load_model

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="comma list of corpus models (default: all with real weights)")
    ap.add_argument("--run", type=Path, default=ROOT / "docs" / "nncodec_corpus_run.json",
                    help="compare_nncodec.py run whose rule picks set each model's qp range")
    ap.add_argument("--margin", type=int, default=3, help="qps swept beyond the run's picks on each side")
    ap.add_argument("--lam", type=float, default=0.2, help="λ of the Viterbi search, in Δ² per bit")
    ap.add_argument("--markdown", type=Path, help="write the table here (else stdout)")
    ap.add_argument("--json", type=Path, help="write every point here")
    args = ap.parse_args(argv)
    manifest = load_manifest()
    run = json.loads(args.run.read_text())
    names = [n for n in cn.select_models(args.models, manifest)
             if n in run["models"] and not cn.is_complex(load_model(n, manifest)[0])]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    results = {n: measure(n, manifest, qps_around(n, run, args.margin), args.lam, log) for n in names}
    command = shlex.join(["python", "tools/dq_potential.py", *argv])
    if args.json:
        args.json.write_text(json.dumps({"command": command, "lam": args.lam, "models": results}, indent=1) + "\n")
    emit(render(command, results), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
