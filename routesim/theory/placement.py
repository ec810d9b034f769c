"""Rank loads of an expert placement: their mean, covariance and the expected straggler ratio.

Over ``T`` tokens routed with selection probabilities ``p`` and one token's
selection covariance ``Sigma`` (:func:`~routesim.theory.selection_covariance`),
the expert loads ``c`` have mean ``T p`` and covariance ``T deff Sigma``. A
placement ``share_EK`` (:mod:`routesim.placement`; the share of each
expert's load that each rank computes) makes the rank loads ``r = share^T c``,
so

    E[r] = T share^T p,        Cov[r] = T deff share^T Sigma share.

Each token is computed ``K`` times in all, so the mean rank load is exactly
``T K / ep_size`` (dropless routing) and the straggler ratio is
``max_k r_k / (T K / ep_size)``; its expectation is the expected maximum of
a Gaussian vector (central limit) divided by that constant
(:func:`expected_straggler`). With balanced expected loads the excess over 1
comes from counting noise alone and decays as ``1 / sqrt(T)``
(:func:`counting_straggler`, exact in the Gaussian limit for exchangeable
experts); a persistent imbalance leaves the plateau ``max_k E[r_k] /
mean``.

Domain of validity: every expected rank load well above 1, dropless routing,
a placement fixed over the batch.

Shape legend: P points (any leading axes), E experts, K ranks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..exceptions import ConfigError
from .maxvio import expected_max_gaussian

__all__ = ["rank_load_moments", "expected_straggler", "counting_straggler"]


def _share(share_EK: Any, num_experts: int) -> np.ndarray:
    share = np.asarray(share_EK, dtype=np.float64)
    if share.ndim < 2 or share.shape[-2] != num_experts:
        raise ConfigError(f"share_EK: shape {share.shape}: needs (..., {num_experts}, ranks)")
    if not np.allclose(share.sum(axis=-1), 1.0):
        raise ConfigError("share_EK: each expert's shares must sum to 1 (every expert placed)")
    return share


def rank_load_moments(p_PE: Any, cov_PEE: Any, share_EK: Any, *, tokens: Any,
                      deff: Any = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of the rank loads over ``tokens`` tokens.

    Parameters
    ----------
    p_PE : array (..., E)
        Selection probability of each expert (:func:`~routesim.theory.load_map`).
    cov_PEE : array (..., E, E)
        One token's selection covariance.
    share_EK : array (..., E, K)
        Placement: share of each expert's load on each rank (rows sum to 1).
    tokens : float > 0
        Tokens of the batch.
    deff : float > 0
        Design effect of within-sequence correlation (1: independent tokens).

    Returns
    -------
    mean_PK : ndarray (..., K)
    cov_PKK : ndarray (..., K, K)

    Examples
    --------
    Two experts of four on each of two ranks, one choice per token:

    >>> import numpy as np
    >>> from routesim.placement import placement_matrix
    >>> p = np.full(4, 0.25)
    >>> sigma = np.diag(p) - np.outer(p, p)        # multinomial, K = 1
    >>> m, c = rank_load_moments(p, sigma, placement_matrix([0, 0, 1, 1], 2), tokens=100)
    >>> m.tolist(), c.tolist()                     # binomial(100, 1/2) and its mirror
    ([50.0, 50.0], [[25.0, -25.0], [-25.0, 25.0]])
    """
    p = np.asarray(p_PE, dtype=np.float64)
    cov = np.asarray(cov_PEE, dtype=np.float64)
    share = _share(share_EK, p.shape[-1])
    t = np.asarray(tokens, dtype=np.float64)
    d = np.asarray(deff, dtype=np.float64)
    if np.any(t <= 0) or np.any(d <= 0):
        raise ConfigError(f"tokens = {tokens!r}, deff = {deff!r}: must be > 0")
    mean = t[..., None] * np.einsum("...e,...ek->...k", p, share)
    rank_cov = np.einsum("...ej,...ef,...fk->...jk", share, cov, share)
    return mean, (t * d)[..., None, None] * rank_cov


def expected_straggler(p_PE: Any, cov_PEE: Any, share_EK: Any, *, tokens: Any, topk: int,
                       deff: Any = 1.0, method: str = "mc", samples: int = 20000,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expected straggler ratio ``E[max_k r_k] / (T K / ep_size)``, with a standard error.

    Parameters
    ----------
    p_PE, cov_PEE, share_EK, tokens, deff
        As for :func:`rank_load_moments`.
    topk : int
        ``K``: experts per token (the mean rank load is ``T K / ep_size``).
    method, samples, seed
        As for :func:`~routesim.theory.expected_max_gaussian` (``quad`` is
        exact for exchangeable ranks).

    Returns
    -------
    mean_P, stderr_P : ndarray (...)

    Examples
    --------
    A hot expert keeps its rank above the others whatever the batch size:

    >>> import numpy as np
    >>> from routesim.placement import placement_matrix
    >>> p = np.array([0.4, 0.2, 0.2, 0.2])
    >>> sigma = np.diag(p) - np.outer(p, p)
    >>> share = placement_matrix([0, 0, 1, 1], 2)
    >>> m, se = expected_straggler(p, sigma, share, tokens=1e6, topk=1)
    >>> round(float(m), 3)                         # 0.6 / 0.5
    1.2
    """
    mean, cov = rank_load_moments(p_PE, cov_PEE, share_EK, tokens=tokens, deff=deff)
    ranks = mean.shape[-1]
    scale = np.asarray(tokens, dtype=np.float64) * topk / ranks
    top, se = expected_max_gaussian(mean, cov, method=method, samples=samples, seed=seed)
    return top / scale, se / scale


def counting_straggler(num_experts: int, topk: int, ep_size: int, tokens: Any,
                       deff: Any = 1.0) -> np.ndarray:
    """Expected straggler ratio of perfectly balanced routing: counting noise alone.

    Every token picks ``K`` of ``N`` experts uniformly, and the contiguous
    ranks of ``n = N / ep_size`` experts get a hypergeometric number of
    them: variance ``K (n / N) (1 - n / N) (N - K) / (N - 1)`` per token.
    The rank loads sum to ``T K`` and are exchangeable, so ``E[max]`` is a
    one-dimensional integral (:func:`~routesim.theory.expected_max_gaussian`,
    ``quad``).

    Parameters
    ----------
    num_experts, topk, ep_size : int
        ``N``, ``K`` and the ranks (dividing ``N``).
    tokens : float > 0 or array
        Tokens of the computation batch.
    deff : float > 0
        Design effect (1: independent tokens).

    Returns
    -------
    ndarray
        ``E[max_k r_k] / (T K / ep_size)``, shaped like ``tokens``.

    Examples
    --------
    >>> [round(float(counting_straggler(64, 8, 8, t)), 4) for t in (4096, 16384)]
    [1.021, 1.0105]
    """
    n, k, ep = int(num_experts), int(topk), int(ep_size)
    if ep < 2 or n % ep or not 1 <= k < n:
        raise ConfigError(f"ep_size = {ep_size}: must be >= 2 and divide num_experts ({n}); "
                          f"topk ({topk}) in [1, {n})")
    t = np.asarray(tokens, dtype=np.float64)
    frac = 1.0 / ep
    var = k * frac * (1.0 - frac) * (n - k) / (n - 1) * t * np.asarray(deff, dtype=np.float64)
    mean = t * k / ep
    cov = np.eye(ep) * var[..., None, None]  # the quad method supplies the zero-sum correction
    top, _ = expected_max_gaussian(np.broadcast_to(mean[..., None], t.shape + (ep,)), cov,
                                   method="quad")
    return top / mean
