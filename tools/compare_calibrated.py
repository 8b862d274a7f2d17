"""nnr with calibration data against NNCodec 2.1.3 at equal fidelity (issue 12's calibrated goal).

    python tools/compare_calibrated.py --markdown docs/nncodec_calibrated.md --json docs/nncodec_calibrated.json
    python tools/compare_calibrated.py --models crepe_tiny --update docs/nncodec_calibrated.json ...

For every corpus model whose task has calibration inputs (conformance.tasks.CALIBRATION:
other photos, training digits, other text, other speech, all disjoint from the task's
evaluation inputs), nnr runs the rate-control search as ``nnr-encode --calibration`` runs it
(nnr.ratecontrol.search, default options, a quarter of the calibration inputs held out) for
each threshold of tools/compare_nncodec.py: ``--min-agreement 0.999`` / ``0.99`` for
classifiers, ``--min-snr 30`` / ``20`` otherwise. Each file is decoded and measured on the
task's evaluation inputs, which the search never saw, and compared with NNCodec's smallest
file meeting the same threshold on those very inputs (its qp sweep, from the points cached in
docs/nncodec_corpus.json; NNCodec is imported only for a point not cached). NNCodec thus picks
its file knowing the evaluation inputs and nnr does not: the comparison favours NNCodec.
The goal is nnr ≤ 0.6× NNCodec's bytes on every model with inputs, at the threshold.
With --update, the models named are measured again and the table is written for every model
of that earlier JSON, with the commands of both runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools._emit import emit  # noqa: E402
from tools.compare_nncodec import (THRESHOLDS, NncodecCache, Point, best_point, fidelity_text,  # noqa: E402
                                   geomean, meets, model_sha256, nncodec_slots, nncodec_sweep, parse_qps,
                                   select_models, threshold_metric)

if TYPE_CHECKING:
    from nnr.evaluation import Constraint

HOLDOUT = 0.25
"""Share of the calibration inputs held out, as nnr-encode's --holdout default."""
GOAL = 0.6
"""Issue 12: nnr with calibration data at most this share of NNCodec's bytes at the threshold."""
LEVELS = ("strict", "loose")
"""compare_nncodec's thresholds, each a rate-control goal here."""


@dataclass
class Searched:
    """One rate-controlled nnr file: its goal, size and fidelity."""

    level: str
    goal: str                     # the constraint, as nnr-encode states it
    bytes: int
    seconds: float                # search + decode
    trials: int
    calibration: dict[str, float]  # on the inputs searched
    held_out: dict[str, float] | None
    evaluation: dict[str, float]  # on the task's evaluation inputs
    met: bool                     # the threshold, on the evaluation inputs


@dataclass
class CalibratedResult:
    """One corpus model: its rate-controlled files and NNCodec's best file per threshold."""

    name: str
    task: str
    metric: str
    calibration_inputs: int
    searched: list[Searched]
    nncodec: dict[str, dict | None]   # level -> its best point (asdict) or None
    note: str = ""

    @classmethod
    def from_json(cls, d: dict) -> "CalibratedResult":
        return cls(**{**d, "searched": [Searched(**s) for s in d["searched"]]})

    def ratio(self, level: str) -> float | None:
        """nnr's bytes over NNCodec's at ``level``, whether or not nnr met the threshold."""
        mine = next((s for s in self.searched if s.level == level), None)
        theirs = self.nncodec.get(level)
        return None if mine is None or theirs is None else mine.bytes / theirs["bytes"]


def constraint_for(metric: str, level: str) -> "Constraint":
    """nnr's Constraint for a compare_nncodec threshold."""
    from nnr.evaluation import Constraint

    return Constraint(metric, THRESHOLDS[level][metric])


def searched_file(source: Any, inputs: dict, metric: str, level: str, task: Any, ref: Any,
                  budget: float, log: Callable[[str], None]) -> Searched:
    """The rate-control search for one threshold, then the file measured on the evaluation inputs."""
    import nnr
    from nnr import ratecontrol
    from nnr.calibration import Calibration
    from nnr.decoder import OWN_OUTPUT_MEMORY
    from nnr.options import EncoderOptions

    constraint = constraint_for(metric, level)
    cal, held = Calibration(inputs).split(HOLDOUT)
    t0 = time.perf_counter()
    res = ratecontrol.search(source, EncoderOptions(), constraint=constraint, cal=cal, held=held,
                             budget_seconds=budget)
    decoded = nnr.decode(res.data, max_memory=OWN_OUTPUT_MEMORY)
    seconds = time.perf_counter() - t0
    evaluation = {k: float(v) for k, v in task.measure(ref, task.infer(decoded)).items()}
    point = Point(None, len(res.data), evaluation, seconds)
    found = Searched(level, str(constraint), len(res.data), seconds, len(res.trials), res.metrics, res.held_out,
                     evaluation, meets(point, metric, level))
    log(f"nnr {constraint}: {found.bytes:,} B in {seconds:.0f} s ({found.trials} settings); evaluation "
        f"{fidelity_text(metric, point)}{'' if found.met else ' (threshold missed)'}")
    return found


def measure_model(name: str, manifest: Any, cache: NncodecCache, nnc_qps: list[float],
                  budget: float) -> CalibratedResult:
    """Both thresholds' searches on one corpus model, or why it has none."""
    from conformance.corpus import load_model
    from conformance.tasks import CALIBRATION, NO_CALIBRATION, TASKS

    def log(msg: str) -> None:
        print(f"[{name}] {msg}", file=sys.stderr, flush=True)

    entry = manifest.models[name]
    task = TASKS[entry.task]
    metric = threshold_metric(task.primary)
    if entry.task not in CALIBRATION:
        return CalibratedResult(name, entry.task, metric, 0, [], {},
                                "no calibration inputs: " + NO_CALIBRATION[entry.task])
    model, path = load_model(name, manifest)
    ref = task.infer(model)
    inputs = CALIBRATION[entry.task]()
    slots = nncodec_slots(model)
    points, stale = nncodec_sweep(name, model, slots, task, ref, model_sha256(model, path), metric, cache,
                                  nnc_qps, False, log)
    result = CalibratedResult(name, entry.task, metric, len(next(iter(inputs.values()))), [], {})
    for level in LEVELS:
        best = best_point(points, metric, level)
        result.nncodec[level] = asdict(best) if best is not None else None
        result.searched.append(searched_file(path or model, inputs, metric, level, task, ref, budget, log))
    if stale:
        result.note = "NNCodec's cached fidelity was measured on other reference outputs: re-run compare_nncodec"
    return result


def render(commands: list[str], results: list[CalibratedResult]) -> str:
    """The markdown table: per model and threshold, nnr's file, its fidelity on the evaluation
    inputs, NNCodec's file, their ratio and the goal; the geometric means count only files that
    meet the threshold."""
    lines = ["```sh", *commands, "```", "",
             "nnr's rate-control search with calibration inputs (a quarter held out) against NNCodec 2.1.3's "
             "smallest file at the same threshold; both measured on the task's evaluation inputs, which nnr's "
             "search never saw and NNCodec's choice of qp did. Strict: top-1 agreement ≥ 0.999 for "
             "classifiers, else output SNR ≥ 30 dB; loose: ≥ 0.99, else ≥ 20 dB. "
             f"Goal: nnr ≤ {GOAL}× NNCodec on every model with inputs, at the threshold.", "",
             "| model | calibration inputs | threshold | nnr goal | nnr bytes | evaluation | NNCodec bytes | "
             "nnr/NNCodec | goal |",
             "|---|--:|---|---|--:|---|--:|--:|---|"]
    ratios: dict[str, list[float]] = {level: [] for level in LEVELS}
    counted: dict[str, int] = {level: 0 for level in LEVELS}
    for r in results:
        if not r.searched:
            lines.append(f"| {r.name} | – | – | – | – | {r.note} | – | – | – |")
            continue
        for s in r.searched:
            theirs = r.nncodec.get(s.level)
            ratio = r.ratio(s.level)
            counted[s.level] += 1
            if ratio is not None and s.met:
                ratios[s.level].append(ratio)
            point = Point(None, s.bytes, s.evaluation, s.seconds)
            nnc = "–" if theirs is None else f"{theirs['bytes']:,} (qp {theirs['qp']:g})"
            verdict = ("missed (fidelity)" if not s.met else "–" if ratio is None
                       else "met" if ratio <= GOAL else "missed")
            lines.append(f"| {r.name} | {r.calibration_inputs} | {s.level} | {s.goal} | {s.bytes:,} | "
                         f"{fidelity_text(r.metric, point)}{'' if s.met else ' ✗'} | {nnc} | "
                         f"{'–' if ratio is None else f'{ratio:.3f}'} | {verdict} |")
    lines.append("")
    for level in LEVELS:
        g = geomean(ratios[level])
        lines.append(f"- {level}: nnr's file meets the threshold on the evaluation inputs for "
                     f"{len(ratios[level])} of {counted[level]} models"
                     + ("" if g is None else f"; over those, geometric mean nnr/NNCodec **{g:.3f}**"))
    notes = [f"- {r.name}: {r.note}" for r in results if r.searched and r.note]
    return "\n".join(lines + notes) + "\n"


def merged(earlier: dict, results: list[CalibratedResult]) -> list[CalibratedResult]:
    """An earlier run's results (this tool's JSON) with the models of ``results`` replaced,
    or added at the end."""
    fresh = {r.name: r for r in results}
    out = [fresh.pop(d["name"], None) or CalibratedResult.from_json(d) for d in earlier["models"]]
    return out + list(fresh.values())


def main(argv: list[str] | None = None) -> int:
    from conformance.corpus import load_manifest

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="comma list of corpus models (default: all)")
    ap.add_argument("--nnc-qps", default="-48:-18:1", help="NNCodec's qps, as tools/compare_nncodec.py takes them")
    ap.add_argument("--nncodec-points", type=Path, default=ROOT / "docs" / "nncodec_corpus.json",
                    help="cache of NNCodec's points, read and updated (default docs/nncodec_corpus.json)")
    ap.add_argument("--budget-seconds", type=float, default=600.0,
                    help="time budget of each search, as nnr-encode's --budget-seconds (default 600)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--update", type=Path, metavar="JSON",
                    help="an earlier run's --json: measure only --models again and write the table of all")
    args = ap.parse_args(argv)
    earlier, commands = None, []
    if args.update is not None:
        try:
            earlier = json.loads(args.update.read_text())
            commands = [str(c) for c in earlier["commands"]]
            earlier["models"] = list(earlier["models"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"compare_calibrated: {args.update} is not a JSON this tool wrote ({exc})") from None
        if not args.models:
            raise SystemExit("compare_calibrated: --update needs --models (the models to measure again)")

    manifest = load_manifest()
    names = select_models(args.models, manifest)
    cache = NncodecCache(args.nncodec_points)
    commands.append(shlex.join(["python", "tools/compare_calibrated.py", *argv]))
    t0 = time.perf_counter()
    results = [measure_model(n, manifest, cache, parse_qps(args.nnc_qps), args.budget_seconds) for n in names]
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    if earlier is not None:
        results = merged(earlier, results)
    if args.json:
        args.json.write_text(json.dumps({"commands": commands, "goal": GOAL,
                                         "models": [asdict(r) for r in results]}, indent=1) + "\n")
    emit(render(commands, results), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
