"""Numerical core of nnr: weight models, quantizers and entropy coding.

numpy arrays in, numpy arrays or bytes out; nothing here knows ONNX. Modules whose
names end in ``_encode`` (and :mod:`codec.quantize`, :mod:`codec.allocation`) are
encoder-only and may import numba; everything else is on the decode path and must not,
except :mod:`codec.rans_jit`, the optional compiled lock step a decoder of a large file loads
when numba is installed (the numpy lock step decodes the same symbols without it).
"""
