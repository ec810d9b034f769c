"""The task-loss proxy a learning router is trained on.

A real router learns from the language-model loss; here a small stand-in
plays its part, with two ingredients that decide where a router goes.

**Topic-expert affinity.** Each topic ``m`` of the token-feature mixture has
a latent affinity ``A[m, i]`` for each expert ``i``, drawn once per (point,
replica) as ``affinity_scale * N(0, 1)``. An expert that suits a topic
serves its tokens better; the router can only learn this through the
reward, not see it.

**Expert quality, rich-get-richer.** Expert ``i`` has a quality
``q_i = gamma * (u_i - 1)`` where the usage ``u_i`` is an exponential moving
average of its load relative to balance,
``u_i <- rho * u_i + (1 - rho) * N * F_i`` with ``F_i = c_i / (K T)`` the
step's load fraction (``u_i = 1`` for all experts at balance, so ``q = 0``
there). Experts that receive more tokens become better, which attracts more
tokens: the feedback that makes routing collapse possible. ``gamma = 0``
turns it off.

**Reward.** A token ``t`` of topic ``m(t)`` routed to the set ``S_t`` earns
the gate mass on those experts weighted by their value:

    ``r_t = sum_{i in S_t} g_ti * (A[m(t), i] + q_i)``

with ``g`` the mixing weights of the gate (softmax over the K chosen
logits, or with ``router.pre_softmax`` the full-softmax probabilities;
sigmoid scores renormalised over the K chosen when ``K > 1``; the noisy
gate's softmax over its top-K; times ``topk_scaling_factor``). The proxy is
``mean_t r_t`` (higher is better) and the task loss is its negative. Its
gradient flows through ``g`` only: the chosen set, the affinity and the
quality are held constant, as the selection, the data and the experts'
parameters are for a real router's gradient.

What the proxy shows, and why. Alone (``gamma = 0``) the router learns to
send each topic to the experts it suits: specialisation with moderate
imbalance. With ``gamma > 0`` and no balancing, the experts that happen to
be used more early improve, draw more traffic and the rest starve:
collapse. A balance penalty or a bias controller moves tokens away from the
experts the reward prefers, so balance costs proxy.

Scale. With Adam, which normalises each weight's step, multiplying the
reward by a constant and every penalty weight by the same constant leaves
the run unchanged: only ``alpha / affinity_scale`` (and ``gamma /
affinity_scale``) matter. The default ``affinity_scale = 1e-3`` is chosen so
that the published penalty weights span the transition: ``alpha = 1e-2``
balances best (MaxVio_global 0.3 to 0.7), ``alpha = 1e-3`` (Loss-Free's baseline, MaxVio_global 0.72
in its Table 2) leaves a MaxVio_global of order 1, ``alpha <= 1e-4`` does
not prevent collapse. It is a calibration of one free constant against one
published number, not a derived value.

The proxy is myopic: with rich-get-richer on, a collapsed router can score
*higher* than a balanced one (its few busy experts became better), which
is why real runs balance for reasons (hardware efficiency, expert capacity)
that the proxy does not price. ``task_affinity`` (the reward without the
quality term) separates the specialisation part from the rich-get-richer
part.

Shape legend: P points, R replicas, T tokens, E experts, M topics.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .. import rng
from .._math import sigmoid, softmax
from .noisy_gate import topk_softmax, topk_softmax_vjp

__all__ = [
    "draw_affinity",
    "token_values",
    "mixing_weights",
    "mixing_weights_vjp",
    "task_loss",
    "update_usage",
]

#: Stream id of the affinity draw (``rng.Stream.EXTRA`` upwards is free).
AFFINITY_STREAM = rng.Stream.EXTRA + 21


def draw_affinity(xp: ModuleType, keys_PR: Any, num_topics: int, num_experts: int,
                  scale_P: Any, dtype: Any = None) -> Any:
    """Topic-expert affinities ``scale * N(0, 1)``: array (P, R, M, E).

    Parameters
    ----------
    xp : namespace
    keys_PR : uint64 array (P, R)
    num_topics, num_experts : int
    scale_P : array (P,)
        ``affinity_scale`` of each point.
    dtype : floating dtype, optional (default float64)

    Returns
    -------
    array (P, R, M, E)

    Examples
    --------
    A point's affinities depend only on its own key, and scale linearly:

    >>> import numpy as np
    >>> keys = rng.point_keys(0, [0, 1], 1)  # (P, R) = (2, 1)
    >>> a = draw_affinity(np, keys, 3, 4, np.array([1.0, 2.0]))
    >>> a.shape, bool(np.array_equal(draw_affinity(np, keys[1:], 3, 4, np.array([2.0])), a[1:]))
    ((2, 1, 3, 4), True)
    >>> bool(np.array_equal(draw_affinity(np, keys, 3, 4, np.array([2.0, 2.0]))[0], 2 * a[0]))
    True
    """
    dtype = dtype or xp.float64
    z = rng.standard_normal(xp, keys_PR, -1, AFFINITY_STREAM,
                            xp.arange(num_topics, dtype=xp.uint64), num_experts, dtype)
    return xp.reshape(xp.asarray(scale_P, dtype=dtype), (-1, 1, 1, 1)) * z


def token_values(xp: ModuleType, topic_PRT: Any, affinity_PRME: Any, quality_PRE: Any) -> Any:
    """Value ``A[m(t), i] + q_i`` of each expert for each token: (P, R, T, E).

    Parameters
    ----------
    topic_PRT : int array (P, R, T)
        Topic ``m(t)`` of each token.
    affinity_PRME : array (P, R, M, E)
        Topic-expert affinities ``A``.
    quality_PRE : array (P, R, E)
        Expert qualities ``q``.

    Returns
    -------
    array (P, R, T, E)

    Examples
    --------
    Tokens of topics 0, 1, 1; expert 2 has quality 0.5:

    >>> import numpy as np
    >>> topic = np.array([[[0, 1, 1]]])
    >>> affinity = np.array([[[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]]])
    >>> token_values(np, topic, affinity, np.array([[[0.0, 0.0, 0.5]]])).tolist()
    [[[[1.0, 0.0, 0.5], [0.0, 2.0, 0.5], [0.0, 2.0, 0.5]]]]
    """
    m = affinity_PRME.shape[-2]
    onehot = xp.astype(topic_PRT[..., None] == xp.arange(m), affinity_PRME.dtype)
    return xp.matmul(onehot, affinity_PRME) + quality_PRE[:, :, None, :]


def mixing_weights(xp: ModuleType, gate: str, z_TE: Any, mask_TE: Any, topk: int,
                   scaling: float | None = None, pre_softmax: bool = False) -> Any:
    """Mixing weights of the chosen experts (0 elsewhere): array (..., T, E).

    Parameters
    ----------
    xp : namespace
    gate : {"softmax", "sigmoid", "noisy"}
        ``noisy``: softmax over the chosen entries (Shazeer's gate).
    z_TE : array (..., T, E)
        Gate logits.
    mask_TE : bool array (..., T, E)
        Chosen experts (K per token).
    topk : int
    scaling : float or None
        ``topk_scaling_factor``.
    pre_softmax : bool
        ``softmax`` only: the full-softmax probabilities of the chosen
        experts (True) or the softmax over the chosen logits (False,
        Megatron's default).

    Returns
    -------
    array (..., T, E)

    Examples
    --------
    >>> import numpy as np
    >>> z = np.zeros((1, 4)); m = np.array([[True, True, False, False]])
    >>> mixing_weights(np, "softmax", z, m, 2).tolist(), mixing_weights(np, "sigmoid", z, m, 2).tolist()
    ([[0.5, 0.5, 0.0, 0.0]], [[0.5, 0.5, 0.0, 0.0]])
    >>> mixing_weights(np, "softmax", z, m, 2, pre_softmax=True).tolist()
    [[0.25, 0.25, 0.0, 0.0]]
    """
    return _weights_and_vjp(xp, gate, z_TE, mask_TE, topk, scaling, None, pre_softmax)[0]


def mixing_weights_vjp(xp: ModuleType, gate: str, z_TE: Any, mask_TE: Any, topk: int,
                       scaling: float | None, upstream_TE: Any, pre_softmax: bool = False
                       ) -> Any:
    """Logit gradient ``sum_i u_ti d g_ti / d z_tj`` for the weights of :func:`mixing_weights`.

    ``softmax`` with ``pre_softmax``: ``c p_j (m_j u_j - sum_i m_i u_i p_i)``;
    without: as ``noisy`` (softmax over the chosen logits); ``sigmoid`` with
    ``K > 1``: ``m_j c s_j (1 - s_j) (u_j - sum_i m_i u_i s_i / S) / S`` with
    ``S`` the chosen scores' sum; ``K = 1``: ``m_j c s_j (1 - s_j) u_j``;
    ``noisy``: :func:`routesim.learning.noisy_gate.topk_softmax_vjp`.

    Parameters
    ----------
    gate : {"softmax", "sigmoid", "noisy"}
    z_TE : array (..., T, E)
        Gate logits.
    mask_TE : bool array (..., T, E)
        Chosen experts ``m``.
    topk : int
    scaling : float or None
        ``c``, ``topk_scaling_factor`` (None: 1).
    upstream_TE : array (..., T, E)
        ``u = dL/dg``.
    pre_softmax : bool
        As in :func:`mixing_weights`.

    Returns
    -------
    array (..., T, E)

    Examples
    --------
    At ``z = 0`` a lone sigmoid choice has slope ``s (1 - s) = 0.25``; two
    tied softmax choices trade weight one for one:

    >>> import numpy as np
    >>> z = np.zeros((1, 3)); u = np.array([[1.0, 0.0, 0.0]])
    >>> mixing_weights_vjp(np, "sigmoid", z, np.array([[True, False, False]]), 1, None, u).tolist()
    [[0.25, 0.0, 0.0]]
    >>> mixing_weights_vjp(np, "softmax", z, np.array([[True, True, False]]), 2, None, u).tolist()
    [[0.25, -0.25, 0.0]]
    """
    return _weights_and_vjp(xp, gate, z_TE, mask_TE, topk, scaling, upstream_TE,
                            pre_softmax)[1]


def _weights_and_vjp(xp: ModuleType, gate: str, z_TE: Any, mask_TE: Any, topk: int,
                     scaling: float | None, upstream_TE: Any | None,
                     pre_softmax: bool = False) -> tuple[Any, Any]:
    """Mixing weights and (if ``upstream_TE`` is given) their vector-Jacobian product."""
    c = 1.0 if scaling is None else scaling
    if gate == "noisy" or (gate == "softmax" and not pre_softmax):
        g = topk_softmax(xp, z_TE, mask_TE)
        dz = None if upstream_TE is None else c * topk_softmax_vjp(xp, g, mask_TE, upstream_TE)
        return c * g, dz
    if gate == "softmax":
        p = softmax(xp, z_TE)
        g = xp.where(mask_TE, c * p, 0.0)
        if upstream_TE is None:
            return g, None
        um = xp.where(mask_TE, upstream_TE, 0.0)
        return g, c * p * (um - xp.sum(um * p, axis=-1, keepdims=True))
    if gate == "sigmoid":
        s = sigmoid(xp, z_TE)
        s_sel = xp.where(mask_TE, s, 0.0)
        total = xp.sum(s_sel, axis=-1, keepdims=True) + 1e-20 if topk > 1 else 1.0
        g = c * s_sel / total
        if upstream_TE is None:
            return g, None
        um = xp.where(mask_TE, upstream_TE, 0.0)
        ds = s * (1.0 - s)
        if topk == 1:
            return g, c * ds * um
        inner = xp.sum(um * s_sel, axis=-1, keepdims=True) / total
        return g, xp.where(mask_TE, c * ds * (upstream_TE - inner) / total, 0.0)
    raise ValueError(f"gate {gate!r}: must be softmax, sigmoid or noisy")


def task_loss(xp: ModuleType, gate: str, z_TE: Any, mask_TE: Any, values_TE: Any, topk: int,
              scaling: float | None = None, pre_softmax: bool = False
              ) -> tuple[Any, Any, Any]:
    """Proxy reward ``mean_t r_t`` and the gradient of the loss ``-mean_t r_t``.

    Parameters
    ----------
    xp : namespace
    gate : {"softmax", "sigmoid", "noisy"}
    z_TE : array (..., T, E)
        Gate logits.
    mask_TE : bool array (..., T, E)
        Chosen experts.
    values_TE : array (..., T, E)
        ``A[m(t), i] + q_i`` (:func:`token_values`).
    topk : int
    scaling : float or None
    pre_softmax : bool
        See :func:`mixing_weights`.

    Returns
    -------
    proxy : array (...)
        ``mean_t r_t``.
    grad_TE : array (..., T, E)
        Gradient of ``-proxy`` with respect to ``z``.
    weights_TE : array (..., T, E)
        The mixing weights (:func:`mixing_weights`).

    Examples
    --------
    >>> import numpy as np
    >>> z = np.zeros((2, 2)); m = np.array([[True, False], [False, True]])
    >>> v = np.array([[1.0, 0.0], [0.0, 3.0]])
    >>> proxy, grad, _ = task_loss(np, "softmax", z, m, v, 1, pre_softmax=True)
    >>> float(proxy)  # (0.5 * 1 + 0.5 * 3) / 2
    1.0
    >>> float(task_loss(np, "softmax", z, m, v, 1)[0])  # one chosen: weight 1
    2.0
    """
    t = z_TE.shape[-2]
    g, grad = _weights_and_vjp(xp, gate, z_TE, mask_TE, topk, scaling, values_TE, pre_softmax)
    proxy = xp.mean(xp.sum(g * values_TE, axis=-1), axis=-1)
    return proxy, -grad / t, g


def update_usage(xp: ModuleType, usage_PRE: Any, load_PRE: Any, memory: Any, topk: int,
                 tokens: int) -> Any:
    """``u <- rho u + (1 - rho) N F`` with ``F = c / (K T)``.

    Parameters
    ----------
    usage_PRE : array (P, R, E)
    load_PRE : int array (P, R, E)
        The step's loads.
    memory : float in [0, 1) or array broadcasting to (P, R, E)
        ``rho``.
    topk, tokens : int
        ``K`` and ``T`` of the step.

    Returns
    -------
    array (P, R, E)

    Examples
    --------
    >>> import numpy as np
    >>> update_usage(np, np.ones(4), np.array([4, 0, 2, 2]), 0.5, 1, 8).tolist()
    [1.5, 0.5, 1.0, 1.0]
    """
    n = usage_PRE.shape[-1]
    frac = xp.astype(load_PRE, usage_PRE.dtype) / (topk * tokens)
    return memory * usage_PRE + (1.0 - memory) * n * frac
