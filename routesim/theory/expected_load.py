"""The expected-load map ``p(b)``, the selection covariance and the Jacobian.

Everything analytic in :mod:`routesim.theory` hangs on the load map: the
probability ``p_i`` that one token selects expert ``i`` given the bias ``b``.
For the engine's ``popularity`` traffic the logits are independent across
experts, ``z_i = mu_i + noise_scale * eps_i`` (``eps`` normal, logistic or
Gumbel, as :mod:`routesim.rng` draws them), and the selection score is an
increasing function of ``z_i`` alone; then (see :mod:`._levels`)

    p_i = integral f_i(y) P(N_{-i}(y) <= K - 1) dy,

exact up to quadrature error (about 1e-9 with the default 96 nodes). Rows of
``p`` sum to ``K``.

Domain of validity (exact):

* ``score_function`` sigmoid or sqrtsoftplus with ``bias_mode`` additive or
  multiplicative (bias > 0);
* ``bias_on="logits"`` (quantile balancing: selection on ``z + b``), any gate;
* softmax with a multiplicative bias (top-K of ``s * b`` is top-K of
  ``z + log b``) or with an additive bias equal for every expert.

Softmax with an unequal additive bias on probabilities couples the experts
through the normaliser: :func:`load_map_mc` estimates it by Monte Carlo with a
standard error. Per-sequence correlation (``traffic.seq_correlation``) does
not change ``p`` for normal noise (the marginal is the same normal law); for
logistic or Gumbel noise with ``rho > 0`` the marginal is a convolution and
the map above is an approximation. Topic-feature traffic needs Monte Carlo.

Shape legend: P points (any leading axes), E experts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigError
from ..gates import GATES, gate
from . import _levels
from ._levels import Transform

__all__ = [
    "load_map",
    "load_map_mc",
    "selection_covariance",
    "jacobian",
    "equilibrium",
]

DEFAULT_NODES = 96


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------
def _check(mu: Any, bias: Any, topk: Any, score_function: str, noise: str, noise_scale: Any,
           bias_mode: str, bias_on: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim < 1 or mu.shape[-1] < 2:
        raise ConfigError(f"mu_PE: shape {mu.shape}: needs a last (expert) axis of length >= 2")
    if not np.all(np.isfinite(mu)):
        raise ConfigError("mu_PE: holds non-finite values; must be finite")
    n = mu.shape[-1]
    if bias is None:
        bias = 1.0 if bias_mode == "multiplicative" and bias_on == "scores" else 0.0
    bias = np.asarray(bias, dtype=np.float64)
    try:
        mu, bias = np.broadcast_arrays(mu, bias)
    except ValueError:
        raise ConfigError(f"bias_PE: shape {bias.shape} does not broadcast against mu_PE "
                          f"{mu.shape}") from None
    if not np.all(np.isfinite(bias)):
        raise ConfigError("bias_PE: holds non-finite values; must be finite")
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or not 1 <= topk < n:
        raise ConfigError(f"topk = {topk!r}: must be an integer in [1, N) = [1, {n})")
    if score_function not in GATES:
        raise ConfigError(f"score_function = {score_function!r}: must be one of "
                          + ", ".join(GATES))
    if noise not in _levels.NOISE_LAWS:
        raise ConfigError(f"noise = {noise!r}: must be one of " + ", ".join(_levels.NOISE_LAWS))
    if bias_mode not in ("additive", "multiplicative"):
        raise ConfigError(f"bias_mode = {bias_mode!r}: must be 'additive' or 'multiplicative'")
    if bias_on not in ("scores", "logits"):
        raise ConfigError(f"bias_on = {bias_on!r}: must be 'scores' or 'logits'")
    if bias_mode == "multiplicative" and bias_on == "scores" and not np.all(bias > 0):
        raise ConfigError("bias_PE: a multiplicative bias must be > 0")
    scale = np.asarray(noise_scale, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or not np.all(scale > 0):
        raise ConfigError(f"noise_scale = {noise_scale!r}: must be finite and > 0")
    try:
        scale = np.broadcast_to(scale, mu.shape[:-1])
    except ValueError:
        raise ConfigError(f"noise_scale: shape {scale.shape} does not broadcast against the "
                          f"leading axes {mu.shape[:-1]} of mu_PE") from None
    return mu, bias, scale


def _transform(score_function: str, bias_mode: str, bias_on: str, bias: np.ndarray,
               exact_only: bool = True) -> tuple[Transform, np.ndarray]:
    """The selection transform, and the bias it acts with."""
    if bias_on == "logits":
        return Transform("logit", score_function), bias
    if score_function == "softmax":
        if bias_mode == "multiplicative":
            return Transform("logit_logb", "softmax"), bias
        if exact_only and not np.all(bias == bias[..., :1]):
            raise ConfigError(
                "score_function = 'softmax' with bias_mode = 'additive': the bias on the "
                "probabilities couples the experts, no exact form; use load_map_mc")
        return Transform("logit", "softmax"), np.zeros_like(bias)
    kind = "score_add" if bias_mode == "additive" else "score_mul"
    return Transform(kind, score_function), bias


def _flat(mu: np.ndarray, bias: np.ndarray, scale: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = mu.shape[-1]
    return (np.ascontiguousarray(mu.reshape(-1, n)), np.ascontiguousarray(bias.reshape(-1, n)),
            np.ascontiguousarray(scale.reshape(-1)))


def _setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes,
           wrt="bias"):
    mu, bias, scale = _check(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                             bias_mode, bias_on)
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 8:
        raise ConfigError(f"nodes = {nodes!r}: must be an integer >= 8")
    tr, bias_eff = _transform(score_function, bias_mode, bias_on, bias)
    lead = mu.shape[:-1]
    m, b, s = _flat(mu, bias_eff, scale)
    nd = _levels.make_nodes(tr, noise, m, b, s, topk, nodes)
    q, f, g = _levels.expert_terms(tr, noise, nd.y_BQ[..., None], m[:, None, :], b[:, None, :],
                                   s[:, None, None], wrt=wrt)
    return lead, tr, (m, b, s), nd, q, f, g


# ----------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------
def load_map(mu_PE: Any, bias_PE: Any = None, *, topk: int, score_function: str = "sigmoid",
             noise: str = "normal", noise_scale: Any = 1.0, bias_mode: str = "additive",
             bias_on: str = "scores", nodes: int = DEFAULT_NODES) -> np.ndarray:
    """Probability that one token selects each expert.

    Parameters
    ----------
    mu_PE : array, shape (..., E)
        Popularity logits (any leading axes, e.g. points).
    bias_PE : array, shape (..., E), optional
        Expert bias (broadcast against ``mu_PE``); default 0 (1 when
        multiplicative).
    topk : int in [1, E)
        Experts per token ``K``.
    score_function : {"sigmoid", "sqrtsoftplus", "softmax"}
    noise : {"normal", "logistic", "gumbel"}
        Law of the per-token logit noise (unit scale, zero location).
    noise_scale : float > 0 or array of the leading shape
    bias_mode : {"additive", "multiplicative"}
        Selection on ``s + b`` or ``s * b``.
    bias_on : {"scores", "logits"}
        ``logits``: selection on ``z + b`` (quantile balancing).
    nodes : int >= 8
        Quadrature nodes (Gauss-Legendre panels of 8).

    Returns
    -------
    p_PE : ndarray, shape (..., E)
        Selection probabilities; each row sums to ``topk``.

    Raises
    ------
    ConfigError
        On a bad argument, or for softmax with an unequal additive bias
        (use :func:`load_map_mc`).

    Examples
    --------
    >>> import numpy as np
    >>> p = load_map(np.zeros(8), topk=2)
    >>> np.allclose(p, 0.25)
    True
    >>> p = load_map(np.array([1.0, 0.0, -1.0]), topk=1, bias_on="logits")
    >>> bool(p[0] > p[1] > p[2]), round(float(p.sum()), 6)
    (True, 1.0)
    """
    lead, tr, (m, b, s), nd, q, f, _ = _setup(mu_PE, bias_PE, topk, score_function, noise,
                                              noise_scale, bias_mode, bias_on, nodes)
    g_sum = _levels.single_sums(q, topk)
    p = np.sum(nd.w_BQ[..., None] * f * g_sum, axis=1)
    q_top, _, _ = _levels.expert_terms(tr, noise, nd.y_top_B[:, None, None], m[:, None, :],
                                       b[:, None, :], s[:, None, None])
    p = p + q_top[:, 0, :]
    return p.reshape(lead + (m.shape[-1],))


def selection_covariance(mu_PE: Any, bias_PE: Any = None, *, topk: int,
                         score_function: str = "sigmoid", noise: str = "normal",
                         noise_scale: Any = 1.0, bias_mode: str = "additive",
                         bias_on: str = "scores", nodes: int = DEFAULT_NODES) -> np.ndarray:
    """Covariance of one token's selection indicators (exact for independent logits).

    ``P(i and j chosen) = integral [f_j q_i + f_i q_j](y) P(N_{-ij}(y) <= K - 2) dy``:
    the lower of the two sits at ``y``, the other above it, and at most
    ``K - 2`` of the rest beat ``y``. Same domain as :func:`load_map`.

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map`.

    Returns
    -------
    cov_PEE : ndarray, shape (..., E, E)
        ``diag = p (1 - p)``, off-diagonal ``P(i and j) - p_i p_j``; rows sum
        to 0 (exactly K experts are chosen).

    Examples
    --------
    >>> import numpy as np
    >>> c = selection_covariance(np.zeros(4), topk=2)
    >>> np.allclose(c, 0.25 * (4 * np.eye(4) - 1) / 3)
    True
    """
    lead, tr, (m, b, s), nd, q, f, _ = _setup(mu_PE, bias_PE, topk, score_function, noise,
                                              noise_scale, bias_mode, bias_on, nodes)
    g_sum = _levels.single_sums(q, topk)
    q_top, _, _ = _levels.expert_terms(tr, noise, nd.y_top_B[:, None, None], m[:, None, :],
                                       b[:, None, :], s[:, None, None])
    p = np.sum(nd.w_BQ[..., None] * f * g_sum, axis=1) + q_top[:, 0, :]
    both = _levels.pair_sums(q, f, q, nd.w_BQ, 0, topk - 2)
    both = both + np.swapaxes(both, -1, -2)
    cov = both - p[:, :, None] * p[:, None, :]
    n = m.shape[-1]
    eye = np.eye(n, dtype=bool)
    cov = np.where(eye, (p * (1.0 - p))[:, :, None], cov)
    return cov.reshape(lead + (n, n))


def jacobian(mu_PE: Any, bias_PE: Any = None, *, topk: int, score_function: str = "sigmoid",
             noise: str = "normal", noise_scale: Any = 1.0, bias_mode: str = "additive",
             bias_on: str = "scores", wrt: str = "bias",
             nodes: int = DEFAULT_NODES) -> np.ndarray:
    """Derivative of the load map, ``J[i, k] = dp_i / dtheta_k``.

    With ``D_ik(y) = P(N_{-ik}(y) = K - 1)`` and ``g_k = dq_k / dtheta_k``::

        J[i, k] = -integral f_i g_k D_ik dy            (k != i)
        J[i, i] = sum_{k != i} integral g_i f_k D_ik dy

    For an additive bias (or ``wrt="mu"`` with ``bias_on="logits"``) ``J``
    is symmetric, positive semi-definite, and its rows sum to 0 (a common
    shift changes nothing). For a multiplicative bias ``J @ b = 0`` instead
    (a common factor changes nothing).

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map`.
    wrt : {"bias", "mu"}
        Differentiate with respect to the bias or the popularity logits.

    Returns
    -------
    J_PEE : ndarray, shape (..., E, E)

    Examples
    --------
    >>> import numpy as np
    >>> J = jacobian(np.zeros(4), topk=1, bias_on="logits")
    >>> np.allclose(J.sum(axis=-1), 0), np.allclose(J, J.T)
    (True, True)
    """
    if wrt not in ("bias", "mu"):
        raise ConfigError(f"wrt = {wrt!r}: must be 'bias' or 'mu'")
    lead, _, (m, _, _), nd, q, f, g = _setup(mu_PE, bias_PE, topk, score_function, noise,
                                             noise_scale, bias_mode, bias_on, nodes, wrt=wrt)
    mat = _levels.pair_sums(q, f, g, nd.w_BQ, topk - 1, topk - 1)  # M_ik = int f_i g_k D_ik
    n = m.shape[-1]
    eye = np.eye(n, dtype=bool)
    mat = np.where(eye, 0.0, mat)
    jac = -mat + np.where(eye, np.sum(mat, axis=-2)[:, None, :], 0.0)
    return jac.reshape(lead + (n, n))


def equilibrium(mu_PE: Any, *, topk: int, score_function: str = "sigmoid",
                noise: str = "normal", noise_scale: Any = 1.0, bias_mode: str = "additive",
                bias_on: str = "scores", target_PE: Any = None, tol: float = 1e-8,
                max_iter: int = 100, nodes: int = DEFAULT_NODES) -> np.ndarray:
    """The bias ``b*`` with ``p(b*) = K / N`` for every expert.

    Solved with ``scipy.optimize.root`` (MINPACK ``hybrj``: Powell's hybrid
    method with the analytic Jacobian) on all points at once. ``b*`` is
    unique up to the common shift (additive: mean fixed at 0) or factor
    (multiplicative: geometric mean fixed at 1).

    Parameters
    ----------
    mu_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map`.
    target_PE : array (..., E), optional
        Target probabilities (default ``K / N``); rows must sum to ``K``.
    tol : float > 0
        Tolerance on ``max |p(b) - target|``.
    max_iter : int > 0
        Cap on the solver's function evaluations (times ``E + 1``).

    Returns
    -------
    bias_PE : ndarray, shape (..., E)

    Raises
    ------
    ConfigError
        On a bad argument, or if the solver does not reach ``tol``.

    Examples
    --------
    >>> import numpy as np
    >>> mu = np.array([0.5, 0.0, -0.5])
    >>> b = equilibrium(mu, topk=1, bias_on="logits")
    >>> np.allclose(b, -mu, atol=1e-8)
    True
    """
    from scipy import optimize

    mu, _, scale = _check(mu_PE, None, topk, score_function, noise, noise_scale, bias_mode,
                          bias_on)
    n = mu.shape[-1]
    lead = mu.shape[:-1]
    target = np.full(mu.shape, topk / n) if target_PE is None else np.asarray(
        target_PE, dtype=np.float64) * np.ones(mu.shape)
    if np.any(~np.isfinite(target)) or np.any(target <= 0) or np.any(target >= 1):
        raise ConfigError("target_PE: probabilities must lie in (0, 1)")
    if not np.allclose(target.sum(-1), topk, atol=1e-9):
        raise ConfigError(f"target_PE: rows must sum to topk ({topk})")
    mult = bias_mode == "multiplicative" and bias_on == "scores"
    m2, t2, s2 = mu.reshape(-1, n), target.reshape(-1, n), scale.reshape(-1)
    kw = dict(topk=topk, score_function=score_function, noise=noise, noise_scale=s2,
              bias_mode=bias_mode, bias_on=bias_on, nodes=nodes)
    if bias_on == "logits" or score_function == "softmax":
        x0 = -(m2 - m2.mean(-1, keepdims=True))
    else:
        s0 = gate(np, score_function, m2)
        x0 = -(s0 - s0.mean(-1, keepdims=True))
        if mult:
            x0 = -np.log(s0) + np.log(s0).mean(-1, keepdims=True)

    def to_bias(x: np.ndarray) -> np.ndarray:
        return np.exp(x) if mult else x

    def fun(xflat: np.ndarray) -> np.ndarray:
        x = xflat.reshape(m2.shape)
        r = load_map(m2, to_bias(x), **kw) - t2 + x.mean(-1, keepdims=True)
        return r.ravel()

    def jac(xflat: np.ndarray) -> np.ndarray:
        x = xflat.reshape(m2.shape)
        jb = jacobian(m2, to_bias(x), **kw)
        if mult:
            jb = jb * np.exp(x)[:, None, :]
        jb = jb + 1.0 / n
        b = jb.shape[0]
        full = np.zeros((b * n, b * n))
        for i in range(b):  # block-diagonal assembly, one block per point
            full[i * n:(i + 1) * n, i * n:(i + 1) * n] = jb[i]
        return full

    sol = optimize.root(fun, x0.ravel(), jac=jac, method="hybr",
                        options={"xtol": 1e-12, "maxfev": max_iter * (n + 1)})
    x = sol.x.reshape(m2.shape)
    resid = np.max(np.abs(load_map(m2, to_bias(x), **kw) - t2))
    if not np.isfinite(resid) or resid > tol:
        raise ConfigError(f"equilibrium: no bias reached max |p - target| <= {tol:g} "
                          f"(reached {resid:.3g}: {sol.message})")
    return to_bias(x).reshape(lead + (n,))


def load_map_mc(mu_PE: Any, bias_PE: Any = None, *, topk: int, score_function: str = "sigmoid",
                noise: str = "normal", noise_scale: Any = 1.0, bias_mode: str = "additive",
                bias_on: str = "scores", samples: int = 100_000, seed: int = 0,
                chunk: int = 8192) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo load map with its standard error (any gate, any bias).

    Draws ``samples`` tokens ``z = mu + noise_scale * eps``, scores them with
    the gate, selects the top-K of the biased scores, and counts. The
    estimate of ``p_i`` is a binomial proportion: standard error
    ``sqrt(p_i (1 - p_i) / samples)``.

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on
        As for :func:`load_map` (softmax with an additive bias allowed).
    samples : int > 0
        Tokens drawn per leading index.
    seed : int >= 0
        Seed of ``numpy.random.default_rng``.
    chunk : int > 0
        Tokens per vectorised batch (memory control).

    Returns
    -------
    p_PE, stderr_PE : ndarray, shape (..., E)

    Examples
    --------
    >>> import numpy as np
    >>> p, se = load_map_mc(np.zeros(4), np.array([0.1, 0, 0, 0]), topk=1,
    ...                     score_function="softmax", samples=4000)
    >>> bool(p[0] > 0.25 + 3 * se[0])
    True
    """
    mu, bias, scale = _check(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                             bias_mode, bias_on)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ConfigError(f"samples = {samples!r}: must be an integer >= 1")
    rng = np.random.default_rng(seed)
    lead, n = mu.shape[:-1], mu.shape[-1]
    m2, b2, s2 = _flat(mu, bias, scale)
    counts = np.zeros(m2.shape)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        if noise == "normal":
            eps = rng.standard_normal((m2.shape[0], size, n))
        else:
            w = rng.random((m2.shape[0], size, n))
            eps = (np.log(w) - np.log1p(-w) if noise == "logistic"
                   else -np.log(-np.log(w)) - _levels._EULER)
        z = m2[:, None, :] + s2[:, None, None] * eps
        if bias_on == "logits":
            sel = z + b2[:, None, :]
        else:
            s = gate(np, score_function, z)
            sel = s * b2[:, None, :] if bias_mode == "multiplicative" else s + b2[:, None, :]
        idx = np.argpartition(-sel, topk - 1, axis=-1)[..., :topk]
        flat = (np.arange(m2.shape[0])[:, None, None] * n + idx).ravel()
        counts += np.bincount(flat, minlength=m2.size).reshape(m2.shape)
    p = counts / samples
    se = np.sqrt(p * (1.0 - p) / samples)
    return p.reshape(lead + (n,)), se.reshape(lead + (n,))

