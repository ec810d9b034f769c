"""Entropy of sampled discrete outcomes, in bits: estimators, bootstrap, sample size.

Used by :mod:`routesim.leakage`, where an outcome is one draw's routing of a
block's early tokens and its entropy is a mutual information.

===============  ============================================================
``plugin``       ``-sum p log2 p`` of the observed frequencies; biased low
                 by about ``(m - 1) / (2 n ln 2)`` bits for ``m`` outcomes in
                 ``n`` draws
``miller_madow`` plug-in plus that first-order bias (Miller 1955)
``chao_shen``    coverage-adjusted Horvitz-Thompson estimator (Chao and Shen
                 2003), better when many outcomes are seen once
===============  ============================================================

Estimators act on counts along the last axis and broadcast over the others.
The confidence interval is the percentile interval of
``scipy.stats.bootstrap`` shifted by the bootstrap's estimate of the bias
(``mean(replicates) - estimate``): resampling draws loses rare outcomes, so
the replicates sit below the estimate by about the estimator's own remaining
bias. Over 200 repetitions, 95 % intervals of the Miller-Madow estimate
covered the true entropy 90 % of the time for 60 geometric outcomes in 300
draws (51 % without the shift) and 93-94 % for 3 or 4 outcomes in 200-300
draws (the plain *basic* interval covered 78-83 %, BCa 60-94 %).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np
import scipy.stats

from ..exceptions import ConfigError

__all__ = [
    "ESTIMATORS",
    "entropy_plugin",
    "entropy_miller_madow",
    "entropy_chao_shen",
    "entropy_of_labels",
    "entropy_ci",
    "draws_needed",
    "coverage",
]

_LN2 = math.log(2.0)


def entropy_plugin(counts: Any) -> Any:
    """Plug-in entropy in bits of outcome counts along the last axis.

    Parameters
    ----------
    counts : int array (..., m)
        Outcome counts along the last axis.

    Returns
    -------
    array (...)
        Bits.

    Examples
    --------
    >>> float(entropy_plugin(np.array([5, 5, 0])))
    1.0
    """
    return scipy.stats.entropy(np.asarray(counts, dtype=np.float64), base=2, axis=-1)


def entropy_miller_madow(counts: Any) -> Any:
    """Miller-Madow entropy: plug-in plus ``(m - 1) / (2 n ln 2)`` bits.

    Parameters
    ----------
    counts : int array (..., m)
        Outcome counts along the last axis.

    Returns
    -------
    array (...)
        Bits.

    Examples
    --------
    >>> round(float(entropy_miller_madow(np.array([5, 5]))), 4)
    1.0721
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1)
    m = (c > 0).sum(axis=-1)
    return entropy_plugin(c) + (m - 1) / (2.0 * n * _LN2)


def entropy_chao_shen(counts: Any) -> Any:
    """Chao-Shen entropy in bits.

    With ``f1`` singletons among ``n`` draws the sample coverage is
    ``C = 1 - f1 / n`` (``f1 = n - 1`` when every outcome is a singleton);
    ``H = -sum p log2 p / (1 - (1 - p)^n)`` with ``p = C * count / n``.

    Parameters
    ----------
    counts : int array (..., m)
        Outcome counts along the last axis.

    Returns
    -------
    array (...)
        Bits.

    Examples
    --------
    >>> round(float(entropy_chao_shen(np.array([50, 50]))), 4)
    1.0
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    f1 = (c == 1).sum(axis=-1, keepdims=True)
    f1 = np.where(f1 == n, n - 1, f1)
    pa = (1.0 - f1 / n) * c / n
    safe = np.where(c > 0, pa, 0.5)
    terms = np.where(c > 0, -safe * np.log2(safe) / (1.0 - (1.0 - safe) ** n), 0.0)
    return terms.sum(axis=-1)


#: Estimator name -> function of counts (last axis) giving bits.
ESTIMATORS = {"plugin": entropy_plugin, "miller_madow": entropy_miller_madow,
              "chao_shen": entropy_chao_shen}


def entropy_of_labels(labels: Any, estimator: str = "miller_madow", axis: int = -1) -> Any:
    """Entropy in bits of integer outcome labels along ``axis``.

    Parameters
    ----------
    labels : int array
        Outcome labels in ``[0, max]``; other axes are independent samples.
    estimator : {"miller_madow", "chao_shen", "plugin"}
        Name in :data:`ESTIMATORS`.
    axis : int
        The draws axis.

    Returns
    -------
    float array
        ``labels.shape`` without ``axis``.

    Examples
    --------
    >>> float(entropy_of_labels(np.array([[0, 1, 0, 1], [3, 3, 3, 3]]), "plugin")[0])
    1.0
    """
    if estimator not in ESTIMATORS:
        raise ConfigError(f"estimator = {estimator!r}: must be one of {', '.join(ESTIMATORS)}")
    lab = np.moveaxis(np.asarray(labels), axis, -1)
    lead = lab.shape[:-1]
    width = int(lab.max()) + 1
    rows = np.arange(math.prod(lead)).reshape(lead + (1,)) * width
    counts = np.bincount((lab + rows).ravel(), minlength=math.prod(lead) * width)
    return ESTIMATORS[estimator](counts.reshape(lead + (width,)))


def entropy_ci(groups: Sequence[Any], estimator: str, confidence: float, n_resamples: int,
               seed: int, scale: float = 1.0) -> tuple[float, float]:
    """Bootstrap interval of ``scale * sum_g H(groups[g])``, resampling draws jointly.

    Parameters
    ----------
    groups : sequence of int arrays (n,)
        Outcome labels, one array per summed group, all over the same ``n``
        draws (resampled together, so dependence between groups is kept).
    estimator : {"miller_madow", "chao_shen", "plugin"}
        Name in :data:`ESTIMATORS`.
    confidence : float in (0, 1)
        Interval level.
    n_resamples : int > 0
        Bootstrap resamples.
    seed : int >= 0
        Seeds the resampling.
    scale : float
        Multiplies the statistic (e.g. ``1 / contexts`` for a mean).

    Returns
    -------
    (float, float)
        Bias-shifted percentile interval; ``(0, 0)`` when every group has a single
        outcome (the bootstrap cannot vary then).

    Examples
    --------
    >>> x = np.random.default_rng(3).choice(3, 500, p=[0.5, 0.25, 0.25])  # H = 1.5
    >>> lo, hi = entropy_ci([x], "miller_madow", 0.95, 500, 0)
    >>> bool(lo < 1.5 < hi)
    True
    """
    groups = [np.asarray(g) for g in groups]
    if all(int(g.max()) == int(g.min()) for g in groups):
        return 0.0, 0.0
    n = groups[0].shape[0]

    def statistic(*samples: Any, axis: int = -1) -> Any:
        return scale * sum(entropy_of_labels(s, estimator, axis) for s in samples)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", scipy.stats.DegenerateDataWarning)
        res = scipy.stats.bootstrap(
            tuple(groups), statistic, n_resamples=n_resamples, paired=True, vectorized=True,
            method="percentile", confidence_level=confidence,
            batch=max(1, 2_000_000 // (n * len(groups))), rng=np.random.default_rng([seed, 1]))
    shift = float(np.mean(res.bootstrap_distribution)) - float(statistic(*groups))
    ci = res.confidence_interval
    return max(0.0, float(ci.low) - shift), float(ci.high) - shift


def coverage(counts: Any) -> float:
    """Good-Turing sample coverage ``1 - singletons / draws`` of one count vector.

    Parameters
    ----------
    counts : int array (m,)
        Outcome counts.

    Returns
    -------
    float

    Examples
    --------
    >>> coverage(np.array([3, 1, 0, 4]))
    0.875
    """
    c = np.asarray(counts)
    return 1.0 - float(np.sum(c == 1)) / float(np.sum(c))


def draws_needed(counts: Sequence[Any], precision: float, confidence: float = 0.95) -> int:
    """Draws for an entropy estimate good to ``precision`` bits.

    Parameters
    ----------
    counts : sequence of int arrays
        Outcome counts of each summed group (one for a joint outcome).
    precision : float > 0
        Target half-width of the confidence interval, in bits.
    confidence : float in (0, 1)
        Level of that interval.

    Returns
    -------
    int
        The larger of ``z^2 V / precision^2``, with ``V`` the delta-method
        variance of one draw ``sum_g (sum p log2^2 p - H^2)``, and
        ``sum_g (m_g - 1) / (2 ln 2 precision)``: the draws at which the
        Miller-Madow correction itself falls below ``precision`` (the
        distribution is then well sampled and the remaining bias is of
        higher order). Both use the observed outcomes, so they understate
        the need while many outcomes are still unseen.

    Examples
    --------
    >>> draws_needed([np.array([500, 500])], 0.01)   # a fair bit: variance 0
    73
    """
    if not precision > 0:
        raise ConfigError(f"precision = {precision!r}: must be > 0 (bits)")
    z = scipy.stats.norm.ppf(0.5 + confidence / 2.0)
    var, excess = 0.0, 0.0
    for c in counts:
        c = np.asarray(c, dtype=np.float64)
        p = c[c > 0] / c.sum()
        lg = np.log2(p)
        var += max(float(np.sum(p * lg * lg) - np.sum(p * lg) ** 2), 0.0)
        excess += p.size - 1
    return int(max(math.ceil(z * z * var / precision ** 2),
                   math.ceil(excess / (2.0 * _LN2 * precision)), 1))
