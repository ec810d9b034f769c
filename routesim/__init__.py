"""routesim: Mixture-of-Experts load balancing as a dynamical system.

A vectorised discrete-time simulator of token routing (traffic, gates,
biased top-K selection, capacity) and of the controllers that balance it,
with the analytical results set beside it.

Modules
-------
config       frozen dataclasses, TOML loading, sweeps
traffic      router logits: popularity + noise, topic features, traces
gates        softmax, sigmoid, sqrt-softplus
routing      biased top-K, group limits, weights, capacity, counting
controllers  bias update laws (sign, sign_centred, proportional, ema, ...)
engine       the pure step function of the exact engine
expert_choice  Expert Choice routing (each expert picks its tokens)
leakage      measured information leakage (entropy of early routing)
leakage_channel  constructive leakage channels (encoder, decoder)
entropy      entropy estimators, bootstrap intervals, sample sizes
learner      the learning engine: a router trained on a task proxy and penalties
penalties    balance losses (Switch, sequence-wise, global-batch), z-loss, gradients
noisy_gate   noisy top-K gating with importance and load losses
task_proxy   the task-loss proxy (topic affinity, rich-get-richer quality)
optim        SGD, Adam, learning-rate and loss-weight schedules
simulate     run all steps, return an xarray Dataset
predict      the theory's predictions for every point of a config, as a Dataset
surrogate    the mean-field engine (loads from the expected-load map)
sweep        chunked, parallel, resumable sweeps
leakage      measured information leakage (Expert Choice and others)
metrics      MaxVio, CV, entropy, flips
store        atomic save/load of results
plot         figures (matplotlib)
rng          counter-based random numbers, reproducible across backends
theory       analytic results (load map, stability, MaxVio, leakage)
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
