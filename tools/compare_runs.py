"""Two runs of tools/compare_nncodec.py side by side: what a change of nnr did at equal fidelity.

    python tools/compare_runs.py BEFORE.json AFTER.json --markdown docs/some_table.md

Per corpus model and threshold (strict, loose): nnr's smallest file meeting it in each run,
from the qp sweep of the data-free rule (``--sweep rule``, the default), from the probe's
target sweep (``--sweep probe``) or from both together (``--sweep best``), and the share of
bytes the second run saves. Then, at the qp (or probe target) of the first run's pick, the
task's metric in both runs. At a qp these are the same levels when a change only moves
reconstructions, so the difference is fidelity bought at no bytes. At a probe target the
second run's probe may land elsewhere.
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
from tools.compare_nncodec import THRESHOLDS, Point, _cell, best_point  # noqa: E402


def load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())["models"]
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"compare_runs: {path} is not a compare_nncodec.py --json run ({exc})") from None


SWEEPS = {"rule": "data-free rule", "probe": "probe target", "best": "rule or probe"}


def points(model: dict, sweep: str) -> list[Point]:
    raw = (model.get("nnr", []) if sweep != "probe" else []) + (model.get("nnr_probe", []) if sweep != "rule" else [])
    return [Point.from_json(p) for p in raw]


def _fmt(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "agreement" else f"{value:.1f} dB"


def render(command: str, before: dict, after: dict, sweep: str) -> str:
    names = [n for n in before if n in after]
    lines = ["```sh", command, "```", "",
             f"nnr's smallest file meeting each threshold ({SWEEPS[sweep]} sweep) in the first run and the "
             "second, and what the second saves:", "",
             "| model | strict: first | second | saves | loose: first | second | saves |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    same_qp = []
    for n in names:
        metric = before[n]["metric"]
        cells = []
        for level in THRESHOLDS:
            a, b = (best_point(points(r[n], sweep), metric, level) for r in (before, after))
            cells += [_cell(a), _cell(b), f"{100 * (1 - b.bytes / a.bytes):+.1f} %" if a and b else "–"]
            if a is not None:
                twin = next((p for p in points(after[n], sweep) if (p.qp, p.target) == (a.qp, a.target)), None)
                if twin is not None:
                    same_qp.append((n, level, metric, a, twin))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", "At the qp (or probe target) of the first run's pick, both runs' bytes and metric:", "",
              "| model | threshold | setting | first | second |", "|---|---|--:|--:|--:|"]
    for n, level, metric, a, b in same_qp:
        setting = f"qp {a.qp:g}" if a.target is None else f"probe {a.target:g} dB"
        lines.append(f"| {n} | {level} | {setting} | {a.bytes:,} B, {_fmt(metric, a.metrics[metric])} | "
                     f"{b.bytes:,} B, {_fmt(metric, b.metrics[metric])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("before", type=Path, help="the first run's --json")
    ap.add_argument("after", type=Path, help="the second run's --json")
    ap.add_argument("--sweep", choices=tuple(SWEEPS), default="rule",
                    help="pick from the data-free rule's qp sweep (default), the probe's target sweep, or both")
    ap.add_argument("--markdown", type=Path, help="write the tables here (else stdout)")
    args = ap.parse_args(argv)
    command = shlex.join(["python", "tools/compare_runs.py", *argv])
    emit(render(command, load(args.before), load(args.after), args.sweep), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
