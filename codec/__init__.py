"""Numerical core of nnr: weight models, quantizers and entropy coding.

numpy arrays in, numpy arrays or bytes out; nothing here knows ONNX. Modules whose
names end in ``_encode`` (and :mod:`codec.quantize`, :mod:`codec.allocation`) are
encoder-only and may import numba; everything else is on the decode path and must not.
"""
