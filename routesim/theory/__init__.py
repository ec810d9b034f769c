"""Analytic results set beside the simulator."""

from .expected_load import (
    equilibrium,
    jacobian,
    load_map,
    load_map_mc,
    own_probability,
    selection_covariance,
)
from .limit_cycle import (
    cycle_maxvio,
    harmonic_balance,
    linear_plant,
    map_plant,
    map_response,
    relay_cycle,
    relay_stationary,
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
from .hash_routing import hash_balance_limit, hash_table_maxvio
from .placement import counting_straggler, expected_straggler, rank_load_moments
from .from_config import critical_rates, not_modelled, predict_points, resolve_rates
from .leakage import leakage_bound, leakage_exact, leakage_limit, leakage_split

__all__ = [
    "equilibrium",
    "jacobian",
    "load_map",
    "load_map_mc",
    "own_probability",
    "selection_covariance",
    "cycle_maxvio",
    "harmonic_balance",
    "linear_plant",
    "map_plant",
    "map_response",
    "relay_cycle",
    "relay_stationary",
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
    "hash_balance_limit",
    "hash_table_maxvio",
    "counting_straggler",
    "expected_straggler",
    "rank_load_moments",
    "critical_rates",
    "not_modelled",
    "predict_points",
    "resolve_rates",
    "leakage_bound",
    "leakage_exact",
    "leakage_limit",
    "leakage_split",
]
