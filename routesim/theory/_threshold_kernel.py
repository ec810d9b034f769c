"""Compiled Newton solve of the threshold map (private; needs Numba).

The same equation as :func:`routesim.theory.threshold_map.solve_threshold`,
``sum_j q_j(tau) = K`` per row, by Newton's method from a warm start, with
the per-expert terms of :mod:`._count_kernel` (one compiled loop per row
instead of a dozen NumPy passes over ``rows x experts`` arrays). The
mean-field surrogate solves it at every step, where the NumPy passes cost
about 0.3 ms at N = 256 and this one about 40 us.

Rows that do not reach the tolerance are reported, and the caller solves them
by bisection as the NumPy path does.

Shape legend: P rows, E experts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ._count_kernel import AVAILABLE, GATES, KINDS, LAWS, _terms, njit

__all__ = ["AVAILABLE", "solve"]

_OPTS: dict[str, Any] = dict(cache=True, error_model="numpy")


@njit(inline="always", **_OPTS)
def _row_terms(kind, gate, law, tau, mu_E, b_E, s, p_E, f_E, gb_E, gm_E):  # pragma: no cover
    """Fill one row's terms at level ``tau``; returns ``(sum q, sum f)``."""
    tot = 0.0
    slope = 0.0
    for j in range(mu_E.size):
        q, g, dens = _terms(kind, gate, law, tau, mu_E[j], b_E[j], s, 0, True)
        # _terms gives dq/db; the score density f = -dq/dtau differs by the transform
        if kind == 1:
            f = g * b_E[j]
        elif kind == 3:
            f = g * b_E[j] / tau if g != 0.0 else 0.0
        else:
            f = g
        p_E[j] = q
        f_E[j] = f
        gb_E[j] = g
        gm_E[j] = dens
        tot += q
        slope += f
    return tot, slope


@njit(**_OPTS)
def _newton(kind, gate, law, mu_PE, b_PE, s_P, topk, tau_P, newton, out_4PE,
            ok_P):  # pragma: no cover - compiled
    # out_4PE: p, f, g_bias and g_mu, one (P, E) slab each
    target = float(topk)
    for r in range(mu_PE.shape[0]):
        tau = tau_P[r]
        resid = math.inf
        for it in range(newton + 1):
            tot, slope = _row_terms(kind, gate, law, tau, mu_PE[r], b_PE[r], s_P[r],
                                    out_4PE[0, r], out_4PE[1, r], out_4PE[2, r], out_4PE[3, r])
            resid = tot - target
            if abs(resid) <= 1e-11 * target or it == newton:
                break
            if slope > 0.0:
                step = resid / slope
                if math.isfinite(tau + step):
                    tau += step
        tau_P[r] = tau
        ok_P[r] = abs(resid) <= 1e-9 * target


def solve(kind: str, gate: str, law: str, mu_PE: np.ndarray, bias_PE: np.ndarray,
          scale_P: np.ndarray, topk: int, tau_P: np.ndarray,
          newton: int) -> tuple[np.ndarray, ...]:
    """Threshold level and per-expert terms of every row, by Newton from ``tau_P``.

    Parameters
    ----------
    kind, gate, law : str
        The transform (``Transform.kind``, ``Transform.gate``) and the noise law.
    mu_PE, bias_PE : arrays (P, E)
        Popularity logits and biases of each row.
    scale_P : array (P,)
        Noise scale of each row (positive).
    topk : int
        ``K``.
    tau_P : array (P,)
        Warm start of each row's level.
    newton : int
        Most Newton steps per row.

    Returns
    -------
    p_PE, f_PE, g_bias_PE, g_mu_PE : arrays (P, E)
        ``q_i(tau)``, the score densities, ``dq_i / db_i`` and ``dq_i / dmu_i``.
    tau_P : array (P,)
        The levels.
    ok_P : bool array (P,)
        False for a row that missed ``|sum q - K| <= 1e-9 K`` (its other outputs
        are those of the last iterate).

    Examples
    --------
    >>> p, f, g_b, g_mu, tau, ok = solve("score_add", "sigmoid", "normal", np.zeros((1, 4)),
    ...                                  np.zeros((1, 4)), np.ones(1), 2, np.array([0.6]), 12)
    >>> p.round(12).tolist(), round(float(tau[0]), 12), ok.tolist()
    ([[0.5, 0.5, 0.5, 0.5]], 0.5, [True])
    """
    # no copies of arrays that are already float64 and contiguous (a per-step hot path)
    mu = np.ascontiguousarray(mu_PE, dtype=np.float64)
    b = np.ascontiguousarray(bias_PE, dtype=np.float64)
    s = np.ascontiguousarray(scale_P, dtype=np.float64)
    tau = np.array(tau_P, dtype=np.float64)  # updated in place
    out = np.empty((4,) + mu.shape)
    ok = np.empty(tau.shape, dtype=np.bool_)
    _newton(KINDS[kind], GATES[gate], LAWS[law], mu, b, s, int(topk), tau, int(newton), out, ok)
    return out[0], out[1], out[2], out[3], tau, ok

