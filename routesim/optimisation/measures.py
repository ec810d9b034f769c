"""A routed assignment and its bias scored against the optimal-assignment oracle.

All functions broadcast over leading (step) axes, so one call scores every
step of a run against one oracle solution (frozen traffic) or each step
against its own (with matching leading axes).

Shape legend: S steps (any leading axes), T tokens, E experts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .oracle import dual_function

__all__ = ["routed_objective", "objective_gap", "dual_correlation", "capacity_overflow",
           "agreement", "kkt_residuals", "lagrangian_gap", "bias_price"]


def routed_objective(scores_TE: Any, selected_STE: Any) -> np.ndarray:
    """Total selected score of an assignment: ``sum_{t,i} s[t, i] x[t, i]``.

    Examples
    --------
    >>> import numpy as np
    >>> float(routed_objective(np.array([[1.0, 0.0], [1.0, 0.5]]), np.eye(2, dtype=bool)))
    1.5
    """
    s = np.asarray(scores_TE, dtype=np.float64)
    return (s * np.asarray(selected_STE, dtype=np.float64)).sum(axis=(-2, -1))


def objective_gap(routed: Any, optimum: Any, unconstrained: Any) -> tuple[np.ndarray, np.ndarray]:
    """Gap of a routed objective to the optimum: absolute and relative to the price of balance.

    The relative gap divides by ``unconstrained - optimum`` (the score the
    balance constraint costs); it is NaN when that price is 0. An assignment
    that overflows its capacities can beat the optimum (a negative gap).

    Examples
    --------
    >>> gap, rel = objective_gap(1.75, 1.5, 2.0)
    >>> float(gap), float(rel)
    (-0.25, -0.5)
    """
    gap = np.asarray(optimum, dtype=np.float64) - np.asarray(routed, dtype=np.float64)
    price = np.asarray(unconstrained, dtype=np.float64) - np.asarray(optimum, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(price > 0, gap / np.where(price > 0, price, 1.0), np.nan)
    return gap, rel


def _centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=-1, keepdims=True)


def dual_correlation(bias_SE: Any, price_E: Any) -> np.ndarray:
    """Pearson correlation over experts of the centred bias with the centred ``-price``.

    1 when the bias is an increasing affine function of the dual bias
    ``-p`` (a bias routes on ``s + b``, a price on ``s - p``); NaN when
    either is constant.

    Examples
    --------
    >>> import numpy as np
    >>> float(dual_correlation(np.array([0.1, 0.0, -0.1]), np.array([0.0, 1.0, 2.0])))
    1.0
    """
    b = _centre(np.asarray(bias_SE, dtype=np.float64))
    d = _centre(-np.asarray(price_E, dtype=np.float64))
    num = (b * d).sum(axis=-1)
    den = np.sqrt((b * b).sum(axis=-1) * (d * d).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def capacity_overflow(load_SE: Any, capacity_E: Any) -> np.ndarray:
    """``max_i load_i / C_i - 1``: MaxVio against the target shares when ``C = T K Q``.

    Examples
    --------
    >>> import numpy as np
    >>> float(capacity_overflow(np.array([6, 2]), np.array([4.0, 4.0])))
    0.5
    """
    load = np.asarray(load_SE, dtype=np.float64)
    cap = np.asarray(capacity_E, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(cap > 0, load / np.where(cap > 0, cap, 1.0),
                         np.where(load > 0, np.inf, 0.0))
    return ratio.max(axis=-1) - 1.0


def agreement(selected_STE: Any, assignment_TE: Any) -> np.ndarray:
    """Share of the routed assignments that the oracle makes too.

    ``sum min(x_routed, x_oracle) / sum x_routed`` (a fractional oracle
    assignment counts by its weight).

    Examples
    --------
    >>> import numpy as np
    >>> float(agreement(np.array([[1, 0], [1, 0]]), np.array([[1, 0], [0, 1]])))
    0.5
    """
    x = np.asarray(selected_STE, dtype=np.float64)
    both = np.minimum(x, np.asarray(assignment_TE, dtype=np.float64)).sum(axis=(-2, -1))
    return both / np.maximum(x.sum(axis=(-2, -1)), 1e-300)


def bias_price(bias_SE: Any) -> np.ndarray:
    """The price a bias stands for, ``p = max(b) - b`` (>= 0, the favoured expert at 0).

    Examples
    --------
    >>> import numpy as np
    >>> bias_price(np.array([0.1, -0.2, 0.0])).round(12).tolist()
    [0.0, 0.3, 0.1]
    """
    b = np.asarray(bias_SE, dtype=np.float64)
    return b.max(axis=-1, keepdims=True) - b


def kkt_residuals(load_SE: Any, bias_SE: Any, capacity_E: Any) -> tuple[np.ndarray, np.ndarray]:
    """KKT residuals of a routed assignment with the price of its bias.

    The routed assignment is the top K of ``s + b``, so it maximises the
    Lagrangian at the price ``p = max(b) - b``: stationarity holds by
    construction. The other two conditions are measured:

    - feasibility: ``max_i max(0, c_i - C_i) / C_i`` (the largest overload);
    - complementary slackness: ``sum_i p_i |C_i - c_i| / sum_i C_i`` (a
      priced expert must be full; in score units per assignment).

    Examples
    --------
    >>> import numpy as np
    >>> feas, slack = kkt_residuals(np.array([5, 3]), np.array([0.0, 0.5]), np.array([4, 4]))
    >>> float(feas), float(slack)
    (0.25, 0.0625)
    """
    load = np.asarray(load_SE, dtype=np.float64)
    cap = np.asarray(capacity_E, dtype=np.float64)
    over = np.maximum(load - cap, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        feas = np.where(cap > 0, over / np.where(cap > 0, cap, 1.0),
                        np.where(over > 0, np.inf, 0.0)).max(axis=-1)
    slack = (bias_price(bias_SE) * np.abs(cap - load)).sum(axis=-1) / cap.sum()
    return feas, slack


def lagrangian_gap(scores_TE: Any, bias_SE: Any, topk: int, capacity_E: Any,
                   optimum: Any) -> np.ndarray:
    """``g(p) - optimum`` at the price of the bias (>= 0; 0 at an optimal price).

    Summed over steps, each against its own batch's optimum, it is the
    cumulative (dynamic) regret of the controller's dual sequence.

    Examples
    --------
    >>> import numpy as np
    >>> s, cap = np.array([[1.0, 0.0], [1.0, 0.5]]), np.array([1.0, 1.0])
    >>> lagrangian_gap(s, np.array([[0.0, 0.0], [-0.5, 0.0]]), 1, cap, 1.5).tolist()
    [0.5, 0.0]
    """
    return dual_function(scores_TE, bias_price(bias_SE), topk, capacity_E) - np.asarray(
        optimum, dtype=np.float64)
