"""Analytic results set beside the simulator."""

from .leakage import leakage_bound, leakage_exact, leakage_limit, leakage_split

__all__ = [
    "leakage_bound",
    "leakage_exact",
    "leakage_limit",
    "leakage_split",
]
