"""Gates: router logits to scores.

``softmax`` (over experts), ``sigmoid`` and ``sqrtsoftplus``
(``sqrt(log(1 + exp(z)))``, DeepSeek-V4 / Megatron). The last two are
monotone per expert, which the theory of :mod:`routesim.theory` relies on.
The functions themselves are those of :mod:`routesim._math`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ._math import sigmoid, softmax, softplus

__all__ = ["gate", "GATES"]

GATES = ("softmax", "sigmoid", "sqrtsoftplus")


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
        return sigmoid(xp, z)
    if name == "softmax":
        return softmax(xp, z)
    if name == "sqrtsoftplus":
        return xp.sqrt(softplus(xp, z))
    raise ValueError(f"score_function = {name!r}: must be one of {', '.join(GATES)}")
