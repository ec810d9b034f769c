"""Levels of the sparse kernel: the noise laws, selection scores and per-stream levels.

Part of :mod:`routesim.engines.kernels.sparse` (its docstring gives the method): the
noise's survival function and its inverse, the selection score of a logit and the logit
above which a score exceeds a level, and the solve of the levels ``h_1 > ... > h_J``
(and the completion level below them) by their expected counts of experts above.

Shape legend: E experts, J levels.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_math import njit

__all__ = ["LAW_CODES", "GATE_CODES", "MODE_CODES", "survival", "inverse_survival",
           "level_heights", "thresholds_into", "rows_from_thresholds"]

LAW_CODES = {"normal": 0, "logistic": 1, "gumbel": 2}
GATE_CODES = {"sigmoid": 0, "sqrtsoftplus": 2}
MODE_CODES = {"additive": 0, "multiplicative": 1, "logit": 2}

_OPT = dict(error_model="numpy", cache=True)
_INL = dict(inline="always", error_model="numpy", cache=True)
_EULER = 0.5772156649015329
_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)
_REACH = 40.0  # standardised noise beyond which the survival is negligible for bracketing


# ----------------------------------------------------------------------------
# The noise laws: survival function and its inverse (float64)
# ----------------------------------------------------------------------------
@njit(**_INL)
def _ndtri(p, refine):
    """Standard normal quantile: Acklam's rational approximation (relative error below
    1.2e-9), refined by one Halley step if ``refine`` (to double precision)."""
    plow = 0.02425
    if p < plow:
        q = math.sqrt(-2.0 * math.log(p))
        x = ((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                 - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
               + 4.374664141464968e+00) * q + 2.938163982698783e+00)
             / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                  + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    elif p <= 1.0 - plow:
        q = p - 0.5
        r = q * q
        x = ((((((-3.969683028665376e+01 * r + 2.209460984245205e+02) * r
                 - 2.759285104469687e+02) * r + 1.383577518672690e+02) * r
               - 3.066479806614716e+01) * r + 2.506628277459239e+00) * q
             / (((((-5.447609879822406e+01 * r + 1.615858368580409e+02) * r
                   - 1.556989798598866e+02) * r + 6.680131188771972e+01) * r
                 - 1.328068155288572e+01) * r + 1.0))
    else:
        q = math.sqrt(-2.0 * math.log1p(-p))
        x = -((((((-7.784894002430293e-03 * q - 3.223964580411365e-01) * q
                  - 2.400758277161838e+00) * q - 2.549732539343734e+00) * q
                + 4.374664141464968e+00) * q + 2.938163982698783e+00)
              / ((((7.784695709041462e-03 * q + 3.224671290700398e-01) * q
                   + 2.445134137142996e+00) * q + 3.754408661907416e+00) * q + 1.0))
    if refine and abs(x) < 37.0:
        e = 0.5 * math.erfc(-x / _SQRT2) - p
        u = e * _SQRT2PI * math.exp(0.5 * x * x)
        x = x - u / (1.0 + 0.5 * x * u)
    return x


@njit(**_INL)
def survival(x, law):
    """``P(eps > x)`` of the standard noise law (0 normal, 1 logistic, 2 Gumbel, mean 0)."""
    if law == 0:
        return 0.5 * math.erfc(x / _SQRT2)
    if law == 1:
        if x > 0.0:
            e = math.exp(-x)
            return e / (1.0 + e)
        return 1.0 / (1.0 + math.exp(x))
    return -math.expm1(-math.exp(-(x + _EULER)))


@njit(**_INL)
def inverse_survival(w, law):
    """The ``x`` with ``P(eps > x) = w``, for ``0 < w < 1``."""
    if law == 0:
        if w < 0.5:
            return -_ndtri(w, False)
        return _ndtri(1.0 - w, False)
    if law == 1:
        return math.log1p(-w) - math.log(w)
    return -math.log(-math.log1p(-w)) - _EULER


# ----------------------------------------------------------------------------
# Selection scores and levels
# ----------------------------------------------------------------------------
@njit(**_INL)
def _score(z, b, gate, mode):
    """Selection score of logit ``z`` with bias ``b`` (float64)."""
    if mode == 2:
        return z + b
    if gate == 0:
        g = 1.0 / (1.0 + math.exp(-z)) if z >= 0.0 else math.exp(z) / (1.0 + math.exp(z))
    else:
        g = math.sqrt(math.log1p(math.exp(-abs(z))) + max(z, 0.0))
    return g + b if mode == 0 else g * b


@njit(**_INL)
def _z_above(h, b, gate, mode):
    """The logit above which the selection score exceeds ``h`` (+-inf: never, always)."""
    if mode == 2:
        return h - b
    if mode == 0:
        y = h - b
    elif b > 0.0:
        y = h / b
    else:
        return np.inf  # a score g * b <= 0 never exceeds h >= 0
    if y <= 0.0:
        return -np.inf
    if gate == 0:
        if y >= 1.0:
            return np.inf
        return math.log(y) - math.log1p(-y)
    y2 = y * y
    return y2 if y2 > 40.0 else math.log(math.expm1(y2))


@njit(**_INL)
def _above(h, m, sigma, law, gate, mode, bias, i):
    """Probability that expert ``i``'s selection score exceeds ``h``."""
    c = _z_above(h, bias[i], gate, mode)
    if c == np.inf:
        return 0.0
    if c == -np.inf:
        return 1.0
    return survival((c - m[i]) / sigma, law)


@njit(**_OPT)
def _expected_above(h, m, sigma, law, gate, mode, bias):
    tot = 0.0
    for i in range(m.shape[0]):
        tot += _above(h, m, sigma, law, gate, mode, bias, i)
    return tot


@njit(**_OPT)
def _solve_level(target, lo, hi, m, sigma, law, gate, mode, bias, iters):
    """A level ``h`` in ``[lo, hi]`` whose expected count above is about ``target``."""
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _expected_above(mid, m, sigma, law, gate, mode, bias) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(**_OPT)
def level_heights(m, sigma, law, gate, mode, bias, lam_top, lam_bottom, iters, H_out):
    """The levels in selection-score space, into ``H_out`` (J + 1,).

    ``H_out[0 .. J - 1]`` are the levels from the highest down, equally spaced between
    the one with about ``lambda_1`` experts expected above it and the one with about
    ``lambda_J``; ``H_out[J]`` is the completion level, with about ``2 lambda_J``
    expected above it (``-inf``: every expert, when that is all of them). All NaN when
    every token must be completed densely (zero noise scale, or ``lambda_J`` not in
    ``(0, N)``).
    """
    n = m.shape[0]
    J = H_out.shape[0] - 1
    if not sigma > 0.0 or not lam_bottom > 0.0 or lam_bottom >= n:
        H_out[:] = np.nan
        return
    lo = np.inf
    hi = -np.inf
    for i in range(n):
        a = _score(m[i] - _REACH * sigma, bias[i], gate, mode)
        c = _score(m[i] + _REACH * sigma, bias[i], gate, mode)
        lo = min(lo, a, c)
        hi = max(hi, a, c)
    if mode == 1:
        lo = max(lo, 0.0)
    lo = lo - 1e-9 * (1.0 + abs(lo))
    hi = hi + 1e-9 * (1.0 + abs(hi))
    h_bot = _solve_level(lam_bottom, lo, hi, m, sigma, law, gate, mode, bias, iters)
    h_top = _solve_level(lam_top, h_bot, hi, m, sigma, law, gate, mode, bias, iters)
    for j in range(J):
        H_out[j] = h_top + (h_bot - h_top) * (j / (J - 1)) if J > 1 else h_bot
    if 2.0 * lam_bottom >= n:
        H_out[J] = -np.inf
    else:
        H_out[J] = _solve_level(2.0 * lam_bottom, lo, h_bot, m, sigma, law, gate, mode, bias,
                                iters)


@njit(**_OPT)
def thresholds_into(H, bias, gate, mode, C_out):
    """The logit above which each expert's selection score exceeds each level of ``H``,
    into ``C_out`` (J + 1, E) (+-inf: never, always); NaN rows when ``H`` is NaN.

    Fixed for a stream, so its rows, or each of its sequences' rows when they have a
    shared component (:func:`rows_from_thresholds`), cost one survival function per
    level and expert. A level of ``-inf`` is exceeded by every score (also ``g * b <= 0``,
    which never exceeds a level ``>= 0``).
    """
    for j in range(H.shape[0]):
        for i in range(bias.shape[0]):
            if np.isnan(H[j]) or H[j] == -np.inf:
                C_out[j, i] = H[j]
            else:
                C_out[j, i] = _z_above(H[j], bias[i], gate, mode)


@njit(**_OPT)
def rows_from_thresholds(C, m, sigma, law, S_out):
    """Per level and expert the probability of scoring above the level, into ``S_out``
    (J + 1, E), from the thresholds of :func:`thresholds_into` and the logits' law
    (``m``, ``sigma``).

    Rows non-decreasing down (each at least the row above, so that the bands are well
    ordered); all zero when the levels are NaN or the noise scale is zero (every token
    completed densely).
    """
    n = m.shape[0]
    J = S_out.shape[0] - 1
    if not sigma > 0.0 or np.isnan(C[0, 0]):
        S_out[:, :] = 0.0
        return
    for j in range(J + 1):
        for i in range(n):
            c = C[j, i]
            if c == np.inf:
                p = 0.0
            elif c == -np.inf:
                p = 1.0
            else:
                p = survival((c - m[i]) / sigma, law)
            S_out[j, i] = max(p, S_out[j - 1, i]) if j > 0 else p
