"""routesim: Mixture-of-Experts load balancing as a dynamical system.

A vectorised discrete-time simulator of token routing (traffic, gates,
biased top-K selection, capacity) and of the controllers that balance it,
with the analytical results set beside it.

Modules
-------
config       frozen dataclasses, TOML loading, sweeps, refusals of bad settings
controllers  bias update laws (sign, sign_centred, proportional, ema, ...) and their registry
traffic      router logits: popularity + noise, topic features, traces
gates        softmax, sigmoid, sqrt-softplus
routing      biased top-K, group limits, weights, capacity, counting, Expert Choice
metrics      MaxVio, CV, entropy, flips
learning     balance losses, z-loss, noisy top-K gating, the task proxy, optimizers
penalty_registry  the balance-loss family's objectives and their registry
theory       analytic results (load map, stability, limit cycles, MaxVio, leakage)
engines      the exact, mean-field and learning engines: pure (init, step) pairs
leakage      measured information leakage of early routing
run          simulate, simulate_meanfield, simulate_learner: every step, one Dataset
predict      the theory's predictions for every point of a config, as a Dataset
sweep        chunked, parallel, resumable sweeps
store        atomic save/load of results
plot         figures (matplotlib)
analysis     reshaping a sweep's results for analysis
testing      hypothesis strategies, invariant checks, a stability state machine
rng          counter-based random numbers, reproducible across backends and chunkings
cli          ``routesim run``, ``routesim sweep``, ``routesim --version``
"""

from .config import (
    BatchConfig,
    Config,
    ControllerConfig,
    PenaltyConfig,
    RouterConfig,
    RunConfig,
    SweepConfig,
    TrafficConfig,
    config_from_dict,
    load_config,
)
from .exceptions import (BackendError, ConfigError, NumericalFault, ResourceError,
                         ResultsFileError, SolverError, UnstableLoopError)

# The engines, the Dataset builder (xarray), the statistics (scipy) and Numba load
# when first used: ``import routesim`` stays light for the command line.
_LAZY = {
    "make_simulator": ("engines.exact", "make_simulator"),
    "measure_leakage": ("leakage.measure", "measure_leakage"),
    "make_learner_simulator": ("engines.learner", "make_learner_simulator"),
    "simulate": ("run", "simulate"),
    "simulate_learner": ("run", "simulate_learner"),
    "simulate_meanfield": ("run", "simulate_meanfield"),
    "load": ("store", "load"),
    "save": ("store", "save"),
    "make_meanfield_simulator": ("engines.meanfield", "make_meanfield_simulator"),
    "run_sweep": ("sweep", "run_sweep"),
    "predict": ("prediction", "predict"),
    "TheoryWarning": ("prediction", "TheoryWarning"),
    "theory": ("theory", None),
}


def __getattr__(name: str):
    """Import the public names of the heavy modules on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'routesim' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    mod = importlib.import_module(f".{module}", __name__)
    value = mod if attr is None else getattr(mod, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


from ._version import __version__

__all__ = [
    "__version__",
    "BackendError",
    "BatchConfig",
    "Config",
    "ConfigError",
    "ControllerConfig",
    "PenaltyConfig",
    "RouterConfig",
    "RunConfig",
    "SweepConfig",
    "TrafficConfig",
    "config_from_dict",
    "load",
    "load_config",
    "NumericalFault",
    "predict",
    "TheoryWarning",
    "ResourceError",
    "ResultsFileError",
    "SolverError",
    "UnstableLoopError",
    "make_learner_simulator",
    "make_meanfield_simulator",
    "make_simulator",
    "measure_leakage",
    "run_sweep",
    "save",
    "simulate",
    "simulate_learner",
    "simulate_meanfield",
    "theory",
]
