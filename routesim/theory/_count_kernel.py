"""Compiled per-expert quadrature of the expected-load map (private; needs Numba).

The same integrals as :func:`routesim.theory._quadrature.integrals`, with
the same nodes, in one compiled pass per ``(point, own expert)`` row: for
every node the other experts' ``q_j`` are evaluated in place and the count
law is built by the sequential recursion ``c_m <- c_m (1 - q) + c_{m-1} q``
(``O(E K)`` per node, every term a product of non-negative numbers, as in
the tree of :mod:`._poisson`). The laws with one more expert left out come
from prefix and suffix products of the factors (``O(K)`` per expert). The
NumPy path builds arrays of ``rows x nodes x experts`` and is memory-bound
at large ``N``; this one keeps a row in cache and runs rows in parallel.

Numba is optional (the ``fast`` extra): without it :data:`AVAILABLE` is
False and the NumPy path is used.

Shape legend: R rows (point, own expert), U nodes, E experts, K coefficients.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__: list[str] = []

#: Transform kinds, gates and noise laws as integer codes for the kernel.
KINDS = {"logit": 0, "logit_logb": 1, "score_add": 2, "score_mul": 3}
GATES = {"sigmoid": 0, "sqrtsoftplus": 1, "softmax": 0}
LAWS = {"normal": 0, "logistic": 1, "gumbel": 2}

try:  # Numba is optional (the ``fast`` extra)
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover - exercised only where Numba is absent
    AVAILABLE = False

    def njit(*args: Any, **kwargs: Any) -> Any:
        return args[0] if args and callable(args[0]) else (lambda f: f)

    prange = range

_EULER = 0.5772156649015329
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


_OPTS: dict[str, Any] = dict(cache=True, error_model="numpy")


@njit(inline="always", **_OPTS)
def _terms(kind, gate, law, y, mu, b, s, gwrt, full):  # pragma: no cover - compiled
    """(q, g, dens) of one expert at level y; g is dq/d(bias) or dq/d(mu).

    Without ``full`` only ``q`` is computed (g and dens are returned as 0).
    """
    if kind == 0:
        zeta, dz = y - b, 1.0
    elif kind == 1:
        zeta, dz = y - math.log(b), 1.0
    else:
        sc = y - b if kind == 2 else y / b
        if gate == 0:
            if sc <= 0.0:
                return 1.0, 0.0, 0.0
            if sc >= 1.0:
                return 0.0, 0.0, 0.0
            zeta = math.log(sc / (1.0 - sc))  # one log: 1 - sc is exact for sc >= 1/2
            dz = 1.0 / (sc * (1.0 - sc))
        else:
            if sc <= 0.0:
                return 1.0, 0.0, 0.0
            s2 = sc * sc
            if s2 > 30.0:
                zeta = s2 + math.log1p(-math.exp(-min(s2, 700.0)))
            else:
                zeta = math.log(math.expm1(s2))
            dz = 2.0 * sc / (-math.expm1(-s2))
        if kind == 3:
            dz = dz / b
    x = (zeta - mu) / s
    if not full:
        if law == 0:
            return 0.5 * math.erfc(x * _INV_SQRT2), 0.0, 0.0
        if law == 1:
            return (1.0 / (1.0 + math.exp(x)) if x < 0.0
                    else math.exp(-x) / (1.0 + math.exp(-x))), 0.0, 0.0
        return -math.expm1(-math.exp(-(x + _EULER))), 0.0, 0.0
    if law == 0:
        q = 0.5 * math.erfc(x * _INV_SQRT2)
        pdf = math.exp(-0.5 * x * x) * _INV_SQRT2PI
    elif law == 1:
        if x >= 0.0:
            e = math.exp(-x)
            q = e / (1.0 + e)
            pdf = e / ((1.0 + e) * (1.0 + e))
        else:
            e = math.exp(x)
            q = 1.0 / (1.0 + e)
            pdf = e / ((1.0 + e) * (1.0 + e))
    else:
        e = math.exp(-(x + _EULER))
        q = -math.expm1(-e)
        pdf = e * math.exp(-e) if math.isfinite(e) else 0.0
    dens = pdf / s
    if gwrt == 1:
        return q, dens, dens
    f = dens * dz
    if kind == 1:
        return q, f / b, dens
    if kind == 3:
        return q, f * (y / b), dens
    return q, f, dens

@njit(parallel=True, **_OPTS)
def _kernel(rows_R, n, y_RU, w_RU, above_R, mu_BE, b_BE, s_B, kind, gate, law, topk,
           gwrt, want_jac, want_jac_mu, want_cov, p_R, jac_RE, jac_mu_RE,
           cov_RE):  # pragma: no cover - compiled
    n_rows, n_nodes = rows_R.size, y_RU.shape[1]
    pairs = want_jac or want_jac_mu or want_cov
    for i in prange(n_rows):
        r = rows_R[i]
        pt, own = r // n, r % n
        q_E = np.empty(n)
        g_E = np.empty(n)
        d_E = np.empty(n)
        qraw_E = np.empty(n)
        c_K = np.empty(topk)
        pre = np.empty((topk, n + 1))
        suf = np.empty((topk, n + 1))
        cum = np.empty((max(topk - 1, 1), n + 1))
        top_E = np.empty(n)
        low_E = np.empty(n)
        acc = 0.0
        for u in range(n_nodes):
            y, wt = y_RU[i, u], w_RU[i, u]
            for j in range(n):
                q, g, d = _terms(kind, gate, law, y, mu_BE[pt, j], b_BE[pt, j], s_B[pt],
                                gwrt, pairs)
                qraw_E[j] = q
                q_E[j] = 0.0 if j == own else q
                g_E[j] = g
                d_E[j] = d
            if not pairs:
                c_K[:] = 0.0
                c_K[0] = 1.0
                for j in range(n):
                    q = q_E[j]
                    for m in range(topk - 1, 0, -1):
                        c_K[m] = c_K[m] * (1.0 - q) + c_K[m - 1] * q
                    c_K[0] *= 1.0 - q
                acc += wt * np.sum(c_K)
                continue
            # count laws of the experts before j (pre) and from j on (suf), coefficient-major
            # so that the loops over experts below run on contiguous rows (vectorised)
            pre[:, 0] = 0.0
            pre[0, 0] = 1.0
            for j in range(n):
                q = q_E[j]
                pre[0, j + 1] = pre[0, j] * (1.0 - q)
                for m in range(1, topk):
                    pre[m, j + 1] = pre[m, j] * (1.0 - q) + pre[m - 1, j] * q
            suf[:, n] = 0.0
            suf[0, n] = 1.0
            for j in range(n - 1, -1, -1):
                q = q_E[j]
                suf[0, j] = suf[0, j + 1] * (1.0 - q)
                for m in range(1, topk):
                    suf[m, j] = suf[m, j + 1] * (1.0 - q) + suf[m - 1, j + 1] * q
            acc += wt * np.sum(pre[:, n])
            # the count law without own and k is pre[:, k] (x) suf[:, k + 1]: its
            # coefficient K - 1 (top) and its sum up to K - 2 (low), for every k at once
            top_E[:] = 0.0
            for a in range(topk):
                pa, sa = pre[a], suf[topk - 1 - a]
                for k in range(n):
                    top_E[k] += pa[k] * sa[k + 1]
            if want_jac:
                for k in range(n):
                    jac_RE[r, k] += wt * top_E[k] * g_E[k]
            if want_jac_mu:
                for k in range(n):
                    jac_mu_RE[r, k] += wt * top_E[k] * d_E[k]
            if want_cov and topk >= 2:
                # cum[c] = sum of suf[0..c]: low = sum_a pre[a] cum[K - 2 - a]
                cum[0] = suf[0]
                for c in range(1, topk - 1):
                    for j in range(n + 1):
                        cum[c, j] = cum[c - 1, j] + suf[c, j]
                low_E[:] = 0.0
                for a in range(topk - 1):
                    pa, ca = pre[a], cum[topk - 2 - a]
                    for k in range(n):
                        low_E[k] += pa[k] * ca[k + 1]
                for k in range(n):
                    cov_RE[r, k] += wt * low_E[k] * qraw_E[k]
        p_R[r] = acc + above_R[i]


def integrals(kind: str, gate: str, law: str, y_RU: np.ndarray, w_RU: np.ndarray,
              above_R: np.ndarray, flat: tuple, topk: int, todo: np.ndarray, *,
              jac: str | None, jac_mu: bool, cov: bool) -> dict[str, np.ndarray]:
    """The compiled pass over the rows ``todo``; outputs as in ``_quadrature.integrals``.

    ``y_RU``, ``w_RU``, ``above_R`` are the nodes of the rows in ``todo`` order.
    """
    # fresh contiguous copies (Numba warns on read-only broadcast views)
    m, b, s = (np.array(a, dtype=np.float64, order="C") for a in flat)
    nb, n = m.shape
    rows = nb * n
    p = np.full(rows, np.nan)
    shape = (rows, n) if (jac is not None or cov) else (1, 1)
    jac_m = np.zeros(shape)
    jac_mu_m = np.zeros(shape if jac_mu else (1, 1))
    cov_m = np.zeros(shape if cov else (1, 1))
    _kernel(np.ascontiguousarray(todo, dtype=np.int64), n,
            np.ascontiguousarray(y_RU, dtype=np.float64),
            np.ascontiguousarray(w_RU, dtype=np.float64),
            np.ascontiguousarray(above_R, dtype=np.float64), m, b, s, KINDS[kind],
            GATES[gate], LAWS[law], topk, 1 if jac == "mu" else 0, jac is not None, jac_mu,
            cov, p, jac_m, jac_mu_m, cov_m)
    out: dict[str, np.ndarray] = {"p": p.reshape(nb, n)}
    if jac is not None:
        out["jac"] = jac_m.reshape(nb, n, n)
    if jac_mu:
        out["jac_mu"] = jac_mu_m.reshape(nb, n, n)
    if cov:
        out["cov"] = cov_m.reshape(nb, n, n)
    return out
