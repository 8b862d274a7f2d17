"""Names and parameters of the quantizer family (``--quantizer``), parsed without importing
the encoders, so options can be validated cheaply. Formulas: codec/quantizers.py."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .lossy_decode import MAX_MINIFLOAT_BITS

NAMES = ("ecsq", "midtread", "midrise", "deadzone", "mulaw", "minifloat")
ALIASES = {"fp16": "minifloat:E5M10", "e4m3": "minifloat:E4M3", "e5m2": "minifloat:E5M2"}
RECONSTRUCTIONS = ("gain", "mse")  # ecsq's offset rules (codec.lossy_encode.encode_lossy)


@dataclass(frozen=True)
class Quantizer:
    kind: str          # one of NAMES
    delta: float = 0.5  # deadzone δ (midtread ½, midrise 0)
    mu: float = 255.0
    exponent_bits: int = 0
    mantissa_bits: int = 0

    @property
    def follows_step(self) -> bool:
        """Whether the step (qp) sets this quantizer's precision (minifloat's is set by M)."""
        return self.kind != "minifloat"


def parse(spec: str) -> Quantizer:
    """'ecsq', 'midtread', 'midrise', 'deadzone:0.4', 'mulaw:255', 'minifloat:E4M3' (or fp16,
    e4m3, e5m2) → Quantizer; ValueError with the accepted forms otherwise."""
    text = ALIASES.get(str(spec).strip().lower(), str(spec).strip())
    kind, _, arg = text.partition(":")
    kind = kind.lower()
    try:
        if kind in ("ecsq", "midtread", "midrise") and not arg:
            return Quantizer(kind, {"ecsq": 0.5, "midtread": 0.5, "midrise": 0.0}[kind])
        if kind == "deadzone" and arg:
            delta = float(arg)
            if 0.0 <= delta < 1.0:
                return Quantizer(kind, delta)
        if kind == "mulaw" and arg:
            mu = float(arg)
            if 0.0 < mu <= 1e6 and math.isfinite(mu):
                return Quantizer(kind, mu=mu)
        m = re.fullmatch(r"[eE](\d+)[mM](\d+)", arg) if kind == "minifloat" else None
        if m and 1 <= int(m[1]) <= 8 and int(m[1]) + int(m[2]) <= MAX_MINIFLOAT_BITS:
            return Quantizer(kind, exponent_bits=int(m[1]), mantissa_bits=int(m[2]))
    except ValueError:
        pass
    raise ValueError(f"unknown quantizer {spec!r}: use ecsq, midtread, midrise, deadzone:δ (0 ≤ δ < 1), "
                     "mulaw:μ (μ > 0), minifloat:EeMm (E 1..8, E + M ≤ 16; or fp16, e4m3, e5m2)")
