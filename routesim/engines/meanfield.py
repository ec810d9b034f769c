"""Mean-field surrogate engine (``run.engine = "meanfield"``): loads without tokens.

Per step, and per block of whole sequences, the loads are drawn as

    c = n * p(b) + sqrt(n) * P D A z,        z ~ N(0, I)  (counter RNG)

then rounded to integers >= 0 that sum to ``n * K`` (``n`` tokens in the
block). Here

* ``p(b)`` is the expected-load map of :mod:`routesim.theory.expected_load`
  (the probability that a token picks each expert; it sums to K), linearised
  around the last exact evaluation plus the large-N threshold map's
  second-order remainder, and evaluated afresh when it moved too far
  (:mod:`routesim.engines.meanfield_reference`);
* ``A A^T`` is the per-token covariance of top-K selection (K distinct
  experts: its rows sum to zero), evaluated afresh when some ``p_i`` moved
  by more than ``covariance_tolerance`` (25 %); in between, each expert's
  fluctuation is rescaled to the current ``p_i (1 - p_i)``;
* ``D = diag(sqrt(deff))`` is the within-sequence design effect
  (:func:`~routesim.engines.meanfield_reference.threshold_design_effect`);
* ``P = I - 1 1^T / N`` keeps the fluctuation's sum at zero.

Rounding: the real loads are clipped at 0, rescaled to the exact total
``n K`` and rounded by largest remainders (floor, then +1 for the
``n K - sum(floor)`` experts with the largest fractional parts; ties go to
the lower expert index). The rounding error of every load is below 1, far
inside the fluctuation (``sqrt(n p)``) where the surrogate is trusted.

The controllers (:func:`routesim.controllers.update_bias`), their windows
(micro-batch, global batch, every n steps), capacity (``kept = min(c, cap)``
per micro-batch, which is what dropping does to counts under either
policy), popularity drift and the metrics of :func:`routesim.results.build_dataset`
are those of the exact engine. Random numbers come from
:mod:`routesim.rng` (stream ``MEANFIELD``, row = global block index), so a
point's results do not depend on which points ran beside it.

Not modelled (refused with :class:`~routesim.ConfigError`): feature and
trace traffic, Expert Choice, group-limited routing, quantile balancing, and
a sequence correlation with non-normal noise. Displacement is NaN.

Shape legend: P points, R replicas, X refreshed rows, B blocks, E experts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Sequence

import numpy as np

from .. import controllers, rng, traffic
from .._backend import argsort_stable, to_numpy
from ..config import Config
from ..exceptions import ConfigError
from ..routing import capacity
from ._common import (MeanFieldExtra, PointPlan, StepOutput, closes_after_micro_batch,
                      closes_after_step, initial_bias, make_plan, maxvio_compute,
                      update_controller)
from .meanfield_compare import compare_engines, settling_step
from .meanfield_reference import (COVARIANCE_TOLERANCE, DEFAULT_TOLERANCE,
                                  LoadReference, current_p, map_nodes, threshold_design_effect)

__all__ = [
    "COVARIANCE_TOLERANCE",
    "MeanFieldState",
    "MeanFieldPlan",
    "make_meanfield_simulator",
    "make_plan_meanfield",
    "threshold_design_effect",
    "round_to_total",
    "settling_step",
    "compare_engines",
    "DEFAULT_TOLERANCE",
]

def round_to_total(xp: ModuleType, x: Any, total: int) -> Any:
    """Round real loads to integers >= 0 that sum to ``total`` along the last axis.

    Clip at 0, rescale to the total, floor, then add 1 to the experts with
    the largest fractional parts until the total is met (largest remainders).

    Parameters
    ----------
    x : array (..., E)
        Real loads.
    total : int
        The sum each row must have.

    Returns
    -------
    int array (..., E)

    Examples
    --------
    >>> round_to_total(np, np.array([2.6, 1.3, -0.2, 1.3]), 5)
    array([3, 1, 0, 1])
    """
    x = xp.clip(x, 0.0, None)
    s = xp.sum(x, axis=-1, keepdims=True)
    x = x * (total / xp.where(s > 0, s, 1.0))
    base = xp.floor(x)
    frac = x - base
    deficit = total - xp.sum(base, axis=-1, keepdims=True)
    rank = argsort_stable(xp, argsort_stable(xp, -frac))
    return xp.astype(base, xp.int64) + xp.astype(rank < deficit, xp.int64)


@dataclass(frozen=True)
class MeanFieldState:
    """What the surrogate carries between steps.

    Attributes
    ----------
    step : int
        Index of the next step.
    bias_PRE, memory_PRE : arrays (P, R, E)
        Bias and controller memory, as in :class:`routesim.engines.exact.SimState`.
    window_load_PRE : int array (P, R, E)
        Loads counted so far in the controller window.
    window_batches, windows_done : int
        Micro-batches in the window; windows completed.
    traffic : traffic.TrafficState
        Popularity (and its drift).
    reference : LoadReference or None
        Linearisation points (None before the first step).
    evaluations_PR : int array (P, R)
        Exact evaluations (load map and Jacobian) of each row so far.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "batch": {"num_sequences": 4, "seq_length": 16},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> init, step = make_meanfield_simulator(cfg)
    >>> state, out = step(init())
    >>> state.step, state.evaluations, int(out.load_PRE.sum())  # 64 tokens x 2 experts
    (1, 1, 128)
    """

    step: int
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    window_batches: int
    windows_done: int
    traffic: traffic.TrafficState
    reference: LoadReference | None
    evaluations_PR: np.ndarray

    @property
    def evaluations(self) -> int:
        """Rows evaluated exactly so far, over every point and replica."""
        return int(self.evaluations_PR.sum())


def _check(cfg: Config) -> None:
    """Refuse what the surrogate does not model, before any work."""
    t, r, c = cfg.traffic, cfg.router, cfg.controller
    if t.kind != "popularity":
        raise ConfigError(f"traffic.kind = {t.kind!r}: run.engine = 'meanfield' needs "
                          "'popularity' traffic (independent per-expert logits)")
    if r.router_type != "token_choice":
        raise ConfigError(f"router.router_type = {r.router_type!r}: run.engine = 'meanfield' "
                          "models 'token_choice' only")
    if r.num_groups is not None:
        raise ConfigError(f"router.num_groups = {r.num_groups!r}: run.engine = 'meanfield' "
                          "does not model group-limited routing (omit it)")
    if r.score_function == "softmax" and r.bias_mode == "additive":
        raise ConfigError("router.score_function = 'softmax': with bias_mode = 'additive' the "
                          "bias couples the experts and the load map has no exact form; "
                          "run.engine = 'meanfield' needs sigmoid, sqrtsoftplus, or softmax "
                          "with a multiplicative bias")
    if controllers.get_law(c.type).needs_dual_estimate:
        raise ConfigError(f"controller.type = {c.type!r}: run.engine = 'meanfield' has no "
                          "tokens to take the dual estimate from; use run.engine = 'exact'")
    if t.seq_correlation > 0 and t.noise != "normal":
        raise ConfigError(f"traffic.seq_correlation = {t.seq_correlation!r}: run.engine = "
                          f"'meanfield' models it for traffic.noise = 'normal' only "
                          f"(got {t.noise!r})")


def _block_sequences(cfg: Config) -> int:
    """Sequences per drawn block: the gcd of the micro-batch and computation sizes."""
    return math.gcd(cfg.batch.sequences_per_micro_batch, *cfg.batch.computation_batch_sizes)


@dataclass(frozen=True)
class MeanFieldPlan:
    """What the surrogate fixes once per run (see :func:`make_plan_meanfield`).

    Attributes
    ----------
    points : PointPlan
    tparams, cparams : traffic and controller parameters of the points.
    scale_PR, rho_PR : float arrays (P, R)
        Noise scale and sequence correlation of each row.
    block_seqs : int
        Sequences per drawn block (:func:`_block_sequences`).
    cap : int
        Expert capacity per micro-batch.
    tolerance, covariance_tolerance : float
        Re-evaluation thresholds.
    map_args : dict
        Keyword arguments of the load map, covariance and Jacobian.
    cfg : Config
        The first point's config (fields that cannot be swept).
    drift : bool
        Whether the popularity drifts (the map is then linearised in it too).
    blocks_mb : int
        Blocks per micro-batch.
    p_floor : float
        1 % of the balanced share ``K / N``
        (see :func:`routesim.engines.meanfield_reference.relative_change`).
    capped : bool
        Whether the capacity can cut a micro-batch's loads.
    rows_per_batch : tuple of int
        Blocks per computation batch, per size.
    displaced_PR : float array (P, R)
        NaN: the surrogate has no tokens to measure displacement on.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "batch": {"num_sequences": 4, "seq_length": 16, "micro_batch_size": 2},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> plan = make_plan_meanfield(cfg)
    >>> plan.block_seqs, plan.blocks_mb, plan.p_floor  # 0.01 * 2 / 4
    (2, 1, 0.005)
    """

    points: PointPlan
    tparams: Any
    cparams: Any
    scale_PR: np.ndarray
    rho_PR: np.ndarray
    block_seqs: int
    cap: int
    tolerance: float
    covariance_tolerance: float
    map_args: dict
    cfg: Config
    drift: bool
    blocks_mb: int
    p_floor: float
    capped: bool
    rows_per_batch: tuple[int, ...]
    displaced_PR: Any


def make_plan_meanfield(config: Config, point_indices: Sequence[int] | None = None, *,
                        tolerance: float = DEFAULT_TOLERANCE,
                        covariance_tolerance: float = COVARIANCE_TOLERANCE,
                        xp: ModuleType | None = None) -> MeanFieldPlan:
    """Check the points and the tolerances; fix everything the surrogate needs.

    Parameters
    ----------
    config : Config
        The whole run.
    point_indices : sequence of int, optional
        Global indices of the points to run (default: every point).
    tolerance : float > 0
        Relative change of ``p`` at which a row's linearisation is evaluated again.
    covariance_tolerance : float > 0
        The same for the selection covariance.
    xp : namespace, optional
        Array namespace (default: that of ``run.backend``).

    Returns
    -------
    MeanFieldPlan

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> make_plan_meanfield(cfg, tolerance=0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: tolerance = 0: must be a finite number > 0
    """
    pp = make_plan(config, point_indices, xp)
    for name, value in (("tolerance", tolerance), ("covariance_tolerance", covariance_tolerance)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} = {value!r}: must be a finite number > 0")
    for p in pp.points:
        _check(p)
    cfg = pp.first
    P, R = pp.shape_PRE[:2]
    tparams = traffic.make_traffic_params(pp.points)
    seqs_mb, L = cfg.batch.sequences_per_micro_batch, cfg.batch.seq_length
    router, block_seqs = cfg.router, _block_sequences(cfg)
    cap = capacity(seqs_mb * L, router.topk, router.num_experts, router.capacity_factor)
    return MeanFieldPlan(
        points=pp, tparams=tparams, cparams=controllers.make_controller_params(pp.points),
        scale_PR=np.broadcast_to(tparams.noise_scale_P[:, None], (P, R)),
        rho_PR=np.broadcast_to(tparams.rho_P[:, None], (P, R)),
        block_seqs=block_seqs, cap=cap,
        tolerance=tolerance, covariance_tolerance=covariance_tolerance,
        map_args=dict(topk=router.topk, score_function=router.score_function,
                      noise=cfg.traffic.noise, bias_mode=router.bias_mode, bias_on="scores",
                      nodes=map_nodes(router.num_experts)),
        cfg=cfg, drift=tparams.drift != "none", blocks_mb=seqs_mb // block_seqs,
        p_floor=0.01 * router.topk / router.num_experts, capped=cap < seqs_mb * L,
        rows_per_batch=tuple(size // block_seqs for size in cfg.batch.computation_batch_sizes),
        displaced_PR=pp.xp.full((P, R), float("nan"), dtype=pp.xp.float64))


def draw(plan: MeanFieldPlan, ref: LoadReference, p_PRE: np.ndarray, t: int,
         first_block: int) -> Any:
    """Loads of one micro-batch's blocks, int array (P, R, B, E)."""
    xp, k, n = plan.points.xp, plan.cfg.router.topk, plan.cfg.router.num_experts
    tok_block = plan.block_seqs * plan.cfg.batch.seq_length
    rows = xp.arange(first_block, first_block + plan.blocks_mb, dtype=xp.uint64)
    z = to_numpy(rng.standard_normal(xp, plan.points.keys_PR, t, rng.Stream.MEANFIELD, rows, n,
                                     xp.float64))
    x = z @ ref.factor_T_PREE  # (P, R, B, E): unit-variance-scaled selection noise
    pc = np.clip(p_PRE, 0.0, 1.0)
    x *= (np.sqrt(pc * (1.0 - pc)) * ref.scale_PRE)[:, :, None, :]
    x -= x.mean(axis=-1, keepdims=True)
    real = tok_block * p_PRE[:, :, None, :] + math.sqrt(tok_block) * x
    return xp.asarray(round_to_total(np, real, tok_block * k))


def init_state(plan: MeanFieldPlan) -> MeanFieldState:
    """The state before the first step."""
    pp = plan.points
    xp = pp.xp
    return MeanFieldState(step=0, bias_PRE=initial_bias(pp),
                          memory_PRE=xp.zeros(pp.shape_PRE, dtype=pp.dtype),
                          window_load_PRE=xp.zeros(pp.shape_PRE, dtype=xp.int64),
                          window_batches=0, windows_done=0,
                          traffic=traffic.init_traffic(xp, plan.tparams, pp.keys_PR),
                          reference=None,
                          evaluations_PR=np.zeros(pp.shape_PRE[:2], dtype=np.int64))


def close_window(plan: MeanFieldPlan, bias_PRE: Any, memory_PRE: Any, window_load_PRE: Any,
                 windows_done: int) -> tuple[Any, Any, Any, int]:
    """Apply the controller to the window's loads: bias, memory, an empty window, windows done."""
    xp = plan.points.xp
    bias, memory = update_controller(xp, plan.cparams, bias_PRE, memory_PRE, window_load_PRE,
                                     None, windows_done)
    return bias, memory, xp.zeros_like(window_load_PRE), windows_done + 1


def micro_batch(plan: MeanFieldPlan, ref: LoadReference | None, bias_PRE: Any,
                mu_PRE: np.ndarray, t: int, mb: int
                ) -> tuple[LoadReference, Any, Any, np.ndarray]:
    """Draw micro-batch ``mb`` of step ``t``: the reference, block loads (P, R, B, E),
    kept loads (P, R, E) and the rows evaluated exactly (bool (P, R))."""
    ref, p, evaluated = current_p(plan, ref, bias_PRE, mu_PRE)
    loads = draw(plan, ref, p, t, mb * plan.blocks_mb)
    kept = plan.points.xp.sum(loads, axis=2)
    if plan.capped:
        kept = plan.points.xp.minimum(kept, plan.cap)
    return ref, loads, kept, evaluated


def step_state(plan: MeanFieldPlan, state: MeanFieldState
               ) -> tuple[MeanFieldState, StepOutput]:
    """One global batch: each micro-batch's loads drawn, the controller in the loop.

    The window's bookkeeping stays in locals and the state is built once: the
    steady step is a few hundred microseconds, so per-step overheads count.
    """
    pp, ctrl, t = plan.points, plan.cfg.controller, state.step
    xp = pp.xp
    tstate = traffic.advance_traffic(xp, plan.tparams, state.traffic, pp.keys_PR, t)
    mu_PRE = to_numpy(tstate.mu_PRE).astype(np.float64)
    bias, memory, ref = state.bias_PRE, state.memory_PRE, state.reference
    window, batches, done = state.window_load_PRE, state.window_batches, state.windows_done
    blocks, kept_total = [], None
    evaluated_PR: Any = 0
    for mb in range(plan.cfg.batch.num_micro_batches):
        ref, loads, kept, evaluated = micro_batch(plan, ref, bias, mu_PRE, t, mb)
        blocks.append(loads)
        kept_total = kept if kept_total is None else kept_total + kept
        evaluated_PR = evaluated_PR + evaluated.astype(np.int64)
        window, batches = window + kept, batches + 1
        if closes_after_micro_batch(ctrl):
            bias, memory, window, done = close_window(plan, bias, memory, window, done)
            batches = 0
    if closes_after_step(ctrl, t):
        bias, memory, window, done = close_window(plan, bias, memory, window, done)
        batches = 0
    block_loads = xp.concat(blocks, axis=2) if len(blocks) > 1 else blocks[0]
    out = StepOutput(bias_PRE=state.bias_PRE, load_PRE=xp.sum(block_loads, axis=2),
                     kept_PRE=kept_total, displaced_PR=plan.displaced_PR,
                     maxvio_compute_PRC=maxvio_compute(xp, block_loads, plan.rows_per_batch),
                     extra=MeanFieldExtra(evaluations_PR=evaluated_PR))
    return MeanFieldState(step=t + 1, bias_PRE=bias, memory_PRE=memory, window_load_PRE=window,
                          window_batches=batches, windows_done=done, traffic=tstate,
                          reference=ref, evaluations_PR=state.evaluations_PR + evaluated_PR), out


def make_meanfield_simulator(config: Config, point_indices: Sequence[int] | None = None, *,
                             tolerance: float = DEFAULT_TOLERANCE,
                             covariance_tolerance: float = COVARIANCE_TOLERANCE,
                             xp: ModuleType | None = None):
    """Build the pure ``(init, step)`` pair of the mean-field surrogate.

    Parameters
    ----------
    config : Config
        The whole run; its sweep defines the points.
    point_indices : sequence of int, optional
        Run only these points (global indices into the sweep).
    tolerance : float > 0
        A row's load map and Jacobians are evaluated afresh when the linear
        term in the bias, or the one in the popularity, predicts a relative
        change of some ``p_i`` above this.
    covariance_tolerance : float > 0
        Its selection covariance is evaluated afresh when some ``p_i`` has
        moved by more than this (relative) since the last evaluation; in
        between, each expert's variance follows ``p_i (1 - p_i)``.
    xp : namespace, optional
        Array namespace; default from ``config.run.backend``.

    Returns
    -------
    init : callable () -> MeanFieldState
    step : callable (MeanFieldState) -> (MeanFieldState, StepOutput)
        The output's ``extra`` is a :class:`~routesim.engines._common.MeanFieldExtra`.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"run": {"engine": "meanfield", "replicas": 2},
    ...     "batch": {"num_sequences": 4, "seq_length": 16},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> init, step = make_meanfield_simulator(cfg)
    >>> state, out = step(init())
    >>> out.load_PRE.sum(axis=-1).tolist()  # every replica routes 64 tokens x 2 experts
    [[128, 128]]
    >>> out.extra.evaluations_PR.tolist()  # the first step evaluates every row exactly
    [[1, 1]]
    """
    plan = make_plan_meanfield(config, point_indices, tolerance=tolerance,
                               covariance_tolerance=covariance_tolerance, xp=xp)
    return (lambda: init_state(plan)), (lambda state: step_state(plan, state))
