"""Counting: tokens per (sequence, expert) and the share of displaced selections.

Step, micro-batch and computation-batch loads are sums of the counts per
sequence.

Shape legend: P points, R replicas, B sequences, L positions, T tokens
(``T = B * L``, sequence-major), E experts, K top-k.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._backend import bincount

__all__ = ["counts_per_sequence", "mask_counts_per_sequence", "displaced_share"]


def counts_per_sequence(xp: ModuleType, idx_PRTK: Any, num_sequences: int, seq_length: int,
                        num_experts: int) -> Any:
    """Tokens per (sequence, expert) from top-K indices: int array (P, R, B, E).

    Parameters
    ----------
    idx_PRTK : int array (P, R, T, K)
        Chosen experts of each token, sequences contiguous.
    num_sequences : int
        ``B``, with ``T = B * seq_length``.
    seq_length : int
        Tokens per sequence.
    num_experts : int
        ``E``.

    Returns
    -------
    int array (P, R, B, E)

    Examples
    --------
    Two sequences of two tokens, top-1 over three experts:

    >>> import numpy as np
    >>> idx = np.array([[0], [2], [2], [2]])[None, None]
    >>> counts_per_sequence(np, idx, 2, 2, 3).tolist()
    [[[[1, 0, 1], [0, 0, 2]]]]
    """
    p, r, t, k = idx_PRTK.shape
    pr = xp.reshape(xp.arange(p * r, dtype=xp.int64), (p, r, 1, 1))
    seq = xp.reshape(xp.arange(t, dtype=xp.int64) // seq_length, (1, 1, t, 1))
    ids = (pr * num_sequences + seq) * num_experts + xp.astype(idx_PRTK, xp.int64)
    flat = bincount(xp, ids, p * r * num_sequences * num_experts)
    return xp.reshape(flat, (p, r, num_sequences, num_experts))


def mask_counts_per_sequence(xp: ModuleType, mask_PRTE: Any, num_sequences: int,
                             seq_length: int) -> Any:
    """Tokens per (sequence, expert) from an assignment mask: (P, R, B, E).

    Parameters
    ----------
    mask_PRTE : bool array (P, R, T, E)
        Assignments, sequences contiguous.
    num_sequences : int
        ``B``, with ``T = B * seq_length``.
    seq_length : int
        Tokens per sequence.

    Returns
    -------
    int array (P, R, B, E)

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.array([[True, False], [True, True], [False, True], [False, False]])
    >>> mask_counts_per_sequence(np, mask[None, None], 2, 2).tolist()
    [[[[2, 1], [0, 1]]]]
    """
    p, r, t, e = mask_PRTE.shape
    m = xp.reshape(xp.astype(mask_PRTE, xp.int64), (p, r, num_sequences, seq_length, e))
    return xp.sum(m, axis=3)


def displaced_share(xp: ModuleType, idx_PRTK: Any, unbiased_idx_PRTK: Any) -> Any:
    """Share of the selections not in the unbiased top-K, per (P, R).

    Parameters
    ----------
    idx_PRTK : int array (P, R, T, K)
        The biased selection.
    unbiased_idx_PRTK : int array (P, R, T, K)
        The selection without the bias.

    Returns
    -------
    float array (P, R)

    Examples
    --------
    Two tokens, top-2: one of the four selections moved (expert 3 for 1):

    >>> import numpy as np
    >>> idx = np.array([[0, 1], [2, 3]])[None, None]
    >>> plain = np.array([[1, 0], [2, 1]])[None, None]
    >>> displaced_share(np, idx, plain).tolist()
    [[0.25]]
    """
    same = xp.any(idx_PRTK[..., :, None] == unbiased_idx_PRTK[..., None, :], axis=-1)
    k = idx_PRTK.shape[-1] * idx_PRTK.shape[-2]
    return 1.0 - xp.sum(xp.astype(same, xp.float64), axis=(-2, -1)) / k
