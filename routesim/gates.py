"""Gates: router logits to scores.

``softmax`` (over experts), ``sigmoid`` and ``sqrtsoftplus``
(``sqrt(log(1 + exp(z)))``, DeepSeek-V4 / Megatron). The last two are
monotone per expert, which the theory of :mod:`routesim.theory` relies on.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

__all__ = ["gate", "GATES", "softplus"]

GATES = ("softmax", "sigmoid", "sqrtsoftplus")


def softplus(xp: ModuleType, z: Any) -> Any:
    """``log(1 + exp(z))`` without overflow.

    Examples
    --------
    ``log 2`` at 0; the identity far right, 0 far left (no overflow at 1000):

    >>> import numpy as np
    >>> softplus(np, np.array([0.0, 1000.0, -1000.0])).tolist()
    [0.6931471805599453, 1000.0, 0.0]
    """
    return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))


def gate(xp: ModuleType, name: str, z: Any) -> Any:
    """Scores ``s`` from logits ``z`` along the last (expert) axis.

    Parameters
    ----------
    xp : namespace
    name : {"softmax", "sigmoid", "sqrtsoftplus"}
    z : array (..., E)

    Returns
    -------
    array (..., E)

    Examples
    --------
    >>> import numpy as np
    >>> gate(np, "sigmoid", np.array([0.0]))
    array([0.5])
    """
    if name == "sigmoid":
        return 1.0 / (1.0 + xp.exp(-z))
    if name == "softmax":
        e = xp.exp(z - xp.max(z, axis=-1, keepdims=True))
        return e / xp.sum(e, axis=-1, keepdims=True)
    if name == "sqrtsoftplus":
        return xp.sqrt(softplus(xp, z))
    raise ValueError(f"score_function = {name!r}: must be one of {', '.join(GATES)}")
