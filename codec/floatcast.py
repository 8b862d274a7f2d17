"""Exact, platform-independent conversions between float storage formats.

bfloat16 has no numpy dtype: it travels as its uint16 bit pattern. Rounding from float32
is round-to-nearest-even done in integers, so it is the same everywhere.
"""

from __future__ import annotations

import numpy as np

from . import exactmath

FLOAT_FORMATS = {"float32": "<f4", "float16": "<f2", "bfloat16": "<u2", "float64": "<f8"}


def bfloat16_values(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) → their exact float32 values."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def to_float64(storage: np.ndarray, fmt: str) -> np.ndarray:
    """Values of a storage array (bfloat16 given as uint16 bits) as float64."""
    if fmt == "bfloat16":
        return bfloat16_values(storage).astype(np.float64)
    return storage.astype(np.float64)


def bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 → bfloat16 bit patterns, rounding to nearest even; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), rounded).astype(np.uint16)


def compute_dtype(fmt: str) -> np.dtype:
    """The dtype reconstruction arithmetic rounds to before the storage cast."""
    return np.dtype(np.float64 if fmt == "float64" else np.float32)


def to_storage(values: np.ndarray, fmt: str) -> np.ndarray:
    """Reconstructed values (float32 or float64) → storage array of ``fmt``."""
    if fmt == "bfloat16":
        return bfloat16_bits(values)
    return values.astype(FLOAT_FORMATS[fmt], copy=False)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    """10·log10(‖ref‖² / ‖ref − test‖²) in float64; +inf when identical, −inf for a zero signal."""
    ref = np.asarray(reference, dtype=np.float64)
    noise = float(np.sum((ref - np.asarray(test, dtype=np.float64)) ** 2))
    if noise == 0:
        return float("inf")
    signal = float(np.sum(ref ** 2))
    return 10.0 * exactmath.log10(signal / noise) if signal else float("-inf")
