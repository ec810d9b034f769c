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
from .engines.exact import make_simulator
from .exceptions import (BackendError, ConfigError, NumericalFault, ResourceError,
                         ResultsFileError, SolverError, UnstableLoopError)
from .leakage.measure import measure_leakage
from .engines.learner import make_learner_simulator
from .run import simulate, simulate_learner, simulate_meanfield
from .predict import TheoryWarning, predict
from .store import load, save
from .engines.meanfield import make_meanfield_simulator
from .sweep import run_sweep
from . import theory  # noqa: E402  (``routesim.theory.X`` after ``import routesim``)

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
