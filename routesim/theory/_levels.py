"""Quadrature nodes of the expected-load map (private).

For independent per-expert logits ``z_j = mu_j + sigma * eps_j`` and a
selection score ``y_j = h(z_j; b_j)`` increasing in ``z_j``, expert ``i`` is
chosen when fewer than ``K`` of the others score above ``y_i``::

    p_i = E_x[ G_i(h(mu_i + sigma x; b_i)) ],   G_i(y) = P(N_{-i}(y) <= K - 1),

with ``x`` the standard noise and ``N_{-i}(y)`` the number of other experts
above ``y``, a Poisson-binomial count with success probabilities
``q_j(y) = P(y_j > y)`` (see :mod:`._poisson`). Each expert is integrated in
its own standardised logit ``x``, where its density is smooth however the
gate saturates (a sigmoid score piles up against ``1 + b_j``, which defeats a
quadrature on a common level axis).

The range of ``x`` is cut to the levels that matter: from ``y_lo``, below
which ``P(N <= K) < 1e-13`` (a Chernoff bound on the count of experts above),
to ``y_top``, above which the expected count of experts is ``1e-7`` and the
mass is added as ``P(x > x_top)``. Composite Gauss-Legendre panels of 8
nodes, uniform in ``x``.

Shape legend: B flattened leading axes, U nodes per expert, E experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import special

from .._math import normal_cdf, sigmoid, softplus

__all__: list[str] = []

NOISE_LAWS = ("normal", "logistic", "gumbel")
EULER = 0.5772156649015329
ORDER = 8
_V_MIN = 1e-7
_TAIL = 1e-13
_XG, _WG = np.polynomial.legendre.leggauss(ORDER)


# ----------------------------------------------------------------------------
# Noise laws (standard, zero location, as routesim.rng draws them)
# ----------------------------------------------------------------------------
def _sf(law: str, x: np.ndarray) -> np.ndarray:
    if law == "normal":
        return normal_cdf(np, -x)
    if law == "logistic":
        return sigmoid(np, -x)
    return -np.expm1(-np.exp(-(x + EULER)))


def _pdf(law: str, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        if law == "normal":
            return np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        if law == "logistic":
            return sigmoid(np, x) * sigmoid(np, -x)
        e = np.exp(-(x + EULER))
        return np.where(np.isfinite(e), e * np.exp(-e), 0.0)


def quantile(law: str, w: float) -> float:
    """Quantile of the standard noise law."""
    if law == "normal":
        return float(special.ndtri(w))
    if law == "logistic":
        return float(special.logit(w))
    return float(-math.log(-math.log(w)) - EULER)


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
    """Logit ``z`` with ``g(z) = s`` and ``dz/ds`` (+-inf and 0 off the range)."""
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
            z = np.where(s2 > 30.0, s2 + np.log1p(-np.exp(-np.minimum(s2, 700.0))),
                         np.log(np.expm1(np.minimum(s2, 30.0))))
            dz = 2.0 * sc / (-np.expm1(-s2))
            z = np.where(inside, z, -np.inf)
        return z, np.where(inside, dz, 0.0)


def levels_of(tr: Transform, z: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Selection score ``y`` of logit ``z`` under bias ``b`` (broadcasting)."""
    if tr.kind == "logit":
        return z + bias
    if tr.kind == "logit_logb":
        return z + np.log(bias)
    s = sigmoid(np, z) if tr.gate == "sigmoid" else np.sqrt(softplus(np, z))
    return s + bias if tr.kind == "score_add" else s * bias


class Terms(NamedTuple):
    """Per-expert quantities at levels ``y`` (each shaped like ``y`` x experts).

    ``q = P(y_j > y)``; ``f`` density of ``y_j``; ``g = dq_j / dtheta_j``;
    ``x`` standardised logit threshold; ``dx = dx / dy``.
    """

    q: np.ndarray
    f: np.ndarray
    g: np.ndarray
    x: np.ndarray
    dx: np.ndarray


def expert_terms(tr: Transform, law: str, y: np.ndarray, mu: np.ndarray, bias: np.ndarray,
                 sigma: np.ndarray, wrt: str = "bias") -> Terms:
    """:class:`Terms` at levels ``y`` (..., 1) for experts ``mu``, ``bias`` (..., E).

    ``sigma`` broadcasts against them; ``theta`` is the bias (``wrt="bias"``)
    or ``mu``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        if tr.kind in ("logit", "logit_logb"):
            shift = np.log(bias) if tr.kind == "logit_logb" else bias
            zeta = y - shift
            dz = np.ones_like(zeta)
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
        return Terms(q, f, np.where(finite, g, 0.0), x, np.where(finite, dz / sigma, 0.0))


def pdf(law: str, x: np.ndarray) -> np.ndarray:
    """Density of the standard noise law."""
    return _pdf(law, x)


def sf(law: str, x: np.ndarray) -> np.ndarray:
    """Survival function of the standard noise law."""
    return _sf(law, x)


# ----------------------------------------------------------------------------
# Range and nodes
# ----------------------------------------------------------------------------
def _v_max(n: int, k: int) -> float:
    """Expected count above ``y_lo``, so that ``P(N <= K) < 1e-13`` below it.

    Lower Chernoff bound ``P(N <= K) <= exp(-m) (e m / K)^K`` while ``m < N``;
    near ``m = N`` the count of experts *below* ``y`` (mean ``N - m``) must
    reach ``N - K``: ``P <= (e (N - m) / (N - K))^(N - K)``.
    """
    m = float(k) + 1.0
    while m - k - k * math.log(m / k) < 30.0 and m < n:
        m *= 1.05
    below = (n - k) / math.e * _TAIL ** (1.0 / (n - k))
    return min(m, n - min(below, 0.5))


def _levels_at_counts(tr: Transform, law: str, mu_BE: np.ndarray, bias_BE: np.ndarray,
                      sigma_B: np.ndarray, targets_V: np.ndarray) -> np.ndarray:
    """Levels ``y`` with ``sum_j q_j(y) = v`` for each target ``v``: (B, V), by bisection."""
    sig = sigma_B[:, None]
    lo = np.min(levels_of(tr, mu_BE + sig * quantile(law, _TAIL), bias_BE), axis=-1)
    hi = np.max(levels_of(tr, mu_BE + sig * quantile(law, 1.0 - _TAIL), bias_BE), axis=-1)
    shape = (mu_BE.shape[0], targets_V.size)
    lo, hi = np.broadcast_to(lo[:, None], shape), np.broadcast_to(hi[:, None], shape)
    mu3, b3, s3 = mu_BE[:, None, :], bias_BE[:, None, :], sigma_B[:, None, None]
    for _ in range(200):  # the count decreases in y: keep count(lo) > v > count(hi)
        mid = 0.5 * (lo + hi)
        t = expert_terms(tr, law, mid[..., None], mu3, b3, s3)
        above = np.sum(t.q, axis=-1) > targets_V
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
        if np.all(hi - lo <= 1e-13 * (1.0 + np.abs(mid))):
            break
    return 0.5 * (lo + hi)


def _gl(lo: np.ndarray, hi: np.ndarray, panels: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [lo, hi] (broadcast): (..., panels * O)."""
    frac = np.linspace(0.0, 1.0, panels + 1)
    half = 0.5 * (frac[1:] - frac[:-1])
    r = ((frac[:-1] + half)[:, None] + half[:, None] * _XG).ravel()
    wr = (half[:, None] * _WG).ravel()
    span = (hi - lo)[..., None]
    return lo[..., None] + span * r, span * wr


@dataclass(frozen=True)
class Nodes:
    """Each expert's own quadrature nodes.

    Attributes
    ----------
    x_BEU : standardised logit nodes of expert ``i`` (row ``i``).
    w_BEU : weights including the noise density, so ``sum_u w = P(x in range)``.
    y_BEU : the selection levels ``h(mu_i + sigma x; b_i)`` of the nodes.
    above_BE : ``P(x > x_top)``, the mass above the range (counted as chosen).
    """

    x_BEU: np.ndarray
    w_BEU: np.ndarray
    y_BEU: np.ndarray
    above_BE: np.ndarray


def count_levels(tr: Transform, law: str, mu_BE: np.ndarray, bias_BE: np.ndarray,
                 sigma_B: np.ndarray, topk: int, nodes: int) -> np.ndarray:
    """The levels where the expected count of experts above runs through the panel edges.

    ``(B, V)``: first the level at ``v_hi`` (below it ``P(N <= K) < 1e-13``),
    then at ``1e-7``, then ``nodes // 16 + 1`` counts from ``K / 16`` to
    ``16 K``, evenly in ``log(v / (N - v))`` (see :func:`make_nodes`).
    """
    n = mu_BE.shape[-1]
    steps = max(1, nodes // (2 * ORDER))
    v_hi = _v_max(n, topk)
    t_of = lambda v: np.log(v) - np.log(n - v)  # noqa: E731
    t_a, t_b = t_of(max(_V_MIN, topk / 16.0)), t_of(min(v_hi, 16.0 * topk))
    tv = np.linspace(t_a, t_b, steps + 1) if t_b > t_a else np.array([t_a])
    v = np.concatenate([[v_hi, _V_MIN], n / (1.0 + np.exp(-tv))])
    return _levels_at_counts(tr, law, mu_BE, bias_BE, sigma_B, v)


def make_nodes(tr: Transform, law: str, mu_BE: np.ndarray, bias_BE: np.ndarray,
               sigma_B: np.ndarray, topk: int, nodes: int, rows_R: np.ndarray | None = None,
               levels_BV: np.ndarray | None = None) -> Nodes:
    """Own nodes of every expert over the levels that matter (about ``nodes`` per expert).

    Each expert's range of ``x`` is split into panels at ``nodes // 16``
    equal steps and at the levels where the expected count of experts above
    runs through ``K / 16 .. 16 K`` (``nodes // 16`` steps, evenly in
    ``log(v / (N - v))``): the count law ``G`` turns over there, sharply
    when ``N`` is large.

    ``rows_R`` (flattened ``point * E + expert`` indices) builds the nodes of
    those rows only: the arrays are then (R, U) and (R,). ``levels_BV``
    gives the count levels (:func:`count_levels`) instead of solving for them.
    """
    steps = max(1, nodes // (2 * ORDER))
    y_v = (count_levels(tr, law, mu_BE, bias_BE, sigma_B, topk, nodes) if levels_BV is None
           else levels_BV)  # (B, V)
    if rows_R is None:
        te = expert_terms(tr, law, y_v[..., None], mu_BE[:, None, :], bias_BE[:, None, :],
                          sigma_B[:, None, None])
        xv = np.swapaxes(te.x, -1, -2)  # (B, E, V): x_i at each level
        mu_X, bias_X, sig_X = mu_BE[..., None], bias_BE[..., None], sigma_B[:, None, None]
    else:
        n = mu_BE.shape[-1]
        pt, own = rows_R // n, rows_R % n
        mu_X, bias_X, sig_X = (mu_BE[pt, own][:, None], bias_BE[pt, own][:, None],
                               sigma_B[pt][:, None])
        xv = expert_terms(tr, law, y_v[pt], mu_X, bias_X, sig_X).x  # (R, V)
    xmin, xmax = quantile(law, _TAIL), quantile(law, 1.0 - _TAIL)
    xv = np.clip(np.nan_to_num(xv, nan=xmin), xmin, xmax)
    x_lo, x_hi = xv[..., 0], np.maximum(xv[..., 1], xv[..., 0])
    even = x_lo[..., None] + (x_hi - x_lo)[..., None] * np.linspace(0.0, 1.0, steps + 1)
    edges = np.sort(np.concatenate([even, np.clip(xv[..., 2:], x_lo[..., None],
                                                  x_hi[..., None])], axis=-1), axis=-1)
    half = 0.5 * (edges[..., 1:] - edges[..., :-1])  # (..., panels)
    x = ((edges[..., :-1] + half)[..., None] + half[..., None] * _XG).reshape(
        edges.shape[:-1] + (-1,))
    w = (half[..., None] * _WG).reshape(x.shape) * _pdf(law, x)
    y = levels_of(tr, mu_X + sig_X * x, bias_X)
    return Nodes(x_BEU=x, w_BEU=w, y_BEU=y, above_BE=_sf(law, x_hi))
