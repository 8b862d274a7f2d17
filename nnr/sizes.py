"""Sizes typed by users (--target-size, --max-memory): '1.5MB', '800 KB', '2GiB', '4G', '1200'."""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import OptionError

UNITS = {"": 1, "B": 1, **{f"{p}{suffix}": base ** i for i, p in enumerate("KMGT", 1)
                           for suffix, base in (("B", 1000), ("IB", 1024), ("", 1024))}}
"""KB, MB, GB, TB count 1000s (as file managers show); KiB … TiB and the bare K, M, G, T count 1024s."""


def parse_size(text: str) -> int:
    """Bytes of a positive size; OptionError with the accepted forms otherwise."""
    m = re.fullmatch(r"\s*(\d+\.?\d*|\.\d+)\s*([A-Za-z]*)\s*", text)
    unit = m[2].upper() if m else None
    if unit in UNITS:
        value = int((Decimal(m[1]) * UNITS[unit]).to_integral_value())
        if value > 0:
            return value
    raise OptionError(f"cannot read size {text!r}: use e.g. 1.5MB, 800KB, 2GiB, 4G or a number of bytes")
