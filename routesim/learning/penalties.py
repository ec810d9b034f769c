"""Auxiliary balance losses and the router z-loss: values and analytic gradients.

All functions work on logits ``z`` of shape ``(..., T, E)`` with any leading
axes (points, replicas) and return the loss per leading index together with
its gradient with respect to ``z``. :func:`weight_grad` turns a logit
gradient into the gradient on router weights ``W`` (``z = x @ W.T``). No
autograd is involved; ``tests/test_penalties.py`` checks every gradient
against central finite differences in float64.

Balance loss (Switch/GShard form, Megatron ``switch_load_balancing_loss_func``)
-----------------------------------------------------------------------------
Tokens are split into ``G`` equal, contiguous groups; for each group ``g``

    ``L_g = N * sum_i f_gi * P_gi``,   ``L = mean_g L_g``

* ``P_gi = mean_{t in g} p_ti`` with ``p`` the *full-distribution*
  probability: ``softmax(z)`` for a softmax gate, ``s / sum_j s_j`` with
  ``s = sigmoid(z)`` for a sigmoid gate (Megatron
  ``compute_routing_scores_for_aux_loss``; DeepSeek-V3 Eq. 19).
* ``f_gi`` from a 0/1 routing map, held constant (no gradient):
  ``c_gi / (K T_g)`` with normalization ``"megatron"`` (the loss equals 1,
  i.e. ``alpha`` after weighting, at perfect balance), or ``c_gi / T_g`` with
  ``"mixtral"`` (transformers' ``load_balancing_loss_func``: equals ``K``).
* The three penalty types differ only in the groups: ``switch`` = one group
  per micro-batch, ``sequence`` = one group per sequence (DeepSeek-V3 Eqs
  17-20), ``global_batch`` = ``f`` over the whole global batch ("Demons in
  the Detail": ``N sum_i f_bar_i P_bar_i``, which equals the mean over
  micro-batches of ``N sum_i f_bar_i P_gi``), i.e. one group.

Gradient: with ``a_tj = d p_tj`` factor (``p_tj`` for softmax,
``s_tj (1 - s_tj) / sum_k s_tk`` for normalised sigmoid),

    ``dL / dz_tj = (N / (G T_g)) * a_tj * (f_gj - sum_i f_gi p_ti)``.

Su Jianlin (MoE Tour part 2) shows this is the straight-through gradient of
``1/2 ||F - 1/N||^2``: the loss pushes mass from over-loaded to under-loaded
experts in proportion to their excess load.

Router z-loss (ST-MoE, Megatron ``z_loss_func``)
------------------------------------------------
``L_z = mean_t (logsumexp_j z_tj)^2``, ``dL_z / dz_tj = 2 lse_t softmax(z_t)_j / T``.

Shape legend: T tokens, E experts, D features; ``...`` any leading axes.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._backend import one_hot, topk_indices
from .._math import sigmoid, softmax

__all__ = [
    "PENALTY_TYPES",
    "PENALTY_GATES",
    "aux_probabilities",
    "group_tokens",
    "routing_fractions",
    "balance_loss",
    "z_loss",
    "cv_squared",
    "topk_map",
    "router_logits",
    "weight_grad",
    "interference",
    "task_projection",
]

PENALTY_TYPES = ("none", "switch", "sequence", "global_batch")
#: Gates whose balance-loss and z-loss gradients are written out.
PENALTY_GATES = ("softmax", "sigmoid")


def aux_probabilities(xp: ModuleType, score_function: str, z_TE: Any) -> tuple[Any, Any]:
    """Full-distribution probabilities ``p`` and their derivative factor ``a``.

    Parameters
    ----------
    xp : namespace
    score_function : {"softmax", "sigmoid"}
    z_TE : array (..., T, E)
        Router logits.

    Returns
    -------
    p_TE : array (..., T, E)
        ``softmax(z)``, or ``sigmoid(z)`` normalised over all experts.
    a_TE : array (..., T, E)
        Factor with ``d p_ti / d z_tj = a_tj (delta_ij - p_ti)``.

    Examples
    --------
    >>> import numpy as np
    >>> p, a = aux_probabilities(np, "sigmoid", np.zeros((1, 4)))
    >>> p.tolist(), a.tolist()
    ([[0.25, 0.25, 0.25, 0.25]], [[0.125, 0.125, 0.125, 0.125]])
    """
    if score_function == "softmax":
        p = softmax(xp, z_TE)
        return p, p
    if score_function == "sigmoid":
        s = sigmoid(xp, z_TE)
        total = xp.sum(s, axis=-1, keepdims=True)
        return s / total, s * (1.0 - s) / total
    raise ValueError(f"score_function = {score_function!r}: the balance loss supports "
                     f"{', '.join(PENALTY_GATES)}")


def group_tokens(xp: ModuleType, a: Any, groups: int) -> Any:
    """View ``(..., T, E)`` as ``(..., G, T / G, E)`` (``G`` must divide ``T``).

    Examples
    --------
    >>> import numpy as np
    >>> group_tokens(np, np.zeros((2, 6, 3)), 3).shape
    (2, 3, 2, 3)
    """
    *lead, t, e = a.shape
    if t % groups:
        raise ValueError(f"{t} tokens cannot be split into {groups} equal groups")
    return xp.reshape(a, tuple(lead) + (groups, t // groups, e))


def routing_fractions(xp: ModuleType, map_TE: Any, topk: int, groups: int,
                      normalization: str = "megatron") -> Any:
    """``f`` per group from a 0/1 routing map: array (..., G, E).

    ``c / (K T_g)`` (``megatron``; sums to 1 over experts) or ``c / T_g``
    (``mixtral``; sums to K).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[1, 1, 0], [1, 0, 1]], dtype=float)
    >>> routing_fractions(np, m, 2, 1).tolist()
    [[0.5, 0.25, 0.25]]
    """
    m = group_tokens(xp, map_TE, groups)
    t_g = m.shape[-2]
    counts = xp.sum(xp.astype(m, xp.float64), axis=-2)
    if normalization == "megatron":
        return counts / (topk * t_g)
    if normalization == "mixtral":
        return counts / t_g
    raise ValueError(f"normalization = {normalization!r}: must be 'megatron' or 'mixtral'")


def balance_loss(xp: ModuleType, z_TE: Any, map_TE: Any, score_function: str, topk: int,
                 groups: int, normalization: str = "megatron") -> tuple[Any, Any]:
    """``mean_g N sum_i f_gi P_gi`` and its gradient with respect to the logits.

    Parameters
    ----------
    xp : namespace
    z_TE : array (..., T, E)
        Logits; tokens in group order (group ``g`` holds tokens
        ``[g T / G, (g + 1) T / G)``).
    map_TE : bool or 0/1 array (..., T, E)
        Routing map giving ``f`` (held constant).
    score_function : {"softmax", "sigmoid"}
    topk : int >= 1
    groups : int >= 1
        ``G``; must divide ``T``.
    normalization : {"megatron", "mixtral"}

    Returns
    -------
    value : array (...)
        Unweighted loss (multiply by ``alpha``).
    grad_TE : array (..., T, E)

    Examples
    --------
    >>> import numpy as np
    >>> z = np.zeros((4, 2))                      # uniform probabilities
    >>> m = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    >>> value, grad = balance_loss(np, z, m, "softmax", 1, 1)
    >>> float(value), float(np.abs(grad).max())   # balanced: 1 and no push
    (1.0, 0.0)
    """
    n = z_TE.shape[-1]
    p, a = aux_probabilities(xp, score_function, z_TE)
    f_GE = routing_fractions(xp, map_TE, topk, groups, normalization)
    p_G = group_tokens(xp, p, groups)
    a_G = group_tokens(xp, a, groups)
    t_g = p_G.shape[-2]
    big_p = xp.mean(p_G, axis=-2)
    value = xp.mean(n * xp.sum(f_GE * big_p, axis=-1), axis=-1)
    f_b = f_GE[..., None, :]
    inner = xp.sum(f_b * p_G, axis=-1, keepdims=True)
    grad = (n / (groups * t_g)) * a_G * (f_b - inner)
    return value, xp.reshape(grad, tuple(z_TE.shape))


def z_loss(xp: ModuleType, z_TE: Any) -> tuple[Any, Any]:
    """Router z-loss ``mean_t (logsumexp_j z_tj)^2`` and its logit gradient.

    Parameters
    ----------
    xp : namespace
    z_TE : array (..., T, E)

    Returns
    -------
    value : array (...)
    grad_TE : array (..., T, E)

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = z_loss(np, np.zeros((1, 4)))
    >>> round(float(value), 6) == round(float(np.log(4)) ** 2, 6)
    True
    """
    t = z_TE.shape[-2]
    zmax = xp.max(z_TE, axis=-1, keepdims=True)
    e = xp.exp(z_TE - zmax)
    total = xp.sum(e, axis=-1, keepdims=True)
    lse = zmax + xp.log(total)
    value = xp.mean(lse[..., 0] ** 2, axis=-1)
    return value, (2.0 / t) * lse * (e / total)


def cv_squared(xp: ModuleType, v_E: Any) -> tuple[Any, Any]:
    """Squared coefficient of variation over the last axis, and its gradient.

    ``CV^2 = var / mean^2`` with the population variance (Shazeer et al.
    2017; tensor2tensor ``cv_squared``). Gradient
    ``d CV^2 / d v_i = 2 (v_i - m - var / m) / (E m^2)``.

    Parameters
    ----------
    xp : namespace
    v_E : array (..., E), positive mean

    Returns
    -------
    value : array (...)
    grad_E : array (..., E)

    Examples
    --------
    >>> import numpy as np
    >>> value, grad = cv_squared(np, np.array([1.0, 3.0]))
    >>> float(value)
    0.25
    """
    n = v_E.shape[-1]
    m = xp.mean(v_E, axis=-1, keepdims=True)
    dev = v_E - m
    var = xp.mean(dev * dev, axis=-1, keepdims=True)
    value = (var / (m * m))[..., 0]
    grad = 2.0 * (dev - var / m) / (n * m * m)
    return value, grad


def topk_map(xp: ModuleType, scores_TE: Any, topk: int) -> Any:
    """0/1 map (bool, same shape) of each token's ``topk`` largest scores.

    Examples
    --------
    >>> import numpy as np
    >>> topk_map(np, np.array([[0.1, 0.7, 0.2]]), 1).tolist()
    [[False, True, False]]
    """
    return one_hot(xp, topk_indices(xp, scores_TE, topk), scores_TE.shape[-1])


def weight_grad(xp: ModuleType, grad_TE: Any, x_TD: Any) -> Any:
    """Gradient on ``W`` (..., E, D) from a logit gradient, for ``z = x @ W.T``.

    Examples
    --------
    >>> import numpy as np
    >>> weight_grad(np, np.array([[1.0, 0.0]]), np.array([[2.0, 3.0]])).tolist()
    [[2.0, 3.0], [0.0, 0.0]]
    """
    return xp.matmul(xp.matrix_transpose(grad_TE), x_TD)


def router_logits(xp: ModuleType, x_TD: Any, w_ED: Any) -> Any:
    """Logits ``z = x @ W.T``: array (..., T, E) from (..., T, D) and (..., E, D).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0]])                 # one token, D = 2
    >>> w = np.array([[1.0, 0.0], [0.5, -1.0], [0.0, 1.0]])  # E = 3
    >>> router_logits(np, x, w).tolist()
    [[1.0, -1.5, 2.0]]
    """
    return xp.matmul(x_TD, xp.matrix_transpose(w_ED))


def interference(xp: ModuleType, g_task: Any, g_pen: Any) -> tuple[Any, Any]:
    """Cosine between two weight gradients and the share of the task one cancelled.

    Per leading (P, R) index over the trailing (E, D) axes: ``cos`` is 0 when
    either gradient is zero; the cancelled share is
    ``clip(-<g_pen, g_task> / |g_task|^2, 0, 1)``, the fraction of the task
    gradient's component along itself that the penalty removes.

    Examples
    --------
    >>> import numpy as np
    >>> cos, share = interference(np, np.array([[1.0, 0.0]]), np.array([[-0.5, 0.5]]))
    >>> round(float(cos), 4), float(share)
    (-0.7071, 0.5)
    """
    dot = xp.sum(g_task * g_pen, axis=(-2, -1))
    nt = xp.sum(g_task * g_task, axis=(-2, -1))
    npen = xp.sum(g_pen * g_pen, axis=(-2, -1))
    den = xp.sqrt(nt * npen)
    cos = xp.where(den > 0, dot / xp.where(den > 0, den, 1.0), 0.0)
    share = xp.where(nt > 0, xp.clip(-dot / xp.where(nt > 0, nt, 1.0), 0.0, 1.0), 0.0)
    return cos, share


def task_projection(xp: ModuleType, g_task: Any, g_pen: Any) -> Any:
    """Signed projection of the total gradient on the task gradient, in units of the task's.

    Per leading (P, R) index over the trailing (E, D) axes:
    ``<g_task + g_pen, g_task> / |g_task|^2 = 1 + <g_pen, g_task> / |g_task|^2``.
    1 without a penalty; below 1 the penalty slows the task; below 0 the
    step moves *against* the task gradient (the reversal of the aux-loss
    critique, ``1 - 2 alpha < 0`` for a penalty gradient ``-2 alpha g_task``).
    Unlike :func:`interference`'s cancelled share it is not clipped. NaN
    where the task gradient is zero.

    Parameters
    ----------
    xp : namespace
    g_task, g_pen : arrays (..., E, D)
        Task and penalty gradients on the router weights.

    Returns
    -------
    float64 array (...)

    Examples
    --------
    >>> import numpy as np
    >>> g = np.array([[1.0, 0.0]])
    >>> task_projection(np, g, -2 * 0.75 * g).tolist()   # 1 - 2 alpha with alpha = 0.75
    -0.5
    >>> task_projection(np, g, np.array([[0.0, 3.0]])).tolist()   # orthogonal: no effect
    1.0
    """
    dot = xp.sum(g_task * g_pen, axis=(-2, -1))
    nt = xp.sum(g_task * g_task, axis=(-2, -1))
    return xp.where(nt > 0, 1.0 + dot / xp.where(nt > 0, nt, 1.0), float("nan"))
