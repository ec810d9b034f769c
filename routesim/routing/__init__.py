"""Routing: biased top-K selection, gate weights, capacity, counting, Expert Choice.

Modules
-------
select         selection scores, group-limited top-K, gate weights, capacity, counts
expert_choice  Expert Choice routing (each expert picks its tokens)
"""

from .select import *  # noqa: F401,F403
from .select import __all__ as _select_all

__all__ = list(_select_all)
