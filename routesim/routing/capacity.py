"""Expert capacity and dropping of the assignments beyond it.

Capacity is ``ceil((T * K / N) * C)`` tokens per expert and micro-batch
(Megatron's floating-point order); the assignments beyond it are dropped by
gate weight (``probs``) or in Megatron's [sequence position, batch] order
(``position``).

Shape legend: P points, R replicas, B sequences, L positions, T tokens
(``T = B * L``, sequence-major), E experts.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from .._backend import argsort_stable

__all__ = ["capacity", "drop_to_capacity"]


def capacity(num_tokens: int, topk: int, num_experts: int, capacity_factor: float | None) -> int:
    """Tokens an expert may take: ``ceil((T * K / N) * C)``, or T when dropless.

    Evaluated in Megatron's floating-point order (``get_capacity`` with
    ``num_tokens = T * K``); another order can round to a neighbouring
    integer (``T, K, N, C = 120, 6, 8, 1.1``: ``(720 / 8) * 1.1`` is
    ``99.00000000000001``, so 100, while ``1.1 * 120 * 6 / 8`` is exactly 99).

    Examples
    --------
    >>> capacity(4096, 8, 64, 1.25)
    640
    >>> capacity(120, 6, 8, 1.1)
    100
    """
    if capacity_factor is None or math.isinf(capacity_factor):
        return num_tokens
    return min(num_tokens, math.ceil((num_tokens * topk / num_experts) * capacity_factor))


def drop_to_capacity(xp: ModuleType, mask_PRTE: Any, weight_PRTE: Any, cap: int, policy: str,
                     num_sequences: int, seq_length: int) -> Any:
    """Keep at most ``cap`` tokens per expert (and per point, replica).

    Parameters
    ----------
    mask_PRTE : bool array (P, R, T, E)
        Routed assignments of one micro-batch, tokens sequence-major.
    weight_PRTE : array (P, R, T, E)
        Gate weight of each assignment (ignored where ``mask`` is false).
    cap : int
        Capacity per expert.
    policy : {"probs", "position"}
        ``probs`` keeps the largest weights; ``position`` the first tokens in
        Megatron's [sequence position, batch] order.
    num_sequences, seq_length : int
        Micro-batch layout ``T = B * L``.

    Returns
    -------
    bool array (P, R, T, E)
        The kept assignments.

    Examples
    --------
    Three tokens (one sequence) all on expert 0, capacity 2: ``probs`` keeps
    the two largest weights, ``position`` the first two tokens:

    >>> import numpy as np
    >>> mask = np.array([[True], [True], [True]])[None, None]
    >>> w = np.array([[0.2], [0.9], [0.5]])[None, None]
    >>> drop_to_capacity(np, mask, w, 2, "probs", 1, 3)[0, 0, :, 0].tolist()
    [False, True, True]
    >>> drop_to_capacity(np, mask, w, 2, "position", 1, 3)[0, 0, :, 0].tolist()
    [True, True, False]
    """
    p, r, t, e = mask_PRTE.shape
    if cap >= t:
        return mask_PRTE
    if policy == "position":
        m = xp.reshape(mask_PRTE, (p, r, num_sequences, seq_length, e))
        m = xp.permute_dims(m, (0, 1, 3, 2, 4))  # [position, batch] order
        m = xp.reshape(m, (p, r, t, e))
        cum = xp.cumulative_sum(xp.astype(m, xp.int32), axis=2)
        kept = m & (cum <= cap)
        kept = xp.reshape(kept, (p, r, seq_length, num_sequences, e))
        return xp.reshape(xp.permute_dims(kept, (0, 1, 3, 2, 4)), (p, r, t, e))
    if policy != "probs":
        raise ValueError(f"token_drop_policy = {policy!r}: must be 'probs' or 'position'")
    key = xp.where(mask_PRTE, weight_PRTE, -1.0)
    order = argsort_stable(xp, -key, axis=2)
    rank = argsort_stable(xp, order, axis=2)
    return mask_PRTE & (rank < cap)
