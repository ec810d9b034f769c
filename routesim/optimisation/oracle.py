"""The optimal capacity-constrained top-K assignment of one score matrix, and its dual.

For scores ``s[t, i]`` of T tokens over N experts, K experts per token and
capacities ``C_i``, the oracle solves the linear program::

    maximise    sum_{t,i} s[t, i] x[t, i]
    subject to  sum_i x[t, i] = K        for every token t     (prices alpha_t)
                sum_t x[t, i] <= C_i     for every expert i    (prices p_i >= 0)
                0 <= x[t, i] <= 1

the LP relaxation of the assignment problem (a bipartite b-matching, whose
constraint matrix is totally unimodular: with integer capacities the optimal
vertex is a 0/1 assignment). It is solved by HiGHS through
:func:`scipy.optimize.linprog`. Its Lagrangian dual in the capacity prices is
the convex, piecewise-linear function (:func:`dual_function`)::

    g(p) = sum_t topK_sum(s[t, :] - p) + sum_i C_i p_i

whose minimum equals the LP optimum (strong duality): given prices ``p``,
each token picks the top K of ``s - p``, so ``-p`` is a bias. When the
capacities add up to ``T K`` (the default, ``C = T K Q`` for target shares
``Q``), ``g`` does not change when a constant is added to ``p``, and prices
are compared after centring.

Shape legend: T tokens, E experts, S leading (step) axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..exceptions import ConfigError, SolverError

__all__ = ["OracleSolution", "optimal_assignment", "dual_function", "topk_assignment",
           "unconstrained_objective", "target_capacity", "check_target_shares"]


def check_target_shares(shares: Any, num_experts: int, name: str = "target_shares"
                        ) -> np.ndarray:
    """Target load shares ``Q`` as a float64 vector, or ConfigError naming ``name``.

    ``None`` means uniform shares ``1 / N``. Shares must be finite, >= 0,
    one per expert and sum to 1 (within 1e-6).

    Parameters
    ----------
    shares : sequence of float or None
    num_experts : int
    name : str
        The field named in an error.

    Returns
    -------
    ndarray (E,)

    Examples
    --------
    >>> check_target_shares(None, 4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> check_target_shares([0.5, 0.5, 0.1, -0.1], 4)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: target_shares = [0.5, 0.5, 0.1, -0.1]: must be finite and >= 0
    """
    if shares is None:
        return np.full(num_experts, 1.0 / num_experts)
    q = np.asarray(shares, dtype=np.float64)
    shown = [float(x) for x in np.ravel(q)]
    if q.shape != (num_experts,):
        raise ConfigError(f"{name} = {shown}: must have one share per expert ({num_experts})")
    if not (np.all(np.isfinite(q)) and np.all(q >= 0)):
        raise ConfigError(f"{name} = {shown}: must be finite and >= 0")
    if abs(q.sum() - 1.0) > 1e-6:
        raise ConfigError(f"{name} = {shown}: must sum to 1 (they sum to {q.sum():.6g})")
    return q


def target_capacity(num_tokens: int, topk: int, shares: Any = None,
                    num_experts: int | None = None) -> np.ndarray:
    """Capacities ``C_i = T K Q_i`` (they add up to ``T K``: balance as an equality).

    Examples
    --------
    >>> target_capacity(8, 2, [0.5, 0.25, 0.25]).tolist()
    [8.0, 4.0, 4.0]
    >>> target_capacity(8, 2, num_experts=4).tolist()
    [4.0, 4.0, 4.0, 4.0]
    """
    n = num_experts if shares is None else len(shares)
    return num_tokens * topk * check_target_shares(shares, n)


def _check_scores(scores: Any, name: str = "scores") -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 1 or s.shape[1] < 2:
        raise ConfigError(f"{name}: shape {s.shape} must be (tokens >= 1, experts >= 2)")
    if not np.all(np.isfinite(s)):
        bad = np.argwhere(~np.isfinite(s))[0]
        raise ConfigError(f"{name}[{bad[0]}, {bad[1]}] = {float(s[tuple(bad)])!r}: must be finite "
                          "(the matrix holds NaN or Inf)")
    return s


def _check_capacity(capacity: Any, num_tokens: int, num_experts: int, topk: int
                    ) -> np.ndarray:
    c = np.asarray(capacity, dtype=np.float64)
    shown = [float(x) for x in np.ravel(c)][:8]
    if c.shape != (num_experts,):
        raise ConfigError(f"capacity = {shown}: must have one entry per expert ({num_experts})")
    if not (np.all(np.isfinite(c)) and np.all(c >= 0)):
        raise ConfigError(f"capacity = {shown}: must be finite and >= 0")
    room = float(np.minimum(c, num_tokens).sum())
    if room < num_tokens * topk - 1e-9:
        raise ConfigError(f"capacity = {shown}: infeasible for topk = {topk}: the experts can "
                          f"take {room:.6g} assignments of the {num_tokens * topk} needed "
                          "(sum of min(capacity, tokens) must be >= tokens * topk)")
    return c


def topk_assignment(scores_TE: Any, bias_E: Any, topk: int) -> np.ndarray:
    """The routed assignment: each token's top K of ``s + b`` (0/1, ties to the lower index).

    Parameters
    ----------
    scores_TE : array (T, E) or (S, T, E)
    bias_E : array (E,) or (S, E)
        Broadcast against the scores' leading axes.
    topk : int

    Returns
    -------
    bool array (..., T, E)

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.9, 0.5, 0.1], [0.2, 0.2, 0.8]])
    >>> topk_assignment(s, np.zeros(3), 1).astype(int).tolist()
    [[1, 0, 0], [0, 0, 1]]
    >>> topk_assignment(s, np.array([[0.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]), 1).shape
    (2, 2, 3)
    """
    bias = np.asarray(bias_E)
    x = np.asarray(scores_TE) + bias[..., None, :]
    idx = np.argsort(-x, axis=-1, kind="stable")[..., :topk]
    out = np.zeros(x.shape, dtype=bool)
    np.put_along_axis(out, idx, True, axis=-1)
    return out


def _topk_sum(x: np.ndarray, topk: int) -> np.ndarray:
    """Sum of the K largest along the last axis."""
    return -np.partition(-x, topk - 1, axis=-1)[..., :topk].sum(axis=-1)


def unconstrained_objective(scores_TE: Any, topk: int) -> float:
    """Total score of the plain top-K (no capacity): ``g(0)`` when capacities sum to ``T K``.

    Examples
    --------
    >>> unconstrained_objective([[0.75, 0.5, 0.25], [0.25, 0.25, 0.5]], 1)
    1.25
    """
    return float(_topk_sum(np.asarray(scores_TE, dtype=np.float64), topk).sum())


def dual_function(scores_TE: Any, price_E: Any, topk: int, capacity_E: Any) -> np.ndarray:
    """The Lagrangian dual ``g(p) = sum_t topK_sum(s_t - p) + sum_i C_i p_i``.

    ``g(p)`` is at least the LP optimum for every ``p`` (>= 0, or any ``p``
    when the capacities add up to ``T K``), with equality at the optimal
    prices; ``g(p) - optimum`` is the Lagrangian gap of the prices ``p``.

    Parameters
    ----------
    scores_TE : array (T, E)
    price_E : array (..., E)
        Prices; a leading axis evaluates several at once.
    topk : int
    capacity_E : array (E,)

    Returns
    -------
    float64 array (...)

    Examples
    --------
    Two tokens that both prefer expert 0, one slot each: the price 0.5 on
    expert 0 makes both indifferent and ``g`` equals the optimum 1.0 + 0.5:

    >>> import numpy as np
    >>> s = np.array([[1.0, 0.0], [1.0, 0.5]])
    >>> dual_function(s, np.array([[0.0, 0.0], [0.5, 0.0]]), 1, np.array([1.0, 1.0])).tolist()
    [2.0, 1.5]
    """
    s = np.asarray(scores_TE, dtype=np.float64)
    p = np.asarray(price_E, dtype=np.float64)
    c = np.asarray(capacity_E, dtype=np.float64)
    return _topk_sum(s - p[..., None, :], topk).sum(axis=-1) + (p * c).sum(axis=-1)


@dataclass(frozen=True)
class OracleSolution:
    """The optimal assignment of one score matrix and its dual prices.

    Attributes
    ----------
    objective : float
        The optimal total selected score.
    unconstrained : float
        The total score of the plain top-K (no capacity constraint).
    assignment_TE : float64 array (T, E)
        The optimal ``x`` (0/1 at a vertex with integer capacities).
    price_E : float64 array (E,)
        Dual prices ``p_i >= 0`` of the capacity constraints.
    token_price_T : float64 array (T,)
        Dual prices ``alpha_t`` of the per-token constraints.
    capacity_E : float64 array (E,)
    topk : int

    Examples
    --------
    >>> sol = optimal_assignment([[1.0, 0.0], [1.0, 0.5]], 1)
    >>> sol.objective, sol.unconstrained, round(sol.price_of_balance, 12)
    (1.5, 2.0, 0.5)
    >>> sol.dual_bias_E.tolist()  # -p centred (any gap in [0.5, 1] is optimal here)
    [-0.5, 0.5]
    """

    objective: float
    unconstrained: float
    assignment_TE: np.ndarray
    price_E: np.ndarray
    token_price_T: np.ndarray
    capacity_E: np.ndarray
    topk: int

    @property
    def price_of_balance(self) -> float:
        """Score given up for balance: unconstrained top-K objective minus the optimum."""
        return self.unconstrained - self.objective

    @property
    def dual_bias_E(self) -> np.ndarray:
        """The prices as a centred bias, ``-(p - mean p)`` (the bias routes on ``s + b``)."""
        return -(self.price_E - self.price_E.mean())

    @property
    def load_E(self) -> np.ndarray:
        """The optimal assignment's loads."""
        return self.assignment_TE.sum(axis=0)


def optimal_assignment(scores_TE: Any, topk: int, capacity_E: Any = None, *,
                       target_shares: Any = None) -> OracleSolution:
    """Solve the capacity-constrained top-K assignment (LP relaxation, HiGHS dual simplex).

    Parameters
    ----------
    scores_TE : array (T, E)
        Selection scores (gate scores, or logits for a bias on logits); finite.
    topk : int in [1, E]
    capacity_E : array (E,), optional
        Per-expert capacity; default ``T K Q`` (exact balance against the
        target shares).
    target_shares : sequence of float, optional
        ``Q`` (default uniform), used when ``capacity_E`` is not given.

    Returns
    -------
    OracleSolution

    Raises
    ------
    ConfigError
        Naming ``scores`` (not finite, bad shape), ``topk``, ``capacity``
        (negative, or infeasible: the experts cannot take ``T K``
        assignments) or ``target_shares``.
    SolverError
        If HiGHS does not report an optimum.

    Examples
    --------
    Three tokens, three experts, top-1, one slot each. All prefer expert 0;
    the oracle gives it to the token that loses most elsewhere:

    >>> s = [[0.9, 0.8, 0.0], [0.9, 0.1, 0.0], [0.9, 0.0, 0.7]]
    >>> sol = optimal_assignment(s, 1, [1, 1, 1])
    >>> round(sol.objective, 12), sol.assignment_TE.argmax(axis=1).tolist()
    (2.4, [1, 0, 2])
    >>> optimal_assignment(s, 1, [1, 1, 0.5])
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: capacity = [1.0, 1.0, 0.5]: infeasible for topk = 1: the experts can take 2.5 assignments of the 3 needed (sum of min(capacity, tokens) must be >= tokens * topk)
    """
    from scipy import sparse
    from scipy.optimize import linprog

    s = _check_scores(scores_TE)
    t, e = s.shape
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or not 1 <= topk <= e:
        raise ConfigError(f"topk = {topk!r}: must be an integer in [1, {e}] (the experts)")
    topk = int(topk)
    if capacity_E is None:
        capacity_E = t * topk * check_target_shares(target_shares, e)
    c = _check_capacity(capacity_E, t, e, topk)
    # x is token-major: x[t * E + i]
    a_eq = sparse.kron(sparse.identity(t, format="csr"), np.ones((1, e)), format="csr")
    a_ub = sparse.kron(np.ones((1, t)), sparse.identity(e, format="csr"), format="csr")
    res = linprog(-s.ravel(), A_ub=a_ub, b_ub=c, A_eq=a_eq, b_eq=np.full(t, float(topk)),
                  bounds=(0.0, 1.0), method="highs-ds")
    if res.status != 0:
        raise SolverError(f"optimal_assignment: HiGHS did not reach an optimum "
                          f"(status {res.status}: {res.message})")
    x = np.clip(res.x.reshape(t, e), 0.0, 1.0)
    price = np.maximum(-np.asarray(res.ineqlin.marginals, dtype=np.float64), 0.0)
    alpha = -np.asarray(res.eqlin.marginals, dtype=np.float64)
    objective = float(-res.fun)
    if not math.isfinite(objective):  # pragma: no cover - HiGHS reports status != 0 first
        raise SolverError("optimal_assignment: non-finite optimum")
    return OracleSolution(objective=objective, unconstrained=unconstrained_objective(s, topk),
                          assignment_TE=x, price_E=price, token_price_T=alpha, capacity_E=c,
                          topk=topk)
