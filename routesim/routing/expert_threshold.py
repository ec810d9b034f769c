"""Expert Threshold routing and token shuffling before Expert Choice.

Expert Threshold (ET): expert ``i`` keeps a threshold ``tau_i``, an EMA of
the score it would have needed to take its ``K * T / N`` best tokens of past
batches, and takes every token whose score is above it. A token's routing
depends only on its own scores and on the past, so ET is causal by
construction, and its loads balance in expectation (each expert takes about
the ``R = K / N`` upper tail of its scores); a token gets 0 to ``N`` experts.

Token shuffle: a random permutation of a micro-batch's tokens, drawn
independently of their content, before Expert Choice cuts it into blocks;
each block then mixes tokens of every sequence (the Loss-Free paper's
mitigation experiment). The permutation is undone after routing.

Shape legend: P points, R replicas, T tokens, E experts.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .. import rng
from .expert_choice import expert_choice_mask
from .select import kth_largest

__all__ = ["threshold_mask", "threshold_estimate", "update_threshold", "token_permutation",
           "shuffled_expert_choice_mask", "SHUFFLE_STREAM"]

#: Stream id of the shuffle draws (``rng.Stream.EXTRA`` upwards is free).
SHUFFLE_STREAM = rng.Stream.EXTRA + 34


def threshold_mask(xp: ModuleType, scores_PRTE: Any, threshold_PRE: Any) -> Any:
    """Assignments of ET: score above the expert's threshold, bool (P, R, T, E).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[[[0.9, 0.1], [0.4, 0.6]]]])
    >>> threshold_mask(np, s, np.array([[[0.5, 0.5]]])).astype(int).tolist()
    [[[[1, 0], [0, 1]]]]
    """
    return scores_PRTE > threshold_PRE[..., None, :]


def threshold_estimate(xp: ModuleType, scores_PRTE: Any, topk: int) -> Any:
    """Each expert's ``K * T / N``-th largest score over the tokens (the one-batch threshold).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[[[0.9, 0.1], [0.4, 0.6], [0.2, 0.3], [0.7, 0.8]]]])  # T=4, E=2, K=1
    >>> threshold_estimate(np, s, 1).tolist()                                 # 2nd largest
    [[[0.7, 0.6]]]
    """
    t, e = scores_PRTE.shape[-2:]
    c = max(1, (t * topk) // e)
    return kth_largest(xp, scores_PRTE, c, axis=-2)


def update_threshold(threshold_PRE: Any, estimate_PRE: Any, ema: float) -> Any:
    """``tau = ema * tau + (1 - ema) * estimate``.

    Examples
    --------
    >>> float(update_threshold(0.5, 0.7, 0.75))
    0.55
    """
    return ema * threshold_PRE + (1.0 - ema) * estimate_PRE


def token_permutation(xp: ModuleType, keys_PR: Any, step: int, token_start: int,
                      n_tokens: int) -> Any:
    """A random permutation of ``n_tokens`` tokens per (P, R), int (P, R, T).

    Drawn from the counter RNG at the tokens' global indices, independent of
    their content.

    Examples
    --------
    >>> import numpy as np
    >>> perm = token_permutation(np, rng.point_keys(0, [0], 2), 0, 0, 6)
    >>> perm.shape, sorted(perm[0, 0].tolist())
    ((1, 2, 6), [0, 1, 2, 3, 4, 5])
    """
    index = xp.arange(token_start, token_start + n_tokens, dtype=xp.uint64)
    u = rng.uniform(xp, keys_PR, step, SHUFFLE_STREAM, index, dtype=xp.float64)
    # 24-bit uniforms tie in large batches: the token's position breaks ties, so the
    # sort keys are distinct and every backend gives the same permutation
    bits = xp.astype(xp.floor(u * float(1 << 24)), xp.int64)
    return xp.argsort(bits * n_tokens + xp.arange(n_tokens, dtype=xp.int64), axis=-1)


def shuffled_expert_choice_mask(xp: ModuleType, scores_PRTE: Any, topk: int, block: int,
                                perm_PRT: Any) -> Any:
    """Expert Choice on the tokens in the order ``perm``, mapped back: bool (P, R, T, E).

    Examples
    --------
    Four tokens in blocks of two, K = 1 over two experts; the identity
    permutation is plain Expert Choice:

    >>> import numpy as np
    >>> s = np.array([[[[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.2, 0.4]]]])
    >>> plain = expert_choice_mask(np, s, 1, 2)
    >>> bool((shuffled_expert_choice_mask(np, s, 1, 2, np.arange(4)[None, None]) == plain).all())
    True
    >>> shuffled_expert_choice_mask(np, s, 1, 2, np.array([[[0, 2, 1, 3]]])).astype(int).tolist()
    [[[[1, 0], [1, 0], [0, 1], [0, 1]]]]
    """
    idx = xp.broadcast_to(perm_PRT[..., None], perm_PRT.shape + (scores_PRTE.shape[-1],))
    shuffled = xp.take_along_axis(scores_PRTE, idx, axis=-2)
    mask = expert_choice_mask(xp, shuffled, topk, block)
    inverse = xp.argsort(perm_PRT, axis=-1)
    inv = xp.broadcast_to(inverse[..., None], idx.shape)
    return xp.take_along_axis(mask, inv, axis=-2)
