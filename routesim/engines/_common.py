"""What every engine shares: the point plan, random keys, initial bias, the
controller window, computation-batch MaxVio and the typed step output.

An engine is a pair ``(init, step)``: ``init() -> state`` and
``step(state) -> (state, StepOutput)``. The loop over steps belongs to the
caller (:func:`routesim.run.run_steps`); the engine-specific part of a step's
report travels in :attr:`StepOutput.extra`, one frozen dataclass per engine.

Shape legend: P points, R replicas, B sequences (or blocks), E experts,
C computation-batch sizes, J assignment counts 0..E.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

from .. import controllers
from .._backend import get_namespace
from ..config import Config
from ..exceptions import ConfigError
from ..rng import layer_keys

__all__ = ["PointPlan", "make_plan", "select_points", "initial_bias", "closes_after_micro_batch",
           "closes_after_step", "update_controller", "maxvio_compute", "batch_loads", "StepOutput",
           "EngineExtra", "ExpertChoiceExtra", "LearnerExtra", "MeanFieldExtra", "Simulator"]


@dataclass(frozen=True)
class PointPlan:
    """The points a run covers and what follows from them alone (built once).

    Attributes
    ----------
    indices : tuple of int
        Global index of each point in the sweep.
    points : tuple of Config
        The config of each row of the point axis (sweep applied), in the
        order of ``indices``; with ``model.num_layers = L > 1`` each point
        gives ``L`` consecutive rows, one per layer.
    all_points : tuple of Config
        Every point of the sweep (some choices are made for the whole sweep).
    xp : namespace
        The array namespace.
    dtype : dtype
        Bias and controller memory dtype (``run.bias_dtype``).
    keys_PR : uint64 array (P, R)
        Counter-RNG keys of each row and replica (:func:`routesim.rng.layer_keys`).
    shape_PRE : tuple of int
        ``(P, R, E)``.
    init_bias : float
        0 for an additive bias, 1 for a multiplicative one.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1},
    ...     "sweep": {"controller.bias_update_rate": [1e-3, 2e-3, 4e-3]}})
    >>> plan = make_plan(cfg, [2, 0])
    >>> plan.indices, plan.shape_PRE[0], plan.init_bias
    ((2, 0), 2, 0.0)
    """

    indices: tuple[int, ...]
    points: tuple[Config, ...]
    all_points: tuple[Config, ...]
    xp: ModuleType
    dtype: Any
    keys_PR: Any
    shape_PRE: tuple[int, int, int]
    init_bias: float

    @property
    def first(self) -> Config:
        """The first point: fields that cannot be swept are read from it."""
        return self.points[0]


def select_points(config: Config, point_indices: Sequence[int] | None
                  ) -> tuple[tuple[int, ...], tuple[Config, ...], tuple[Config, ...]]:
    """Check ``point_indices`` and return ``(indices, points, all_points)``.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1},
    ...     "sweep": {"controller.bias_update_rate": [1e-3, 2e-3, 4e-3]}})
    >>> indices, points, every = select_points(cfg, None)
    >>> indices, points[1].controller.bias_update_rate
    ((0, 1, 2), 0.002)
    >>> select_points(cfg, [3])
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: point_indices: 3 is not a point index in [0, 3)"""
    all_points = config.points()
    for p in all_points:
        if isinstance(p.controller.bias_update_rate, str):
            raise ConfigError(f"controller.bias_update_rate = {p.controller.bias_update_rate!r}: "
                              "not resolved; resolve it with routesim.theory.resolve_rates "
                              "(routesim.simulate does)")
    indices = tuple(range(len(all_points)) if point_indices is None else point_indices)
    for i in indices:
        if not 0 <= i < len(all_points):
            raise ConfigError(f"point_indices: {i} is not a point index in [0, {len(all_points)})")
    if not indices:
        raise ConfigError("point_indices: empty; give at least one point")
    return indices, tuple(all_points[i] for i in indices), tuple(all_points)


def make_plan(config: Config, point_indices: Sequence[int] | None,
              xp: ModuleType | None = None, *, common_random_numbers: bool | None = None
              ) -> PointPlan:
    """Build the :class:`PointPlan` of a run.

    ``common_random_numbers`` (default ``run.common_random_numbers``) gives
    every point the keys of point 0: the same draws for each replica.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1},
    ...     "sweep": {"controller.bias_update_rate": [1e-3, 2e-3, 4e-3]}})
    >>> shared = make_plan(cfg, None, common_random_numbers=True).keys_PR
    >>> bool((shared == shared[0]).all())
    True
    """
    indices, points, all_points = select_points(config, point_indices)
    cfg = points[0]
    xp = xp or get_namespace(cfg.run.backend)
    shared = cfg.run.common_random_numbers if common_random_numbers is None \
        else common_random_numbers
    key_points = [0] * len(points) if shared else list(indices)
    layers = cfg.model.num_layers
    rows = tuple(p for p in points for _ in range(layers))  # one row per (point, layer)
    return PointPlan(indices=indices, points=rows, all_points=all_points, xp=xp,
                     dtype=xp.float32 if cfg.run.bias_dtype == "float32" else xp.float64,
                     keys_PR=xp.asarray(layer_keys(cfg.run.seed, key_points, cfg.run.replicas,
                                                   layers)),
                     shape_PRE=(len(rows), cfg.run.replicas, cfg.router.num_experts),
                     init_bias=1.0 if cfg.router.bias_mode == "multiplicative" else 0.0)


def initial_bias(plan: PointPlan) -> Any:
    """The bias before the first window: 0 (additive) or 1 (multiplicative), (P, R, E).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 4, "topk": 1},
    ...     "sweep": {"controller.bias_update_rate": [1e-3, 2e-3, 4e-3]}})
    >>> initial_bias(make_plan(cfg, [0])).tolist()
    [[[0.0, 0.0, 0.0, 0.0]]]"""
    return plan.xp.zeros(plan.shape_PRE, dtype=plan.dtype) + plan.init_bias


# ----------------------------------------------------------------------------
# The controller window
# ----------------------------------------------------------------------------
def closes_after_micro_batch(ctrl: Any) -> bool:
    """Whether the controller window closes after every micro-batch.

    Examples
    --------
    >>> from routesim.config import ControllerConfig
    >>> closes_after_micro_batch(ControllerConfig(window="micro_batch"))
    True"""
    return ctrl.window == "micro_batch"


def closes_after_step(ctrl: Any, t: int) -> bool:
    """Whether the window closes at the end of step ``t`` (global batch, every n steps).

    Examples
    --------
    >>> from routesim.config import ControllerConfig
    >>> ctrl = ControllerConfig(window="steps", update_every=3)
    >>> [closes_after_step(ctrl, t) for t in range(6)]
    [False, False, True, False, False, True]"""
    return ctrl.window == "global_batch" or (
        ctrl.window == "steps" and (t + 1) % ctrl.update_every == 0)


def update_controller(xp: ModuleType, cparams: Any, bias_PRE: Any, memory_PRE: Any,
                      window_load_PRE: Any, estimate_PRE: Any, windows_done: int
                      ) -> tuple[Any, Any]:
    """Close a controller window: the one place an engine calls the bias law.

    Examples
    --------
    >>> import numpy as np
    >>> from routesim import config_from_dict, controllers
    >>> cfg = config_from_dict({"router": {"num_experts": 2, "topk": 1},
    ...     "controller": {"type": "sign", "bias_update_rate": 0.5}})
    >>> params = controllers.make_controller_params(cfg.points())
    >>> zero = np.zeros((1, 1, 2))
    >>> bias, _ = update_controller(np, params, zero, zero, np.array([[[3, 1]]]), None, 0)
    >>> bias.tolist()
    [[[-0.5, 0.5]]]"""
    return controllers.update_bias(xp, cparams, bias_PRE, memory_PRE, window_load_PRE,
                                   estimate_PRE, windows_done)


def maxvio_compute(xp: ModuleType, rows_PRBE: Any, rows_per_batch: Sequence[int]) -> Any:
    """Mean MaxVio over the computation batches of each size: (P, R, C).

    Parameters
    ----------
    rows_PRBE : int array (P, R, B, E)
        Loads per row (a sequence, or a block of sequences).
    rows_per_batch : sequence of int
        Rows in one computation batch, per size (each divides B).

    Examples
    --------
    >>> import numpy as np
    >>> rows = np.array([[[[3, 1], [1, 3]]]])  # two sequences, two experts
    >>> maxvio_compute(np, rows, [1, 2]).tolist()  # per sequence: 0.5; together: 0
    [[[0.5, 0.0]]]
    """
    p, r, b, e = rows_PRBE.shape
    out = []
    for size in rows_per_batch:
        g = xp.astype(xp.sum(xp.reshape(rows_PRBE, (p, r, b // size, size, e)), axis=3),
                      xp.float64)
        mean = xp.mean(g, axis=-1)
        out.append(xp.mean((xp.max(g, axis=-1) - mean) / mean, axis=-1))
    return xp.stack(out, axis=-1) if out else xp.zeros((p, r, 0), dtype=xp.float64)


def batch_loads(xp: ModuleType, rows_PRBE: Any, rows_per_batch: int) -> Any:
    """Loads of consecutive computation batches of ``rows_per_batch`` rows: (P, R, B', E).

    Examples
    --------
    >>> import numpy as np
    >>> rows = np.array([[[[3, 1], [1, 3], [2, 0], [0, 2]]]])  # four sequences
    >>> batch_loads(np, rows, 2).tolist()
    [[[[4, 4], [2, 2]]]]
    """
    p, r, b, e = rows_PRBE.shape
    return xp.sum(xp.reshape(rows_PRBE, (p, r, b // rows_per_batch, rows_per_batch, e)), axis=3)


# ----------------------------------------------------------------------------
# What a step reports
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExpertChoiceExtra:
    """Expert Choice: tokens of the step with 0, 1, ..., E experts, int (P, R, E + 1).

    Examples
    --------
    >>> import numpy as np
    >>> int(ExpertChoiceExtra(np.array([[[1, 2, 1]]])).experts_per_token_PRJ.sum())
    4"""

    experts_per_token_PRJ: Any


@dataclass(frozen=True)
class MeanFieldExtra:
    """Mean-field surrogate: rows evaluated exactly (load map) in this step, int (P, R).

    Examples
    --------
    >>> import numpy as np
    >>> int(MeanFieldExtra(evaluations_PR=np.array([[1, 0]])).evaluations_PR.sum())
    1"""

    evaluations_PR: Any


@dataclass(frozen=True)
class LearnerExtra:
    """The learning router's losses, schedules and diagnostics of one step.

    Field names end in their shape (P, R, E); the result variable is the
    name without it (``task_proxy_PR`` -> ``task_proxy``). ``importance_cv2``,
    ``load_cv2``, ``gate_noise`` and ``eval_load`` are None without the noisy
    gate; ``drop_by_position`` (L: sequence positions) is None when dropless.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.learner import make_learner_simulator
    >>> cfg = config_from_dict({"run": {"steps": 1}, "traffic": {"kind": "features"},
    ...     "batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "penalty": {"learn": True}})
    >>> init, step = make_learner_simulator(cfg)
    >>> extra = step(init())[1].extra
    >>> extra.task_proxy_PR.shape, extra.eval_load_PRE is None
    ((1, 1), True)
    """

    task_proxy_PR: Any
    task_affinity_PR: Any
    penalty_PR: Any
    balance_loss_PR: Any
    z_loss_value_PR: Any
    interference_PR: Any
    cancelled_share_PR: Any
    task_projection_PR: Any
    max_logit_PR: Any
    logit_spread_PR: Any
    alpha_t_P: Any
    z_loss_t_P: Any
    lr_t_P: Any
    expert_quality_PRE: Any
    importance_cv2_PR: Any = None
    load_cv2_PR: Any = None
    gate_noise_PR: Any = None
    eval_load_PRE: Any = None
    drop_by_position_PRL: Any = None


EngineExtra = ExpertChoiceExtra | MeanFieldExtra | LearnerExtra


@dataclass(frozen=True)
class StepOutput:
    """What one step reports (arrays in the engine's namespace).

    Attributes
    ----------
    bias_PRE : bias that routed the step's first micro-batch.
    load_PRE : routed loads of the step (before dropping).
    kept_PRE : loads after capacity dropping.
    displaced_PR : share of selections outside the unbiased top-K (NaN if off).
    maxvio_compute_PRC : mean MaxVio over the computation batches of each size.
    unrouted_PR : share of tokens with no expert (0 for dropless token choice,
        NaN for token choice with capacity dropping, measured for Expert
        Choice); None where the engine does not report it.
    logit_sum_PR : sum of the step's router logits (a cheap finite check),
        or None where the engine does not report it.
    ep_batch_load_PRBE : kept loads of each expert-parallel computation
        batch (``batch.micro_batch_size x placement.ep_size`` sequences),
        or None without a placement.
    extra : EngineExtra or None
        The engine's own report.

    Examples
    --------
    >>> from routesim import config_from_dict, make_simulator
    >>> cfg = config_from_dict({"batch": {"num_sequences": 2, "seq_length": 8},
    ...     "router": {"num_experts": 4, "topk": 2}, "run": {"kernel": "generic"}})
    >>> init, step = make_simulator(cfg)
    >>> out = step(init())[1]
    >>> int(out.load_PRE.sum()), out.logit_sum_PR.shape, out.extra is None
    (32, (1, 1), True)
    """

    bias_PRE: Any
    load_PRE: Any
    kept_PRE: Any
    displaced_PR: Any
    maxvio_compute_PRC: Any
    unrouted_PR: Any = None
    logit_sum_PR: Any = None
    extra: EngineExtra | None = None
    ep_batch_load_PRBE: Any = None

    @property
    def experts_per_token_PRJ(self) -> Any:
        """Expert Choice's histogram (None for other routers)."""
        return getattr(self.extra, "experts_per_token_PRJ", None)


Simulator = tuple[Callable[[], Any], Callable[[Any], tuple[Any, StepOutput]]]
