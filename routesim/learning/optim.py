"""Optimizers and schedules for the learning router.

Pure functions: an optimizer step returns new arrays and never mutates its
inputs; a schedule is a function of the step index.

Optimizers
----------
``sgd``
    ``w <- w - lr * g``.
``adam``
    Kingma and Ba (2015) with bias correction:
    ``m <- b1 m + (1 - b1) g``; ``v <- b2 v + (1 - b2) g^2``;
    ``w <- w - lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)``
    with ``t`` the 1-based count of updates.

Learning-rate schedules (:func:`lr_at`)
---------------------------------------
``constant``, and ``cosine`` from the base rate down to
``final_fraction * base`` over ``total`` steps (Loss-Free's 1B run: peak
1e-3, minimum 1e-4, i.e. a final fraction of 0.1).

Loss-weight schedules (:func:`weight_at`)
-----------------------------------------
For every penalty coefficient ``c`` (balance ``alpha``, z-loss ``beta``):

============  ===============================================================
``constant``  ``c``
``warmup``    linear warm-up ``c * min(1, (t + 1) / steps)``
``cosine``    annealing from ``c`` down to ``final_fraction * c`` over
              ``steps``: ``c * (f + (1 - f) * (1 + cos(pi * min(t, S) / S)) / 2)``
``sigmoid``   delayed ramp ``c * sigmoid((t - delay) / width)``
============  ===============================================================

Examples
--------
>>> import numpy as np
>>> w, m, v = adam_step(np, np.array([1.0]), np.array([0.5]), np.zeros(1), np.zeros(1), 1,
...                     lr=0.1)
>>> np.round(w, 6)  # the first Adam step is lr * sign(g)
array([0.9])
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

__all__ = [
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "WEIGHT_SCHEDULES",
    "sgd_step",
    "adam_step",
    "lr_at",
    "weight_at",
]

OPTIMIZERS = ("sgd", "adam")
LR_SCHEDULES = ("constant", "cosine")
WEIGHT_SCHEDULES = ("constant", "warmup", "cosine", "sigmoid")


def sgd_step(xp: ModuleType, param: Any, grad: Any, lr: Any) -> Any:
    """Plain gradient descent ``param - lr * grad``.

    Parameters
    ----------
    xp : namespace
    param, grad : arrays of one shape
    lr : float or array broadcasting against ``param``

    Returns
    -------
    array
        The updated parameter.

    Examples
    --------
    >>> import numpy as np
    >>> sgd_step(np, np.array([1.0, 2.0]), np.array([1.0, -1.0]), 0.5)
    array([0.5, 2.5])
    """
    return param - lr * grad


def adam_step(xp: ModuleType, param: Any, grad: Any, m: Any, v: Any, t: int, *, lr: Any,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
              ) -> tuple[Any, Any, Any]:
    """One Adam update with bias correction.

    Parameters
    ----------
    xp : namespace
    param, grad, m, v : arrays of one shape
        Parameter, its gradient, and the first and second moment estimates.
    t : int >= 1
        Number of this update (1 for the first).
    lr : float or array broadcasting against ``param``
    beta1, beta2 : float in [0, 1)
    eps : float > 0

    Returns
    -------
    param, m, v : arrays

    Examples
    --------
    The first update (``t = 1``) corrects ``m = 0.1 g`` and ``v = 0.001 g^2``
    back to ``g`` and ``g^2``: each coordinate moves by ``lr`` against the
    sign of its gradient, whatever its size.

    >>> import numpy as np
    >>> p, m, v = adam_step(np, np.ones(2), np.array([0.5, -2.0]), np.zeros(2),
    ...                     np.zeros(2), 1, lr=0.1)
    >>> np.round(p, 6).tolist(), np.round(m, 12).tolist(), np.round(v, 12).tolist()
    ([0.9, 1.1], [0.05, -0.2], [0.00025, 0.004])
    """
    m = beta1 * m + (1.0 - beta1) * grad
    v = beta2 * v + (1.0 - beta2) * (grad * grad)
    m_hat = m / (1.0 - beta1 ** t)
    v_hat = v / (1.0 - beta2 ** t)
    return param - lr * m_hat / (xp.sqrt(v_hat) + eps), m, v


def lr_at(kind: str, t: int, base: float, *, total: int, final_fraction: float = 0.1) -> float:
    """Learning rate at step ``t`` (0-based).

    Parameters
    ----------
    kind : {"constant", "cosine"}
    t : int >= 0
    base : float > 0
        Peak (initial) rate.
    total : int >= 1
        Steps over which ``cosine`` decays; after them it stays at the floor.
    final_fraction : float in [0, 1]
        Floor of ``cosine`` as a fraction of ``base``.

    Returns
    -------
    float

    Examples
    --------
    >>> lr_at("cosine", 0, 1e-3, total=100), lr_at("cosine", 100, 1e-3, total=100)
    (0.001, 0.0001)
    """
    if kind == "constant":
        return float(base)
    if kind == "cosine":
        return weight_at("cosine", t, base, steps=total, final_fraction=final_fraction)
    raise ValueError(f"lr schedule {kind!r}: must be one of {', '.join(LR_SCHEDULES)}")


def weight_at(kind: str, t: int, value: float, *, steps: int = 1, final_fraction: float = 0.1,
              delay: float = 0.0, width: float = 1.0) -> float:
    """A loss coefficient at step ``t`` (0-based) under a schedule.

    Parameters
    ----------
    kind : {"constant", "warmup", "cosine", "sigmoid"}
    t : int >= 0
    value : float >= 0
        The coefficient (the peak of ``warmup`` and ``sigmoid``, the start of
        ``cosine``).
    steps : int >= 1
        Warm-up length or cosine horizon.
    final_fraction : float in [0, 1]
        End of ``cosine`` as a fraction of ``value``.
    delay : float
        Centre of the ``sigmoid`` ramp, in steps.
    width : float > 0
        Width of the ``sigmoid`` ramp, in steps.

    Returns
    -------
    float

    Examples
    --------
    >>> weight_at("warmup", 4, 1.0, steps=10)
    0.5
    >>> weight_at("sigmoid", 50, 2.0, delay=50, width=5)
    1.0
    """
    if kind == "constant":
        return float(value)
    if kind == "warmup":
        return float(value) * min(1.0, (t + 1) / steps)
    if kind == "cosine":
        frac = min(t, steps) / steps
        return float(value) * (final_fraction + (1.0 - final_fraction)
                               * 0.5 * (1.0 + math.cos(math.pi * frac)))
    if kind == "sigmoid":
        arg = (t - delay) / width
        # 1 / (1 + exp(-arg)) without overflow for large |arg|
        if arg >= 0:
            return float(value) / (1.0 + math.exp(-arg))
        e = math.exp(arg)
        return float(value) * e / (1.0 + e)
    raise ValueError(f"weight schedule {kind!r}: must be one of {', '.join(WEIGHT_SCHEDULES)}")
