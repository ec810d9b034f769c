"""The learning router's penalty terms: balance losses, z-loss and the noisy gate's losses.

Each point weighs its own terms (``penalty.alpha``, ``penalty.z_loss``,
``penalty.importance_loss``, ``penalty.load_loss``) by the step's schedule;
a point without a term gets exactly 0 from it, as if it ran alone.

Shape legend: P points, R replicas, T tokens, E experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..learning import balance_family, noisy_gate, optim, penalties

if TYPE_CHECKING:
    from .learner import LearnerPlan

__all__ = ["penalty_terms", "per_point", "schedule_weight"]


def per_point(plan: LearnerPlan, values_P: np.ndarray, ndim: int) -> Any:
    """Per-point values as a float array of ``ndim`` axes that broadcasts over (P, ...).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.learner import make_plan_learner
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> plan = make_plan_learner(cfg)
    >>> per_point(plan, np.array([0.5]), 3).shape
    (1, 1, 1)
    """
    xp = plan.points.xp
    return xp.reshape(xp.asarray(values_P, dtype=xp.float64), (-1,) + (1,) * (ndim - 1))


def schedule_weight(plan: LearnerPlan, kind: str, t: int) -> float:
    """Weight of a penalty at step ``t`` under schedule ``kind`` (1 at full strength).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.learner import make_plan_learner
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> plan = make_plan_learner(cfg)
    >>> schedule_weight(plan, "constant", 7)
    1.0
    """
    pen = plan.cfg.penalty
    return optim.weight_at(kind, t, 1.0, steps=pen.schedule_steps or plan.cfg.run.steps,
                           final_fraction=pen.schedule_final_fraction,
                           delay=pen.schedule_delay, width=pen.schedule_width)


def _balance_terms(plan: LearnerPlan, h: Any, fmap: Any, w_bal: float, acc: dict) -> None:
    """Add the weighted balance losses of the points that have one (in place on ``acc``).

    Each (group type, objective) pair present is evaluated once for all points.
    """
    xp, cfg = plan.points.xp, plan.cfg
    pen = cfg.penalty
    target = (balance_family.uniform_target(xp, cfg.router.num_experts) if pen.target is None
              else xp.asarray(pen.target, dtype=xp.float64))
    pairs = [(typ, groups, loss)
             for typ, groups in (("switch", cfg.batch.num_micro_batches),
                                 ("sequence", cfg.batch.num_sequences), ("global_batch", 1))
             for loss in dict.fromkeys(plan.losses_P.tolist())]
    for typ, groups, loss in pairs:
        chosen = (plan.types_P == typ) & (plan.losses_P == loss)
        if not chosen.any():
            continue
        val, grad = balance_family.family_loss_from_map(
            xp, loss, h, fmap, plan.aux_gate, cfg.router.topk, groups, target,
            pen.normalise, pen.temperature, pen.normalization)
        c_P = np.where(chosen, plan.alpha_P * w_bal, 0.0)
        acc["value"] = acc["value"] + per_point(plan, c_P, 2) * val
        acc["d_h"] = acc["d_h"] + per_point(plan, c_P, 4) * grad
        acc["balance_loss"] = xp.where(per_point(plan, chosen, 2) > 0, val,
                                       acc["balance_loss"])


def penalty_terms(plan: LearnerPlan, t: int, h: Any, mask: Any, unbiased: Any, clean: Any,
                  raw: Any, eps: Any) -> tuple[Any, Any, Any, dict]:
    """Weighted penalty value, its gradients on h, on clean logits and on raw noise.

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> from routesim.engines.learner import make_plan_learner
    >>> cfg = config_from_dict({"traffic": {"kind": "features"}, "penalty": {"learn": True},
    ...     "batch": {"num_sequences": 2, "seq_length": 4},
    ...     "router": {"num_experts": 4, "topk": 1}})
    >>> plan = make_plan_learner(cfg)  # no balance loss, no z-loss
    >>> h = np.zeros((1, 1, 8, 4))
    >>> value, d_h, _, logs = penalty_terms(plan, 0, h, h, h, None, None, None)
    >>> value.tolist(), float(np.abs(d_h).sum()), logs["z_loss_value"].tolist()
    ([[0.0]], 0.0, [[0.0]])
    """
    xp, pen = plan.points.xp, plan.cfg.penalty
    zero_PR = xp.zeros(plan.points.shape_PRE[:2], dtype=xp.float64)
    acc = {"value": zero_PR, "d_h": xp.zeros_like(h), "balance_loss": zero_PR}
    logs = {"z_loss_value": zero_PR}
    d_clean = d_raw = None
    w_bal, w_z = schedule_weight(plan, pen.alpha_schedule, t), schedule_weight(plan, pen.z_loss_schedule, t)
    if np.any(plan.types_P != "none"):
        fmap = unbiased if pen.f_map == "unbiased" else mask
        _balance_terms(plan, h, fmap, w_bal, acc)
    value, d_h = acc["value"], acc["d_h"]
    zcoef_P = plan.zcoef_P
    if np.any(zcoef_P > 0):
        val, grad = penalties.z_loss(xp, h)
        value = value + per_point(plan, zcoef_P * w_z, 2) * val
        d_h = d_h + per_point(plan, zcoef_P * w_z, 4) * grad
        # 0 where the point has no z-loss, as if it ran alone
        logs["z_loss_value"] = xp.where(per_point(plan, zcoef_P > 0, 2) > 0, val, zero_PR)
    if pen.noisy_gate:
        n_mb = plan.cfg.batch.num_micro_batches
        val, grad = noisy_gate.importance_loss(xp, h, mask, n_mb)
        value = value + per_point(plan, plan.imp_P * w_bal, 2) * val
        d_h = d_h + per_point(plan, plan.imp_P * w_bal, 4) * grad
        logs["importance_cv2"] = val
        val, d_clean, d_raw = noisy_gate.load_loss(xp, clean, raw, eps, plan.cfg.router.topk,
                                                   n_mb)
        value = value + per_point(plan, plan.loadw_P * w_bal, 2) * val
        d_clean = per_point(plan, plan.loadw_P * w_bal, 4) * d_clean
        d_raw = per_point(plan, plan.loadw_P * w_bal, 4) * d_raw
        logs["load_cv2"] = val
    logs["balance_loss"] = acc["balance_loss"]
    logs["alpha_t"] = xp.asarray(plan.alpha_P * w_bal, dtype=xp.float64)
    logs["z_loss_t"] = xp.asarray(zcoef_P * w_z, dtype=xp.float64)
    return value, d_h, (d_clean, d_raw), logs


