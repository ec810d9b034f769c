"""Mean-field surrogate engine (``run.engine = "meanfield"``): loads without tokens.

Per step, and per block of whole sequences, the loads are drawn as

    c = n * p(b) + sqrt(n) * P D A z,        z ~ N(0, I)  (counter RNG)

then rounded to integers >= 0 that sum to ``n * K`` (``n`` tokens in the
block). Here

* ``p(b)`` is the expected-load map of :mod:`routesim.theory.expected_load`
  (the probability that a token picks each expert; it sums to K), linearised
  around the last exact evaluation: ``p(b) = p(b0) + J (b - b0)`` with the
  analytic Jacobian ``J = dp/db`` (plus ``dp/dmu (mu - mu0)`` when the
  popularity drifts). A (point, replica) row is evaluated afresh when the
  linear term predicts a relative change of some ``p_i`` above
  ``tolerance`` (default 5 %: the neglected second-order term is then below
  about 0.1 % of ``p_i``, see docs/meanfield.md). Directions that change
  nothing (a common shift of an additive bias) never trigger it, since
  ``J`` annihilates them;
* ``A A^T`` is the per-token covariance of top-K selection (K distinct
  experts: its rows sum to zero), from
  :func:`routesim.theory.expected_load.selection_covariance`, evaluated
  afresh when some ``p_i`` moved by more than ``covariance_tolerance``
  (25 %); in between, each expert's fluctuation is rescaled to the current
  ``p_i (1 - p_i)``;
* ``D = diag(sqrt(deff))`` is the within-sequence design effect
  ``deff_i = 1 + (L - 1) icc_i``: tokens of a sequence share a logit
  component with correlation ``rho``, and the selection indicators of two
  such tokens then correlate with ``icc_i``, the tetrachoric correlation of a
  latent-normal threshold model at the expert's own inclusion probability
  ``p_i``: ``icc_i = (p_i - 2 T(t_i, a) - p_i^2) / (p_i (1 - p_i))`` with
  ``t_i = Phi^-1(1 - p_i)``, ``a = sqrt((1 - rho) / (1 + rho))`` and Owen's
  ``T``;
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

import dataclasses
import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np
from scipy import special

from .. import controllers, rng, traffic
from .._backend import to_numpy
from ..config import Config
from ..exceptions import ConfigError
from ..routing import capacity
from ..theory.expected_load import jacobian, load_map, selection_covariance
from ._common import (MeanFieldExtra, PointPlan, StepOutput, closes_after_micro_batch,
                      closes_after_step, initial_bias, make_plan, maxvio_compute,
                      update_controller)

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

#: Relative change of some ``p_i``, as predicted by the linear term, that
#: triggers a fresh evaluation of a row's load map and Jacobian.
DEFAULT_TOLERANCE = 0.05
#: Relative change of some ``p_i`` since the covariance was evaluated that
#: triggers a fresh evaluation of the selection covariance.
COVARIANCE_TOLERANCE = 0.25


def threshold_design_effect(p_E: np.ndarray, rho: float | np.ndarray,
                            seq_length: int) -> np.ndarray:
    """Within-sequence design effect ``1 + (L - 1) icc`` of each expert's load (closed form).

    ``icc`` is the tetrachoric correlation of a latent-normal threshold model
    at the expert's own inclusion probability. It treats the other experts'
    competition as a fixed threshold and so overstates the extra variance a
    little (by 4-14 % against the Monte Carlo estimate of
    :func:`routesim.theory.maxvio.design_effect`, which is exact in the limit
    but needs hundreds of load-map evaluations); it costs microseconds.

    Parameters
    ----------
    p_E : array (..., E)
        Inclusion probability of each expert (in [0, 1]).
    rho : float in [0, 1) or array broadcasting against ``p_E``
        Correlation of the logits of two tokens of one sequence.
    seq_length : int > 0
        ``L``, tokens per sequence.

    Returns
    -------
    array (..., E)
        ``deff >= 1``; 1 where ``rho = 0`` or ``p`` is 0 or 1.

    Examples
    --------
    >>> float(threshold_design_effect(np.array([0.5]), 0.0, 256)[0])
    1.0
    >>> # p = 1/2: icc = 2 asin(rho) / pi = 1/3 for rho = 1/2
    >>> round(float(threshold_design_effect(np.array([0.5]), 0.5, 4)[0]), 12)
    2.0
    """
    p = np.asarray(p_E, dtype=np.float64)
    q = np.minimum(p, 1.0 - p)  # the complement indicator has the same correlation
    valid = q > 0
    q = np.where(valid, q, 0.5)
    rho = np.asarray(rho, dtype=np.float64)
    t = -special.ndtri(q)
    a = np.sqrt((1.0 - rho) / (1.0 + rho))
    both = q - 2.0 * special.owens_t(t, a)  # P(two tokens of a sequence both pick i)
    icc = np.where(valid, np.clip((both - q * q) / (q * (1.0 - q)), 0.0, 1.0), 0.0)
    return 1.0 + (seq_length - 1) * icc


def round_to_total(xp: ModuleType, x: Any, total: int) -> Any:
    """Round real loads to integers >= 0 that sum to ``total`` along the last axis.

    Clip at 0, rescale to the total, floor, then add 1 to the experts with
    the largest fractional parts until the total is met (largest remainders).

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
    rank = xp.argsort(xp.argsort(-frac, axis=-1, stable=True), axis=-1, stable=True)
    return xp.astype(base, xp.int64) + xp.astype(rank < deficit, xp.int64)


@dataclass(frozen=True)
class _Reference:
    """Where each (point, replica) row was last evaluated exactly (host arrays)."""

    bias_PRE: np.ndarray       # b0
    mu_PRE: np.ndarray         # popularity at b0's evaluation
    p_PRE: np.ndarray          # p(b0), sums to K
    jac_PREE: np.ndarray       # dp_i / db_j at b0
    jac_mu_PREE: np.ndarray | None  # dp_i / dmu_j at b0 (only with drift)
    sqrt_deff_PRE: np.ndarray  # sqrt of the design effect at p(b0)
    cov_p_PRE: np.ndarray      # p where the covariance was evaluated
    factor_T_PREE: np.ndarray  # A^T, with A A^T = per-token selection covariance there
    scale_PRE: np.ndarray      # sqrt(deff / (p (1 - p))) at the covariance's p (0 if p(1-p) = 0)


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
    reference : _Reference or None
        Linearisation points (None before the first step).
    evaluations_PR : int array (P, R)
        Exact evaluations (load map and Jacobian) of each row so far.
    """

    step: int
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    window_batches: int
    windows_done: int
    traffic: traffic.TrafficState
    reference: _Reference | None
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


def _relative(dp: np.ndarray, p: np.ndarray, floor: float) -> np.ndarray:
    """``max_i |dp_i| / max(p_i, floor)`` per row.

    The floor (1 % of the balanced share ``K / N``) keeps nearly dead experts,
    whose loads are negligible, from forcing re-evaluations.
    """
    return np.max(np.abs(dp) / np.maximum(p, floor), axis=-1)


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

    @property
    def cfg(self) -> Config:
        """The first point's config (fields that cannot be swept)."""
        return self.points.first

    @property
    def drift(self) -> bool:
        """Whether the popularity drifts (the map is then linearised in it too)."""
        return self.tparams.drift != "none"

    @property
    def blocks_mb(self) -> int:
        """Blocks per micro-batch."""
        return self.cfg.batch.sequences_per_micro_batch // self.block_seqs

    @property
    def p_floor(self) -> float:
        """1 % of the balanced share ``K / N`` (see :func:`_relative`)."""
        return 0.01 * self.cfg.router.topk / self.cfg.router.num_experts


def make_plan_meanfield(config: Config, point_indices: Sequence[int] | None = None, *,
                        tolerance: float = DEFAULT_TOLERANCE,
                        covariance_tolerance: float = COVARIANCE_TOLERANCE,
                        xp: ModuleType | None = None) -> MeanFieldPlan:
    """Check the points and the tolerances; fix everything the surrogate needs."""
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
    router = cfg.router
    return MeanFieldPlan(
        points=pp, tparams=tparams, cparams=controllers.make_controller_params(pp.points),
        scale_PR=np.broadcast_to(tparams.noise_scale_P[:, None], (P, R)),
        rho_PR=np.broadcast_to(tparams.rho_P[:, None], (P, R)),
        block_seqs=_block_sequences(cfg),
        cap=capacity(seqs_mb * L, router.topk, router.num_experts, router.capacity_factor),
        tolerance=tolerance, covariance_tolerance=covariance_tolerance,
        map_args=dict(topk=router.topk, score_function=router.score_function,
                      noise=cfg.traffic.noise, bias_mode=router.bias_mode, bias_on="scores"))


def _put(full: np.ndarray, rows: tuple[np.ndarray, np.ndarray], value: np.ndarray) -> np.ndarray:
    out = full.copy()
    out[rows] = value
    return out


def _noise_scale(ref: _Reference) -> np.ndarray:
    var = ref.cov_p_PRE * (1.0 - ref.cov_p_PRE)
    return np.where(var > 0, ref.sqrt_deff_PRE / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)


def _covariance_factor(plan: MeanFieldPlan, mu_PRE: np.ndarray, bias_PRE: np.ndarray,
                       crows: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``A^T`` with ``A A^T`` the per-token selection covariance, at rows ``crows``."""
    cov = selection_covariance(mu_PRE[crows], bias_PRE[crows],
                               noise_scale=plan.scale_PR[crows], **plan.map_args)
    lam, vec = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    factor = vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]
    return np.swapaxes(factor, -1, -2)


def evaluate(plan: MeanFieldPlan, ref: _Reference, mu_PRE: np.ndarray, bias_PRE: np.ndarray,
             rows_PR: np.ndarray, cov_PR: np.ndarray) -> _Reference:
    """Exact load map and Jacobian(s) at ``rows``; covariance at ``cov`` (a subset)."""
    kw = plan.map_args
    rows = np.nonzero(rows_PR)
    mu, b, s = mu_PRE[rows], bias_PRE[rows], plan.scale_PR[rows]
    p0 = load_map(mu, b, noise_scale=s, **kw)
    deff = threshold_design_effect(p0, plan.rho_PR[rows][:, None], plan.cfg.batch.seq_length)
    new = dict(p_PRE=p0, bias_PRE=b, mu_PRE=mu, sqrt_deff_PRE=np.sqrt(deff),
               jac_PREE=jacobian(mu, b, noise_scale=s, wrt="bias", **kw))
    if plan.drift:
        new["jac_mu_PREE"] = jacobian(mu, b, noise_scale=s, wrt="mu", **kw)
    changes = {name: _put(getattr(ref, name), rows, v) for name, v in new.items()}
    crows = np.nonzero(cov_PR)
    if crows[0].size:
        changes["factor_T_PREE"] = _put(ref.factor_T_PREE, crows,
                                        _covariance_factor(plan, mu_PRE, bias_PRE, crows))
        changes["cov_p_PRE"] = _put(ref.cov_p_PRE, crows, changes["p_PRE"][crows])
    ref = dataclasses.replace(ref, **changes)
    return dataclasses.replace(ref, scale_PRE=_noise_scale(ref))


def _blank(plan: MeanFieldPlan) -> _Reference:
    P, R, n = plan.points.shape_PRE
    vec, mat = np.zeros((P, R, n)), np.zeros((P, R, n, n))
    return _Reference(bias_PRE=vec, mu_PRE=vec, p_PRE=vec, jac_PREE=mat,
                      jac_mu_PREE=mat if plan.drift else None, sqrt_deff_PRE=vec,
                      cov_p_PRE=vec, factor_T_PREE=mat, scale_PRE=vec)


def current_p(plan: MeanFieldPlan, ref: _Reference | None, bias_PRE: Any,
              mu_PRE: np.ndarray) -> tuple[_Reference, np.ndarray, np.ndarray]:
    """Linearised ``p`` of every row, re-evaluating rows that moved too far.

    Returns the (possibly updated) reference, ``p`` and the rows evaluated
    (bool (P, R)).
    """
    bias = to_numpy(bias_PRE).astype(np.float64)
    if ref is None:
        every = np.ones(plan.points.shape_PRE[:2], dtype=bool)
        ref = evaluate(plan, _blank(plan), mu_PRE, bias, every, every)
        return ref, ref.p_PRE, every
    dp = (ref.jac_PREE @ (bias - ref.bias_PRE)[..., None])[..., 0]
    if plan.drift:
        dp += (ref.jac_mu_PREE @ (mu_PRE - ref.mu_PRE)[..., None])[..., 0]
    p = ref.p_PRE + dp
    stale = _relative(dp, ref.p_PRE, plan.p_floor) > plan.tolerance
    stale_cov = (_relative(p - ref.cov_p_PRE, ref.cov_p_PRE, plan.p_floor)
                 > plan.covariance_tolerance)
    rows = stale | stale_cov
    if not rows.any():
        return ref, p, rows
    ref = evaluate(plan, ref, mu_PRE, bias, rows, stale_cov)
    return ref, np.where(rows[..., None], ref.p_PRE, p), rows


def draw(plan: MeanFieldPlan, ref: _Reference, p_PRE: np.ndarray, t: int,
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


def close_window(plan: MeanFieldPlan, state: MeanFieldState) -> MeanFieldState:
    """Apply the controller to the window's loads and open a new window."""
    bias, memory = update_controller(plan.points.xp, plan.cparams, state.bias_PRE,
                                     state.memory_PRE, state.window_load_PRE, None,
                                     state.windows_done)
    return dataclasses.replace(state, bias_PRE=bias, memory_PRE=memory,
                               window_load_PRE=plan.points.xp.zeros_like(state.window_load_PRE),
                               window_batches=0, windows_done=state.windows_done + 1)


def micro_batch(plan: MeanFieldPlan, state: MeanFieldState, mu_PRE: np.ndarray,
                mb: int) -> tuple[MeanFieldState, Any, Any, np.ndarray]:
    """Draw micro-batch ``mb``: the state, block loads (P, R, B, E), kept loads and
    the rows evaluated exactly."""
    xp, cfg = plan.points.xp, plan.cfg
    ref, p, evaluated = current_p(plan, state.reference, state.bias_PRE, mu_PRE)
    loads = draw(plan, ref, p, state.step, mb * plan.blocks_mb)
    kept = xp.sum(loads, axis=2)
    if plan.cap < cfg.batch.sequences_per_micro_batch * cfg.batch.seq_length:
        kept = xp.minimum(kept, plan.cap)
    state = dataclasses.replace(state, reference=ref, window_load_PRE=state.window_load_PRE + kept,
                                window_batches=state.window_batches + 1)
    if closes_after_micro_batch(cfg.controller):
        state = close_window(plan, state)
    return state, loads, kept, evaluated


def step_state(plan: MeanFieldPlan, state: MeanFieldState
               ) -> tuple[MeanFieldState, StepOutput]:
    """One global batch: each micro-batch's loads drawn, the controller in the loop."""
    pp, cfg, t = plan.points, plan.cfg, state.step
    xp = pp.xp
    tstate = traffic.advance_traffic(xp, plan.tparams, state.traffic, pp.keys_PR, t)
    mu_PRE = to_numpy(tstate.mu_PRE).astype(np.float64)
    first_bias = state.bias_PRE
    state = dataclasses.replace(state, traffic=tstate)
    blocks, kept_total, evaluated_PR = [], None, np.zeros(pp.shape_PRE[:2], dtype=np.int64)
    for mb in range(cfg.batch.num_micro_batches):
        state, loads, kept, evaluated = micro_batch(plan, state, mu_PRE, mb)
        blocks.append(loads)
        kept_total = kept if kept_total is None else kept_total + kept
        evaluated_PR = evaluated_PR + evaluated
    if closes_after_step(cfg.controller, t):
        state = close_window(plan, state)
    block_loads = xp.concat(blocks, axis=2) if len(blocks) > 1 else blocks[0]
    rows_per_batch = [size // plan.block_seqs for size in cfg.batch.computation_batch_sizes]
    out = StepOutput(bias_PRE=first_bias, load_PRE=xp.sum(block_loads, axis=2),
                     kept_PRE=kept_total,
                     displaced_PR=xp.full(pp.shape_PRE[:2], float("nan"), dtype=xp.float64),
                     maxvio_compute_PRC=maxvio_compute(xp, block_loads, rows_per_batch),
                     extra=MeanFieldExtra(evaluations_PR=evaluated_PR))
    return dataclasses.replace(state, step=t + 1,
                               evaluations_PR=state.evaluations_PR + evaluated_PR), out


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
        A row's load map and Jacobian are evaluated afresh when the linear
        term predicts a relative change of some ``p_i`` above this.
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
    """
    plan = make_plan_meanfield(config, point_indices, tolerance=tolerance,
                               covariance_tolerance=covariance_tolerance, xp=xp)
    return (lambda: init_state(plan)), (lambda state: step_state(plan, state))


def settling_step(curve_S: np.ndarray, level: float, smooth: int = 5) -> int:
    """First step at which the trailing mean of ``curve`` is at or below ``level``.

    Parameters
    ----------
    curve_S : array (S,)
        A metric per step, e.g. the replica mean of ``maxvio_batch``.
    level : float
        The settling level.
    smooth : int > 0
        Width of the trailing mean (fewer steps at the start).

    Returns
    -------
    int
        The step, or ``S`` if the curve never settles.

    Examples
    --------
    >>> settling_step(np.array([1.0, 0.8, 0.5, 0.2, 0.1, 0.1]), 0.3, smooth=1)
    3
    """
    c = np.cumsum(np.asarray(curve_S, dtype=np.float64))
    width = np.minimum(np.arange(1, c.size + 1), smooth)
    prev = np.concatenate([np.zeros(smooth), c])[: c.size]
    mean = (c - prev) / width
    below = np.nonzero(mean <= level)[0]
    return int(below[0]) if below.size else int(c.size)


def compare_engines(exact, meanfield, *, burn_in: int, settle_fraction: float = 0.1,
                    smooth: int = 5) -> dict[str, tuple[float, float]]:
    """Balance statistics of two result Datasets of the same config and point.

    Parameters
    ----------
    exact, meanfield : xarray.Dataset
        Results of :func:`routesim.simulate` with ``run.engine`` ``exact`` and
        ``meanfield`` (one point; replicas pooled).
    burn_in : int >= 0
        Steps left out of the steady-state statistics.
    settle_fraction : float in (0, 1)
        Settling level: ``steady + fraction * (initial - steady)`` of the exact
        engine's replica-mean MaxVio_batch, applied to both engines.
    smooth : int > 0
        Trailing-mean width for the settling step.

    Returns
    -------
    dict
        ``{"maxvio_mean": (exact, meanfield), "maxvio_std": (...),
        "settling_step": (...)}``.
    """
    curves, stats = {}, {}
    for name, ds in (("exact", exact), ("meanfield", meanfield)):
        mv = np.asarray(ds["maxvio_batch"].values, dtype=np.float64)[:, 0, :]  # (S, R)
        curves[name] = mv.mean(axis=1)
        tail = mv[burn_in:]
        stats[name] = (float(tail.mean()), float(tail.std(ddof=1)))
    steady = stats["exact"][0]
    level = steady + settle_fraction * (curves["exact"][0] - steady)
    settle = {n: settling_step(c, level, smooth) for n, c in curves.items()}
    return {"maxvio_mean": (stats["exact"][0], stats["meanfield"][0]),
            "maxvio_std": (stats["exact"][1], stats["meanfield"][1]),
            "settling_step": (float(settle["exact"]), float(settle["meanfield"]))}
