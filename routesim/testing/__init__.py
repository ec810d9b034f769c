"""Property-based testing of controllers: hypothesis strategies and invariant checks.

Import it to test a law of your own the way routesim tests its own
(docs/testing.md): :mod:`~routesim.testing.strategies` draws valid configs,
score matrices, load and popularity vectors; :mod:`~routesim.testing.invariants`
holds the invariants as checks that raise ``AssertionError``.

Needs hypothesis (``pip install routesim[testing]``). Importing this package
registers two hypothesis profiles: ``ci`` (derandomised, 25 examples, no
deadline) and ``dev`` (random, 200 examples); ``ci`` is loaded when the
environment variable ``CI`` is set.

Modules: ``strategies``, ``invariants``, ``machine`` (the stability state machine),
``plugin`` (the pytest plugin) and ``reference`` (the reference suite it runs).
"""

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError as err:  # pragma: no cover (hypothesis is in the test extra)
    raise ImportError("routesim.testing needs hypothesis: pip install 'routesim[testing]'") \
        from err

from .invariants import (check_backends_agree, check_bias_sum, check_capacity,
                         check_conservation, check_datasets_agree, check_distinct_experts,
                         check_monotone_load, check_permutation_equivariance,
                         check_shift_invariance, check_sign_step)
from .machine import CENTRED_LAWS, SIGN_LAWS, ControllerMachine
from .plugin import LawUnderTest
from .strategies import (batch_configs, configs, controller_configs, load_vectors,
                         popularity_vectors, router_configs, score_matrices, traffic_configs)

__all__ = [
    "router_configs", "traffic_configs", "batch_configs", "controller_configs", "configs",
    "score_matrices", "load_vectors", "popularity_vectors",
    "check_conservation", "check_distinct_experts", "check_permutation_equivariance",
    "check_shift_invariance", "check_monotone_load", "check_sign_step", "check_bias_sum",
    "check_capacity", "check_datasets_agree", "check_backends_agree",
    "ControllerMachine", "CENTRED_LAWS", "SIGN_LAWS", "LawUnderTest",
]

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=25, deadline=None, derandomize=True,
                          database=None, suppress_health_check=_QUIET)
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
if os.environ.get("CI"):
    settings.load_profile("ci")
