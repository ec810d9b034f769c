"""Noisy top-K gating (Shazeer et al. 2017) with its importance and load losses.

Gate, for clean logits ``c = x @ W_g.T`` and raw noise logits
``r = x @ W_noise.T``::

    sigma = softplus(r)
    H     = c + eps * sigma            eps ~ N(0, 1), training only
    G     = softmax over the top-K entries of H (others 0)

With noise off (evaluation windows) ``H = c``.

Losses (REFERENCES §5.1), on a batch ``X`` of tokens:

* importance ``Importance_i = sum_x G(x)_i``; ``L_imp = CV(Importance)^2``;
* load, with the smooth estimator of the number of tokens an expert gets:
  ``P(x, i) = Phi((c_i - kth_excluding(H, K, i)) / sigma_i)``, the
  probability that expert ``i`` stays in the top-K when only its own noise
  is redrawn; ``kth_excluding`` is the K-th largest of ``H`` without entry
  ``i`` (the (K+1)-th largest of ``H`` when ``i`` is in the top-K, the K-th
  otherwise); ``Load_i = sum_x P(x, i)``; ``L_load = CV(Load)^2``.

Both losses are averaged over equal token groups (micro-batches). Gradients
are written out: through ``G`` (top-K set held fixed), through ``Phi`` to
``c_i`` and ``sigma_i``, and through the threshold to the logit ``H_j`` that
sets it (hence to ``c_j`` and ``sigma_j``), as tensor2tensor's
``_prob_in_top_k`` differentiates it.

Shape legend: T tokens, E experts; ``...`` any leading axes.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .._backend import argsort_stable
from .._math import normal_cdf, sigmoid, softplus
from .penalties import cv_squared, group_tokens

__all__ = [
    "noisy_logits",
    "topk_softmax",
    "topk_softmax_vjp",
    "importance_loss",
    "load_probability",
    "load_loss",
]

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def noisy_logits(xp: ModuleType, clean_TE: Any, raw_TE: Any, eps_TE: Any | None
                 ) -> tuple[Any, Any]:
    """``H = c + eps * softplus(r)`` and ``sigma = softplus(r)``.

    ``eps_TE = None`` turns the noise off (``H = c``).

    Examples
    --------
    >>> import numpy as np
    >>> h, sigma = noisy_logits(np, np.zeros(2), np.zeros(2), np.array([1.0, -1.0]))
    >>> np.round(h, 4).tolist()
    [0.6931, -0.6931]
    """
    sigma = softplus(xp, raw_TE)
    if eps_TE is None:
        return clean_TE, sigma
    return clean_TE + eps_TE * sigma, sigma


def topk_softmax(xp: ModuleType, h_TE: Any, mask_TE: Any) -> Any:
    """Softmax of ``h`` over the entries where ``mask`` is true, 0 elsewhere.

    Examples
    --------
    >>> import numpy as np
    >>> topk_softmax(np, np.array([0.0, 0.0, 5.0]), np.array([True, True, False])).tolist()
    [0.5, 0.5, 0.0]
    """
    neg = xp.where(mask_TE, h_TE, -math.inf)
    top = xp.max(neg, axis=-1, keepdims=True)
    e = xp.where(mask_TE, xp.exp(xp.where(mask_TE, h_TE - top, 0.0)), 0.0)
    return e / xp.sum(e, axis=-1, keepdims=True)


def topk_softmax_vjp(xp: ModuleType, g_TE: Any, mask_TE: Any, upstream_TE: Any) -> Any:
    """Gradient on ``h`` from ``dL/dG`` for ``G = topk_softmax(h, mask)``.

    ``dh_j = m_j G_j (u_j - sum_i m_i u_i G_i)`` (the selected set held
    fixed).

    Examples
    --------
    ``G = (1/2, 1/2, 0)`` and ``u = (1, 0, 7)``: the inner sum is 1/2, so
    ``dh = (1/2 (1 - 1/2), 1/2 (0 - 1/2), 0)``; the unselected expert gets 0.

    >>> import numpy as np
    >>> m = np.array([True, True, False])
    >>> g = topk_softmax(np, np.array([0.0, 0.0, 5.0]), m)
    >>> topk_softmax_vjp(np, g, m, np.array([1.0, 0.0, 7.0])).tolist()
    [0.25, -0.25, 0.0]
    """
    um = xp.where(mask_TE, upstream_TE, 0.0)
    inner = xp.sum(um * g_TE, axis=-1, keepdims=True)
    return xp.where(mask_TE, g_TE * (upstream_TE - inner), 0.0)


def importance_loss(xp: ModuleType, h_TE: Any, mask_TE: Any, groups: int
                    ) -> tuple[Any, Any]:
    """``mean_g CV(Importance_g)^2`` and its gradient on ``h``.

    Parameters
    ----------
    xp : namespace
    h_TE : array (..., T, E)
        Gate logits (noisy in training).
    mask_TE : bool array (..., T, E)
        The experts each token is routed to (K per token).
    groups : int >= 1
        Equal contiguous token groups (micro-batches).

    Returns
    -------
    value : array (...)
    grad_TE : array (..., T, E)

    Examples
    --------
    Two tokens, both on expert 0 with weight 1: importance (2, 0), population
    variance 1 over mean 1 squared; one token each gives 0.

    >>> import numpy as np
    >>> h = np.zeros((2, 2))
    >>> float(importance_loss(np, h, np.array([[True, False], [True, False]]), 1)[0])
    1.0
    >>> float(importance_loss(np, h, np.array([[True, False], [False, True]]), 1)[0])
    0.0
    """
    g = topk_softmax(xp, h_TE, mask_TE)
    g_G = group_tokens(xp, g, groups)
    value, d_imp = cv_squared(xp, xp.sum(g_G, axis=-2))
    upstream = xp.broadcast_to(d_imp[..., None, :] / groups, tuple(g_G.shape))
    upstream = xp.reshape(upstream, tuple(g.shape))
    return xp.mean(value, axis=-1), topk_softmax_vjp(xp, g, mask_TE, upstream)


def _thresholds(xp: ModuleType, h_TE: Any, topk: int) -> tuple[Any, Any, Any, Any]:
    """In-top-K mask and the K-th / (K+1)-th largest of ``h`` with their indices."""
    order = argsort_stable(xp, -h_TE)
    e = h_TE.shape[-1]
    grid = xp.arange(e)
    idx_k = order[..., topk - 1:topk]
    idx_k1 = order[..., topk:topk + 1]
    in_top = xp.any(order[..., :topk, None] == grid, axis=-2)
    h_k = xp.take_along_axis(h_TE, idx_k, axis=-1)
    h_k1 = xp.take_along_axis(h_TE, idx_k1, axis=-1)
    thr = xp.where(in_top, h_k1, h_k)
    return in_top, thr, idx_k == grid, idx_k1 == grid


def load_probability(xp: ModuleType, clean_TE: Any, h_TE: Any, sigma_TE: Any, topk: int
                     ) -> Any:
    """``P(x, i) = Phi((c_i - kth_excluding(H, K, i)) / sigma_i)``: array (..., T, E).

    Examples
    --------
    >>> import numpy as np
    >>> c = np.array([[1.0, 0.0, -1.0]])
    >>> p = load_probability(np, c, c, np.ones((1, 3)), 1)
    >>> np.round(p, 4).tolist()  # Phi(1 - 0), Phi(0 - 1), Phi(-1 - 1)
    [[0.8413, 0.1587, 0.0228]]
    """
    _, thr, _, _ = _thresholds(xp, h_TE, topk)
    return normal_cdf(xp, (clean_TE - thr) / sigma_TE)


def load_loss(xp: ModuleType, clean_TE: Any, raw_TE: Any, eps_TE: Any, topk: int,
              groups: int) -> tuple[Any, Any, Any]:
    """``mean_g CV(Load_g)^2`` with the smooth load estimator, and its gradients.

    Parameters
    ----------
    xp : namespace
    clean_TE : array (..., T, E)
        Clean logits ``c``.
    raw_TE : array (..., T, E)
        Noise logits ``r`` (``sigma = softplus(r)``).
    eps_TE : array (..., T, E)
        The standard-normal draws of this batch.
    topk : int in [1, E)
    groups : int >= 1
        Equal contiguous token groups (micro-batches).

    Returns
    -------
    value : array (...)
    grad_clean_TE, grad_raw_TE : arrays (..., T, E)

    Examples
    --------
    One token, K = 1, ``sigma = softplus(r) = 1``, no noise drawn: each
    expert is measured against the other's logit, so the smooth loads are
    ``Phi(2) = 0.97725`` and ``Phi(-2) = 0.02275``; their population
    variance 0.22777 over the squared mean 0.25 is 0.91107.

    >>> import numpy as np
    >>> raw = np.full((1, 2), np.log(np.e - 1.0))
    >>> value, d_clean, d_raw = load_loss(np, np.array([[2.0, 0.0]]), raw, np.zeros((1, 2)),
    ...                                   1, 1)
    >>> round(float(value), 5), d_clean.shape
    (0.91107, (1, 2))
    """
    h, sigma = noisy_logits(xp, clean_TE, raw_TE, eps_TE)
    in_top, thr, at_k, at_k1 = _thresholds(xp, h, topk)
    u = (clean_TE - thr) / sigma
    prob = normal_cdf(xp, u)
    load_GE = xp.sum(group_tokens(xp, prob, groups), axis=-2)
    value, d_load = cv_squared(xp, load_GE)
    shape_g = group_tokens(xp, prob, groups).shape
    up = xp.reshape(xp.broadcast_to(d_load[..., None, :] / groups, shape_g), tuple(prob.shape))
    dens = _INV_SQRT_2PI * xp.exp(-0.5 * u * u)
    d_u = up * dens / sigma                     # dL/dc_i through Phi
    d_clean = d_u
    d_sigma = -d_u * u
    d_thr = -d_u
    # the threshold of expert i is H at the K-th (i outside the top-K) or the
    # (K+1)-th (i inside) place: scatter its gradient to that logit
    from_out = xp.sum(xp.where(in_top, 0.0, d_thr), axis=-1, keepdims=True)
    from_in = xp.sum(xp.where(in_top, d_thr, 0.0), axis=-1, keepdims=True)
    d_h = xp.where(at_k, from_out, 0.0) + xp.where(at_k1, from_in, 0.0)
    d_clean = d_clean + d_h
    d_sigma = d_sigma + d_h * eps_TE
    return xp.mean(value, axis=-1), d_clean, d_sigma * sigmoid(xp, raw_TE)
