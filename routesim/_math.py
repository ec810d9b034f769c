"""Elementwise and per-row functions shared by the gates, the learning router and the theory.

One copy of each, written against the array API through ``xp`` (NumPy, CuPy,
array-api-strict): :func:`softmax` (over the last axis), :func:`sigmoid`,
:func:`softplus` and :func:`normal_cdf`. Each is safe for large ``|z|``: no
overflow, no warning, in float32 and float64.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from ._backend import special_ndtr

__all__ = ["softmax", "sigmoid", "softplus", "normal_cdf"]


def softmax(xp: ModuleType, z: Any) -> Any:
    """Softmax over the last axis, ``exp(z_i - max z) / sum_j exp(z_j - max z)``.

    Parameters
    ----------
    xp : namespace
    z : array (..., E)
        Finite logits (a row may hold -inf entries, not all of them).

    Returns
    -------
    array (..., E)
        Non-negative, each row sums to 1.

    Notes
    -----
    The row maximum is subtracted first, so ``exp`` never overflows.

    Examples
    --------
    >>> import numpy as np
    >>> softmax(np, np.array([0.0, np.log(3.0)])).tolist()
    [0.25, 0.75]
    >>> softmax(np, np.array([1000.0, 1000.0])).tolist()   # no overflow
    [0.5, 0.5]
    """
    e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def _exp_limit(xp: ModuleType, z: Any) -> float:
    """A little below ``log(max float)`` of ``z``'s dtype: ``exp`` of it is finite."""
    return math.log(float(xp.finfo(z.dtype).max)) - 0.01


def sigmoid(xp: ModuleType, z: Any) -> Any:
    """Logistic function ``1 / (1 + exp(-z))`` without overflow.

    Parameters
    ----------
    xp : namespace
    z : array of float32 or float64

    Returns
    -------
    array, values in [0, 1]

    Notes
    -----
    Computed as ``1 / (1 + exp(-max(z, -a)))`` with ``a`` just below
    ``log`` of the dtype's largest number (88.7 for float32, 709.8 for
    float64): every ``z >= -a`` gives exactly ``1 / (1 + exp(-z))``; below,
    the value is ``sigmoid(-a)`` (< 1e-38 in float32) instead of an overflow.

    Examples
    --------
    >>> import numpy as np
    >>> sigmoid(np, np.array([0.0, 2.0])).tolist()
    [0.5, 0.8807970779778823]
    >>> bool(sigmoid(np, np.array([-1e4]))[0] < 1e-300)   # no overflow warning
    True
    >>> sigmoid(np, np.array([1e4])).tolist()
    [1.0]
    """
    return 1.0 / (1.0 + xp.exp(-xp.maximum(z, -_exp_limit(xp, z))))


def softplus(xp: ModuleType, z: Any) -> Any:
    """``log(1 + exp(z))`` without overflow: ``max(z, 0) + log1p(exp(-|z|))``.

    Parameters
    ----------
    xp : namespace
    z : array

    Returns
    -------
    array, positive

    Examples
    --------
    ``log 2`` at 0; the identity far right, 0 far left (no overflow at 1000):

    >>> import numpy as np
    >>> softplus(np, np.array([0.0, 1000.0, -1000.0])).tolist()
    [0.6931471805599453, 1000.0, 0.0]
    """
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def normal_cdf(xp: ModuleType, u: Any) -> Any:
    """Standard normal CDF ``Phi(u)``: SciPy's ``ndtr`` (CuPy's on a GPU).

    Parameters
    ----------
    xp : namespace
    u : array

    Returns
    -------
    array, same shape and (float) dtype, values in [0, 1]

    Notes
    -----
    ``ndtr`` is accurate in both tails (``Phi(-40)`` is about 3.7e-350, 0
    in float64; ``Phi(-30)`` is not rounded to 0), unlike ``(1 + erf(u /
    sqrt 2)) / 2``. Namespaces without it (array-api-strict) go through
    NumPy on the host.

    Examples
    --------
    >>> import numpy as np
    >>> normal_cdf(np, np.array([0.0, -np.inf, np.inf])).tolist()
    [0.5, 0.0, 1.0]
    >>> round(float(normal_cdf(np, np.array(1.959963984540054))), 6)
    0.975
    >>> bool(normal_cdf(np, np.array(-30.0)) > 0)
    True
    """
    return special_ndtr(xp, u)
