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
policy), popularity drift and the metrics of :func:`routesim.run.build_dataset`
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
from .._backend import get_namespace, to_numpy
from ..config import Config
from .exact import StepOutput
from ..exceptions import ConfigError
from ..routing import capacity

__all__ = [
    "COVARIANCE_TOLERANCE",
    "MeanFieldState",
    "make_meanfield_simulator",
    "simulate_meanfield",
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


def _theory() -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    """Load map, selection covariance and Jacobian (imported late: optional engine)."""
    from ..theory.expected_load import jacobian, load_map, selection_covariance  # noqa: PLC0415

    return load_map, selection_covariance, jacobian


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
    evaluations : int
        Rows evaluated exactly so far (load map and Jacobian).
    """

    step: int
    bias_PRE: Any
    memory_PRE: Any
    window_load_PRE: Any
    window_batches: int
    windows_done: int
    traffic: traffic.TrafficState
    reference: _Reference | None
    evaluations: int


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
    if c.type == "quantile":
        raise ConfigError("controller.type = 'quantile': run.engine = 'meanfield' has no "
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
    step : callable (MeanFieldState) -> (MeanFieldState, routesim.engines.exact.StepOutput)
    """
    all_points = config.points()
    point_indices = list(range(len(all_points)) if point_indices is None else point_indices)
    for i in point_indices:
        if not 0 <= i < len(all_points):
            raise ConfigError(f"point_indices: {i} is not a point index in [0, {len(all_points)})")
    if not point_indices:
        raise ConfigError("point_indices: empty; give at least one point")
    for name, value in (("tolerance", tolerance), ("covariance_tolerance", covariance_tolerance)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"{name} = {value!r}: must be a finite number > 0")
    points = [all_points[i] for i in point_indices]
    for p in points:
        _check(p)
    cfg = points[0]
    load_map, selection_covariance, jacobian = _theory()
    xp = xp or get_namespace(cfg.run.backend)
    run, batch, router, ctrl = cfg.run, cfg.batch, cfg.router, cfg.controller
    dtype = xp.float32 if run.bias_dtype == "float32" else xp.float64
    n, k, L = router.num_experts, router.topk, batch.seq_length
    P, R = len(points), run.replicas
    key_points = [0] * len(point_indices) if run.common_random_numbers else point_indices
    keys_PR = xp.asarray(rng.point_keys(run.seed, key_points, R))
    tparams = traffic.make_traffic_params(points)
    cparams = controllers.make_controller_params(points)
    drift = tparams.drift != "none"
    scale_PR = np.broadcast_to(tparams.noise_scale_P[:, None], (P, R))
    rho_PR = np.broadcast_to(tparams.rho_P[:, None], (P, R))
    seqs_mb = batch.sequences_per_micro_batch
    g = _block_sequences(cfg)
    blocks_mb = seqs_mb // g
    tok_block = g * L
    cap = capacity(seqs_mb * L, k, n, router.capacity_factor)
    cb_sizes = batch.computation_batch_sizes
    init_bias = 1.0 if router.bias_mode == "multiplicative" else 0.0
    p_floor = 0.01 * k / n
    kw = dict(topk=k, score_function=router.score_function, noise=cfg.traffic.noise,
              bias_mode=router.bias_mode, bias_on="scores")

    empty_cb = xp.zeros((P, R, 0), dtype=xp.float64)
    no_displacement = xp.full((P, R), float("nan"), dtype=xp.float64)

    def put(full: np.ndarray, rows: tuple[np.ndarray, np.ndarray], value: np.ndarray):
        out = full.copy()
        out[rows] = value
        return out

    def noise_scale(ref: _Reference) -> np.ndarray:
        var = ref.cov_p_PRE * (1.0 - ref.cov_p_PRE)
        return np.where(var > 0, ref.sqrt_deff_PRE / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)

    def evaluate(ref: _Reference, mu_PRE: np.ndarray, bias_PRE: np.ndarray,
                 rows_PR: np.ndarray, cov_PR: np.ndarray) -> _Reference:
        """Exact load map and Jacobian(s) at ``rows``; covariance at ``cov`` (a subset)."""
        rows = np.nonzero(rows_PR)
        mu, b, s = mu_PRE[rows], bias_PRE[rows], scale_PR[rows]
        p0 = load_map(mu, b, noise_scale=s, **kw)
        deff = threshold_design_effect(p0, rho_PR[rows][:, None], L)
        new = dict(p_PRE=p0, bias_PRE=b, mu_PRE=mu, sqrt_deff_PRE=np.sqrt(deff),
                   jac_PREE=jacobian(mu, b, noise_scale=s, wrt="bias", **kw))
        if drift:
            new["jac_mu_PREE"] = jacobian(mu, b, noise_scale=s, wrt="mu", **kw)
        changes = {name: put(getattr(ref, name), rows, v) for name, v in new.items()}
        crows = np.nonzero(cov_PR)
        if crows[0].size:
            cov = selection_covariance(mu_PRE[crows], bias_PRE[crows],
                                       noise_scale=scale_PR[crows], **kw)
            lam, vec = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
            factor = vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]
            changes["factor_T_PREE"] = put(ref.factor_T_PREE, crows,
                                           np.swapaxes(factor, -1, -2))
            changes["cov_p_PRE"] = put(ref.cov_p_PRE, crows, changes["p_PRE"][crows])
        ref = dataclasses.replace(ref, **changes)
        return dataclasses.replace(ref, scale_PRE=noise_scale(ref))

    def blank() -> _Reference:
        vec, mat = np.zeros((P, R, n)), np.zeros((P, R, n, n))
        return _Reference(bias_PRE=vec, mu_PRE=vec, p_PRE=vec, jac_PREE=mat,
                          jac_mu_PREE=mat if drift else None, sqrt_deff_PRE=vec, cov_p_PRE=vec,
                          factor_T_PREE=mat, scale_PRE=vec)

    def current_p(ref: _Reference | None, bias_PRE: Any,
                  mu_PRE: np.ndarray) -> tuple[_Reference, np.ndarray, int]:
        """Linearised ``p`` of every row, re-evaluating rows that moved too far.

        Returns the (possibly updated) reference, ``p`` and the rows evaluated.
        """
        bias = to_numpy(bias_PRE).astype(np.float64)
        if ref is None:
            every = np.ones((P, R), dtype=bool)
            ref = evaluate(blank(), mu_PRE, bias, every, every)
            return ref, ref.p_PRE, P * R
        dp = (ref.jac_PREE @ (bias - ref.bias_PRE)[..., None])[..., 0]
        if drift:
            dp += (ref.jac_mu_PREE @ (mu_PRE - ref.mu_PRE)[..., None])[..., 0]
        p = ref.p_PRE + dp
        stale = _relative(dp, ref.p_PRE, p_floor) > tolerance
        stale_cov = _relative(p - ref.cov_p_PRE, ref.cov_p_PRE, p_floor) > covariance_tolerance
        rows = stale | stale_cov
        if not rows.any():
            return ref, p, 0
        ref = evaluate(ref, mu_PRE, bias, rows, stale_cov)
        return ref, np.where(rows[..., None], ref.p_PRE, p), int(rows.sum())

    def draw(ref: _Reference, p_PRE: np.ndarray, t: int, first_block: int) -> Any:
        """Loads of one micro-batch's blocks, int array (P, R, B, E)."""
        rows = xp.arange(first_block, first_block + blocks_mb, dtype=xp.uint64)
        z = to_numpy(rng.standard_normal(xp, keys_PR, t, rng.Stream.MEANFIELD, rows, n,
                                         xp.float64))
        x = z @ ref.factor_T_PREE  # (P, R, B, E): unit-variance-scaled selection noise
        pc = np.clip(p_PRE, 0.0, 1.0)
        x *= (np.sqrt(pc * (1.0 - pc)) * ref.scale_PRE)[:, :, None, :]
        x -= x.mean(axis=-1, keepdims=True)
        real = tok_block * p_PRE[:, :, None, :] + math.sqrt(tok_block) * x
        return xp.asarray(round_to_total(np, real, tok_block * k))

    def init() -> MeanFieldState:
        zeros = xp.zeros((P, R, n), dtype=dtype)
        tstate = traffic.init_traffic(xp, tparams, keys_PR)
        return MeanFieldState(step=0, bias_PRE=zeros + init_bias, memory_PRE=zeros,
                              window_load_PRE=xp.zeros((P, R, n), dtype=xp.int64),
                              window_batches=0, windows_done=0, traffic=tstate,
                              reference=None, evaluations=0)

    def step(state: MeanFieldState) -> tuple[MeanFieldState, StepOutput]:
        t = state.step
        tstate = traffic.advance_traffic(xp, tparams, state.traffic, keys_PR, t)
        mu_PRE = to_numpy(tstate.mu_PRE).astype(np.float64)
        bias, memory, ref = state.bias_PRE, state.memory_PRE, state.reference
        window, batches, done = state.window_load_PRE, state.window_batches, state.windows_done
        evaluations = state.evaluations
        blocks, kept_total = [], None

        def close(bias, memory, window, done):
            bias, memory = controllers.update_bias(xp, cparams, bias, memory, window, None, done)
            return bias, memory, xp.zeros_like(window), done + 1

        for mb in range(batch.num_micro_batches):
            ref, p, evaluated = current_p(ref, bias, mu_PRE)
            evaluations += evaluated
            loads = draw(ref, p, t, mb * blocks_mb)
            kept = xp.sum(loads, axis=2)
            if cap < seqs_mb * L:
                kept = xp.minimum(kept, cap)
            blocks.append(loads)
            kept_total = kept if kept_total is None else kept_total + kept
            window, batches = window + kept, batches + 1
            if ctrl.window == "micro_batch":
                bias, memory, window, done = close(bias, memory, window, done)
                batches = 0
        if ctrl.window == "global_batch" or (
                ctrl.window == "steps" and (t + 1) % ctrl.update_every == 0):
            bias, memory, window, done = close(bias, memory, window, done)
            batches = 0
        block_loads = xp.concat(blocks, axis=2) if len(blocks) > 1 else blocks[0]
        mv_cb = []
        for size in cb_sizes:
            grp = xp.sum(xp.reshape(block_loads, (P, R, -1, size // g, n)), axis=3)
            grp = xp.astype(grp, xp.float64)
            mean = xp.mean(grp, axis=-1)
            mv_cb.append(xp.mean((xp.max(grp, axis=-1) - mean) / mean, axis=-1))
        out = StepOutput(bias_PRE=state.bias_PRE, load_PRE=xp.sum(block_loads, axis=2),
                         kept_PRE=kept_total, displaced_PR=no_displacement,
                         maxvio_compute_PRC=xp.stack(mv_cb, axis=-1) if mv_cb else empty_cb)
        new = MeanFieldState(step=t + 1, bias_PRE=bias, memory_PRE=memory,
                             window_load_PRE=window, window_batches=batches, windows_done=done,
                             traffic=tstate, reference=ref, evaluations=evaluations)
        return new, out

    return init, step


def simulate_meanfield(config: Config, *, point_indices: Sequence[int] | None = None,
                       progress: bool | None = None,
                       tolerance: float = DEFAULT_TOLERANCE,
                       covariance_tolerance: float = COVARIANCE_TOLERANCE):
    """Run the mean-field surrogate; the same Dataset as :func:`routesim.simulate`.

    Parameters
    ----------
    config : Config
        The run (``run.engine`` is not consulted here).
    point_indices : sequence of int, optional
        Run only these points of the sweep (global indices).
    progress : bool or None
        Progress bar on stderr; None shows it only when stderr is a terminal.
    tolerance, covariance_tolerance : float > 0
        Re-evaluation thresholds (see :func:`make_meanfield_simulator`).

    Returns
    -------
    xarray.Dataset
        As :func:`routesim.simulate`; ``displacement`` is NaN and the attrs
        add ``meanfield_evaluations`` (exact row evaluations of the load map)
        and the two tolerances.
    """
    from .. import faults, resources  # noqa: PLC0415 (avoid a cycle)
    from ..run import build_dataset, run_steps  # noqa: PLC0415 (avoid a cycle)

    progress = resources.check(config, point_indices, progress)
    init, step = make_meanfield_simulator(config, point_indices, tolerance=tolerance,
                                          covariance_tolerance=covariance_tolerance)
    fields = ("bias_PRE", "load_PRE", "kept_PRE", "displaced_PR", "maxvio_compute_PRC")
    check = faults.make_step_check(config, point_indices, get_namespace(config.run.backend))
    state, rec = run_steps(step, init(), config.run.steps, fields, progress,
                           "routesim meanfield", check)
    ds = build_dataset(config, point_indices, bias_SPRE=rec["bias_PRE"],
                       load_SPRE=rec["load_PRE"], kept_SPRE=rec["kept_PRE"],
                       displaced_SPR=rec["displaced_PR"],
                       maxvio_compute_SPRC=rec["maxvio_compute_PRC"])
    ds.attrs["meanfield_evaluations"] = int(state.evaluations)
    ds.attrs["meanfield_tolerance"] = float(tolerance)
    ds.attrs["meanfield_covariance_tolerance"] = float(covariance_tolerance)
    return ds


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
