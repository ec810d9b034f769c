"""Quadrature kernel of the expected-load map (private).

For independent per-expert logits ``z_j = mu_j + sigma * eps_j`` and a
selection score ``y_j = h(z_j; b_j)`` that is increasing in ``z_j``, expert
``i`` is chosen when fewer than ``K`` of the others score above ``y_i``::

    p_i = integral f_i(y) * P(N_{-i}(y) <= K - 1) dy

with ``f_i`` the density of ``y_i`` and ``N_{-i}(y)`` the number of other
experts above ``y``: a Poisson-binomial count with success probabilities
``q_j(y) = P(y_j > y)``. Its law is read off the discrete Fourier transform of
``prod_j (1 - q_j + q_j w)`` at the ``M``-th roots of unity ``w`` (``M`` odd and
``>= N``, so no aliasing and no factor vanishes); leaving out expert ``i`` (or
a pair ``i, k``) divides the product by its factor(s), so every expert and
every pair costs one multiplication, and the pair sums are matrix products.

The integration variable is ``t = log(v / (N - v))`` with ``v(y) = sum_j q_j(y)``
the expected number of experts above ``y``: the threshold that matters sits
near ``v = K`` whatever the law, skew and bias, and composite Gauss-Legendre
panels in ``t`` resolve it. The range keeps ``v`` in ``[1e-7, v_max]`` with
``v_max`` set by a Chernoff bound so that ``P(N <= K)`` is below ``1e-13``;
mass above the top level is added as ``q_i(y_top)``.

Shape legend: B flattened leading axes, Q quadrature nodes, E experts,
H retained frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

__all__: list[str] = []

NOISE_LAWS = ("normal", "logistic", "gumbel")
_EULER = 0.5772156649015329
_V_MIN = 1e-7
_CHUNK_ELEMENTS = 1 << 21


# ----------------------------------------------------------------------------
# Noise laws (standard, zero location, as routesim.rng draws them)
# ----------------------------------------------------------------------------
def _sf(law: str, x: np.ndarray) -> np.ndarray:
    if law == "normal":
        return special.ndtr(-x)
    if law == "logistic":
        return special.expit(-x)
    return -np.expm1(-np.exp(-(x + _EULER)))


def _pdf(law: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        if law == "normal":
            return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        if law == "logistic":
            return special.expit(x) * special.expit(-x)
        e = np.exp(-(x + _EULER))
        return np.where(np.isfinite(e), e * np.exp(-e), 0.0)


def _quantile(law: str, w: float) -> float:
    if law == "normal":
        return float(special.ndtri(w))
    if law == "logistic":
        return float(special.logit(w))
    return float(-math.log(-math.log(w)) - _EULER)


# ----------------------------------------------------------------------------
# Selection transform: level y -> logit threshold zeta_j(y)
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """How a level ``y`` of the selection score maps to each expert's logit.

    ``kind``: ``logit`` (``y = z + b``), ``logit_logb`` (``y = z + log b``,
    softmax with a multiplicative bias), ``score_add`` (``y = g(z) + b``) or
    ``score_mul`` (``y = g(z) * b``); ``gate`` names ``g``.
    """

    kind: str
    gate: str


def _ginv(gate: str, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logit ``z`` with ``g(z) = s`` and ``dz/ds`` (+-inf / 0 off the range)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if gate == "sigmoid":
            inside = (s > 0) & (s < 1)
            sc = np.where(inside, s, 0.5)
            z = np.log(sc) - np.log1p(-sc)
            dz = 1.0 / (sc * (1.0 - sc))
            z = np.where(inside, z, np.where(s <= 0, -np.inf, np.inf))
        else:  # sqrtsoftplus: softplus(z) = s^2
            inside = s > 0
            sc = np.where(inside, s, 1.0)
            s2 = sc * sc
            z = np.where(s2 > 30.0, s2 + np.log1p(-np.exp(-s2)), np.log(np.expm1(s2)))
            dz = 2.0 * sc / (-np.expm1(-s2))
            z = np.where(inside, z, -np.inf)
        return z, np.where(inside, dz, 0.0)


def _gate(gate: str, z: np.ndarray) -> np.ndarray:
    if gate == "sigmoid":
        return special.expit(z)
    return np.sqrt(np.logaddexp(0.0, z))


def levels_of(tr: Transform, z: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Selection score ``y`` of logit ``z`` under bias ``b`` (broadcasting)."""
    if tr.kind == "logit":
        return z + bias
    if tr.kind == "logit_logb":
        return z + np.log(bias)
    s = _gate(tr.gate, z)
    return s + bias if tr.kind == "score_add" else s * bias


def expert_terms(tr: Transform, law: str, y: np.ndarray, mu: np.ndarray, bias: np.ndarray,
                 sigma: np.ndarray, wrt: str = "bias"
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``q = P(y_j > y)``, density ``f`` of ``y_j`` at ``y``, and ``g = dq/dtheta_j``.

    ``y`` has shape (B, Q, 1) and ``mu``, ``bias`` (B, 1, E), ``sigma``
    (B, 1, 1); ``theta`` is the bias (``wrt="bias"``) or ``mu``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if tr.kind in ("logit", "logit_logb"):
            shift = np.log(bias) if tr.kind == "logit_logb" else bias
            zeta, dz = y - shift, np.ones_like(y - shift)
        elif tr.kind == "score_add":
            zeta, dz = _ginv(tr.gate, y - bias)
        else:
            zeta, dz = _ginv(tr.gate, y / bias)
            dz = dz / bias
        x = (zeta - mu) / sigma
        finite = np.isfinite(x)
        xs = np.where(finite, x, 0.0)
        q = np.where(finite, _sf(law, xs), np.where(x > 0, 0.0, 1.0))
        dens = np.where(finite, _pdf(law, xs) / sigma, 0.0)  # density of z_j at zeta
        f = dens * dz
        if wrt == "mu":
            g = dens
        elif tr.kind in ("logit", "score_add"):
            g = f
        elif tr.kind == "logit_logb":
            g = f / bias
        else:
            g = f * (y / bias)
    return q, f, np.where(finite, g, 0.0)


# ----------------------------------------------------------------------------
# Integration nodes in t = log(v / (N - v))
# ----------------------------------------------------------------------------
def _v_max(n: int, k: int) -> float:
    """Expected count above the lowest level: ``P(N <= K) < 1e-13`` below it."""
    m = float(k) + 1.0
    while m - k - k * math.log(m / k) < 30.0:
        m *= 1.05
    return min(m, n - 1e-9)


def _t_of_v(v: np.ndarray, n: int) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(v) - np.log(np.maximum(n - v, 0.0))


@dataclass(frozen=True)
class Nodes:
    """Quadrature nodes: levels ``y_BQ``, weights ``w_BQ`` (in y), top level ``y_top_B``."""

    y_BQ: np.ndarray
    w_BQ: np.ndarray
    y_top_B: np.ndarray


def make_nodes(tr: Transform, law: str, mu_BE: np.ndarray, bias_BE: np.ndarray,
               sigma_B: np.ndarray, topk: int, nodes: int, order: int = 8) -> Nodes:
    """Composite Gauss-Legendre nodes in ``t``, mapped to levels ``y``."""
    b, n = mu_BE.shape
    zlo, zhi = _quantile(law, 1e-15), _quantile(law, 1.0 - 1e-15)
    sig = sigma_B[:, None]
    lo = np.min(levels_of(tr, mu_BE + sig * zlo, bias_BE), axis=-1)
    hi = np.max(levels_of(tr, mu_BE + sig * zhi, bias_BE), axis=-1)
    mu3, b3, s3 = mu_BE[:, None, :], bias_BE[:, None, :], sigma_B[:, None, None]

    def t_and_slope(y_BG: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q, f, _ = expert_terms(tr, law, y_BG[..., None], mu3, b3, s3)
        v = np.sum(q, axis=-1)
        fs = np.sum(f, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = -fs * n / (v * (n - v))
        return _t_of_v(v, n), slope

    grid = 257
    frac = np.linspace(0.0, 1.0, grid)
    y_grid = lo[:, None] + (hi - lo)[:, None] * frac
    t_grid, _ = t_and_slope(y_grid)  # decreasing in y
    t_lo = float(_t_of_v(np.asarray(_V_MIN), n))
    t_hi = float(_t_of_v(np.asarray(_v_max(n, topk)), n))
    panels = max(1, nodes // order)
    xg, wg = np.polynomial.legendre.leggauss(order)
    edges = np.linspace(t_lo, t_hi, panels + 1)
    half = 0.5 * (edges[1:] - edges[:-1])
    t_nodes = ((edges[:-1] + half)[:, None] + half[:, None] * xg).ravel()
    t_w = (half[:, None] * wg).ravel()
    targets = np.concatenate([t_nodes, [t_lo]])
    # Bracket each target in the grid, then safeguarded Newton.
    above = np.sum(t_grid[:, None, :] > targets[None, :, None], axis=-1)
    idx = np.clip(above, 1, grid - 1)
    ya = np.take_along_axis(y_grid, idx - 1, axis=-1)
    yb = np.take_along_axis(y_grid, idx, axis=-1)
    ta = np.take_along_axis(t_grid, idx - 1, axis=-1)
    tb = np.take_along_axis(t_grid, idx, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lam = np.where(np.isfinite(ta) & np.isfinite(tb) & (ta != tb),
                       (ta - targets) / (ta - tb), 0.5)
    y = ya + np.clip(lam, 0.0, 1.0) * (yb - ya)
    for _ in range(40):
        t, slope = t_and_slope(y)
        err = t - targets
        ya = np.where(err > 0, y, ya)  # t too high -> y too low
        yb = np.where(err > 0, yb, y)
        with np.errstate(invalid="ignore", divide="ignore"):
            newton = y - err / slope
        ok = np.isfinite(newton) & (newton > ya) & (newton < yb)
        y_new = np.where(ok, newton, 0.5 * (ya + yb))
        done = np.all(np.abs(err) < 1e-11) or np.all(np.abs(y_new - y) <= 1e-15 * (1 + abs(y)))
        y = y_new
        if done:
            break
    t, slope = t_and_slope(y)
    with np.errstate(invalid="ignore", divide="ignore"):
        dydt = np.where(np.isfinite(slope) & (slope != 0), -1.0 / slope, 0.0)
    w = t_w * dydt[:, :-1]
    return Nodes(y_BQ=y[:, :-1], w_BQ=w, y_top_B=y[:, -1])


# ----------------------------------------------------------------------------
# Poisson-binomial sums through the DFT
# ----------------------------------------------------------------------------
def _frequencies(n: int) -> tuple[int, np.ndarray, np.ndarray]:
    """``M`` (odd, >= n), roots ``w_l`` for l = 0..(M-1)/2 and the Hermitian weights."""
    m = n if n % 2 else n + 1
    l = np.arange((m - 1) // 2 + 1)
    w = np.exp(2j * np.pi * l / m)
    gamma = np.where(l == 0, 1.0, 2.0) / m
    return m, w, gamma


def _count_weights(w_H: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``sum_{m=lo}^{hi} w^{-m}`` (zero when hi < lo)."""
    if hi < lo:
        return np.zeros_like(w_H)
    powers = np.arange(lo, hi + 1)
    return np.sum(w_H[:, None] ** (-powers[None, :]), axis=-1)


def _chunks(b: int, q: int, n: int, h: int):
    rows = max(1, _CHUNK_ELEMENTS // max(1, n * h))
    for bi in range(b):
        for q0 in range(0, q, rows):
            yield bi, slice(q0, min(q, q0 + rows))


def single_sums(q_BQE: np.ndarray, topk: int) -> np.ndarray:
    """``G_i = P(N_{-i} <= K - 1)`` at every node: shape (B, Q, E)."""
    b, nq, n = q_BQE.shape
    _, w, gamma = _frequencies(n)
    kappa = _count_weights(w, 0, topk - 1) * gamma
    out = np.empty_like(q_BQE)
    for bi, sl in _chunks(b, nq, n, w.size):
        q = q_BQE[bi, sl][..., None]
        a = (1.0 - q) + q * w  # (Q, E, H)
        prod = np.prod(a, axis=1, keepdims=True)
        out[bi, sl] = np.real(np.sum(prod / a * kappa, axis=-1))
    return out


def pair_sums(q_BQE: np.ndarray, left_BQE: np.ndarray, right_BQE: np.ndarray,
              weight_BQ: np.ndarray, count_lo: int, count_hi: int) -> np.ndarray:
    """``sum_q weight * left_i * right_k * P(count_lo <= N_{-ik} <= count_hi)``: (B, E, E).

    The diagonal is meaningless (it divides by expert i's factor twice) and
    is left for the caller to replace.
    """
    b, nq, n = q_BQE.shape
    _, w, gamma = _frequencies(n)
    kappa = _count_weights(w, count_lo, count_hi) * gamma
    out = np.zeros((b, n, n))
    for bi, sl in _chunks(b, nq, n, w.size):
        q = q_BQE[bi, sl][..., None]
        a = (1.0 - q) + q * w  # (Q, E, H)
        prod = np.prod(a, axis=1)  # (Q, H)
        scale = prod * kappa * weight_BQ[bi, sl][:, None]  # (Q, H)
        x = left_BQE[bi, sl][..., None] / a * scale[:, None, :]  # (Q, E, H)
        y = right_BQE[bi, sl][..., None] / a
        xm = np.transpose(x, (1, 0, 2)).reshape(n, -1)
        ym = np.transpose(y, (1, 0, 2)).reshape(n, -1)
        out[bi] += np.real(xm @ ym.T)
    return out
