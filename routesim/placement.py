"""Experts on expert-parallel ranks: rank loads, the straggler ratio, Gini, EPLB-style plans.

A placement is a matrix ``share_EK``: the share of expert ``e``'s load that
rank ``k`` computes. A plain placement is one-hot (each expert on one rank);
with replicas (EPLB's redundant experts) an expert with ``n`` copies puts
``1 / n`` of its load on the rank of each copy. Rank loads are then
``load_XE @ share_EK``, and the step time of an expert-parallel layer is set
by the most loaded rank: the *straggler ratio* ``max_k / mean_k`` of the
rank loads (1 when balanced).

The planner (:func:`plan_placement`) is the EPLB baseline: give each
redundant slot to the expert with the largest load per copy
(:func:`replicate_hottest`), then pack the slots heaviest first, each on the
least loaded rank that has a free slot (:func:`greedy_pack`); every rank
holds the same number of slots.

Shape legend: X any leading axes (step, point, replica, batch), E experts,
K ranks, Q slots (experts plus replicas).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .exceptions import ConfigError

__all__ = ["contiguous_map", "placement_matrix", "rank_loads", "straggler_ratio", "gini",
           "replicate_hottest", "greedy_pack", "plan_placement"]


def contiguous_map(num_experts: int, ep_size: int) -> np.ndarray:
    """Rank of each expert when ranks hold contiguous blocks: ``i // (N / ep_size)``.

    Parameters
    ----------
    num_experts : int
        ``N``.
    ep_size : int
        Ranks; must divide ``N``.

    Returns
    -------
    rank_E : int ndarray (E,)

    Examples
    --------
    >>> contiguous_map(8, 4).tolist()
    [0, 0, 1, 1, 2, 2, 3, 3]
    >>> contiguous_map(8, 3)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: ep_size = 3: must divide num_experts (8)
    """
    if ep_size < 1 or num_experts % ep_size:
        raise ConfigError(f"ep_size = {ep_size}: must divide num_experts ({num_experts})")
    return np.arange(num_experts) // (num_experts // ep_size)


def placement_matrix(rank_E: Sequence[int], ep_size: int) -> np.ndarray:
    """The one-hot placement ``share_EK`` of a rank map.

    Parameters
    ----------
    rank_E : sequence of int
        Rank of each expert, in ``[0, ep_size)``.
    ep_size : int

    Returns
    -------
    share_EK : float ndarray (E, K)

    Examples
    --------
    >>> placement_matrix([0, 1, 1], 2).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    rank = np.asarray(rank_E, dtype=np.int64)
    if rank.size and (rank.min() < 0 or rank.max() >= ep_size):
        raise ConfigError(f"rank_E: ranks must lie in [0, {ep_size})")
    return np.eye(ep_size)[rank]


def rank_loads(load_XE: Any, share_XEK: Any) -> np.ndarray:
    """Load of each rank: ``sum_e load_e share_ek``.

    Parameters
    ----------
    load_XE : array (..., E)
        Expert loads.
    share_XEK : array (E, K) or (..., E, K)
        Placement (broadcast against the leading axes of ``load_XE``).

    Returns
    -------
    ndarray (..., K)

    Examples
    --------
    >>> rank_loads([4, 2, 2, 0], placement_matrix([0, 0, 1, 1], 2)).tolist()
    [6.0, 2.0]
    """
    load = np.asarray(load_XE, dtype=np.float64)
    share = np.asarray(share_XEK, dtype=np.float64)
    return np.einsum("...e,...ek->...k", load, share)


def straggler_ratio(rank_XK: Any) -> np.ndarray:
    """``max_k / mean_k`` of the rank loads (1: balanced; NaN for an empty batch).

    Parameters
    ----------
    rank_XK : array (..., K)

    Returns
    -------
    ndarray (...)

    Examples
    --------
    >>> straggler_ratio([[6.0, 2.0], [4.0, 4.0]]).tolist()
    [1.5, 1.0]
    """
    rank = np.asarray(rank_XK, dtype=np.float64)
    mean = rank.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return rank.max(axis=-1) / mean


def gini(x_XE: Any) -> np.ndarray:
    """Gini coefficient of the last axis: ``sum_ij |x_i - x_j| / (2 n^2 mean)``.

    0 for equal values, ``(n - 1) / n`` when one entry holds everything.

    Parameters
    ----------
    x_XE : array (..., E), >= 0

    Returns
    -------
    ndarray (...)

    Examples
    --------
    >>> gini([[1, 1, 1, 1], [0, 0, 0, 4]]).tolist()
    [0.0, 0.75]
    """
    x = np.sort(np.asarray(x_XE, dtype=np.float64), axis=-1)
    n = x.shape[-1]
    i = np.arange(1, n + 1, dtype=np.float64)
    total = x.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (2.0 * (x * i).sum(axis=-1) / (n * total)) - (n + 1.0) / n


def replicate_hottest(load_XE: Any, extra: int) -> np.ndarray:
    """Copies of each expert after adding ``extra`` replicas, hottest first (EPLB).

    Each replica goes to the expert with the largest load per copy
    (``load / copies``); ties go to the lower expert index.

    Parameters
    ----------
    load_XE : array (..., E)
        Expected (or measured mean) expert loads.
    extra : int >= 0
        Redundant slots.

    Returns
    -------
    copies_XE : int ndarray (..., E), each >= 1, summing to ``E + extra``

    Examples
    --------
    >>> replicate_hottest([8.0, 3.0, 1.0], 3).tolist()  # 8 -> 4+4 -> 8/3 each, then 3
    [3, 2, 1]
    """
    load = np.asarray(load_XE, dtype=np.float64)
    copies = np.ones(load.shape, dtype=np.int64)
    for _ in range(int(extra)):  # one slot at a time, all leading rows at once
        hottest = np.argmax(load / copies, axis=-1)
        np.put_along_axis(copies, hottest[..., None],
                          np.take_along_axis(copies, hottest[..., None], -1) + 1, -1)
    return copies


def greedy_pack(load_XE: Any, copies_XE: Any, ep_size: int) -> np.ndarray:
    """Balanced packing: slots heaviest first, each on the least loaded rank with room.

    An expert with ``n`` copies contributes ``n`` slots of load ``load / n``.
    Every rank holds ``Q / ep_size`` slots; two copies of one expert may
    share a rank only if no other rank has room (they then add up).

    Parameters
    ----------
    load_XE : array (..., E)
    copies_XE : int array (..., E)
        From :func:`replicate_hottest` (ones: no replication). The total
        ``Q`` must be the same for every row and a multiple of ``ep_size``.
    ep_size : int

    Returns
    -------
    share_XEK : ndarray (..., E, K)
        Share of each expert's load on each rank (rows sum to 1).

    Examples
    --------
    >>> share = greedy_pack([5.0, 4.0, 3.0, 2.0], [1, 1, 1, 1], 2)
    >>> share.argmax(-1).tolist(), rank_loads([5.0, 4.0, 3.0, 2.0], share).tolist()
    ([0, 1, 1, 0], [7.0, 7.0])
    """
    load = np.asarray(load_XE, dtype=np.float64)
    copies = np.asarray(copies_XE, dtype=np.int64)
    lead, n = load.shape[:-1], load.shape[-1]
    load, copies = load.reshape(-1, n), np.broadcast_to(copies, lead + (n,)).reshape(-1, n)
    slots = int(copies[0].sum())
    if np.any(copies.sum(-1) != slots) or slots % ep_size:
        raise ConfigError(f"copies_XE: {slots} slots per row, must be equal in every row and a "
                          f"multiple of ep_size ({ep_size})")
    rows = load.shape[0]
    per_rank = slots // ep_size
    # the slots of every row: expert of each slot and its load, heaviest first
    expert_RQ = np.stack([np.repeat(np.arange(n), c) for c in copies])
    slot_load_RQ = np.take_along_axis(load / copies, expert_RQ, -1)
    order = np.argsort(-slot_load_RQ, axis=-1, kind="stable")
    expert_RQ = np.take_along_axis(expert_RQ, order, -1)
    slot_load_RQ = np.take_along_axis(slot_load_RQ, order, -1)
    rank_load = np.zeros((rows, ep_size))
    used = np.zeros((rows, ep_size), dtype=np.int64)
    share = np.zeros((rows, n, ep_size))
    r = np.arange(rows)
    for q in range(slots):  # one slot at a time, every row at once
        room = np.where(used < per_rank, rank_load, np.inf)
        k = np.argmin(room, axis=-1)
        rank_load[r, k] += slot_load_RQ[:, q]
        used[r, k] += 1
        e = expert_RQ[:, q]
        share[r, e, k] += 1.0 / copies[r, e]
    return share.reshape(lead + (n, ep_size))


def plan_placement(load_XE: Any, ep_size: int, replicas: int = 0) -> np.ndarray:
    """The EPLB baseline: :func:`replicate_hottest` then :func:`greedy_pack`.

    Parameters
    ----------
    load_XE : array (..., E)
        Expected expert loads (e.g. the mean load over a window of steps).
    ep_size : int
    replicas : int >= 0
        Redundant slots; ``E + replicas`` must be a multiple of ``ep_size``.

    Returns
    -------
    share_XEK : ndarray (..., E, K)

    Examples
    --------
    One hot expert on four ranks (mean rank load 6): its rank carries 12;
    four replicas split it into five copies of 2, and the ranks balance.

    >>> load = [10.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    >>> float(straggler_ratio(rank_loads(load, plan_placement(load, 4))))
    2.0
    >>> float(straggler_ratio(rank_loads(load, plan_placement(load, 4, replicas=4))))
    1.0
    """
    load = np.asarray(load_XE, dtype=np.float64)
    return greedy_pack(load, replicate_hottest(load, replicas), ep_size)
