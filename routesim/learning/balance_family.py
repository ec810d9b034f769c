"""Su's general auxiliary loss: a balance objective ``phi(F)`` through ``P + sg[F - P]``.

For a balance objective ``phi`` on the load distribution ``F``
(:mod:`routesim.penalty_registry`), the loss of a group of ``T_g`` tokens is
``phi(P + sg[F - P])``: its value is ``phi(F)`` and its gradient with
respect to the logits is

    ``dL / dz_tj = (1 / (G T_g)) sum_i w_i d rho_ti / d z_tj``,  ``w = dphi/dF (F)``

averaged over the ``G`` groups, with ``P_i = mean_t rho_ti``. Two choices of
``rho`` (``penalty.normalise``):

* normalised (default): the full-distribution probability ``p``
  (:func:`routesim.learning.penalties.aux_probabilities`: softmax, or sigmoid
  scores divided by their sum), ``d p_ti / d z_tj = a_tj (delta_ij - p_ti)``,
  so ``dL/dz_tj = a_tj (w_j - sum_i w_i p_ti) / (G T_g)``: the router
  gradient of the Switch loss with ``N f`` replaced by ``w``;
* unnormalised: the raw gate score ``rho = sigmoid(z)`` (``E[rho]`` in place
  of ``P``, for scores that are not probabilities),
  ``dL/dz_tj = w_j s_tj (1 - s_tj) / (G T_g)``. For a softmax gate the two
  coincide.

``F`` is held constant (it comes from a 0/1 routing map). With ``phi`` the
Switch objective ``sum_i F_i^2 / (2 Q_i)`` and uniform ``Q`` this is the
Switch/GShard loss ``N sum_i f_i P_i`` exactly
(:func:`routesim.learning.penalties.balance_loss`); ``tests/test_balance_family.py``
checks every built-in against central finite differences of the surrogate
with ``sg[F - P]`` frozen.

Shape legend: T tokens, E experts, G groups; ``...`` any leading axes.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .._math import sigmoid
from ..penalty_registry import BalanceObjective, get_objective
from .penalties import aux_probabilities, group_tokens, routing_fractions

__all__ = ["score_and_slope", "family_loss", "family_loss_from_map", "uniform_target"]


def uniform_target(xp: ModuleType, num_experts: int) -> Any:
    """The uniform target ``Q_i = 1 / N``: array (E,).

    Parameters
    ----------
    xp : namespace
    num_experts : int

    Returns
    -------
    float64 array (E,)

    Examples
    --------
    >>> import numpy as np
    >>> uniform_target(np, 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    return xp.full((num_experts,), 1.0 / num_experts, dtype=xp.float64)


def score_and_slope(xp: ModuleType, score_function: str, z_TE: Any, normalise: bool
                    ) -> tuple[Any, Any]:
    """``rho`` whose token mean is ``P``, and its slope factor ``a``.

    Normalised: ``d rho_ti / d z_tj = a_tj (delta_ij - rho_ti)``; unnormalised
    sigmoid: ``d rho_ti / d z_tj = delta_ij a_tj`` with ``a = s (1 - s)``.

    Parameters
    ----------
    xp : namespace
    score_function : {"softmax", "sigmoid"}
    z_TE : array (..., T, E)
    normalise : bool

    Returns
    -------
    rho_TE, a_TE : arrays (..., T, E)

    Examples
    --------
    >>> import numpy as np
    >>> rho, a = score_and_slope(np, "sigmoid", np.zeros((1, 2)), False)
    >>> rho.tolist(), a.tolist()
    ([[0.5, 0.5]], [[0.25, 0.25]])
    """
    if normalise or score_function == "softmax":
        return aux_probabilities(xp, score_function, z_TE)
    if score_function == "sigmoid":
        s = sigmoid(xp, z_TE)
        return s, s * (1.0 - s)
    raise ValueError(f"score_function = {score_function!r}: must be 'softmax' or 'sigmoid'")


def family_loss(xp: ModuleType, objective: BalanceObjective | str, z_TE: Any, f_GE: Any,
                score_function: str, groups: int, target_E: Any, normalise: bool = True,
                temperature: float = 1.0) -> tuple[Any, Any]:
    """Value and logit gradient of ``mean_g phi(P_g + sg[F_g - P_g])``.

    Parameters
    ----------
    xp : namespace
    objective : BalanceObjective or str
        A registered objective (or its name).
    z_TE : array (..., T, E)
        Logits; tokens in group order.
    f_GE : array (..., G, E)
        Load distribution of each group (held constant).
    score_function : {"softmax", "sigmoid"}
    groups : int >= 1
        ``G``; must divide ``T``.
    target_E : array (E,)
        Target distribution ``Q`` (positive, summing to 1).
    normalise : bool
        ``P`` from normalised probabilities (True) or raw scores ``E[rho]``.
    temperature : float > 0
        Passed to the objective (``logsumexp``).

    Returns
    -------
    value : array (...)
        ``mean_g phi(F_g)`` (linear objectives: ``mean_g sum_i w_gi P_gi``).
    grad_TE : array (..., T, E)

    Examples
    --------
    The quadratic objective on a collapsed load pushes the busy expert's
    logits down and the others' up:

    >>> import numpy as np
    >>> F = np.array([[1.0, 0.0]])
    >>> value, grad = family_loss(np, "quadratic", np.zeros((2, 2)), F, "softmax", 1,
    ...                           uniform_target(np, 2))
    >>> float(value), grad.tolist()
    (0.25, [[0.125, -0.125], [0.125, -0.125]])
    """
    spec = get_objective(objective) if isinstance(objective, str) else objective
    rho, a = score_and_slope(xp, score_function, z_TE, normalise)
    rho_G, a_G = group_tokens(xp, rho, groups), group_tokens(xp, a, groups)
    t_g = rho_G.shape[-2]
    q = xp.asarray(target_E, dtype=xp.float64)
    w_GE = spec.dphi(xp, f_GE, q, temperature)
    if spec.linear:
        value = xp.sum(w_GE * xp.mean(rho_G, axis=-2), axis=-1)
    else:
        value = spec.phi(xp, f_GE, q, temperature)
    w_b = w_GE[..., None, :]
    if normalise or score_function == "softmax":
        grad = a_G * (w_b - xp.sum(w_b * rho_G, axis=-1, keepdims=True))
    else:
        grad = a_G * w_b
    grad = grad / (groups * t_g)
    return xp.mean(value, axis=-1), xp.reshape(grad, tuple(z_TE.shape))


def family_loss_from_map(xp: ModuleType, objective: BalanceObjective | str, z_TE: Any,
                         map_TE: Any, score_function: str, topk: int, groups: int,
                         target_E: Any, normalise: bool = True, temperature: float = 1.0,
                         normalization: str = "megatron") -> tuple[Any, Any]:
    """:func:`family_loss` with ``F`` counted from a 0/1 routing map.

    ``F_gi = c_gi / (K T_g)`` (``megatron``, a distribution) or ``c_gi / T_g``
    (``mixtral``, summing to K: the Switch loss then equals ``K`` at balance).

    Parameters
    ----------
    xp, objective, z_TE, score_function, groups, target_E, normalise, temperature
        As for :func:`family_loss`.
    map_TE : bool or 0/1 array (..., T, E)
        The routing map that gives ``F`` (held constant).
    topk : int
    normalization : {"megatron", "mixtral"}

    Returns
    -------
    value : array (...)
    grad_TE : array (..., T, E)

    Examples
    --------
    The Switch objective with a uniform target is the Switch/GShard loss:

    >>> import numpy as np
    >>> from routesim.learning.penalties import balance_loss
    >>> z = np.array([[0.3, -0.1, 0.2], [1.0, 0.0, -1.0]])
    >>> m = np.array([[1, 0, 1], [1, 1, 0]])
    >>> v, g = family_loss_from_map(np, "switch", z, m, "softmax", 2, 1, uniform_target(np, 3))
    >>> v0, g0 = balance_loss(np, z, m, "softmax", 2, 1)
    >>> bool(np.isclose(v, v0)), bool(np.allclose(g, g0))
    (True, True)
    """
    f_GE = routing_fractions(xp, map_TE, topk, groups, normalization)
    return family_loss(xp, objective, z_TE, f_GE, score_function, groups, target_E,
                       normalise, temperature)
