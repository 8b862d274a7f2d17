"""Logarithms and exponentials that give the same bits on every machine.

numpy's ``log2``/``exp``/``log1p``/``expm1`` (and libm's) are faithful but not correctly
rounded, and their last bit differs between SIMD paths (SSE, AVX2, AVX-512) and platforms.
The encoder's decisions — steps, rate estimates, codebooks — must not, or a file would depend
on the machine that wrote it. These functions use only operations IEEE 754 rounds exactly
(+ − × ÷, frexp, ldexp, rint) in a fixed order, evaluated in double-double arithmetic (about
106 bits), so the result is the correctly rounded value except in cases too rare to find by
search, and identical everywhere. Inputs and outputs are float64 numpy arrays or floats.

Constants (ln 2, ln 10) come from Python's ``decimal`` module, which computes them in
software, exactly the same on every platform.
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np

_SPLIT = 134217729.0  # 2**27 + 1: Dekker's splitter for 53-bit significands


def _dd_const(d: Decimal) -> tuple[float, float]:
    hi = float(d)
    return hi, float(d - Decimal(hi))


with localcontext() as _ctx:
    _ctx.prec = 60
    _LN2 = _dd_const(Decimal(2).ln())
    _INV_LN2 = _dd_const(1 / Decimal(2).ln())
    _INV_LN10 = _dd_const(1 / Decimal(10).ln())
    _ATANH_COEF = [_dd_const(Decimal(1) / (2 * k + 1)) for k in range(24)]
    _EXP_COEF = [_dd_const(Decimal(1) / Decimal(_f)) for _f in
                 (2, 6, 24, 120, 720, 5040, 40320, 362880, 3628800, 39916800, 479001600, 6227020800)]

_EXP_SQUARINGS = 8


def _two_sum(a, b):
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


def _split(a):
    t = _SPLIT * a
    hi = t - (t - a)
    return hi, a - hi


def _two_prod(a, b):
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _dd_add(xh, xl, yh, yl):
    s, e = _two_sum(xh, yh)
    t, f = _two_sum(xl, yl)
    e = e + t
    s, e = _fast_two_sum(s, e)
    e = e + f
    return _fast_two_sum(s, e)


def _dd_mul(xh, xl, yh, yl):
    p, e = _two_prod(xh, yh)
    e = e + (xh * yl + xl * yh)
    return _fast_two_sum(p, e)


def _dd_div(xh, xl, yh, yl):
    q1 = xh / yh
    ph, pl = _dd_mul(q1, 0.0, yh, yl)
    rh, rl = _dd_add(xh, xl, -ph, -pl)
    q2 = rh / yh
    ph, pl = _dd_mul(q2, 0.0, yh, yl)
    rh, rl = _dd_add(rh, rl, -ph, -pl)
    q3 = rh / yh
    qh, ql = _fast_two_sum(q1, q2)
    return _dd_add(qh, ql, q3, 0.0 * q3)


_LN_TABLE_BITS = 7
"""ln's argument is reduced to m/c with c = j/2**7 the nearest such number, so |s| < 2**-8.4
and eight terms of the atanh series reach double-double accuracy (the argument alone
would need 24)."""
_LN_TERMS = 8
with localcontext() as _ctx:
    _ctx.prec = 60
    _LN_C = [_dd_const((Decimal(j) / (1 << _LN_TABLE_BITS)).ln() if j else Decimal(0))
             for j in range((3 << _LN_TABLE_BITS) // 2 + 1)]
_LN_C_HI = np.array([h for h, _ in _LN_C])
_LN_C_LO = np.array([lo for _, lo in _LN_C])


def _ln_dd(x: np.ndarray):
    """ln x as a double-double, for finite x > 0: x = 2**e·m, m in [√½, √2), c = j/128 nearest m,
    ln x = e·ln 2 + ln c + 2·atanh((m − c)/(m + c))."""
    m, e = np.frexp(x)
    small = m < 0.7071067811865476
    m = np.where(small, m * 2.0, m)
    e = np.where(small, e - 1, e).astype(np.float64)
    j = np.rint(m * (1 << _LN_TABLE_BITS))
    c = j * (1.0 / (1 << _LN_TABLE_BITS))
    dh, dl = _two_sum(m, c)
    sh, sl = _dd_div(m - c, np.zeros_like(m), dh, dl)   # m − c is exact: c is within 2**-8 of m
    s2h, s2l = _dd_mul(sh, sl, sh, sl)
    ph, pl = np.full_like(m, _ATANH_COEF[_LN_TERMS - 1][0]), np.full_like(m, _ATANH_COEF[_LN_TERMS - 1][1])
    for ch, cl in reversed(_ATANH_COEF[:_LN_TERMS - 1]):
        ph, pl = _dd_mul(ph, pl, s2h, s2l)
        ph, pl = _dd_add(ph, pl, ch, cl)
    lh, ll = _dd_mul(ph, pl, 2.0 * sh, 2.0 * sl)
    k = j.astype(np.intp)
    lh, ll = _dd_add(_LN_C_HI[k], _LN_C_LO[k], lh, ll)
    eh, el = _dd_mul(e, np.zeros_like(e), _LN2[0], _LN2[1])
    return _dd_add(eh, el, lh, ll)


def _expm1_small_dd(rh, rl):
    """e**r − 1 as a double-double for a double-double |r| ≤ 0.35."""
    th, tl = np.ldexp(rh, -_EXP_SQUARINGS), np.ldexp(rl, -_EXP_SQUARINGS)
    ph, pl = np.full_like(th, _EXP_COEF[-1][0]), np.full_like(th, _EXP_COEF[-1][1])
    for ch, cl in reversed(_EXP_COEF[:-1]):
        ph, pl = _dd_mul(ph, pl, th, tl)
        ph, pl = _dd_add(ph, pl, ch, cl)
    ph, pl = _dd_mul(ph, pl, th, tl)          # t/2! + t²/3! + …
    ph, pl = _dd_add(ph, pl, 1.0, 0.0)
    eh, el = _dd_mul(ph, pl, th, tl)          # e**t − 1
    for _ in range(_EXP_SQUARINGS):           # e**2t − 1 = (e**t − 1)(e**t − 1 + 2)
        ah, al = _dd_add(eh, el, 2.0, 0.0)
        eh, el = _dd_mul(eh, el, ah, al)
    return eh, el


def _reduce(yh, yl):
    """Split a double-double y·ln2-scaled argument: y = n·ln2 + r with |r| ≤ ln2/2 + ε."""
    n = np.rint(yh * _INV_LN2[0])
    nh, nl = _dd_mul(n, np.zeros_like(n), _LN2[0], _LN2[1])
    rh, rl = _dd_add(yh, yl, -nh, -nl)
    return n, rh, rl


def _arr(x) -> np.ndarray:
    return np.atleast_1d(np.asarray(x, dtype=np.float64)).copy()


def _out(result: np.ndarray, like):
    return float(result[0]) if np.ndim(like) == 0 else result.reshape(np.shape(like))


def _positive_finite(x: np.ndarray, fn):
    """Apply ``fn`` where x is finite and > 0; 0 → −inf, +inf → +inf, negative or NaN → NaN."""
    ok = np.isfinite(x) & (x > 0)
    out = np.where(x == 0, -np.inf, np.where(x == np.inf, np.inf, np.nan))
    if np.any(ok):
        out[ok] = fn(x[ok])
    return out


def log(x):
    """Natural logarithm, the same bits on every platform."""
    a = _arr(x)
    return _out(_positive_finite(a, lambda v: sum(_ln_dd(v))), x)


def log2(x):
    """Base-2 logarithm, the same bits on every platform (exact for powers of two)."""
    a = _arr(x)

    def f(v):
        m, e = np.frexp(v)
        exact = m == 0.5
        h, lo = _ln_dd(v)
        h, lo = _dd_mul(h, lo, _INV_LN2[0], _INV_LN2[1])
        return np.where(exact, e - 1.0, h + lo)

    return _out(_positive_finite(a, f), x)


def log10(x):
    """Base-10 logarithm, the same bits on every platform."""
    a = _arr(x)

    def f(v):
        h, lo = _ln_dd(v)
        h, lo = _dd_mul(h, lo, _INV_LN10[0], _INV_LN10[1])
        return h + lo

    return _out(_positive_finite(a, f), x)


def log1p(x):
    """ln(1 + x), accurate for small x, the same bits on every platform (x ≥ 0)."""
    a = _arr(x)
    ok = np.isfinite(a) & (a >= 0)
    out = np.where(a == np.inf, np.inf, np.nan)
    v = a[ok]
    if v.size:
        sh, sl = _two_sum(np.ones_like(v), v)
        h, lo = _ln_dd(sh)
        # ln(sh + sl) = ln(sh) + ln(1 + t), t = sl/sh < 2**-52: ln(1 + t) = t − t²/2 to 2**-156
        th, tl = _dd_div(sl, np.zeros_like(v), sh, np.zeros_like(v))
        qh, ql = _dd_mul(th, tl, -0.5 * th, -0.5 * tl)
        th, tl = _dd_add(th, tl, qh, ql)
        h, lo = _dd_add(h, lo, th, tl)
        out[ok] = np.where(v == 0, 0.0, h + lo)
    return _out(out, x)


def _exp_parts(yh, yl):
    """(n, eh, el) with e**y = 2**n · (1 + eh + el)."""
    n, rh, rl = _reduce(yh, yl)
    eh, el = _expm1_small_dd(rh, rl)
    return n, eh, el


_EXP_MAX = 709.0
_EXP_MIN = -745.2


def exp(x):
    """e**x, the same bits on every platform."""
    a = _arr(x)
    out = np.where(a > _EXP_MAX, np.inf, np.where(np.isnan(a), np.nan, 0.0))
    ok = (a <= _EXP_MAX) & (a >= _EXP_MIN)
    if np.any(ok):
        n, eh, el = _exp_parts(a[ok], np.zeros(int(ok.sum())))
        h, lo = _dd_add(eh, el, 1.0, 0.0)
        out[ok] = np.ldexp(h + lo, n.astype(np.int64))
    return _out(out, x)


def expm1(x):
    """e**x − 1, accurate for small x, the same bits on every platform."""
    a = _arr(x)
    out = np.where(a > _EXP_MAX, np.inf, np.where(np.isnan(a), np.nan, -1.0))
    ok = (a <= _EXP_MAX) & (a >= -40.0)
    if np.any(ok):
        n, eh, el = _exp_parts(a[ok], np.zeros(int(ok.sum())))
        scale = np.ldexp(1.0, n.astype(np.int64))
        # 2**n·(1 + E) − 1 = 2**n·E + (2**n − 1)
        bh, bl = _two_sum(scale, -np.ones_like(scale))
        h, lo = _dd_add(eh * scale, el * scale, bh, bl)
        out[ok] = np.where(a[ok] == 0, a[ok], h + lo)
    return _out(out, x)


def exp2(x):
    """2**x, the same bits on every platform (exact for integers)."""
    a = _arr(x)
    out = np.where(a > 1024, np.inf, np.where(np.isnan(a), np.nan, 0.0))
    ok = (a <= 1024) & (a >= -1075)
    if np.any(ok):
        v = a[ok]
        n = np.rint(v)
        fh, fl = _dd_mul(v - n, np.zeros_like(v), _LN2[0], _LN2[1])
        eh, el = _expm1_small_dd(fh, fl)
        h, lo = _dd_add(eh, el, 1.0, 0.0)
        out[ok] = np.ldexp(h + lo, n.astype(np.int64))
    return _out(out, x)


def power(x, y):
    """x**y for x > 0, as 2**(y·log2 x) carried in double-double; the same bits everywhere."""
    a, b = np.broadcast_arrays(_arr(x), _arr(y))
    a, b = a.copy(), b.copy()
    ok = np.isfinite(a) & (a > 0) & np.isfinite(b)
    out = np.full(a.shape, np.nan)
    if np.any(ok):
        h, lo = _ln_dd(a[ok])
        h, lo = _dd_mul(h, lo, _INV_LN2[0], _INV_LN2[1])
        h, lo = _dd_mul(h, lo, b[ok], np.zeros_like(h))     # y·log2 x
        n = np.rint(h)
        fh, fl = _dd_add(h, lo, -n, np.zeros_like(n))
        fh, fl = _dd_mul(fh, fl, _LN2[0], _LN2[1])
        eh, el = _expm1_small_dd(fh, fl)
        sh, sl = _dd_add(eh, el, 1.0, 0.0)
        res = np.ldexp(sh + sl, np.clip(n, -2000, 2000).astype(np.int64))
        out[ok] = np.where(b[ok] == 0, 1.0, res)
    like = np.broadcast(np.asarray(x), np.asarray(y))
    return float(out.reshape(-1)[0]) if like.ndim == 0 else out.reshape(like.shape)


def floor_log2(x: float) -> int:
    """⌊log2 x⌋ of a finite x > 0, exactly (from the binary exponent)."""
    _, e = np.frexp(float(x))
    return int(e) - 1
