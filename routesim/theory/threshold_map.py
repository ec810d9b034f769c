"""Large-N threshold approximation of the expected-load map (microseconds per row).

When N is large the K-th largest selection score of a token hardly depends
on any one expert, and to first approximation it is one common level ``tau``:
expert ``i`` is chosen when its own score beats ``tau``, and ``tau`` is where
the expected number of experts above it is ``K``::

    p_i ~ q_i(tau),        sum_j q_j(tau) = K,

with ``q_j(y) = P(y_j > y)`` the expert's own score survival function (the
same per-expert terms as the exact map of :mod:`routesim.theory.expected_load`).
Differentiating the constraint gives its Jacobian in closed form, a diagonal
plus a rank-one term::

    dp_i / dtheta_k = g_i delta_ik - f_i g_k / sum_j f_j,

with ``f`` the score densities at ``tau`` and ``g = dq / dtheta`` (``theta``
the bias or ``mu``).

The map itself is off by 1-2 % of ``p`` at N = 64-256, K = 8 (the real
threshold fluctuates from token to token), but its *changes* track the exact
map's closely: the second-order remainder ``p(b) - p(b0) - J (b - b0)`` of the
two maps agrees to a few per cent. The mean-field surrogate uses it for that
remainder only (:mod:`routesim.engines.meanfield_reference`).

Shape legend: P flattened leading axes (points), E experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _levels
from ._levels import Transform
from ._quadrature import setup

__all__ = ["ThresholdMap", "threshold_map", "threshold_change", "solve_threshold"]

#: Newton iterations on the level before falling back to bisection.
_NEWTON = 12


@dataclass(frozen=True)
class ThresholdMap:
    """The threshold approximation at one ``(mu, b)`` per row.

    Attributes
    ----------
    p_PE : array (P, E)
        ``q_i(tau)``; rows sum to K.
    f_PE : array (P, E)
        Score densities at ``tau``.
    g_bias_PE, g_mu_PE : array (P, E)
        ``dq_i / db_i`` and ``dq_i / dmu_i`` at ``tau``.
    tau_P : array (P,)
        The common level.

    Examples
    --------
    >>> tm = threshold_map(np.zeros(4), topk=2)
    >>> tm.p_PE.round(12).tolist(), tm.tau_P.shape
    ([[0.5, 0.5, 0.5, 0.5]], (1,))
    """

    p_PE: np.ndarray
    f_PE: np.ndarray
    g_bias_PE: np.ndarray
    g_mu_PE: np.ndarray
    tau_P: np.ndarray


def solve_threshold(tr: Transform, noise: str, mu_PE: np.ndarray, bias_PE: np.ndarray,
                    scale_P: np.ndarray, topk: int, tau_P: np.ndarray | None = None,
                    with_mu: bool = True, compiled: bool = True) -> ThresholdMap:
    """:class:`ThresholdMap` of flattened, validated rows (no argument checks: a hot path).

    Newton's method on ``sum_j q_j(tau) = K`` from ``tau_P`` (a warm start)
    until ``|sum_j q_j - K| <= 1e-11 K``; rows that do not get there within
    12 iterations, and every row without a start, are solved by bisection.
    ``with_mu=False`` leaves ``g_mu_PE`` as zeros (one pass less). With a
    warm start and Numba the Newton iterations run compiled, row by row
    (:mod:`._threshold_kernel`), which equals this path to rounding; when a
    row misses the tolerance there, the call is solved again by this NumPy
    path.

    Parameters
    ----------
    tr : Transform
        How a selection-score level maps to each expert's logit.
    noise : str
        The logit noise law (``traffic.noise``).
    mu_PE : ndarray (P, E)
        Popularity logits of each row.
    bias_PE : ndarray (P, E)
        Biases of each row.
    scale_P : ndarray (P,)
        Noise scale of each row.
    topk : int
        ``K``.
    tau_P : ndarray (P,), optional
        Warm start of each row's level.
    with_mu : bool
        Also compute the derivatives in ``mu``.
    compiled : bool
        Use the compiled solve when it is available (``False``: NumPy only).

    Returns
    -------
    ThresholdMap

    Examples
    --------
    >>> tr = Transform("score_add", "sigmoid")
    >>> tm = solve_threshold(tr, "normal", np.zeros((1, 4)), np.zeros((1, 4)),
    ...                      np.ones(1), 2)
    >>> round(float(tm.tau_P[0]), 9)  # sigmoid(0) + 0: the median score
    0.5
    """
    mu3, b3, s3 = mu_PE[:, None, :], bias_PE[:, None, :], scale_P[:, None, None]
    target = float(topk)

    def terms(tau: np.ndarray) -> tuple[_levels.Terms, np.ndarray]:
        t = _levels.expert_terms(tr, noise, tau[:, None, None], mu3, b3, s3)
        return t, np.sum(t.q[:, 0], axis=-1) - target

    def bisect(rows: np.ndarray) -> np.ndarray:
        return _levels._levels_at_counts(tr, noise, mu_PE[rows], bias_PE[rows], scale_P[rows],
                                         np.array([target]))[:, 0]

    if tau_P is None:
        tau = bisect(np.arange(mu_PE.shape[0]))
        t, resid = terms(tau)
    elif compiled and np.all(scale_P > 0):
        from . import _threshold_kernel

        if _threshold_kernel.AVAILABLE:
            p, f, g_b, g_m, tau, ok = _threshold_kernel.solve(tr.kind, tr.gate, noise, mu_PE,
                                                             bias_PE, scale_P, topk, tau_P,
                                                             _NEWTON)
            if np.all(ok):
                return ThresholdMap(p_PE=p, f_PE=f, g_bias_PE=g_b,
                                    g_mu_PE=g_m if with_mu else np.zeros_like(p), tau_P=tau)
        return solve_threshold(tr, noise, mu_PE, bias_PE, scale_P, topk, tau_P, with_mu,
                               compiled=False)
    else:
        tau = np.array(tau_P, dtype=np.float64)
        for _ in range(_NEWTON):
            t, resid = terms(tau)
            if np.all(np.abs(resid) <= 1e-11 * target):
                break
            slope = np.sum(t.f[:, 0], axis=-1)
            step = np.where(slope > 0, resid / np.where(slope > 0, slope, 1.0), 0.0)
            tau = np.where(np.isfinite(tau + step), tau + step, tau)
        bad = ~(np.abs(resid) <= 1e-9 * target)
        if np.any(bad):
            tau = tau.copy()
            tau[bad] = bisect(bad)
            t, resid = terms(tau)
    g_mu = np.zeros_like(t.q[:, 0])
    if with_mu:
        g_mu = _levels.expert_terms(tr, noise, tau[:, None, None], mu3, b3, s3,
                                    wrt="mu").g[:, 0]
    return ThresholdMap(p_PE=t.q[:, 0], f_PE=t.f[:, 0], g_bias_PE=t.g[:, 0],
                        g_mu_PE=g_mu, tau_P=tau)


def threshold_map(mu_PE: Any, bias_PE: Any = None, *, topk: int,
                  score_function: str = "sigmoid", noise: str = "normal",
                  noise_scale: Any = 1.0, bias_mode: str = "additive",
                  bias_on: str = "scores") -> ThresholdMap:
    """The threshold approximation of :func:`~routesim.theory.expected_load.load_map`.

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on
        As for :func:`~routesim.theory.expected_load.load_map`.

    Returns
    -------
    ThresholdMap
        Leading axes flattened to one (P rows).

    Examples
    --------
    >>> from routesim.theory.expected_load import load_map
    >>> mu = np.linspace(0.5, -0.5, 64)
    >>> exact = load_map(mu, topk=8)
    >>> approx = threshold_map(mu, topk=8).p_PE[0]
    >>> bool(np.max(np.abs(approx - exact) / exact) < 0.02)  # a large-N approximation
    True
    """
    _, tr, (m, b, s) = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                             bias_mode, bias_on, 8)
    return solve_threshold(tr, noise, m, b, s, topk)


def threshold_change(tm: ThresholdMap, d_bias_PE: np.ndarray,
                     d_mu_PE: np.ndarray | None = None) -> np.ndarray:
    """First-order change of the threshold map, ``J_bias d_bias + J_mu d_mu`` (O(E) per row).

    Parameters
    ----------
    tm : ThresholdMap
        Where the Jacobian is taken.
    d_bias_PE, d_mu_PE : arrays (P, E)
        Moves of the bias and (optionally) of ``mu``.

    Returns
    -------
    array (P, E)
        Sums to zero along the experts.

    Examples
    --------
    >>> mu = np.array([[0.3, 0.0, -0.3]])
    >>> tm = threshold_map(mu, topk=1)
    >>> d = np.array([[1e-6, 0.0, 0.0]])
    >>> moved = threshold_map(mu, d, topk=1)
    >>> pred = threshold_change(tm, d)
    >>> bool(np.allclose(pred, moved.p_PE - tm.p_PE, atol=1e-10))
    True
    """
    total = np.sum(tm.f_PE, axis=-1, keepdims=True)
    push = tm.g_bias_PE * d_bias_PE
    if d_mu_PE is not None:
        push = push + tm.g_mu_PE * d_mu_PE
    share = tm.f_PE / np.where(total > 0, total, 1.0)
    return push - share * np.sum(push, axis=-1, keepdims=True)
