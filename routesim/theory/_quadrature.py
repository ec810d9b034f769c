"""Validation and the per-expert quadrature behind the expected-load map (private).

See :mod:`._levels` for the nodes and :mod:`._poisson` for the count law.

Shape legend: B flattened leading axes, U nodes per expert, E experts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigError
from ..gates import GATES
from . import _levels, _poisson
from ._levels import Transform

__all__: list[str] = []

DEFAULT_NODES = 96
_CHUNK_ELEMENTS = 1 << 21
#: Node-expert products (rows x nodes x experts) from which the compiled pass
#: (:mod:`._count_kernel`, with Numba) replaces the NumPy one; below it the
#: call overhead of either is what counts. ``None`` switches the compiled pass
#: off, ``0`` forces it (tests compare the two).
COMPILED_FROM: int | None = 1 << 17


# ----------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------
def check_arguments(mu: Any, bias: Any, topk: Any, score_function: str, noise: str,
                    noise_scale: Any, bias_mode: str, bias_on: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(mu, bias, noise_scale)`` as float arrays; ConfigError names the argument."""
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


def flat_rows(mu: np.ndarray, bias: np.ndarray, scale: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leading axes flattened: (B, E), (B, E), (B,)."""
    n = mu.shape[-1]
    return (np.ascontiguousarray(mu.reshape(-1, n)), np.ascontiguousarray(bias.reshape(-1, n)),
            np.ascontiguousarray(scale.reshape(-1)))


def setup(mu_PE: Any, bias_PE: Any, topk: int, score_function: str, noise: str,
          noise_scale: Any, bias_mode: str, bias_on: str, nodes: int
          ) -> tuple[tuple, Transform, tuple]:
    """Validate, pick the transform, flatten: ``(leading shape, transform, (mu, b, s))``."""
    mu, bias, scale = check_arguments(mu_PE, bias_PE, topk, score_function, noise, noise_scale,
                             bias_mode, bias_on)
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 8:
        raise ConfigError(f"nodes = {nodes!r}: must be an integer >= 8")
    tr, bias_eff = _transform(score_function, bias_mode, bias_on, bias)
    m, b, s = flat_rows(mu, bias_eff, scale)
    return mu.shape[:-1], tr, (m, b, s)


def integrals(tr: Transform, noise: str, flat: tuple, topk: int, nodes: int, *,
              jac: str | None = None, cov: bool = False,
              only: np.ndarray | None = None, jac_mu: bool = False,
              levels_BV: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Integrals over each expert's own nodes, all (point, expert) rows at once.

    ``only`` restricts the work to some flattened (point, expert) rows (the
    others are left NaN; nodes are built for those rows only).
    ``levels_BV`` gives the count levels of the nodes
    (:func:`._levels.count_levels`) instead of solving for them.

    Returns ``p`` (B, E); with ``jac`` the matrix ``M[i, k] = int f_i g_k D_ik``
    (``g`` the derivative with respect to ``jac``); with ``cov`` the matrix
    ``C[i, k] = int f_i q_k P(N_{-ik} <= K - 2)``; with ``jac_mu`` (and
    ``jac="bias"``) also ``jac_mu``, the same matrix with ``g`` the derivative
    with respect to ``mu`` (one pass over the count law for both).
    """
    m, b, s = flat
    nb, n = m.shape
    rows = nb * n
    todo = np.arange(rows) if only is None else np.asarray(only, dtype=np.int64)
    nd = _levels.make_nodes(tr, noise, m, b, s, topk, nodes,
                            rows_R=None if only is None else todo, levels_BV=levels_BV)
    u = nd.y_BEU.shape[-1]
    # the nodes of the rows in ``todo`` order: row i of these is global row todo[i]
    y_loc, w_loc = nd.y_BEU.reshape(todo.size, u), nd.w_BEU.reshape(todo.size, u)
    above_loc = nd.above_BE.reshape(todo.size)
    jac_mu = jac_mu and jac == "bias"
    if COMPILED_FROM is not None and todo.size * u * n >= COMPILED_FROM:
        from . import _count_kernel

        if _count_kernel.AVAILABLE:
            return _count_kernel.integrals(tr.kind, tr.gate, noise, y_loc, w_loc, above_loc,
                                           flat, topk, todo, jac=jac, jac_mu=jac_mu, cov=cov)
    pairs = jac is not None or cov
    out = {"p": np.full((nb, n), np.nan)}
    if jac is not None:
        out["jac"] = np.zeros((nb, n, n))
    if jac_mu:
        out["jac_mu"] = np.zeros((nb, n, n))
    if cov:
        out["cov"] = np.zeros((nb, n, n))
    per_row = u * n * topk * (3 if pairs else 1)
    chunk = max(1, _CHUNK_ELEMENTS // per_row)
    for r0 in range(0, todo.size, chunk):
        loc = slice(r0, r0 + chunk)
        r = todo[loc]
        y_r, w_r = y_loc[loc], w_loc[loc]
        pt, own = r // n, r % n
        terms = _levels.expert_terms(tr, noise, y_r[..., None], m[pt][:, None, :],
                                     b[pt][:, None, :], s[pt][:, None, None],
                                     wrt=jac or "bias")
        q = terms.q.copy()
        q[np.arange(r.size), :, own] = 0.0  # leave the expert itself out
        flat_q = q.reshape(-1, n)
        if pairs:
            law, without = _poisson.count_law_without_each(flat_q, topk)
            without = without.reshape(r.size, u, n, topk)
        else:
            law = _poisson.count_law(flat_q, topk)
        chosen = np.sum(law, axis=-1).reshape(r.size, u)
        out["p"].reshape(rows)[r] = np.sum(w_r * chosen, axis=-1) + above_loc[loc]
        if jac is not None:
            d = without[..., topk - 1] * terms.g
            out["jac"].reshape(rows, n)[r] = np.einsum("ru,ruk->rk", w_r, d)
        if jac_mu:  # dq/dmu is the logit density: f over dzeta/dy
            dens = np.where(terms.dx > 0, terms.f / np.where(terms.dx > 0, terms.dx, 1.0), 0.0)
            dens = dens / s[pt][:, None, None]
            d = without[..., topk - 1] * dens
            out["jac_mu"].reshape(rows, n)[r] = np.einsum("ru,ruk->rk", w_r, d)
        if cov:
            h = np.sum(without[..., :topk - 1], axis=-1) * terms.q
            out["cov"].reshape(rows, n)[r] = np.einsum("ru,ruk->rk", w_r, h)
    return out
