"""Numerical core of nnr: weight models, quantizers and entropy coding.

numpy arrays in, numpy arrays or bytes out; nothing here knows ONNX. Modules whose
names end in ``_encode`` (and :mod:`codec.quantize`, :mod:`codec.allocation`) are
encoder-only and may import numba; everything else is on the decode path and must not,
except :mod:`codec.rans_jit` and :mod:`codec.lossy_jit`, the optional compiled lock step and
reconstruction a decoder of a large file loads when numba is installed (the numpy code
decodes the same values without them).
"""
