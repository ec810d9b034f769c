"""Information leakage of routing: measured entropy, constructive channels, estimators.

Modules
-------
measure  leakage of early routing decisions about later tokens (Expert Choice and others)
channel  constructive leakage channels (encoder, decoder) through Expert Choice
entropy  entropy estimators, bootstrap intervals, sample sizes
"""

from .measure import LeakageResult, LeakageSetup, leakage_setup, measure_leakage

__all__ = ["LeakageResult", "LeakageSetup", "leakage_setup", "measure_leakage"]
