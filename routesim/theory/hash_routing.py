"""The balance limit of hash routing (a fixed token-id to experts table).

With token-id frequencies ``f_v`` and a table sending id ``v`` to ``K``
experts, expert ``e`` receives the share ``s_e = sum_{v -> e} f_v`` of the
tokens, and the mean is ``K / N``. Over a long window the counting noise
averages out and MaxVio tends to the table's own imbalance

    MaxVio_inf = (N / K) max_e s_e - 1                (:func:`hash_table_maxvio`),

which no bias can change. Whatever the table, the expert of the most
frequent id carries at least ``f_max``, so

    MaxVio_inf >= (N / K) f_max - 1                   (:func:`hash_balance_limit`):

an id more frequent than ``K / N`` cannot be balanced.

Shape legend: V vocabulary, K top-k.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigError

__all__ = ["hash_balance_limit", "hash_table_maxvio"]


def _freq(freq_V: Any) -> np.ndarray:
    f = np.asarray(freq_V, dtype=np.float64)
    if f.ndim != 1 or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ConfigError("freq_V: must be a vector of frequencies >= 0 summing to 1")
    return f


def hash_balance_limit(freq_V: Any, num_experts: int, topk: int) -> float:
    """Lower bound on the long-window MaxVio of any table: ``max(0, N f_max / K - 1)``.

    Parameters
    ----------
    freq_V : array (V,)
        Token-id frequencies (summing to 1).
    num_experts, topk : int
        ``N`` and ``K``.

    Returns
    -------
    float

    Examples
    --------
    >>> from routesim.routing.hash import token_frequencies
    >>> f = token_frequencies(32768, 1.0)      # the top id has 9.1% of the tokens
    >>> round(float(f[0]), 4), round(hash_balance_limit(f, 64, 6), 3)   # K / N = 9.4%
    (0.0911, 0.0)
    >>> round(hash_balance_limit(f, 256, 8), 3)                          # K / N = 3.1%
    1.916
    """
    f = _freq(freq_V)
    return max(0.0, float(num_experts * f.max() / topk - 1.0))


def hash_table_maxvio(freq_V: Any, table_VK: Any, num_experts: int) -> float:
    """Long-window MaxVio of a given table: ``(N / K) max_e s_e - 1``.

    Parameters
    ----------
    freq_V : array (V,)
    table_VK : int array (V, K)
        Distinct experts of each id.
    num_experts : int

    Returns
    -------
    float

    Examples
    --------
    >>> hash_table_maxvio([0.5, 0.25, 0.25], [[0], [1], [1]], 2)   # both experts get 1/2
    0.0
    >>> hash_table_maxvio([0.7, 0.2, 0.1], [[0], [1], [1]], 2)     # 0.7 on expert 0
    0.3999999999999999
    """
    f = _freq(freq_V)
    table = np.asarray(table_VK, dtype=np.int64)
    k = table.shape[-1]
    share = np.bincount(table.ravel(), weights=np.repeat(f, k), minlength=num_experts)
    return float(num_experts * share.max() / k - 1.0)
