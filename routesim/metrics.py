"""Balance metrics: pure functions of load and bias arrays.

All functions reduce the last (expert) axis and broadcast over any leading
axes, so they apply per step, per point and per replica at once.

MaxVio (Loss-Free, Eq. 4) is ``(max_i c_i - c_bar) / c_bar`` with ``c_bar``
the mean load: loads of 40, 30, 20 and 10 % give 0.6.

Shape legend: S steps, P points, R replicas, E experts.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "maxvio",
    "cv",
    "dead_experts",
    "load_entropy",
    "bias_spread",
    "flip_fraction",
    "trailing_sum",
]


def maxvio(load: np.ndarray, axis: int = -1) -> np.ndarray:
    """Maximal violation ``(max c - mean c) / mean c`` along ``axis``.

    Parameters
    ----------
    load : array
        Loads (token counts or fractions), any leading axes.
    axis : int
        The expert axis.

    Returns
    -------
    array
        MaxVio with ``axis`` reduced; NaN where the mean load is 0.

    Examples
    --------
    >>> float(maxvio(np.array([40, 30, 20, 10])))
    0.6
    """
    load = np.asarray(load, dtype=np.float64)
    mean = load.mean(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, (load.max(axis=axis) - mean) / mean, np.nan)


def cv(load: np.ndarray) -> np.ndarray:
    """Coefficient of variation of the loads over experts (population std).

    Parameters
    ----------
    load : array (..., E)
        Loads.

    Returns
    -------
    array (...)
        ``std / mean`` over experts; NaN where the mean load is 0.

    Examples
    --------
    Mean 2, deviations (2, -2, 0, 0), variance 2: ``sqrt(2) / 2``.

    >>> round(float(cv(np.array([4, 0, 2, 2]))), 6)
    0.707107
    """
    load = np.asarray(load, dtype=np.float64)
    mean = load.mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mean > 0, load.std(axis=-1) / mean, np.nan)


def dead_experts(load: np.ndarray) -> np.ndarray:
    """Number of experts with zero load.

    Parameters
    ----------
    load : array (..., E)
        Loads.

    Returns
    -------
    int array (...)

    Examples
    --------
    >>> dead_experts(np.array([[4, 0, 2, 0], [1, 1, 1, 1]])).tolist()
    [2, 0]
    """
    return np.sum(np.asarray(load) == 0, axis=-1)


def load_entropy(load: np.ndarray) -> np.ndarray:
    """Entropy in bits of the load fractions (``log2 N`` when balanced).

    Parameters
    ----------
    load : array (..., E)
        Loads.

    Returns
    -------
    array (...)
        Bits; 0 where every load is 0.

    Examples
    --------
    Fractions (1/2, 0, 1/4, 1/4): ``1/2 * 1 + 2 * 1/4 * 2 = 1.5`` bits; 8
    equal loads give 3 bits.

    >>> float(load_entropy(np.array([4, 0, 2, 2]))), float(load_entropy(np.ones(8)))
    (1.5, 3.0)
    """
    load = np.asarray(load, dtype=np.float64)
    total = load.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(total > 0, load / total, 0.0)
        terms = np.where(f > 0, -f * np.log2(np.where(f > 0, f, 1.0)), 0.0)
    return terms.sum(axis=-1)


def bias_spread(bias: np.ndarray) -> np.ndarray:
    """``max(b) - min(b)`` over experts.

    Parameters
    ----------
    bias : array (..., E)
        Expert biases.

    Returns
    -------
    array (...)

    Examples
    --------
    >>> round(float(bias_spread(np.array([0.1, -0.2, 0.05]))), 12)
    0.3
    """
    bias = np.asarray(bias)
    return bias.max(axis=-1) - bias.min(axis=-1)


def flip_fraction(bias_SPRE: np.ndarray) -> np.ndarray:
    """Share of experts whose bias update reversed direction, per step.

    Step ``t`` compares the update ``b[t+1] - b[t]`` with ``b[t] - b[t-1]``;
    a sign change of a non-zero update is a flip (an oscillation detector,
    after axolotl's ``bias_sign_flip_frac``, which watches the sign of the
    bias itself). The first step and the last are 0 (no update on one side).

    Parameters
    ----------
    bias_SPRE : array (S, ..., E)
        Biases of consecutive steps (steps first).

    Returns
    -------
    array (S, ...)
        Share of experts in [0, 1] per step.

    Examples
    --------
    Expert 0 goes up, down, up (two flips); expert 1 goes up, then stays
    (a zero update is no flip):

    >>> b = np.array([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 1.0]])
    >>> flip_fraction(b).tolist()
    [0.0, 0.5, 0.5, 0.0]
    """
    bias = np.asarray(bias_SPRE, dtype=np.float64)
    out = np.zeros(bias.shape[:-1])
    if bias.shape[0] < 3:
        return out
    d = np.sign(np.diff(bias, axis=0))
    flips = (d[1:] * d[:-1]) < 0
    out[1:-1] = flips.mean(axis=-1)
    return out


def trailing_sum(load_SPRE: np.ndarray, window: int) -> np.ndarray:
    """Sum of the loads over the trailing ``window`` steps (fewer at the start).

    Parameters
    ----------
    load_SPRE : int array (S, ..., E)
        Loads of consecutive steps (steps first).
    window : int >= 1
        Steps summed.

    Returns
    -------
    int array (S, ..., E)

    Examples
    --------
    >>> trailing_sum(np.array([[1], [2], [3], [4], [5]]), 2)[:, 0].tolist()
    [1, 3, 5, 7, 9]
    """
    cum = np.cumsum(np.asarray(load_SPRE, dtype=np.int64), axis=0)
    out = cum.copy()
    if window < cum.shape[0]:
        out[window:] -= cum[:-window]
    return out
