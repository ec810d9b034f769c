"""The expected-load map ``p(b)``, the selection covariance and the Jacobian.

Everything analytic in :mod:`routesim.theory` hangs on the load map: the
probability ``p_i`` that one token selects expert ``i`` given the bias ``b``.
For the engine's ``popularity`` traffic the logits are independent across
experts, ``z_i = mu_i + noise_scale * eps_i`` (``eps`` normal, logistic or
Gumbel, as :mod:`routesim.rng` draws them), and the selection score is an
increasing function of ``z_i`` alone; then (see :mod:`._levels`)

    p_i = integral f_i(y) P(N_{-i}(y) <= K - 1) dy,

exact up to quadrature error (below 1e-5 with the default 96 nodes per expert
for normal noise; slower convergence for logistic or Gumbel noise under a
saturating gate with unequal biases, where the densities have corners). Rows of
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

from ..exceptions import ConfigError, SolverError
from ..gates import gate
from . import _levels
from ._quadrature import DEFAULT_NODES, check_arguments, flat_rows, integrals, setup

__all__ = [
    "load_map",
    "load_map_mc",
    "selection_covariance",
    "jacobian",
    "load_map_and_jacobians",
    "equilibrium",
    "own_probability",
]



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
        Quadrature nodes per expert (Gauss-Legendre panels of 8 over the
        expert's own standardised logit).

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
    lead, tr, flat = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                            bias_mode, bias_on, nodes)
    p = integrals(tr, noise, flat, topk, nodes)["p"]
    return p.reshape(lead + (p.shape[-1],))


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
    lead, tr, flat = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                            bias_mode, bias_on, nodes)
    res = integrals(tr, noise, flat, topk, nodes, cov=True)
    cov = _covariance(res["p"], res["cov"])
    return cov.reshape(lead + cov.shape[-2:])


def _covariance(p: np.ndarray, half: np.ndarray) -> np.ndarray:
    """The covariance from the quadrature's ``C[i, k] = int f_i q_k P(N_{-ik} <= K - 2)``."""
    both = half + np.swapaxes(half, -1, -2)
    cov = both - p[:, :, None] * p[:, None, :]
    eye = np.eye(p.shape[-1], dtype=bool)
    return np.where(eye, (p * (1.0 - p))[:, :, None], cov)


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
    if (score_function == "softmax" and bias_mode == "additive" and bias_on == "scores"
            and wrt == "bias"):
        raise ConfigError("score_function = 'softmax' with bias_mode = 'additive': the "
                          "derivative along a bias on the probabilities has no exact form")
    lead, tr, flat = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                            bias_mode, bias_on, nodes)
    mat = integrals(tr, noise, flat, topk, nodes, jac=wrt)["jac"]
    return _assemble(mat, tr, flat, wrt).reshape(lead + mat.shape[-2:])


def _assemble(mat: np.ndarray, tr: Any, flat: tuple, wrt: str) -> np.ndarray:
    """``J`` from the quadrature's ``M[i, k] = int f_i g_k D_ik`` (flattened rows)."""
    n = mat.shape[-1]
    eye = np.eye(n, dtype=bool)
    mat = np.where(eye, 0.0, mat)
    if wrt == "bias":
        # Invariance: a common shift (or factor) of the bias changes nothing, so
        # M diag(scale) is symmetric; impose it on the quadrature.
        scale = np.ones_like(flat[1]) if tr.kind in ("logit", "score_add") else flat[1]
        sym = mat * scale[:, None, :]
        sym = 0.5 * (sym + np.swapaxes(sym, -1, -2))
        mat = sym / scale[:, None, :]
    return -mat + np.where(eye, np.sum(mat, axis=-2)[:, None, :], 0.0)


def load_map_and_jacobians(mu_PE: Any, bias_PE: Any = None, *, topk: int,
                           score_function: str = "sigmoid", noise: str = "normal",
                           noise_scale: Any = 1.0, bias_mode: str = "additive",
                           bias_on: str = "scores", with_mu: bool = True,
                           nodes: int = DEFAULT_NODES, with_covariance: bool = False
                           ) -> tuple[Any, ...]:
    """:func:`load_map`, and :func:`jacobian` with respect to the bias and ``mu``, in one pass.

    The three share the nodes and the count laws, so this costs about one
    :func:`jacobian` call instead of three; ``with_covariance`` adds
    :func:`selection_covariance` to the same pass.

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map` (not softmax with an additive bias).
    with_mu : bool
        Also return the Jacobian with respect to ``mu``.
    with_covariance : bool
        Also return the selection covariance (a fourth element).

    Returns
    -------
    p_PE : ndarray (..., E)
    jac_bias_PEE : ndarray (..., E, E)
    jac_mu_PEE : ndarray (..., E, E) or None
    cov_PEE : ndarray (..., E, E)
        Only with ``with_covariance``.

    Examples
    --------
    >>> import numpy as np
    >>> mu, b = np.array([0.4, 0.0, -0.4]), np.array([0.0, 0.05, 0.1])
    >>> p, jb, jm = load_map_and_jacobians(mu, b, topk=1)
    >>> bool(np.allclose(p, load_map(mu, b, topk=1), atol=1e-12))
    True
    >>> bool(np.allclose(jb, jacobian(mu, b, topk=1), atol=1e-12))
    True
    >>> bool(np.allclose(jm, jacobian(mu, b, topk=1, wrt="mu"), atol=1e-12))
    True
    >>> cov = load_map_and_jacobians(mu, b, topk=2, with_covariance=True)[3]
    >>> bool(np.allclose(cov, selection_covariance(mu, b, topk=2), atol=1e-12))
    True
    """
    if score_function == "softmax" and bias_mode == "additive" and bias_on == "scores":
        raise ConfigError("score_function = 'softmax' with bias_mode = 'additive': the "
                          "derivative along a bias on the probabilities has no exact form")
    lead, tr, flat = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                            bias_mode, bias_on, nodes)
    res = integrals(tr, noise, flat, topk, nodes, jac="bias", jac_mu=with_mu,
                    cov=with_covariance)
    n = res["p"].shape[-1]
    jb = _assemble(res["jac"], tr, flat, "bias").reshape(lead + (n, n))
    jm = _assemble(res["jac_mu"], tr, flat, "mu").reshape(lead + (n, n)) if with_mu else None
    out: tuple[Any, ...] = (res["p"].reshape(lead + (n,)), jb, jm)
    if with_covariance:
        out += (_covariance(res["p"], res["cov"]).reshape(lead + (n, n)),)
    return out


def own_probability(mu_PE: Any, bias_PE: Any, expert_P: Any, *, topk: int,
                    score_function: str = "sigmoid", noise: str = "normal",
                    noise_scale: Any = 1.0, bias_mode: str = "additive",
                    bias_on: str = "scores", nodes: int = DEFAULT_NODES,
                    others_bias_E: Any = None) -> np.ndarray:
    """``p[expert]`` alone for each row: ``E`` times cheaper than :func:`load_map`.

    Parameters
    ----------
    mu_PE, bias_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map`.
    expert_P : int array of the leading shape
        The expert whose probability each row needs.
    others_bias_E : array (E,), optional
        Where every row differs from this bias in its own expert only (a
        one-expert response), the quadrature's nodes are placed by the count
        levels of this bias, solved once, instead of once per row; the other
        experts' count, which is what the levels track, is the same.

    Returns
    -------
    p_P : ndarray (...)

    Examples
    --------
    >>> import numpy as np
    >>> mu = np.array([0.5, 0.0, -0.5])
    >>> full = load_map(mu, topk=1)
    >>> np.allclose(own_probability(mu, np.zeros(3), 0, topk=1), full[0])
    True
    """
    lead, tr, flat = setup(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                            bias_mode, bias_on, nodes)
    n = flat[0].shape[-1]
    expert = np.broadcast_to(np.asarray(expert_P), lead).reshape(-1)
    if np.any((expert < 0) | (expert >= n)):
        raise ConfigError(f"expert_P: indices must lie in [0, {n})")
    rows = np.arange(expert.size) * n + expert
    levels = None
    if others_bias_E is not None:
        others = np.asarray(others_bias_E, dtype=np.float64)
        if others.shape != (n,) or not np.all(np.isfinite(others)):
            raise ConfigError(f"others_bias_E: shape {others.shape}: must be {n} finite "
                              "biases, one per expert")
        _, _, (m1, b1, s1) = setup(flat[0][:1], others_bias_E, topk, score_function, noise,
                                   flat[2][:1], bias_mode, bias_on, nodes)
        if not (np.allclose(flat[0], m1) and np.allclose(flat[2], s1[0])):
            raise ConfigError("others_bias_E: every row must share mu and noise_scale")
        one = _levels.count_levels(tr, noise, m1, b1, s1, topk, nodes)  # (1, V)
        levels = np.broadcast_to(one, (flat[0].shape[0], one.shape[-1]))
    p = integrals(tr, noise, flat, topk, nodes, only=rows, levels_BV=levels)["p"]
    return p.reshape(-1)[rows].reshape(lead)


def _normalised(p: np.ndarray, topk: int) -> np.ndarray:
    """``p`` rescaled to sum to ``K`` exactly (removes the common quadrature error)."""
    return p * (topk / np.sum(p, axis=-1, keepdims=True))


def equilibrium(mu_PE: Any, *, topk: int, score_function: str = "sigmoid",
                noise: str = "normal", noise_scale: Any = 1.0, bias_mode: str = "additive",
                bias_on: str = "scores", target_PE: Any = None, tol: float = 1e-8,
                max_iter: int = 100, nodes: int = DEFAULT_NODES) -> np.ndarray:
    """The bias ``b*`` with ``p(b*) = K / N`` for every expert.

    Solved by damped Newton iterations with the analytic Jacobian on all
    points at once (vectorised; the step is halved until the squared
    residual falls, which keeps it robust far from balance, where ``J``
    nearly vanishes for experts that are always or never chosen), started
    from the large-N limit in which every expert's ``1 - K/N`` score
    quantile sits on one threshold. The map is the gradient of the convex
    function ``E[sum of the K largest selection scores]`` (of the log scores
    for a multiplicative bias), so ``b*`` is unique up to the common shift
    (additive: mean fixed at 0) or factor (multiplicative: geometric mean
    fixed at 1).

    Parameters
    ----------
    mu_PE, topk, score_function, noise, noise_scale, bias_mode, bias_on, nodes
        As for :func:`load_map`.
    target_PE : array (..., E), optional
        Target probabilities (default ``K / N``); rows must sum to ``K``.
    tol : float > 0
        Tolerance on ``max |p(b) - target|``, with ``p`` rescaled to sum to
        ``K`` (so the common quadrature error, below 1e-5, does not count).
    max_iter : int > 0
        Cap on the evaluations of the map.

    Returns
    -------
    bias_PE : ndarray, shape (..., E)

    Raises
    ------
    ConfigError
        On a bad argument.
    SolverError
        If the solver does not reach ``tol`` within ``max_iter`` iterations.

    Examples
    --------
    >>> import numpy as np
    >>> mu = np.array([0.5, 0.0, -0.5])
    >>> b = equilibrium(mu, topk=1, bias_on="logits")
    >>> np.allclose(b, -mu, atol=1e-8)
    True
    """
    mu, _, scale = check_arguments(mu_PE, None, topk, score_function, noise, noise_scale,
                                   bias_mode, bias_on)
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
    kw: dict[str, Any] = dict(topk=topk, score_function=score_function, noise=noise, noise_scale=s2,
              bias_mode=bias_mode, bias_on=bias_on, nodes=nodes)
    # Start from the large-N limit, where the K-th largest score is a fixed
    # threshold and every expert's (1 - target) quantile must sit on it.
    zq = m2 + s2[:, None] * np.vectorize(lambda w: _levels.quantile(noise, w))(1.0 - t2)
    if bias_on == "logits" or score_function == "softmax":
        x0 = -zq
    elif mult:
        x0 = -np.log(gate(np, score_function, zq))
    else:
        x0 = -gate(np, score_function, zq)
    x0 = x0 - x0.mean(-1, keepdims=True)

    def to_bias(x: np.ndarray) -> np.ndarray:
        return np.exp(x) if mult else x

    def residual(x: np.ndarray) -> np.ndarray:
        p = _normalised(load_map(m2, to_bias(x), **kw), topk)
        return p - t2 + x.mean(-1, keepdims=True)

    def hessian(x: np.ndarray) -> np.ndarray:
        jb = jacobian(m2, to_bias(x), **kw)
        if mult:
            jb = jb * np.exp(x)[:, None, :]
        hess = 0.5 * (jb + np.swapaxes(jb, -1, -2)) + 1.0 / n
        ridge = 1e-9 * np.trace(hess, axis1=-2, axis2=-1) / n + 1e-300
        return hess + ridge[:, None, None] * np.eye(n)

    # Damped Newton on every point at once: the Newton direction always
    # decreases |F|^2, so halve the step until it does (Armijo).
    x = x0
    res = residual(x)
    hess = hessian(x)
    alpha = np.ones(x.shape[0])
    step = np.linalg.solve(hess, -res[..., None])[..., 0]
    for _ in range(max_iter):
        merit = np.sum(res * res, axis=-1)
        todo = np.max(np.abs(res), axis=-1) > tol
        if not np.any(todo):
            break
        x_try = x + alpha[:, None] * step
        res_try = residual(x_try)
        ok = todo & (np.sum(res_try * res_try, axis=-1) <= (1.0 - 1e-4 * alpha) * merit)
        x = np.where(ok[:, None], x_try, x)
        res = np.where(ok[:, None], res_try, res)
        alpha = np.where(ok, 1.0, alpha / 2.0)
        if np.any(ok):
            hess = np.where(ok[:, None, None], hessian(x), hess)
            new_step = np.linalg.solve(hess, -res[..., None])[..., 0]
            step = np.where(ok[:, None], new_step, step)
        if np.any(alpha < 1e-6):  # stuck: a gradient step instead of Newton's
            stuck = alpha < 1e-6
            step = np.where(stuck[:, None], -res, step)
            alpha = np.where(stuck, 1.0, alpha)
    resid = np.max(np.abs(res))
    if not np.isfinite(resid) or resid > tol:
        raise SolverError(f"equilibrium: no bias reached max |p - target| <= {tol:g} within "
                          f"max_iter = {max_iter} iterations (reached {resid:.3g})")
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
    mu, bias, scale = check_arguments(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                             bias_mode, bias_on)
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
        raise ConfigError(f"samples = {samples!r}: must be an integer >= 1")
    rng = np.random.default_rng(seed)
    lead, n = mu.shape[:-1], mu.shape[-1]
    m2, b2, s2 = flat_rows(mu, bias, scale)
    counts = np.zeros(m2.shape)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        if noise == "normal":
            eps = rng.standard_normal((m2.shape[0], size, n))
        else:
            w = rng.random((m2.shape[0], size, n))
            eps = (np.log(w) - np.log1p(-w) if noise == "logistic"
                   else -np.log(-np.log(w)) - _levels.EULER)
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

