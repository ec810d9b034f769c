"""Hash routing: a fixed token-id to experts table (DeepSeek-V4's first layers, Hash Layers).

Each token carries a token id drawn from a Zipf law over a vocabulary of
``V`` ids (:func:`token_frequencies`); the table sends id ``v`` to ``K``
distinct experts fixed for the run (:func:`hash_table`). Nothing is learned
and no bias acts: an expert's load is the summed frequency of the ids that
map to it, so an id more frequent than ``K / N`` puts more than the mean
load on each of its experts by itself, and no table can balance it
(:func:`routesim.theory.hash_balance_limit`).

Shape legend: P points, R replicas, B sequences, T tokens, E experts, K
top-k, V vocabulary.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from .. import rng
from .count import counts_per_sequence

__all__ = ["token_frequencies", "hash_table", "token_ids", "route_hash"]

#: Stream id of the token-id draws (``rng.Stream.EXTRA`` upwards is free).
HASH_STREAM = rng.Stream.EXTRA + 33

#: Spawn key of the table draws (with the layer index after it).
_TABLE_KEY = 0x4841_5348  # "HASH"


def token_frequencies(vocab_size: int, exponent: float) -> np.ndarray:
    """Zipf token frequencies ``f_v`` proportional to ``(v + 1) ** -exponent``, summing to 1.

    Parameters
    ----------
    vocab_size : int >= 1
    exponent : float >= 0

    Returns
    -------
    ndarray (V,)

    Examples
    --------
    >>> token_frequencies(3, 1.0).round(4).tolist()     # 1, 1/2, 1/3 over 11/6
    [0.5455, 0.2727, 0.1818]
    """
    f = np.arange(1, vocab_size + 1, dtype=np.float64) ** -float(exponent)
    return f / f.sum()


def hash_table(vocab_size: int, num_experts: int, topk: int, seed: int,
               layer: int = 0) -> np.ndarray:
    """The id-to-experts table: ``K`` distinct experts per id, uniformly at random.

    Drawn once from ``SeedSequence(seed, spawn_key=(HASH, layer))``: common to
    every point and replica of a run, its own for each layer.

    Parameters
    ----------
    vocab_size, num_experts, topk : int
    seed : int
        ``run.seed``.
    layer : int
        Layer index (``model.num_layers``).

    Returns
    -------
    int ndarray (V, K)

    Examples
    --------
    >>> t = hash_table(1000, 8, 2, seed=0)
    >>> t.shape, bool((t[:, 0] != t[:, 1]).all()), sorted(set(t.ravel().tolist())) == list(range(8))
    ((1000, 2), True, True)
    """
    gen = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_TABLE_KEY, layer)))
    keys = gen.random((vocab_size, num_experts))
    return np.argsort(keys, axis=-1)[:, :topk].astype(np.int64)


def token_ids(xp: ModuleType, keys_PR: Any, step: int, token_start: int, n_tokens: int,
              cdf_V: Any) -> Any:
    """Token ids of tokens ``token_start ..`` of a step, drawn from the cumulative law ``cdf_V``.

    A token's id depends only on its global index in the step (chunking does
    not change it).

    Parameters
    ----------
    keys_PR : uint64 array (P, R)
    step, token_start, n_tokens : int
    cdf_V : float64 array (V,)
        Cumulative frequencies (last entry 1).

    Returns
    -------
    int array (P, R, T)

    Examples
    --------
    >>> import numpy as np
    >>> cdf = np.cumsum(token_frequencies(4, 0.0))
    >>> ids = token_ids(np, rng.point_keys(0, [0], 1), 0, 0, 4000, cdf)
    >>> counts = np.bincount(ids.ravel(), minlength=4)   # about 1000 each (sd 27)
    >>> bool(np.all(np.abs(counts - 1000) < 120))
    True
    """
    index = xp.arange(token_start, token_start + n_tokens, dtype=xp.uint64)
    u = rng.uniform(xp, keys_PR, step, HASH_STREAM, index, dtype=xp.float64)
    ids = xp.searchsorted(cdf_V, xp.reshape(u, (-1,)), side="right")
    ids = xp.minimum(ids, cdf_V.shape[0] - 1)
    return xp.reshape(ids, u.shape)


def route_hash(xp: ModuleType, ids_PRT: Any, table_PVK: Any, num_sequences: int,
               seq_length: int, num_experts: int) -> Any:
    """Tokens per (sequence, expert) of hash-routed tokens: int array (P, R, B, E).

    Parameters
    ----------
    ids_PRT : int array (P, R, T)
    table_PVK : int array (P, V, K)
        The table of each row of the point axis (one per layer).
    num_sequences, seq_length, num_experts : int

    Returns
    -------
    int array (P, R, B, E)

    Examples
    --------
    >>> import numpy as np
    >>> table = np.array([[[0, 1], [2, 3]]])               # id 0 -> {0, 1}, id 1 -> {2, 3}
    >>> ids = np.array([[[0, 0, 1, 0]]])                    # two sequences of two tokens
    >>> route_hash(np, ids, table, 2, 2, 4).tolist()
    [[[[2, 2, 0, 0], [1, 1, 1, 1]]]]
    """
    p, r, t = ids_PRT.shape
    v, k = table_PVK.shape[-2:]
    row = xp.reshape(xp.arange(p, dtype=xp.int64), (p, 1, 1, 1))
    at = ((row * v + xp.reshape(xp.astype(ids_PRT, xp.int64), (p, r, t, 1))) * k
          + xp.reshape(xp.arange(k, dtype=xp.int64), (1, 1, 1, k)))
    idx = xp.reshape(xp.take(xp.reshape(table_PVK, (-1,)), xp.reshape(at, (-1,))),
                     (p, r, t, k))
    return counts_per_sequence(xp, idx, num_sequences, seq_length, num_experts)
