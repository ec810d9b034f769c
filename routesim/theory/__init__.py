"""Analytic results set beside the simulator."""

from .expected_load import (
    equilibrium,
    jacobian,
    load_map,
    load_map_mc,
    selection_covariance,
)
from .maxvio import (
    design_effect,
    expected_max_gaussian,
    expected_maxvio,
    load_error_covariance,
    sequence_covariance,
)
from .stability import (
    closed_loop_poles,
    critical_rate,
    deterministic_trajectory,
    effective_gain,
    loop_gains,
    settling_steps,
    spectral_radius,
    stable_region,
    steady_error_covariance,
)
from .leakage import leakage_bound, leakage_exact, leakage_limit, leakage_split

__all__ = [
    "equilibrium",
    "jacobian",
    "load_map",
    "load_map_mc",
    "selection_covariance",
    "design_effect",
    "expected_max_gaussian",
    "expected_maxvio",
    "load_error_covariance",
    "sequence_covariance",
    "closed_loop_poles",
    "critical_rate",
    "deterministic_trajectory",
    "effective_gain",
    "loop_gains",
    "settling_steps",
    "spectral_radius",
    "stable_region",
    "steady_error_covariance",
    "leakage_bound",
    "leakage_exact",
    "leakage_limit",
    "leakage_split",
]
