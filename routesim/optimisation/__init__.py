"""Balancing as constrained optimisation: the assignment oracle, its measures, cycles.

Load balancing is the problem: route each token to K experts so that the
total selected score is largest while each expert's load stays within its
capacity. :func:`optimal_assignment` solves its linear-programming relaxation
(HiGHS) and returns the optimum, the assignment and the dual prices of the
capacity constraints; :mod:`~routesim.optimisation.measures` scores a routed
assignment (and the bias that made it) against that oracle;
:func:`detect_cycle` finds the cycle a bias trajectory settles into.
Pure NumPy and SciPy (no xarray). See docs/optimisation.md.

Modules: ``oracle`` (the LP and its dual), ``measures`` (gap, dual
correlation, overflow, agreement, KKT residuals, Lagrangian gap),
``cycles`` (cycle detection on a trajectory).
"""

from .cycles import Cycle, detect_cycle
from .measures import (
    agreement,
    capacity_overflow,
    dual_correlation,
    kkt_residuals,
    lagrangian_gap,
    objective_gap,
    routed_objective,
)
from .oracle import (
    OracleSolution,
    check_target_shares,
    dual_function,
    optimal_assignment,
    target_capacity,
    topk_assignment,
    unconstrained_objective,
)

__all__ = [
    "OracleSolution",
    "optimal_assignment",
    "dual_function",
    "topk_assignment",
    "unconstrained_objective",
    "target_capacity",
    "check_target_shares",
    "routed_objective",
    "objective_gap",
    "dual_correlation",
    "capacity_overflow",
    "agreement",
    "kkt_residuals",
    "lagrangian_gap",
    "Cycle",
    "detect_cycle",
]
