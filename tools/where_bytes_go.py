"""Where the bytes of an .nnr file go, per corpus model, at the operating point that matters.

    python tools/where_bytes_go.py --run docs/nncodec_corpus_run.json --level loose \\
        --markdown docs/where_bytes_go.md

Each model is encoded at nnr's smallest file meeting ``--level`` in a compare_nncodec.py run
(its data-free qp or its probe target), or at ``--qp`` for every model. The file is split into:

* container: META (the options, so per-tensor steps cost bytes there), GRPH (the zlib'd graph)
  and INDX units, plus the 16-byte header and trailer;
* per-tensor side information: each TENS unit's framing (kind, length, CRC), its header
  (slot, coding, dtype, dims, name, SNR), the lossy body's step fields and, in each level
  block, the alphabet, table and counts;
* coded levels: the ANS words, raw fine bits and escapes; other codings (raw, lossless, ...)
  apart.

Two entropies of the coded levels say what a better coder could still win, as bounds:
order-0 (one ideal static table per tensor, no side information: what nnr's tables and ANS
aim at) and order-2 context (each level's distribution conditioned on the magnitudes, capped
at 2, of the two levels before it in storage order: about what DeepCABAC-style context
modelling can reach, without the cost of learning its tables). Then the same levels are
costed with nnr's own static tables, their bytes included: one per tensor, and one per
context value, which is what a format with static per-context tables would pay. Last, what
format 7's context tables did: the file's main level blocks as coded, against the same levels
coded with one table each (format 6's coder plus the table-count byte): exact bytes, at equal
fidelity since the levels are the same.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tools._emit import emit  # noqa: E402

CONTEXT_CAP = 2


@dataclass
class Split:
    """One file's bytes by what they carry, and the level entropies (in bytes)."""

    model: str
    point: str
    total: int = 0
    container: int = 0
    meta: int = 0
    graph: int = 0
    index: int = 0
    side: int = 0
    words: int = 0
    other: int = 0
    units: int = 0
    order0: float = 0.0
    context: float = 0.0
    order0_tables: float = 0.0
    context_tables: float = 0.0
    lossy_units: int = 0     # units with a main level block
    blocks: int = 0          # bytes of the main level blocks as the file codes them
    one_table: int = 0       # bytes of the same levels coded with one table per block
    context_blocks: int = 0  # main level blocks coded with context tables


def entropy_bytes(values: np.ndarray, context: np.ndarray | None = None) -> float:
    """Empirical entropy of ``values`` in bytes, conditioned on ``context`` when given."""
    if values.size == 0:
        return 0.0
    keys = values.astype(np.int64)
    if context is not None:
        keys = keys * 64 + context  # context < 64; the pair's count table is the joint histogram
    _, joint = np.unique(keys, return_counts=True)
    h = -float(np.sum(joint * np.log2(joint / values.size)))
    if context is not None:
        _, ctx = np.unique(context, return_counts=True)
        h += float(np.sum(ctx * np.log2(ctx / values.size)))
    return h / 8.0


def neighbour_context(levels: np.ndarray) -> np.ndarray:
    """Capped magnitudes of the two previous levels, as one small integer per level."""
    a = np.minimum(np.abs(levels.astype(np.int64)), CONTEXT_CAP)
    prev1 = np.concatenate([[0], a[:-1]])
    prev2 = np.concatenate([[0, 0], a[:-2]])
    return prev1 * (CONTEXT_CAP + 1) + prev2


def table_bytes(levels: np.ndarray, context: np.ndarray | None = None) -> float:
    """Bytes of ``levels`` coded with nnr's best static table (geometric or histogram, its own
    side information included), one table per ``context`` value when given."""
    from nnr.codec.entropy import best_table

    if levels.size == 0:
        return 0.0
    k = int(np.max(np.abs(levels)))
    groups = [levels] if context is None else [levels[context == c] for c in np.unique(context)]
    bits = sum(best_table(np.bincount(g.astype(np.int64) + k, minlength=2 * k + 2), k)[2] + 8 for g in groups)
    return bits / 8.0


def level_block_parts(r, lanes: int) -> tuple[int, int]:
    """Read one level block: (side-information bytes, coded-level bytes: escapes, fine bits
    and ANS words, the lanes' states included)."""
    from nnr.codec.entropy import read_table
    from nnr.codec.levelcode import CONTEXT_LANES, _coarse_range

    start = r.remaining
    k = r.varint()
    s = r.u8()
    lo, hi = _coarse_range(k, s)
    for _ in range(r.u8() if lanes == CONTEXT_LANES else 1):
        read_table(r, hi - lo + 2, allow_geometric=(s == 0))
    n_esc = r.varint()
    before = r.remaining
    r.varints(n_esc)
    escapes = before - r.remaining
    n_fine = r.varint()
    r.raw(n_fine)
    if lanes:
        r.u8()
        r.varint()
    n_words = r.varint()
    word_bytes = (2 if lanes else 4) * n_words
    r.raw(word_bytes)
    coded = escapes + n_fine + word_bytes
    return start - r.remaining - coded, coded


def split_file(model: str, point: str, data: bytes) -> Split:
    """Account for every byte of ``data`` (an .nnr file)."""
    from onnx import TensorProto

    from nnr.codec.bytestream import ByteReader
    from nnr.codec.levelcode import CONTEXT_LANES, LANES, encode_levels, read_levels
    from nnr.codec.rans import decode_blocks
    from nnr.codec.lossy_decode import main_block_offset
    from nnr.tensorcodec import level_dialect
    from nnr.formats.container import (CODING_LOSSY, HEADER, TRAILER, read_container,
                                   read_tensor_unit, read_unit)

    COMPLEX_TYPES = (TensorProto.COMPLEX64, TensorProto.COMPLEX128)
    out = Split(model, point, total=len(data))
    c = read_container(data)
    lanes = level_dialect(c.version)
    units = {e.slot: read_tensor_unit(data, e) for e in c.index}
    out.units = len(units)
    out.container = len(data) - sum(e.length for e in c.index)
    view = memoryview(data)
    _, _, after_meta = read_unit(view, HEADER.size, version=c.version)
    _, _, after_graph = read_unit(view, after_meta, version=c.version)
    out.meta, out.graph = after_meta - HEADER.size, after_graph - after_meta
    out.index = out.container - out.meta - out.graph - HEADER.size - TRAILER.size
    for e in c.index:
        u = units[e.slot]
        out.side += e.length - len(u.body)
        if u.coding != CODING_LOSSY:
            out.other += len(u.body)
            continue
        _, header = main_block_offset(u.body, lanes)
        side, words = level_block_parts(ByteReader(u.body[header:], "level block"), lanes)
        out.side += header + side
        out.words += words
        count = u.numel * (2 if u.dtype in COMPLEX_TYPES else 1)  # complex: the parts tensor is coded
        job = read_levels(ByteReader(u.body[header:], "level block"), count, lanes)
        levels = job.finish(decode_blocks([job.ans])[0])
        if lanes == CONTEXT_LANES:
            out.blocks += side + words
            out.one_table += len(encode_levels(levels, job.k, job.s, LANES)) + 1
            out.lossy_units += 1
            out.context_blocks += int(job.ans.contiguous)
        ctx = neighbour_context(levels)
        out.order0 += entropy_bytes(levels)
        out.context += entropy_bytes(levels, ctx)
        out.order0_tables += table_bytes(levels)
        out.context_tables += table_bytes(levels, ctx)
    return out


def operating_points(run: Path, level: str) -> dict[str, dict]:
    """nnr's smallest file meeting ``level`` per model of a compare_nncodec.py run JSON."""
    points = {}
    for name, m in json.loads(run.read_text())["models"].items():
        best = (m.get("best", {}).get(level) or {}).get("nnr")
        if best:
            points[name] = next(p for p in m["nnr"] + m["nnr_probe"] if p["bytes"] == best["bytes"])
    return points


def encode_at(name: str, point: dict) -> tuple[str, bytes]:
    import nnr
    from conformance.corpus import load_model

    model, path = load_model(name)
    source = path or model
    if point.get("qp") is not None:
        return f"qp {point['qp']:g}", nnr.encode(source, qp=point["qp"])
    return f"probe {point['target']:g} dB", nnr.encode(source, target_snr_db=point["target"])


def render(splits: list[Split], command: str) -> str:
    lines = ["```sh", command, "```", "",
             "| model | point | file bytes | tensor units | META | GRPH | INDX | per-tensor side info | "
             "all but coded levels | coded levels | other codings | order-0 entropy | order-2 context entropy "
             "| context could save | one static table | a static table per context | with tables it saves |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for s in splits:
        overhead = s.container + s.side
        lines.append(f"| {s.model} | {s.point} | {s.total:,} | {s.units} | {s.meta:,} | {s.graph:,} | {s.index:,} | "
                     f"{s.side:,} | {100.0 * overhead / s.total:.1f} % | {s.words:,} | {s.other:,} | "
                     f"{s.order0:,.0f} | {s.context:,.0f} | {100.0 * (s.order0 - s.context) / s.total:.1f} % | "
                     f"{s.order0_tables:,.0f} | {s.context_tables:,.0f} | "
                     f"{100.0 * (s.order0_tables - s.context_tables) / s.total:.1f} % |")
    lines += ["", "Bytes. Entropies are of the coded lossy levels, with no table or side information: bounds, "
              "not coders. \"context could save\" is (order-0 − order-2 context entropy) ÷ file bytes. The last "
              "three columns code the same levels with nnr's static tables (codec.entropy.best_table, each "
              "table's own bytes included, all levels through the table, no fine bits): one per tensor, "
              "or one per context of the two previous levels, a coder a format could adopt as it is."]
    if any(s.blocks for s in splits):
        lines += ["", "Format 7's context tables: the files' main level blocks as coded, against the same levels "
                  "coded with one table each (format 6's level coder, plus the table-count byte). Same levels, "
                  "so same fidelity.", "",
                  "| model | point | level blocks | with context tables | as coded | with one table each | "
                  "saved | of the file |",
                  "|---|---|--:|--:|--:|--:|--:|--:|"]
        for s in splits:
            if s.blocks:
                saved = s.one_table - s.blocks
                lines.append(f"| {s.model} | {s.point} | {s.lossy_units} | {s.context_blocks} | {s.blocks:,} | "
                             f"{s.one_table:,} | {saved:,} | {100.0 * saved / s.total:.1f} % |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import shlex

    from conformance.corpus import load_manifest

    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--models", help="comma list of corpus models (default: every model of the run, or all)")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="a tools/compare_nncodec.py --json file: encode at nnr's best points")
    src.add_argument("--qp", type=float, help="encode every model with the data-free rule at this qp")
    ap.add_argument("--level", choices=("strict", "loose"), default="loose",
                    help="which threshold's best point to take from --run (default loose)")
    ap.add_argument("--markdown", type=Path, help="write the table here")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    args = ap.parse_args(argv)

    manifest = load_manifest()
    if args.run is not None:
        if not args.run.is_file():
            raise SystemExit(f"where_bytes_go: {args.run}: no such file (make it with tools/compare_nncodec.py --json)")
        points = operating_points(args.run, args.level)
    else:
        points = {name: {"qp": args.qp} for name in manifest.models}
    names = [n.strip() for n in args.models.split(",")] if args.models else list(points)
    unknown = [n for n in names if n not in points]
    if unknown:
        raise SystemExit(f"where_bytes_go: no operating point for {', '.join(unknown)} "
                         f"(models: {', '.join(points)})")
    splits = []
    for name in names:
        label, data = encode_at(name, points[name])
        splits.append(split_file(name, label, data))
        print(f"[{name}] {label}: {len(data):,} B", file=sys.stderr, flush=True)
    command = shlex.join(["python", "tools/where_bytes_go.py", *argv])
    if args.json:
        args.json.write_text(json.dumps({"command": command, "models": [asdict(s) for s in splits]}, indent=1) + "\n")
    emit(render(splits, command), args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
