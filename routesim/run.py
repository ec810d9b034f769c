"""``simulate(config)``: run every step for every point and replica, return a Dataset.

One loop, :func:`run_steps`, drives every engine's pure ``(init, step)`` pair
with the per-step finite check of :mod:`routesim.faults` and a progress bar;
the engine is looked up in :data:`ENGINES` and the recorded outputs become a
Dataset in :mod:`routesim.results` (per-step metrics in one vectorised pass).
"""

from __future__ import annotations

import dataclasses
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from . import faults, resources
from ._backend import get_namespace, to_numpy
from .config import Config
from .engines import exact, learner, meanfield
from .engines._common import StepOutput
from .results import build_dataset, engine_variables
from .theory.from_config import resolve_rates

__all__ = ["simulate", "simulate_meanfield", "simulate_learner", "build_dataset", "run_steps",
           "run_engine", "Engine", "ENGINES", "engine_of"]

#: The fields of :class:`StepOutput` every engine records.
_FIELDS = ("bias_PRE", "load_PRE", "kept_PRE", "displaced_PR", "maxvio_compute_PRC",
           "unrouted_PR", "ep_batch_load_PRBE")


@dataclass(frozen=True)
class Engine:
    """An engine as the loop sees it.

    Attributes
    ----------
    make_simulator : callable
        ``(config, point_indices, **options) -> (init, step)``.
    desc : str
        Label of the progress bar.
    attrs : callable
        ``(**options) -> dict``: Dataset attributes the engine adds (its settings).

    Examples
    --------
    >>> ENGINES["meanfield"].desc, ENGINES["exact"].attrs()
    ('routesim meanfield', {})
    """

    make_simulator: Callable[..., Any]
    desc: str
    attrs: Callable[..., dict] = lambda **options: {}


def _meanfield_attrs(tolerance: float = meanfield.DEFAULT_TOLERANCE,
                     covariance_tolerance: float = meanfield.COVARIANCE_TOLERANCE) -> dict:
    return {"meanfield_tolerance": float(tolerance),
            "meanfield_covariance_tolerance": float(covariance_tolerance)}


#: Engine name -> :class:`Engine` (``learner`` runs when ``penalty.learn`` is true).
ENGINES = {
    "exact": Engine(exact.make_simulator, "routesim"),
    "meanfield": Engine(meanfield.make_meanfield_simulator, "routesim meanfield",
                        _meanfield_attrs),
    "learner": Engine(learner.make_learner_simulator, "routesim (learning)"),
}


def engine_of(config: Config) -> str:
    """The :data:`ENGINES` key that runs ``config``.

    Parameters
    ----------
    config : Config

    Returns
    -------
    str
        ``"learner"`` when ``penalty.learn`` is set, else ``run.engine``.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> engine_of(config_from_dict({"router": {"num_experts": 4, "topk": 1}}))
    'exact'
    >>> engine_of(config_from_dict({"traffic": {"kind": "features"},
    ...                             "penalty": {"learn": True}}))
    'learner'
    """
    return "learner" if config.penalty.learn else config.run.engine


def _progress(progress: bool | None, total: int, desc: str) -> tqdm:
    # None: on when stderr is a terminal (off in CI logs and pipes).
    disable = (not sys.stderr.isatty()) if progress is None else (not progress)
    return tqdm(total=total, desc=desc, disable=disable, file=sys.stderr, leave=False)


def simulate(config: Config, *, point_indices: Sequence[int] | None = None,
             progress: bool | None = None) -> xr.Dataset:
    """Run the simulation of ``config`` and return its results.

    Parameters
    ----------
    config : Config
        The run, with its sweep (points) and replicas.
    point_indices : sequence of int, optional
        Run only these points of the sweep (global indices); their numbers
        are the same as in a run of the whole sweep.
    progress : bool or None
        Progress bar on stderr; None shows it only when stderr is a terminal.

    Returns
    -------
    xarray.Dataset
        Dimensions ``step``, ``point``, ``replica``, ``expert`` (and
        ``compute_batch`` when computation-batch sizes are given). Variables:
        ``expert_load``, ``kept_load``, ``bias``, ``maxvio_batch``,
        ``maxvio_global`` (trailing ``run.global_window`` steps),
        ``maxvio_global_run`` (all steps), ``maxvio_global_final`` (the last
        ``run.global_window`` steps), ``maxvio_compute``, ``cv``,
        ``min_load``, ``max_load``, ``dead_experts``, ``load_entropy``,
        ``drop_rate``, ``displacement``, ``flip_fraction``, ``bias_spread``,
        ``unrouted_share`` (tokens with no expert), ``bias_update_rate``
        (step, point: the scheduled rate) and, for Expert Choice,
        ``experts_per_token`` (tokens with 0..E experts, dim ``num_assigned``).
        With ``controller.target_shares``, ``maxvio_target``; on frozen
        traffic (or with ``run.oracle = "on"``) the scores against the
        optimal-assignment oracle
        (:func:`routesim.assignment.oracle_variables`).
        The mean-field and learning engines add their own variables
        (:func:`simulate_meanfield`, :func:`simulate_learner`). With
        ``model.num_layers > 1`` the per-layer variables gain a ``layer``
        dimension and ``NAME_across_layers`` summarises them
        (:func:`routesim.results.layer_percentiles`); with
        ``placement.ep_size`` the rank variables of
        :func:`routesim.results.placement_variables` are added.
        Every variable and coordinate has ``long_name`` and ``units``
        attributes; ``run.record`` and ``run.record_every`` choose which
        variables and steps are kept. Attributes hold the config (JSON), the
        package version, the seed and its SeedSequence entropy.

    Examples
    --------
    >>> from routesim import Config, simulate
    >>> from routesim.config import RunConfig, BatchConfig, RouterConfig
    >>> cfg = Config(run=RunConfig(steps=3), batch=BatchConfig(num_sequences=2, seq_length=32),
    ...              router=RouterConfig(num_experts=8, topk=2))
    >>> ds = simulate(cfg, progress=False)
    >>> int(ds["expert_load"].isel(step=0).sum()) == 2 * 32 * 2
    True
    """
    return run_engine(config, engine_of(config), point_indices=point_indices, progress=progress)


def run_engine(config: Config, name: str, *, point_indices: Sequence[int] | None = None,
               progress: bool | None = None, **options: Any) -> xr.Dataset:
    """Run engine ``name`` of :data:`ENGINES` over every step and return the Dataset.

    ``options`` go to the engine's ``make_simulator`` (e.g. the mean-field
    tolerances) and into its Dataset attributes.

    Parameters
    ----------
    config : Config
        The whole run.
    name : str
        A key of :data:`ENGINES`.
    point_indices : sequence of int, optional
        Global indices of the points to run (default: every point).
    progress : bool or None
        Progress bar on stderr (None: only when stderr is a terminal).
    **options
        Engine options (see above).

    Returns
    -------
    xarray.Dataset
        As documented in :func:`routesim.simulate`.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"steps": 3, "engine": "meanfield"},
    ...     "batch": {"num_sequences": 4, "seq_length": 16},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> ds = run_engine(cfg, "meanfield", progress=False)
    >>> ds.sizes["step"], ds.attrs["meanfield_tolerance"]
    (3, 0.25)
    """
    engine = ENGINES[name]
    config = resolve_rates(config)  # rates in units of u_c: numbers, stored with the config
    progress = resources.check(config, point_indices, progress)
    init, step = engine.make_simulator(config, point_indices, **options)
    check = faults.make_step_check(config, point_indices, get_namespace(config.run.backend))
    _, rec = run_steps(step, init(), config.run.steps, progress, engine.desc, check)
    ds = build_dataset(config, point_indices, bias_SPRE=rec["bias_PRE"],
                       load_SPRE=rec["load_PRE"], kept_SPRE=rec["kept_PRE"],
                       displaced_SPR=rec["displaced_PR"],
                       maxvio_compute_SPRC=rec["maxvio_compute_PRC"],
                       extra=engine_variables(config, rec),
                       ep_batch_SPRBE=rec["ep_batch_load_PRBE"])
    ds.attrs.update(engine.attrs(**options))
    return ds


def simulate_meanfield(config: Config, *, point_indices: Sequence[int] | None = None,
                       progress: bool | None = None,
                       tolerance: float = meanfield.DEFAULT_TOLERANCE,
                       covariance_tolerance: float = meanfield.COVARIANCE_TOLERANCE
                       ) -> xr.Dataset:
    """Run the mean-field surrogate; the same Dataset as :func:`simulate`.

    Parameters
    ----------
    config : Config
        The run (``run.engine`` is not consulted here).
    point_indices : sequence of int, optional
        Run only these points of the sweep (global indices).
    progress : bool or None
        Progress bar on stderr; None shows it only when stderr is a terminal.
    tolerance, covariance_tolerance : float > 0
        Re-evaluation thresholds (see
        :func:`routesim.engines.meanfield.make_meanfield_simulator`).

    Returns
    -------
    xarray.Dataset
        As :func:`simulate`; ``displacement`` is NaN, the variable
        ``meanfield_evaluations`` (point, replica) counts the exact
        evaluations of each row's load map, and the attrs add the two
        tolerances.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"steps": 2},
    ...     "batch": {"num_sequences": 4, "seq_length": 16},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> ds = simulate_meanfield(cfg, progress=False)
    >>> ds["meanfield_evaluations"].values.tolist()  # the first step evaluates the row
    [[1]]
    """
    return run_engine(config, "meanfield", point_indices=point_indices, progress=progress,
                      tolerance=tolerance, covariance_tolerance=covariance_tolerance)


def simulate_learner(config: Config, *, point_indices: Sequence[int] | None = None,
                     progress: bool | None = None) -> xr.Dataset:
    """Run the learning engine over all steps and return the result Dataset.

    Parameters
    ----------
    config : Config
        With ``penalty.learn = true``.
    point_indices : sequence of int, optional
        Run only these points of the sweep.
    progress : bool or None
        Progress bar on stderr; None shows it only on a terminal.

    Returns
    -------
    xarray.Dataset
        The exact engine's variables (:func:`simulate`) plus, per
        step, point and replica, ``task_proxy``, ``task_affinity``,
        ``penalty``, ``balance_loss``, ``z_loss_value``, ``interference``,
        ``cancelled_share``, ``max_logit``, ``logit_spread``; per step and
        point ``alpha_t``, ``z_loss_t``, ``lr_t``; ``expert_quality`` per
        expert; ``load_ratio`` (max/min total load over the run) and
        ``maxvio_global_final`` (MaxVio of the loads of the last
        ``run.global_window`` steps) per point and replica. With the noisy
        gate also ``importance_cv2``, ``load_cv2``, ``gate_noise``,
        ``eval_load``, ``maxvio_global_eval`` (trailing
        ``run.global_window`` steps of ``eval_load``),
        ``maxvio_global_eval_run`` and ``load_ratio_eval``.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"steps": 2}, "traffic": {"kind": "features"},
    ...     "penalty": {"learn": True}, "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> ds = simulate_learner(cfg, progress=False)
    >>> ds["expert_load"].sum("expert").values.tolist()  # 8 tokens per step, one expert each
    [[[8]], [[8]]]
    """
    return run_engine(config, "learner", point_indices=point_indices, progress=progress)


def run_steps(step: Callable[[Any], tuple[Any, StepOutput]], state: Any, steps: int,
              progress: bool | None, desc: str,
              check: Callable[[Any, Any], None] | None = None
              ) -> tuple[Any, dict[str, Any]]:
    """Run ``steps`` steps and stack each step's output on the host.

    Parameters
    ----------
    step : callable (state) -> (state, StepOutput)
        A pure step function (any engine).
    state : object
        The initial state.
    steps : int
        Steps to run.
    progress : bool or None
        Progress bar on stderr (None: only when stderr is a terminal).
    desc : str
        Label of the progress bar.
    check : callable (state, output) -> None, optional
        Called after every step, before its output is recorded (e.g.
        :func:`routesim.faults.make_step_check`, which raises
        :class:`~routesim.exceptions.NumericalFault` on a NaN or Inf). With a
        check, NumPy's overflow and invalid-value warnings are silenced in
        the step: the check reports the fault instead, in one line.

    Returns
    -------
    state : object
        The final state.
    records : dict
        The common :class:`StepOutput` fields, each stacked along a new
        leading step axis (None where the engine reports None), and
        ``"extra"``: the engine's extension with its fields stacked the same
        way (None without one).

    Examples
    --------
    >>> def count(state):  # a toy engine: the state is the step index
    ...     return state + 1, StepOutput(bias_PRE=state, load_PRE=2 * state, kept_PRE=None,
    ...                                  displaced_PR=None, maxvio_compute_PRC=None)
    >>> state, rec = run_steps(count, 0, 3, False, "toy")
    >>> state, rec["load_PRE"].tolist(), rec["kept_PRE"], rec["extra"]
    (3, [0, 2, 4], None, None)
    """
    rows: dict[str, list] = {f: [] for f in _FIELDS}
    extras: list = []
    with _progress(progress, steps, desc) as bar:
        for _ in range(steps):
            with _quiet(check):
                state, out = step(state)
            if check is not None:
                check(state, out)
            for f in _FIELDS:
                value = getattr(out, f)
                rows[f].append(None if value is None else to_numpy(value))
            extras.append(out.extra)
            bar.update(1)
    records: dict[str, Any] = {
        f: (None if not v or v[0] is None else np.stack(v)) for f, v in rows.items()}
    records["extra"] = _stack_extras(extras)
    return state, records


def _stack_extras(extras: list) -> Any:
    """The step extensions as one of their kind, each field stacked along steps."""
    if not extras or extras[0] is None:
        return None
    stacked = {}
    for f in dataclasses.fields(extras[0]):
        first = getattr(extras[0], f.name)
        stacked[f.name] = (None if first is None
                           else np.stack([to_numpy(getattr(e, f.name)) for e in extras]))
    return type(extras[0])(**stacked)


def _quiet(check: Any) -> Any:
    """Silence NumPy's overflow/invalid warnings when a fault check will report them."""
    return np.errstate(over="ignore", invalid="ignore") if check is not None else nullcontext()
