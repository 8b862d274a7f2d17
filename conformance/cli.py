"""nnr-conformance: check nnr's promises on real models and the committed reference files.

    nnr-conformance                   fast tier (CI): vectors, robustness, a few models
    nnr-conformance --full            every corpus model at every operating point
    nnr-conformance --update-vectors  maintainers: write the current version's vectors

Exit status: 0 when everything holds, 1 when any check fails, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nnr.console import common_flags, print_json
from nnr.errors import NnrError
from nnr.plotting import require_matplotlib


def _parser(prog: str = "nnr-conformance") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check that nnr keeps its promises: reference bitstreams decode to their golden "
                    "hashes and are re-encoded byte for byte, damaged files are refused with the "
                    "documented error, and real models stay under their size ceilings and above "
                    "their fidelity floors (conformance/manifest.json) at each operating point.",
        epilog="Operating points and models are listed in conformance/manifest.json. The fast tier "
               "checks the points each model lists under \"fast\"; --full checks them all.")
    ap.add_argument("--full", action="store_true", help="every corpus model at every operating point")
    ap.add_argument("--models", help="comma-separated corpus models to check (default: all of the tier)")
    ap.add_argument("--points", help="comma-separated operating points to check (default: all of the tier)")
    ap.add_argument("--manifest", type=Path, metavar="JSON",
                    help="corpus manifest to check (default: conformance/manifest.json); model "
                         "files it names are relative to its folder")
    ap.add_argument("--list", action="store_true", help="list the operating points and corpus models, then exit")
    ap.add_argument("--no-vectors", action="store_true", help="skip the reference and robustness vectors")
    ap.add_argument("--markdown", type=Path, metavar="PATH", help="write the report as a markdown table")
    ap.add_argument("--plot", type=Path, metavar="PNG",
                    help="write bits/weight vs fidelity per model as a PNG; adds a sweep of --qp "
                         'values (unchecked) to draw each curve (needs pip install -e ".[plot]")')
    ap.add_argument("--update-vectors", action="store_true",
                    help="maintainers only: write the current format version's reference and "
                         "robustness vectors; refuses to change an existing bitstream (bump the version)")
    common_flags(ap, "the report: every model check and vector check, the tier, and with --plot the sweep")
    return ap


def _names(ap: argparse.ArgumentParser, arg: str | None, known: list[str], what: str) -> list[str] | None:
    if not arg:
        return None
    names = [n.strip() for n in arg.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown {what} {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def _listing(manifest) -> str:
    from .tasks import TASKS

    lines = ["operating points:"]
    lines += [f"  {name:<12} {json.dumps(opts):<22} {manifest.point_about[name]}"
              for name, opts in manifest.points.items()]
    lines.append("models:")
    for e in manifest.models.values():
        lines.append(f"  {e.name:<24} {e.about}")
        lines.append(f"  {'':<24} source {json.dumps(e.source)}, licence {e.licence}; fast tier: {', '.join(e.fast)}")
        lines.append(f"  {'':<24} task {e.task}: {TASKS[e.task].about}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "nnr-conformance") -> int:
    ap = _parser(prog)
    args = ap.parse_args(argv)
    try:
        return _main(ap, args)
    except NnrError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _main(ap: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import report
    from .corpus import load_manifest
    from .suite import plan, run
    from .vectors import check_vectors, update_vectors

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    if args.update_vectors:
        update_vectors(log)
        return 0
    if args.plot:
        require_matplotlib(ap)

    manifest = load_manifest(args.manifest) if args.manifest else load_manifest()
    if args.list:
        if args.json:
            print_json({"points": {name: {"options": opts, "about": manifest.point_about[name]}
                                   for name, opts in manifest.points.items()},
                        "models": {e.name: {"about": e.about, "source": e.source, "licence": e.licence,
                                            "fast": list(e.fast), "task": e.task} for e in manifest.models.values()}})
        else:
            print(_listing(manifest))
        return 0
    models = _names(ap, args.models, list(manifest.models), "model")
    points = _names(ap, args.points, list(manifest.points), "operating point")
    tier = "full" if args.full else "fast"
    start = time.perf_counter()
    checks = [] if args.no_vectors else check_vectors()

    def progress(done: int, total: int, what: str) -> None:
        if done < total:
            log(f"[{done + 1}/{total}] {what} ({time.perf_counter() - start:.0f} s)")

    results, swept = run(manifest, plan(manifest, args.full, models, points), bool(args.plot), progress)
    elapsed = time.perf_counter() - start
    failed = sum(not r.passed for r in results) + sum(not c.ok for c in checks)
    verdict = (f"{tier} tier: {len(results)} model checks, {len(checks)} vector checks, "
               f"{'all pass' if not failed else f'{failed} FAIL'} ({elapsed:.0f} s)")
    if args.json:
        print_json(report.to_doc(results, checks, tier, swept))
        log(verdict)
    else:
        print(report.text_table(results))
        if not args.no_vectors:
            print(report.vector_summary(checks))
        print(verdict)
    from nnr.formats.fileio import write_bytes_atomic

    if args.markdown:
        write_bytes_atomic(args.markdown, report.markdown(results, checks, tier).encode())
    if args.plot:
        report.plot(results, swept, args.plot)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
