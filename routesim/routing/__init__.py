"""Routing: biased top-K selection, gate weights, capacity, counting, Expert Choice.

Modules
-------
select         selection scores, group-limited top-K, gate weights, quantile dual estimate
capacity       capacity per expert and dropping beyond it
count          tokens per (sequence, expert), displaced selections
block          one block of tokens from logits to routed and kept counts
expert_choice  Expert Choice routing (each expert picks its tokens)
"""

from .select import (gate_weights, group_limit, kth_largest, quantile_dual_estimate,
                     select_topk, selection_scores)
from .capacity import capacity, drop_to_capacity
from .count import counts_per_sequence, displaced_share, mask_counts_per_sequence
from .block import RoutedBlock, route_block

__all__ = [
    "selection_scores",
    "group_limit",
    "select_topk",
    "gate_weights",
    "kth_largest",
    "quantile_dual_estimate",
    "capacity",
    "drop_to_capacity",
    "counts_per_sequence",
    "mask_counts_per_sequence",
    "displaced_share",
    "RoutedBlock",
    "route_block",
]
