"""Information leakage of Expert Choice routing: capacities in bits.

In Expert Choice every expert takes the ``c = K * T / N`` tokens of a block
of ``T`` with its largest scores, so a token's experts depend on the other
tokens of the block, later ones included. Three counts bound what the
routing can carry (Loss-Free paper, Sec. 5.2 and Appendix D):

``leakage_exact(T, N, K)``
    ``log2(C(T, c)^N) / T`` bits per token: the number of possible
    assignments of a whole block (each expert picks any ``c`` of ``T``),
    per token. Computed with log-gamma, so it is stable for any ``T``.
``leakage_bound(N, K)``
    ``K * log2((1 - R) / R)`` with ``R = K / N``, the paper's closed-form
    lower bound on the exact count (Eq. 7). N = 16, K = 2: 5.61 bits per
    token per layer, 50.5 bits over 9 layers.
``leakage_limit(N, K)``
    ``N * H2(R)`` with the binary entropy ``H2``: the limit of the exact
    count as ``T`` grows.

How they relate: ``C(T, c) >= (T / c)^c`` gives ``leakage_exact >=
K * log2(N / K)``, with equality at ``c = 1`` (``T = N / K``), and
``K * log2(N / K) > K * log2((1 - R) / R)`` (the paper's bound uses
``(1 - R) T`` in place of ``T``). The exact count grows with ``T`` (for
multiples of ``N / K``) towards ``N * H2(R) = K * log2((1 - R) / R) -
N * log2(1 - R)``, from below, with a gap of order ``log2(T) / T``
(Stirling). For N = 16, K = 2: 6.00 bits at T = 8, 8.66 at T = 2048, limit
8.70, against the bound's 5.61.

``leakage_split(n_early, n_late, N, K)`` is the capacity that matters for
future-token leakage: for fixed scores of the ``n_early`` tokens before a
split, their routing is determined by how many of them each expert takes
(an expert takes its top ``k_i`` early tokens in score order), so at most
``prod_i (k_max - k_min + 1)`` outcomes, ``N * log2(min(n_early, c) -
max(0, c - n_late) + 1)`` bits per block. An encoder that controls the
later scores reaches it (:func:`routesim.leakage.channel_expert_choice`).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from ..exceptions import ConfigError

__all__ = ["leakage_bound", "leakage_exact", "leakage_limit", "leakage_split"]

_LN2 = math.log(2.0)


def _check_nk(num_experts: int, topk: int) -> None:
    if not (isinstance(num_experts, (int, np.integer)) and num_experts >= 2):
        raise ConfigError(f"num_experts = {num_experts!r}: must be an integer >= 2")
    if not (isinstance(topk, (int, np.integer)) and 1 <= topk < num_experts):
        raise ConfigError(f"topk = {topk!r}: must be an integer in [1, num_experts) = "
                          f"[1, {num_experts})")


def leakage_bound(num_experts: int, topk: int) -> float:
    """The paper's bound ``K * log2((1 - R) / R)``, ``R = K / N``, in bits per token.

    Parameters
    ----------
    num_experts : int >= 2
        ``N``.
    topk : int in [1, num_experts)
        ``K``, the average number of experts per token.

    Returns
    -------
    float
        Bits per token per layer (negative when ``R > 1/2``, where the
        bound says nothing).

    Examples
    --------
    >>> round(leakage_bound(16, 2), 2), round(9 * leakage_bound(16, 2), 1)
    (5.61, 50.5)
    """
    _check_nk(num_experts, topk)
    r = topk / num_experts
    return topk * math.log2((1.0 - r) / r)


def leakage_exact(block: int | np.ndarray, num_experts: int, topk: int) -> float | np.ndarray:
    """``log2(C(T, K*T/N)^N) / T``: possible Expert Choice assignments, bits per token.

    Parameters
    ----------
    block : int > 0 or int array
        ``T``, tokens per block; ``K * T / N`` must be an integer.
    num_experts : int >= 2
        ``N``.
    topk : int in [1, num_experts)
        ``K``.

    Returns
    -------
    float or array
        Bits per token (same shape as ``block``).

    Raises
    ------
    ConfigError
        If ``K * T / N`` is not an integer.

    Examples
    --------
    >>> round(leakage_exact(8, 16, 2), 6)   # c = 1: exactly K * log2(N / K)
    6.0
    >>> round(float(leakage_exact(2048, 16, 2)), 2)
    8.66
    """
    _check_nk(num_experts, topk)
    t = np.asarray(block)
    if not np.issubdtype(t.dtype, np.integer) or np.any(t < 1):
        raise ConfigError(f"block = {block!r}: must be a positive integer (tokens per block)")
    bad = (t * topk) % num_experts != 0
    if np.any(bad):
        raise ConfigError(f"block = {t[bad].ravel()[0]}: K*T/N = {topk}*{t[bad].ravel()[0]}/"
                          f"{num_experts} must be an integer")
    c = t * topk // num_experts
    tf = t.astype(np.float64)
    log_binom = gammaln(tf + 1.0) - gammaln(c + 1.0) - gammaln(tf - c + 1.0)
    out = num_experts * log_binom / (_LN2 * tf)
    return float(out) if out.ndim == 0 else out


def leakage_limit(num_experts: int, topk: int) -> float:
    """``N * H2(K / N)``: the limit of :func:`leakage_exact` as the block grows.

    Parameters
    ----------
    num_experts : int >= 2
        ``N``.
    topk : int in [1, num_experts)
        ``K``.

    Returns
    -------
    float
        Bits per token.

    Examples
    --------
    >>> round(leakage_limit(16, 2), 3)
    8.697
    """
    _check_nk(num_experts, topk)
    r = topk / num_experts
    return num_experts * (-r * math.log2(r) - (1.0 - r) * math.log2(1.0 - r))


def leakage_split(n_early: int, n_late: int, num_experts: int, topk: int) -> float:
    """Bits per block the later tokens can write into the earlier tokens' routing.

    Parameters
    ----------
    n_early : int >= 0
        Tokens of the block before the split (their scores are fixed).
    n_late : int >= 0
        Tokens after it (their scores are free).
    num_experts : int >= 2
        ``N``.
    topk : int in [1, num_experts)
        ``K``; ``K * (n_early + n_late) / N`` must be an integer.

    Returns
    -------
    float
        ``N * log2(min(n_early, c) - max(0, c - n_late) + 1)`` with
        ``c = K * (n_early + n_late) / N``.

    Examples
    --------
    >>> round(leakage_split(4, 4, 4, 2), 3)   # 4 experts, each takes 0..4 early tokens
    9.288
    """
    _check_nk(num_experts, topk)
    if n_early < 0 or n_late < 0 or n_early + n_late < 1:
        raise ConfigError(f"n_early = {n_early!r}, n_late = {n_late!r}: must be >= 0 with a "
                          "positive sum")
    t = n_early + n_late
    if (t * topk) % num_experts:
        raise ConfigError(f"block = {t}: K*T/N = {topk}*{t}/{num_experts} must be an integer")
    c = t * topk // num_experts
    levels = min(n_early, c) - max(0, c - n_late) + 1
    return num_experts * math.log2(levels)
