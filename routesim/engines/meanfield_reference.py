"""The mean-field surrogate's linearised expected-load map (see :mod:`routesim.engines.meanfield`).

Each (point, replica) row keeps a reference: where the load map ``p(b)``, its
Jacobian and the selection covariance were last evaluated exactly. Between
evaluations

    p(b, mu) = p(b0, mu0) + J (b - b0) + J_mu (mu - mu0) + R_thr,

the exact linear term (``J_mu`` only when the popularity drifts) plus the
second-order remainder of the large-N threshold map
(:mod:`routesim.theory.threshold_map`),
``R_thr = p_thr(b, mu) - p_thr(b0, mu0) - J_thr (b - b0) - J_thr,mu (mu - mu0)``,
which costs O(N) per row and step. A row is evaluated afresh when either
linear term alone predicts a relative change of some ``p_i`` above
``tolerance``; its covariance when some ``p_i`` moved by more than
``covariance_tolerance`` since.

* ``J = dp/db`` and ``J_mu`` are analytic (one quadrature pass with ``p``);
  ``tolerance`` defaults to 25 %, where the error of the corrected map is
  below about 0.1 % of ``p_i`` (see docs/meanfield.md). Directions that change
  nothing (a common shift of an additive bias) never trigger an evaluation,
  since ``J`` annihilates them.
* The covariance is :func:`routesim.theory.expected_load.selection_covariance`, from the
  same quadrature pass as the map and its Jacobians.
* The design effect ``deff_i = 1 + (L - 1) icc_i``: tokens of a sequence
  share a logit component with correlation ``rho``, and the selection
  indicators of two such tokens then correlate with ``icc_i``, the
  tetrachoric correlation of a latent-normal threshold model at the expert's
  own inclusion probability ``p_i``:
  ``icc_i = (p_i - 2 T(t_i, a) - p_i^2) / (p_i (1 - p_i))`` with
  ``t_i = Phi^-1(1 - p_i)``, ``a = sqrt((1 - rho) / (1 + rho))`` and Owen's ``T``.

Shape legend: P points, R replicas, E experts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import special

from .._backend import to_numpy
from ..theory._quadrature import _transform
from ..theory.expected_load import load_map_and_jacobians
from ..theory.threshold_map import ThresholdMap, solve_threshold, threshold_change

if TYPE_CHECKING:
    from .meanfield import MeanFieldPlan

__all__ = [
    "COVARIANCE_TOLERANCE",
    "DEFAULT_TOLERANCE",
    "LoadReference",
    "blank_reference",
    "corrected_p",
    "current_p",
    "evaluate",
    "map_nodes",
    "relative_change",
    "threshold_design_effect",
]

#: Relative change of some ``p_i``, as predicted by the linear term in the
#: bias (or in the popularity), that triggers a fresh evaluation of a row's
#: load map and Jacobian.
DEFAULT_TOLERANCE = 0.25
#: Relative change of some ``p_i`` since the covariance was evaluated that
#: triggers a fresh evaluation of the selection covariance.
COVARIANCE_TOLERANCE = 0.25
#: Quadrature nodes of the exact evaluations from ``MAP_NODES_FROM`` experts on
#: (``benchmarks/bench_load_map.py --accuracy``): at N = 64-256, K = 8 (linear
#: skew, Zipf 1 and 1.5) the map is within 5e-6 (relative to its largest entry) of
#: 192 nodes and its Jacobians within 5e-5; the covariance within 8e-4 up to Zipf 1
#: and 2e-2 at Zipf 1.5 (64 nodes: 5e-3), inside the 25 % by which it may drift
#: between its own evaluations (``COVARIANCE_TOLERANCE``). 64 nodes cost 4/3 as
#: much. Fewer experts take ``SMALL_MAP_NODES`` (an evaluation costs little there).
MAP_NODES = 48
SMALL_MAP_NODES = 64
MAP_NODES_FROM = 64


def map_nodes(num_experts: int) -> int:
    """Quadrature nodes of the surrogate's exact evaluations for ``num_experts``.

    Parameters
    ----------
    num_experts : int
        ``N``.

    Returns
    -------
    int

    Examples
    --------
    >>> map_nodes(16), map_nodes(256)
    (64, 48)
    """
    return MAP_NODES if num_experts >= MAP_NODES_FROM else SMALL_MAP_NODES


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


@dataclass(frozen=True)
class LoadReference:
    """Where each (point, replica) row was last evaluated exactly (host arrays).

    Attributes
    ----------
    bias_PRE, mu_PRE : bias ``b0`` and popularity at the last evaluation.
    p_PRE : ``p(b0)``, sums to K.
    jac_PREE : ``dp_i / db_j`` at ``b0``.
    jac_mu_PREE : ``dp_i / dmu_j`` at ``b0`` (None without drift).
    sqrt_deff_PRE : square root of the design effect at ``p(b0)``.
    cov_p_PRE : ``p`` where the covariance was evaluated.
    factor_T_PREE : ``A^T``, with ``A A^T`` the per-token selection covariance there.
    scale_PRE : ``sqrt(deff / (p (1 - p)))`` at the covariance's ``p`` (0 if ``p (1 - p) = 0``).
    thr_p_PRE, thr_f_PRE, thr_gb_PRE, thr_gm_PRE : the threshold map at ``b0``
        (:class:`~routesim.theory.threshold_map.ThresholdMap`).
    tau_PR : its level at the last call (the warm start of the next).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.meanfield import make_plan_meanfield
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> ref = blank_reference(make_plan_meanfield(cfg))
    >>> ref.p_PRE.shape, ref.jac_PREE.shape, ref.jac_mu_PREE is None
    ((1, 1, 4), (1, 1, 4, 4), True)
    """

    bias_PRE: np.ndarray
    mu_PRE: np.ndarray
    p_PRE: np.ndarray
    jac_PREE: np.ndarray
    jac_mu_PREE: np.ndarray | None
    sqrt_deff_PRE: np.ndarray
    cov_p_PRE: np.ndarray
    factor_T_PREE: np.ndarray
    scale_PRE: np.ndarray
    thr_p_PRE: np.ndarray
    thr_f_PRE: np.ndarray
    thr_gb_PRE: np.ndarray
    thr_gm_PRE: np.ndarray
    tau_PR: np.ndarray


def relative_change(dp: np.ndarray, p: np.ndarray, floor: float) -> np.ndarray:
    """``max_i |dp_i| / max(p_i, floor)`` per row.

    The floor (1 % of the balanced share ``K / N``) keeps nearly dead experts,
    whose loads are negligible, from forcing re-evaluations.

    Parameters
    ----------
    dp : array (..., E)
        Change of ``p``.
    p : array (..., E)
        ``p`` at the reference.
    floor : float
        Smallest denominator.

    Returns
    -------
    array (...)

    Examples
    --------
    >>> relative_change(np.array([[0.01, -0.02], [0.0, 0.001]]),
    ...                 np.array([[0.5, 0.5], [0.5, 0.0]]), 0.01).tolist()
    [0.04, 0.1]
    """
    return np.max(np.abs(dp) / np.maximum(p, floor), axis=-1)


def _put(full: np.ndarray, rows: tuple[np.ndarray, ...], value: np.ndarray) -> np.ndarray:
    out = full.copy()
    out[rows] = value
    return out


def _noise_scale(ref: LoadReference) -> np.ndarray:
    var = ref.cov_p_PRE * (1.0 - ref.cov_p_PRE)
    return np.where(var > 0, ref.sqrt_deff_PRE / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)


def _covariance_factor(cov: np.ndarray) -> np.ndarray:
    """``A^T`` with ``A A^T = cov``, the per-token selection covariance of each row."""
    lam, vec = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    factor = vec * np.sqrt(np.clip(lam, 0.0, None))[..., None, :]
    return np.swapaxes(factor, -1, -2)


def evaluate(plan: MeanFieldPlan, ref: LoadReference, mu_PRE: np.ndarray, bias_PRE: np.ndarray,
             rows_PR: np.ndarray, cov_PR: np.ndarray) -> LoadReference:
    """Exact load map and Jacobian(s) at ``rows``; covariance at ``cov`` (a subset).

    Parameters
    ----------
    plan : MeanFieldPlan
    ref : LoadReference
        The reference to update.
    mu_PRE, bias_PRE : arrays (P, R, E)
        Popularity and bias.
    rows_PR : bool array (P, R)
        Rows to evaluate.
    cov_PR : bool array (P, R)
        Rows whose covariance is evaluated too.

    Returns
    -------
    LoadReference

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.meanfield import make_plan_meanfield
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> plan = make_plan_meanfield(cfg)
    >>> every = np.ones((1, 1), dtype=bool)
    >>> zero = np.zeros((1, 1, 4))
    >>> ref = evaluate(plan, blank_reference(plan), zero, zero, every, every)
    >>> ref.p_PRE.round(6).tolist()  # equal experts: each is picked with K / N
    [[[0.5, 0.5, 0.5, 0.5]]]
    """
    kw = plan.map_args
    rows = np.nonzero(rows_PR)
    mu, b, s = mu_PRE[rows], bias_PRE[rows], plan.scale_PR[rows]
    # the covariance comes from the same pass (its rows are a subset of these), when
    # some row needs it
    want_cov = bool(np.any(cov_PR & rows_PR))
    out = load_map_and_jacobians(mu, b, noise_scale=s, with_mu=plan.drift,
                                 with_covariance=want_cov, **kw)
    p0, jb, jm = out[:3]
    deff = threshold_design_effect(p0, plan.rho_PR[rows][:, None], plan.cfg.batch.seq_length)
    thr = _threshold(plan, mu, b, s, None)
    new = dict(p_PRE=p0, bias_PRE=b, mu_PRE=mu, sqrt_deff_PRE=np.sqrt(deff), jac_PREE=jb,
               thr_p_PRE=thr.p_PE, thr_f_PRE=thr.f_PE, thr_gb_PRE=thr.g_bias_PE,
               thr_gm_PRE=thr.g_mu_PE, tau_PR=thr.tau_P)
    if plan.drift:
        new["jac_mu_PREE"] = jm
    changes = {name: _put(getattr(ref, name), rows, v) for name, v in new.items()}
    crows = np.nonzero(cov_PR & rows_PR)
    if crows[0].size:
        # both index lists are row-major, so the evaluated rows that need a covariance
        # are picked by the mask restricted to the evaluated rows
        changes["factor_T_PREE"] = _put(ref.factor_T_PREE, crows,
                                        _covariance_factor(out[3][cov_PR[rows]]))
        changes["cov_p_PRE"] = _put(ref.cov_p_PRE, crows, changes["p_PRE"][crows])
    ref = dataclasses.replace(ref, **changes)
    return dataclasses.replace(ref, scale_PRE=_noise_scale(ref))


def blank_reference(plan: MeanFieldPlan) -> LoadReference:
    """A reference of zeros, to be evaluated at every row before the first step.

    Parameters
    ----------
    plan : MeanFieldPlan

    Returns
    -------
    LoadReference

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.meanfield import make_plan_meanfield
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> float(blank_reference(make_plan_meanfield(cfg)).factor_T_PREE.sum())
    0.0
    """
    P, R, n = plan.points.shape_PRE
    vec, mat = np.zeros((P, R, n)), np.zeros((P, R, n, n))
    return LoadReference(bias_PRE=vec, mu_PRE=vec, p_PRE=vec, jac_PREE=mat,
                         jac_mu_PREE=mat if plan.drift else None, sqrt_deff_PRE=vec,
                         cov_p_PRE=vec, factor_T_PREE=mat, scale_PRE=vec, thr_p_PRE=vec,
                         thr_f_PRE=vec, thr_gb_PRE=vec, thr_gm_PRE=vec, tau_PR=np.zeros((P, R)))


def _threshold(plan: MeanFieldPlan, mu_XE: np.ndarray, bias_XE: np.ndarray,
               scale_X: np.ndarray, tau_X: np.ndarray | None) -> ThresholdMap:
    """The threshold map at rows X (flattened), warm-started at ``tau_X`` (then without
    ``g_mu``: only the anchor at an evaluation needs it)."""
    kw = plan.map_args
    tr, b = _transform(kw["score_function"], kw["bias_mode"], kw["bias_on"], bias_XE)
    return solve_threshold(tr, kw["noise"], mu_XE, b, scale_X, kw["topk"], tau_X,
                           with_mu=tau_X is None)


def corrected_p(plan: MeanFieldPlan, ref: LoadReference, bias_PRE: np.ndarray,
                mu_PRE: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The corrected map of every row, without re-evaluating anything.

    Returns ``p`` (P, R, E), the relative change of some ``p_i`` predicted by
    the linear term in the bias and by the one in ``mu`` (each (P, R)), and
    the threshold map's level (P, R).

    Parameters
    ----------
    plan : MeanFieldPlan
    ref : LoadReference
        The reference of every row.
    bias_PRE : ndarray (P, R, E)
        The bias of the step.
    mu_PRE : ndarray (P, R, E)
        The popularity of the step.

    Returns
    -------
    p_PRE : ndarray (P, R, E)
    change_bias_PR, change_mu_PR : ndarrays (P, R)
    level_PR : ndarray (P, R)

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.meanfield import make_plan_meanfield
    >>> from routesim.theory.expected_load import load_map
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 32, "topk": 4, "score_function": "sigmoid"}})
    >>> plan = make_plan_meanfield(cfg)
    >>> mu = np.linspace(0.5, -0.5, 32)[None, None]
    >>> ref, _, _ = current_p(plan, None, np.zeros_like(mu), mu)
    >>> b = 0.02 * np.linspace(-1.0, 1.0, 32)[None, None]
    >>> p, r_bias, r_mu, _ = corrected_p(plan, ref, b, mu)
    >>> exact = load_map(mu, b, topk=4)
    >>> linear = ref.p_PRE + (ref.jac_PREE @ b[..., None])[..., 0]
    >>> err = lambda x: float(np.max(np.abs(x - exact) / exact))
    >>> round(float(r_bias[0, 0]), 2), err(p) < err(linear) / 5
    (0.27, True)
    """
    shape = bias_PRE.shape
    db = bias_PRE - ref.bias_PRE
    lin = (ref.jac_PREE @ db[..., None])[..., 0]
    r_bias = relative_change(lin, ref.p_PRE, plan.p_floor)
    dmu = None
    r_mu = np.zeros(shape[:-1])
    if plan.drift:
        dmu = mu_PRE - ref.mu_PRE
        lin_mu = (ref.jac_mu_PREE @ dmu[..., None])[..., 0]
        r_mu = relative_change(lin_mu, ref.p_PRE, plan.p_floor)
        lin = lin + lin_mu
    n = shape[-1]
    flat = lambda a: a.reshape(-1, n)  # noqa: E731
    now = _threshold(plan, np.ascontiguousarray(flat(np.broadcast_to(mu_PRE, shape))),
                     flat(bias_PRE),
                     plan.scale_PR.reshape(-1), ref.tau_PR.reshape(-1))
    anchor = ThresholdMap(p_PE=flat(ref.thr_p_PRE), f_PE=flat(ref.thr_f_PRE),
                          g_bias_PE=flat(ref.thr_gb_PRE), g_mu_PE=flat(ref.thr_gm_PRE),
                          tau_P=ref.tau_PR.reshape(-1))
    thr_lin = threshold_change(anchor, flat(db), None if dmu is None else flat(dmu))
    remainder = (now.p_PE - anchor.p_PE - thr_lin).reshape(shape)
    return ref.p_PRE + lin + remainder, r_bias, r_mu, now.tau_P.reshape(shape[:-1])


def current_p(plan: MeanFieldPlan, ref: LoadReference | None, bias_PRE: Any,
              mu_PRE: np.ndarray) -> tuple[LoadReference, np.ndarray, np.ndarray]:
    """Linearised ``p`` of every row, re-evaluating rows that moved too far.

    Parameters
    ----------
    plan : MeanFieldPlan
    ref : LoadReference or None
        The reference (None: evaluate every row).
    bias_PRE : array (P, R, E)
        The bias of the step.
    mu_PRE : array (P, R, E)
        The popularity of the step.

    Returns
    -------
    ref : LoadReference
        The reference, updated where rows were evaluated.
    p_PRE : ndarray (P, R, E)
        Expected selection probabilities.
    evaluated_PR : bool ndarray (P, R)
        The rows evaluated.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.meanfield import make_plan_meanfield
    >>> cfg = config_from_dict({"run": {"engine": "meanfield"},
    ...     "router": {"num_experts": 4, "topk": 2, "score_function": "sigmoid"}})
    >>> plan = make_plan_meanfield(cfg)
    >>> zero = np.zeros((1, 1, 4))
    >>> ref, p, rows = current_p(plan, None, zero, zero)  # the first call evaluates
    >>> rows.tolist(), round(float(p.sum()), 6)
    ([[True]], 2.0)
    >>> # a common shift of an additive bias changes nothing: no re-evaluation
    >>> ref, p, rows = current_p(plan, ref, zero + 0.3, zero)
    >>> rows.tolist(), p.round(6).tolist()
    ([[False]], [[[0.5, 0.5, 0.5, 0.5]]])
    """
    bias = to_numpy(bias_PRE).astype(np.float64)
    if ref is None:
        every = np.ones(plan.points.shape_PRE[:2], dtype=bool)
        ref = evaluate(plan, blank_reference(plan), mu_PRE, bias, every, every)
        return ref, ref.p_PRE, every
    p, r_bias, r_mu, tau = corrected_p(plan, ref, bias, mu_PRE)
    ref = dataclasses.replace(ref, tau_PR=tau)
    stale = np.maximum(r_bias, r_mu) > plan.tolerance
    stale_cov = (relative_change(p - ref.cov_p_PRE, ref.cov_p_PRE, plan.p_floor)
                 > plan.covariance_tolerance)
    rows = stale | stale_cov
    if not rows.any():
        return ref, p, rows
    ref = evaluate(plan, ref, mu_PRE, bias, rows, stale_cov)
    return ref, np.where(rows[..., None], ref.p_PRE, p), rows
