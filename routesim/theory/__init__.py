"""Analytic results set beside the simulator."""

from .expected_load import (
    equilibrium,
    jacobian,
    load_map,
    load_map_mc,
    selection_covariance,
)
from .leakage import leakage_bound, leakage_exact, leakage_limit, leakage_split

__all__ = [
    "equilibrium",
    "jacobian",
    "load_map",
    "load_map_mc",
    "selection_covariance",
    "leakage_bound",
    "leakage_exact",
    "leakage_limit",
    "leakage_split",
]
