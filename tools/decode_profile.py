"""Where nnr's numpy decoder spends its time, and what more lanes would buy.

    python tools/decode_profile.py [--model PATH] [--lanes 512 1024 2048 4096] [--repeat 5] [--markdown out.md]

Encodes the model (default: EfficientNet-Lite0, default options) once per lane length (the
most symbols the encoder puts in a lane, codec.rans_encode.LANE_SYMBOLS; 2048 is the
default), then decodes each file --repeat times and reports, for the fastest run, the time
of each stage of ``nnr.decode``: the lane lock step (codec.rans._decode_group), gathering each
block's symbols from its slots (codec.rans._gathered), building lane tables, turning symbols
into levels, reconstructing floats, and everything else (container,
graph, ONNX assembly); plus the file size and the lock step's nanoseconds per symbol. More
lanes mean fewer lock-step iterations but more state bytes in the file.
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import nnr.codec.levelcode as levelcode  # noqa: E402
import nnr.codec.lossy_decode as lossy_decode  # noqa: E402
import nnr.codec.rans as rans  # noqa: E402
import nnr.codec.rans_encode as rans_encode  # noqa: E402
import nnr  # noqa: E402

STAGES = {"lock step": (rans, "_decode_group"), "symbols": (rans, "_gathered"), "lane tables": (levelcode, "LaneTable"),
          "levels": (levelcode.LevelJob, "finish"), "reconstruction": (lossy_decode, "dequantize")}


class StageClock:
    """Wraps the functions of STAGES to add up the time spent in each (restored on exit)."""

    def __init__(self) -> None:
        self.seconds: collections.Counter = collections.Counter()
        self.symbols = 0

    def __enter__(self) -> "StageClock":
        self._saved = []
        for stage, (owner, name) in STAGES.items():
            fn = getattr(owner, name)
            self._saved.append((owner, name, fn))
            setattr(owner, name, self._timed(stage, fn))
        lanes = rans.lock_step_lane_blocks   # every lane block is lock-stepped through it
        self._saved.append((rans, "lock_step_lane_blocks", lanes))

        def counted(blocks, compiled=False, alloc=None):
            self.symbols += sum(b.count for b in blocks)
            return lanes(blocks, compiled, alloc)
        rans.lock_step_lane_blocks = counted
        return self

    def _timed(self, stage: str, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0
        return wrapper

    def __exit__(self, *exc) -> None:
        for owner, name, fn in self._saved:
            setattr(owner, name, fn)


def profile(data: bytes, repeat: int) -> tuple[float, dict, int]:
    """(total seconds, seconds per stage, symbols) of the fastest of ``repeat`` decodes."""
    nnr.decode(data, threads=1)
    best = None
    for _ in range(repeat):
        with StageClock() as clock:
            t0 = time.perf_counter()
            nnr.decode(data, threads=1)
            total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, dict(clock.seconds), clock.symbols)
    return best


def encode_with_lanes(source: bytes, lane_symbols: int) -> bytes:
    """The default encoding with lanes of at most ``lane_symbols`` symbols (a what-if: the
    format allows any lane count; nnr's encoder fixes this length)."""
    saved = rans_encode.LANE_SYMBOLS
    rans_encode.LANE_SYMBOLS = lane_symbols
    try:
        return nnr.encode(source)
    finally:
        rans_encode.LANE_SYMBOLS = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / "conformance/models/efficientnet_lite0.onnx")
    ap.add_argument("--lanes", type=int, nargs="+", default=[512, 1024, 2048, 4096],
                    help="lane lengths to compare (symbols per lane; the encoder's is 2048)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()
    source = args.model.read_bytes()
    rows = []
    for n in args.lanes:
        print(f"encoding {args.model.name} with lanes of at most {n} symbols", file=sys.stderr)
        data = encode_with_lanes(source, n)
        total, stages, symbols = profile(data, args.repeat)
        rows.append((n, len(data), total, stages, symbols))
    base = next((r[1] for r in rows if r[0] == rans_encode.LANE_SYMBOLS), rows[0][1])
    names = list(STAGES)
    lines = [f"| lane length | file bytes | vs {rans_encode.LANE_SYMBOLS} | decode ms | "
             + " | ".join(f"{s} ms" for s in names) + " | other ms | lock step ns/symbol |",
             "|" + "---|" * (len(names) + 6)]
    for n, size, total, stages, symbols in rows:
        other = total - sum(stages.values())
        lines.append(f"| {n} | {size:,} | {size / base:.4f} | {1e3 * total:.1f} | "
                     + " | ".join(f"{1e3 * stages.get(s, 0.0):.1f}" for s in names)
                     + f" | {1e3 * other:.1f} | {1e9 * stages.get('lock step', 0.0) / max(symbols, 1):.1f} |")
    command = f"python tools/decode_profile.py --repeat {args.repeat}"
    if args.markdown:
        command += f" --markdown {args.markdown}"
    text = (f"Made by `{command}` on {args.model.name}: the fastest of {args.repeat} decodes per row, "
            f"one thread.\n\n" + "\n".join(lines) + "\n")
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
