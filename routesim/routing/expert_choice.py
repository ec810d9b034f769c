"""Expert Choice routing: each expert picks its tokens (Zhou et al. 2022).

Inside each block of ``T`` consecutive tokens (sequence-major order), expert
``i`` takes the ``c = K * T / N`` tokens with the largest gate scores in its
column. Every expert gets exactly ``c`` tokens, so the load is perfectly
balanced; a token gets anywhere from 0 to ``N`` experts (``K`` on average).
The price is causality: whether an early token is taken depends on the
scores of the later tokens of its block (:mod:`routesim.leakage`).

Ties at an expert's threshold go to the earlier token, so the result is
exact and the same on every backend. A per-expert bias (additive, or
multiplicative and positive) shifts a whole column and leaves its ranking
unchanged: Expert Choice ignores it.

Shape legend: P points, R replicas, T tokens, E experts, J = E + 1 possible
numbers of experts per token. Functions accept any leading axes in place of
(P, R).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..exceptions import ConfigError
from .select import kth_largest

__all__ = [
    "expert_choice_capacity",
    "expert_choice_mask",
    "experts_per_token",
    "experts_per_token_histogram",
    "unrouted_share",
]


def expert_choice_capacity(block: int, topk: int, num_experts: int) -> int:
    """Tokens each expert takes from a block: ``K * T / N``.

    Parameters
    ----------
    block : int > 0
        ``T``, tokens per block.
    topk : int > 0
        ``K``, average experts per token.
    num_experts : int > 0
        ``N``.

    Returns
    -------
    int

    Raises
    ------
    ConfigError
        If ``K * T / N`` is not an integer.

    Examples
    --------
    >>> expert_choice_capacity(512, 2, 16)
    64
    """
    if block < 1 or (block * topk) % num_experts:
        raise ConfigError(f"router.expert_choice_block = {block}: K*T/N = {topk}*{block}/"
                          f"{num_experts} must be a positive integer")
    return block * topk // num_experts


def expert_choice_mask(xp: ModuleType, scores_PRTE: Any, topk: int, block: int) -> Any:
    """Assignments of Expert Choice: each expert's top ``K*T/N`` tokens per block.

    Parameters
    ----------
    xp : namespace
        Array namespace of ``scores_PRTE``.
    scores_PRTE : array (..., T, E)
        Gate scores; the token axis is split into consecutive blocks.
    topk : int > 0
        ``K``.
    block : int > 0
        Tokens per block; must divide ``T``, and ``K * block / E`` must be
        an integer.

    Returns
    -------
    bool array (..., T, E)
        True where the expert takes the token.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.3], [0.2, 0.4]])
    >>> expert_choice_mask(np, s, 1, 4).astype(int).tolist()
    [[1, 0], [1, 0], [0, 1], [0, 1]]
    """
    *lead, t, e = scores_PRTE.shape
    if block < 1 or t % block:
        raise ConfigError(f"router.expert_choice_block = {block}: must divide the {t} tokens "
                          "being routed")
    cap = expert_choice_capacity(block, topk, e)
    shape = tuple(lead) + (t // block, block, e)
    x = xp.reshape(scores_PRTE, shape)
    thr = kth_largest(xp, x, cap, axis=-2)[..., None, :]
    above = x > thr
    tie = x == thr
    need = cap - xp.sum(xp.astype(above, xp.int64), axis=-2, keepdims=True)
    n_tie = xp.sum(xp.astype(tie, xp.int64), axis=-2, keepdims=True)
    if not bool(xp.all(n_tie == need)):  # some tie straddles a threshold: earliest first
        tie = tie & (xp.cumulative_sum(xp.astype(tie, xp.int64), axis=-2) <= need)
    return xp.reshape(above | tie, tuple(lead) + (t, e))


def experts_per_token(xp: ModuleType, mask_PRTE: Any) -> Any:
    """Number of experts each token got: int array (..., T).

    Parameters
    ----------
    mask_PRTE : bool array (..., T, E)
        Expert Choice assignments.

    Returns
    -------
    int array (..., T)

    Examples
    --------
    >>> import numpy as np
    >>> experts_per_token(np, np.array([[True, True], [False, False]])).tolist()
    [2, 0]
    """
    return xp.sum(xp.astype(mask_PRTE, xp.int64), axis=-1)


def experts_per_token_histogram(xp: ModuleType, mask_PRTE: Any) -> Any:
    """Tokens with 0, 1, ..., E experts: int array (..., E + 1).

    Parameters
    ----------
    xp : namespace
        Array namespace of ``mask_PRTE``.
    mask_PRTE : bool array (..., T, E)
        Assignments.

    Returns
    -------
    int array (..., E + 1)
        Entry ``j`` counts the tokens with exactly ``j`` experts.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[True, True], [False, False], [True, False]])
    >>> experts_per_token_histogram(np, m).tolist()
    [1, 1, 1]
    """
    e = mask_PRTE.shape[-1]
    per_token = experts_per_token(xp, mask_PRTE)
    hits = per_token[..., None] == xp.arange(e + 1, dtype=per_token.dtype)
    return xp.sum(xp.astype(hits, xp.int64), axis=-2)


def unrouted_share(xp: ModuleType, mask_PRTE: Any) -> Any:
    """Share of tokens that no expert took: float64 array (...).

    Parameters
    ----------
    mask_PRTE : bool array (..., T, E)
        Expert Choice assignments.

    Returns
    -------
    float64 array (...)

    Examples
    --------
    >>> import numpy as np
    >>> float(unrouted_share(np, np.array([[True, False], [False, False]])))
    0.5
    """
    t = mask_PRTE.shape[-2]
    none = ~xp.any(mask_PRTE, axis=-1)
    return xp.sum(xp.astype(none, xp.float64), axis=-1) / t
