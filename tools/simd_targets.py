"""Print numpy's SIMD dispatch targets that this CPU runs, for NPY_DISABLE_CPU_FEATURES.

CI re-runs the vector tests with these switched off, so numpy takes its baseline code path:
the encoder must write the same bytes whichever path a machine's numpy takes.
"""

try:
    from numpy._core import _multiarray_umath as umath
except ImportError:  # numpy < 2
    from numpy.core import _multiarray_umath as umath

if __name__ == "__main__":
    dispatch = getattr(umath, "__cpu_dispatch__", [])
    print(" ".join(t for t in dispatch if umath.__cpu_features__.get(t)), end="")
