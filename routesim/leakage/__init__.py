"""Information leakage of routing: measured entropy, constructive channels, estimators.

Modules
-------
setup    the block, its split, its router and its logits, read from a config
measure  leakage of early routing decisions about later tokens (Expert Choice and others)
channel  constructive leakage channels (encoder, decoder) through Expert Choice
entropy  entropy estimators, bootstrap intervals, sample sizes
"""

from .measure import LeakageResult, measure_leakage
from .setup import LeakageSetup, leakage_setup

__all__ = ["LeakageResult", "LeakageSetup", "leakage_setup", "measure_leakage"]
