"""A run's routed assignments scored against the optimal-assignment oracle.

For each point and replica the step's selection scores are drawn again on the
host (the draws are pure functions of the keys, so they are the engine's),
the oracle (:func:`routesim.optimisation.optimal_assignment`) is solved once
for frozen traffic and once per step otherwise, and every step's routed
assignment, the top K of ``s + b`` at the bias that opened the step, is
scored against it (:mod:`routesim.optimisation.measures`). Capacities are
``C = T K Q`` over the step's T tokens, with the target shares ``Q`` of
``controller.target_shares`` (uniform by default). Scores are the gate's
(``s``), or the logits for laws whose bias acts on the logits (quantile
balancing).

``run.oracle`` decides: ``auto`` scores frozen traffic, ``on`` every traffic
(one LP per step, point and replica: keep T in the thousands), ``off``
nothing.

Shape legend: S steps, P points, R replicas, T tokens, E experts.
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np

from . import traffic
from .config import Config
from .config.core import oracle_unsupported
from .controllers import get_law
from .engines._common import make_plan
from .gates import gate
from .optimisation import (
    agreement,
    capacity_overflow,
    detect_cycle,
    dual_correlation,
    kkt_residuals,
    lagrangian_gap,
    objective_gap,
    optimal_assignment,
    routed_objective,
    topk_assignment,
)
from .optimisation.oracle import check_target_shares

__all__ = ["oracle_enabled", "selection_scores_SPRTE", "oracle_variables",
           "target_shares_PE"]


def oracle_enabled(config: Config) -> bool:
    """True when the Dataset gets the oracle's variables (``run.oracle``).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> oracle_enabled(config_from_dict({"traffic": {"kind": "frozen"}}))
    True
    >>> oracle_enabled(config_from_dict({}))
    False
    """
    mode = config.run.oracle
    return mode == "on" or (mode == "auto" and config.traffic.kind == "frozen"
                            and oracle_unsupported(config) is None)



def target_shares_PE(points: Sequence[Config]) -> np.ndarray:
    """Each point's target load shares ``Q`` (uniform when unset), (P, E).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1}})
    >>> target_shares_PE(cfg.points()).tolist()
    [[0.25, 0.25, 0.25, 0.25]]
    """
    n = points[0].router.num_experts
    return np.stack([check_target_shares(getattr(p.controller, "target_shares", None), n,
                                         "controller.target_shares") for p in points])


def selection_scores_SPRTE(config: Config, point_indices: Sequence[int] | None,
                           steps: Sequence[int]) -> np.ndarray:
    """The selection scores of the given steps, as the engine drew them: (S, P, R, T, E).

    Gate scores ``s``, or the logits ``z`` at points whose bias acts on the
    logits; float32 (the engine's dtype).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "frozen"},
    ...     "batch": {"num_sequences": 1, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 1, "score_function": "sigmoid"}})
    >>> s = selection_scores_SPRTE(cfg, None, [0, 5])
    >>> s.shape, bool((s[0] == s[1]).all())
    ((2, 1, 1, 8, 4), True)
    """
    return np.stack(list(_scores_by_step(config, point_indices, steps)))


def _scores_by_step(config: Config, point_indices: Sequence[int] | None,
                    steps: Sequence[int]) -> Iterator[np.ndarray]:
    """The selection scores (P, R, T, E) of each of the increasing ``steps``, in turn."""
    pp = make_plan(config, point_indices, np)
    cfg = pp.first
    tparams = traffic.make_traffic_params(pp.points)
    state = traffic.init_traffic(np, tparams, pp.keys_PR)
    n_tok = cfg.batch.tokens_per_step
    on_logits = np.array([get_law(p.controller.type).bias_on_logits for p in pp.points])
    done = 0
    for t in steps:
        while done <= t:
            state = traffic.advance_traffic(np, tparams, state, pp.keys_PR, done)
            done += 1
        z = traffic.logits(np, tparams, state, pp.keys_PR, t, 0, n_tok)
        s = gate(np, cfg.router.score_function, z)
        yield np.where(on_logits[:, None, None, None], z, s).astype(np.float32)


def _scored(s: np.ndarray, sol: Any, b: np.ndarray, load: np.ndarray, k: int,
            cap: np.ndarray) -> dict[str, Any]:
    """The per-step measures of steps with biases ``b`` (S', E) on scores ``s`` (T, E)."""
    chosen = topk_assignment(s, b.astype(np.float32), k)      # (S', T, E)
    routed = routed_objective(s, chosen)
    gap, rel = objective_gap(routed, sol.objective, sol.unconstrained)
    feas, slack = kkt_residuals(load, b, cap)
    return {"routed_objective": routed, "oracle_objective": sol.objective,
            "price_of_balance": sol.price_of_balance, "oracle_gap": gap,
            "oracle_gap_relative": rel, "capacity_overflow": capacity_overflow(load, cap),
            "oracle_agreement": agreement(chosen, sol.assignment_TE),
            "dual_correlation": dual_correlation(b, sol.price_E),
            "kkt_feasibility": feas, "kkt_slackness": slack,
            "lagrangian_gap": lagrangian_gap(s, b, k, cap, sol.objective)}


def oracle_variables(config: Config, point_indices: Sequence[int] | None,
                     bias_SPRE: np.ndarray, load_SPRE: np.ndarray) -> dict[str, Any]:
    """The oracle's Dataset variables (empty when :func:`oracle_enabled` is false).

    Per step, point and replica: ``routed_objective``, ``oracle_objective``,
    ``price_of_balance``, ``oracle_gap`` (optimum minus routed objective),
    ``oracle_gap_relative`` (over the price of balance), ``capacity_overflow``
    (``max load / C - 1`` of the recorded loads), ``oracle_agreement``,
    ``dual_correlation`` (centred bias against the centred ``-price``),
    ``kkt_feasibility``, ``kkt_slackness``, ``lagrangian_gap`` and
    ``regret`` (its running sum); ``oracle_price`` per expert. Frozen
    traffic adds ``cycle_period``, ``cycle_entered`` and ``cycle_band`` per
    point and replica (:func:`routesim.optimisation.detect_cycle`).

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"traffic": {"kind": "frozen"}, "run": {"steps": 1},
    ...     "batch": {"num_sequences": 1, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 1, "score_function": "sigmoid"}})
    >>> s = selection_scores_SPRTE(cfg, None, [0])
    >>> load = topk_assignment(s[0], np.zeros((1, 1, 4)), 1).sum(-2)[None]
    >>> v = oracle_variables(cfg, None, np.zeros((1, 1, 1, 4), np.float32), load)
    >>> float(v["oracle_gap"][1][0, 0, 0]) == -float(v["price_of_balance"][1][0, 0, 0])
    True
    """
    if not oracle_enabled(config):
        return {}
    points = make_plan(config, point_indices, np).points
    cfg = points[0]
    k, n_tok = cfg.router.topk, cfg.batch.tokens_per_step
    frozen = cfg.traffic.kind == "frozen"
    steps, n_p, n_r, n_e = bias_SPRE.shape
    cap_PE = n_tok * k * target_shares_PE(points)
    names = ("routed_objective", "oracle_objective", "price_of_balance", "oracle_gap",
             "oracle_gap_relative", "capacity_overflow", "oracle_agreement", "dual_correlation",
             "kkt_feasibility", "kkt_slackness", "lagrangian_gap")
    out = {name: np.full((steps, n_p, n_r), np.nan) for name in names}
    price = np.zeros((steps, n_p, n_r, n_e))
    chunk = max(1, (1 << 24) // (n_tok * n_e))
    solved = [0] if frozen else list(range(steps))  # frozen: one matrix for every step
    for step, scores in zip(solved, _scores_by_step(config, point_indices, solved)):
        first, last = (0, steps) if frozen else (step, step + 1)
        rows = slice(first, last)
        for p in range(n_p):
            for r in range(n_r):
                s = scores[p, r]
                sol = optimal_assignment(s.astype(np.float64), k, cap_PE[p])
                price[rows, p, r] = sol.price_E
                for lo in range(first, last, chunk):  # bounded memory: (chunk, T, E) at a time
                    part = slice(lo, min(lo + chunk, last))
                    for name, value in _scored(s, sol, bias_SPRE[part, p, r],
                                               load_SPRE[part, p, r], k, cap_PE[p]).items():
                        out[name][part, p, r] = value
    dims3 = ("step", "point", "replica")
    data: dict[str, Any] = {name: (dims3, value) for name, value in out.items()}
    data["regret"] = (dims3, np.cumsum(out["lagrangian_gap"], axis=0))
    data["oracle_price"] = (dims3 + ("expert",), price)
    if frozen:
        cycles = [[detect_cycle(bias_SPRE[:, p, r]) for r in range(n_r)] for p in range(n_p)]
        pr = ("point", "replica")
        data["cycle_period"] = (pr, np.array([[c.period for c in row] for row in cycles]))
        data["cycle_entered"] = (pr, np.array([[c.entered for c in row] for row in cycles]))
        data["cycle_band"] = (pr, np.array([[c.band for c in row] for row in cycles]))
    return data
