"""Token-choice selection: biased scores, group-limited top-K, gate weights.

The router reads in one direction, as in Megatron-LM and torchtitan:

1. scores ``s = gate(z)``;
2. selection scores ``s + b`` (additive), ``s * b`` (multiplicative), or
   ``z + b`` for quantile balancing (a bias on the raw logits);
3. optional group-limited top-K: keep the ``group_topk`` groups with the
   largest sum of their top ``topk // group_topk`` selection scores, mask the
   others with -inf;
4. top-K of the selection scores: ``K`` distinct experts per token; among
   equal selection scores the lower expert index wins (and the lower group
   index among equal group scores), on every backend and kernel;
5. weights from the *unbiased* ``s`` at the chosen experts (the bias only
   picks experts): sigmoid-type gates renormalised over the K when
   ``K > 1``; softmax over the K chosen logits (``router.pre_softmax =
   false``, Megatron's default) or the full-softmax probabilities
   (``pre_softmax = true``); times ``topk_scaling_factor``;
6. optional capacity dropping (:mod:`routesim.routing.capacity`) and
   counting (:mod:`routesim.routing.count`); :func:`routesim.routing.block.route_block`
   runs the whole pipeline on a block of tokens.

Shape legend: P points, R replicas, B sequences, L positions, T tokens
(``T = B * L``, sequence-major), E experts, K top-k, G groups.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .._backend import is_cupy, is_numpy, one_hot, topk_indices

__all__ = [
    "selection_scores",
    "group_limit",
    "select_topk",
    "gate_weights",
    "kth_largest",
    "quantile_dual_estimate",
]


def selection_scores(xp: ModuleType, s_PRTE: Any, bias_PRE: Any, bias_mode: str) -> Any:
    """Scores that decide the selection: ``s + b`` or ``s * b``.

    Parameters
    ----------
    xp : namespace
    s_PRTE : array (P, R, T, E)
        Gate scores.
    bias_PRE : array (P, R, E)
        Expert bias, broadcast over the tokens.
    bias_mode : {"additive", "multiplicative"}

    Returns
    -------
    array (P, R, T, E)

    Examples
    --------
    >>> import numpy as np
    >>> s = np.full((1, 1, 1, 2), 0.5); b = np.array([[[0.1, 2.0]]])
    >>> selection_scores(np, s, b, "additive").tolist()
    [[[[0.6, 2.5]]]]
    >>> selection_scores(np, s, b, "multiplicative").tolist()
    [[[[0.05, 1.0]]]]
    """
    b = bias_PRE[:, :, None, :]
    return s_PRTE * b if bias_mode == "multiplicative" else s_PRTE + b


def group_limit(xp: ModuleType, scores_TE: Any, num_groups: int, group_topk: int,
                topk: int) -> Any:
    """Mask all but the best ``group_topk`` of ``num_groups`` expert groups with -inf.

    A group's score is the sum of its top ``topk // group_topk`` scores
    (DeepSeek-V3, Megatron ``group_limited_topk``). Works on any leading axes.

    Parameters
    ----------
    scores_TE : array (..., E)
        Selection scores (biased).
    num_groups : int
        Expert groups (contiguous, ``E / num_groups`` experts each).
    group_topk : int
        Groups kept per token.
    topk : int
        ``K``.

    Returns
    -------
    array (..., E)
        ``scores_TE`` with the experts of the other groups at -inf.

    Examples
    --------
    Two groups of two; the second group's top score sum (0.9) wins:

    >>> import numpy as np
    >>> group_limit(np, np.array([0.4, 0.3, 0.9, 0.0]), 2, 1, 1).tolist()
    [-inf, -inf, 0.9, 0.0]
    """
    *lead, n = scores_TE.shape
    per_group = n // num_groups
    grouped = xp.reshape(scores_TE, tuple(lead) + (num_groups, per_group))
    m = topk // group_topk
    top_idx = topk_indices(xp, grouped, m)
    # summed largest first, so the float sum (and its ties) is the same on every backend
    top = -xp.sort(-xp.take_along_axis(grouped, top_idx, axis=-1), axis=-1)
    group_score = xp.sum(top, axis=-1)
    keep_groups = one_hot(xp, topk_indices(xp, group_score, group_topk), num_groups)
    keep = xp.reshape(xp.broadcast_to(keep_groups[..., None], tuple(grouped.shape)),
                      tuple(lead) + (n,))
    return xp.where(keep, scores_TE, -math.inf)


def select_topk(xp: ModuleType, scores: Any, topk: int, num_groups: int | None = None,
                group_topk: int | None = None) -> Any:
    """Indices (..., K) of the K distinct experts with the largest scores.

    Among equal scores the lower expert index wins: the set is the first K
    of a stable sort by ``(-score, index)``. With groups, equal group scores
    go to the lower group index.

    Parameters
    ----------
    scores : array (..., E)
        Selection scores (biased).
    topk : int
        ``K``.
    num_groups, group_topk : int or None
        Group-limited routing (:func:`group_limit`) when both are set and
        ``num_groups > 1``.

    Returns
    -------
    int array (..., K)

    Examples
    --------
    >>> import numpy as np
    >>> sorted(select_topk(np, np.array([0.1, 0.9, 0.5, 0.7]), 2).tolist())
    [1, 3]
    >>> sorted(select_topk(np, np.array([0.5, 0.9, 0.5, 0.5]), 2).tolist())
    [0, 1]
    """
    if num_groups is not None and group_topk is not None and num_groups > 1:
        scores = group_limit(xp, scores, num_groups, group_topk, topk)
    return topk_indices(xp, scores, topk)


def gate_weights(xp: ModuleType, s: Any, idx: Any, score_function: str, topk: int,
                 scaling_factor: float | None = None, pre_softmax: bool = False) -> Any:
    """Mixing weights (..., K) from the unbiased scores at the chosen experts.

    Parameters
    ----------
    xp : namespace
    s : array (..., E)
        Gate scores (softmax probabilities for ``softmax``).
    idx : int array (..., K)
        Chosen experts.
    score_function : {"softmax", "sigmoid", "sqrtsoftplus"}
    topk : int
    scaling_factor : float or None
        ``topk_scaling_factor``.
    pre_softmax : bool
        Softmax only: True gives the full-softmax probabilities of the
        chosen experts (Megatron ``moe_router_pre_softmax``); False (the
        default, as Megatron's) the softmax over the K chosen logits, which
        sums to 1 per token.

    Returns
    -------
    array (..., K)

    Notes
    -----
    The softmax over the chosen logits is ``exp(z_i) / sum_{j in K} exp(z_j)
    = s_i / sum_{j in K} s_j``: the full-softmax probabilities renormalised
    over the K. Sigmoid-type gates are renormalised when ``K > 1`` (Megatron
    divides by the sum plus 1e-20).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([0.5, 0.25, 0.25]); idx = np.array([0, 1])
    >>> gate_weights(np, s, idx, "softmax", 2).tolist()  # sums to 1
    [0.6666666666666666, 0.3333333333333333]
    >>> gate_weights(np, s, idx, "softmax", 2, pre_softmax=True).tolist()
    [0.5, 0.25]
    """
    w = xp.take_along_axis(s, idx, axis=-1)
    if score_function == "softmax":
        if not pre_softmax:
            w = w / xp.sum(w, axis=-1, keepdims=True)
    elif topk > 1:
        w = w / (xp.sum(w, axis=-1, keepdims=True) + 1e-20)
    if scaling_factor is not None:
        w = w * scaling_factor
    return w


def kth_largest(xp: ModuleType, x: Any, k: int, axis: int = -1) -> Any:
    """The k-th largest value (k >= 1) along an axis, that axis removed.

    Parameters
    ----------
    x : array
    k : int >= 1
    axis : int

    Returns
    -------
    array

    Examples
    --------
    >>> import numpy as np
    >>> kth_largest(np, np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 4.0]]), 2).tolist()
    [2.0, 4.0]
    """
    if is_numpy(xp) or is_cupy(xp):  # CuPy's sort takes no ``descending``
        return -xp.take(xp.partition(-x, k - 1, axis=axis), k - 1, axis=axis)
    srt = xp.sort(x, axis=axis, descending=True)
    return xp.squeeze(xp.take(srt, xp.asarray([k - 1]), axis=axis), axis=axis)


def quantile_dual_estimate(xp: ModuleType, z_PRTE: Any, bias_PRE: Any, topk: int,
                           target_share_PE: Any = None) -> Any:
    """One-shot dual estimate of the quantile-balancing bias, as ``b = -beta``.

    Megatron ``qb_dual_update``: ``alpha_t`` is token t's (K+1)-th largest of
    ``z - beta``; the new ``beta_i`` is the ``(T*K/N + 1)``-th largest of
    ``z[:, i] - alpha`` over the tokens. Returned with the sign of a bias
    that is *added* to the logits, shape (P, R, E).

    Parameters
    ----------
    z_PRTE : array (P, R, T, E)
        Router logits.
    bias_PRE : array (P, R, E)
        The current bias (``-beta``).
    topk : int
        ``K``.
    target_share_PE : array (P, E), optional
        Target load shares (None: uniform, ``T*K/N`` tokens per expert).

    Returns
    -------
    array (P, R, E)

    Examples
    --------
    Four tokens, two experts, top-1, no bias: ``alpha`` is each token's
    smaller logit (0, 0, 0, 1); expert ``i`` keeps the ``T*K/N + 1 = 3``-rd
    largest of ``z_i - alpha`` (of 1, 0, 3, 1 and of 0, 2, 0, 0) as
    ``beta_i``:

    >>> import numpy as np
    >>> z = np.array([[[[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [2.0, 1.0]]]])
    >>> (quantile_dual_estimate(np, z, np.zeros((1, 1, 2)), 1) + 0.0).tolist()
    [[[-1.0, 0.0]]]

    With target shares ``Q`` (P, E) expert ``i`` keeps the
    ``(floor(T K Q_i) + 1)``-th largest instead: shares (0.75, 0.25) give
    expert 0 the 4th of (1, 0, 3, 1) and expert 1 the 2nd of (0, 2, 0, 0),
    both 0: the bias no longer holds expert 0 back.

    >>> (quantile_dual_estimate(np, z, np.zeros((1, 1, 2)), 1,
    ...                         np.array([[0.75, 0.25]])) + 0.0).tolist()
    [[[0.0, 0.0]]]
    """
    t, e = z_PRTE.shape[-2], z_PRTE.shape[-1]
    alpha = kth_largest(xp, z_PRTE + bias_PRE[:, :, None, :], topk + 1, axis=-1)
    if target_share_PE is None:
        beta = kth_largest(xp, z_PRTE - alpha[..., None], t * topk // e + 1, axis=2)
        return -beta
    share = np.asarray(target_share_PE, dtype=np.float64)
    rank = np.clip(np.floor(t * topk * share + 1e-9).astype(np.int64), 0, t - 1)  # 0-based
    gap = z_PRTE - alpha[..., None]
    srt = (-xp.sort(-gap, axis=2) if is_numpy(xp) or is_cupy(xp)
           else xp.sort(gap, axis=2, descending=True))
    idx = xp.broadcast_to(xp.reshape(xp.asarray(rank), (share.shape[0], 1, 1, e)),
                          srt.shape[:2] + (1, e))
    return -xp.take_along_axis(srt, idx, axis=2)[:, :, 0, :]
