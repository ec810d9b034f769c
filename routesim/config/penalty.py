"""Config section: penalty (the learning router and its losses)."""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Literal

from ..exceptions import ConfigError
from ..penalty_registry import import_objective_module, registered
from ._checks import DATACLASS, check_types, positive, require

__all__ = ["PenaltyConfig"]


@dataclass(**DATACLASS)
class PenaltyConfig:
    """Gradient-based balancing on a learnable router (``traffic.kind = "features"``).

    With ``learn = true`` the router weights ``W`` (and, for the noisy gate,
    ``W_noise``) take one optimizer step per global batch on the task-loss
    proxy (:mod:`routesim.learning.task_proxy`) plus the penalties
    (:mod:`routesim.learning.penalties`, :mod:`routesim.learning.noisy_gate`); a bias
    controller may run beside them. See ``docs/penalties.md``.

    Attributes
    ----------
    learn : bool
        Train the router weights (runs :mod:`routesim.engines.learner`).
    type : {"none", "switch", "sequence", "global_batch"}
        Auxiliary balance loss ``alpha * N * sum_i f_i P_i`` per micro-batch,
        per sequence, or with ``f`` accumulated over the global batch.
    alpha : float >= 0
        Balance-loss coefficient.
    loss : str
        The balance objective ``phi(F)`` taken through the straight-through
        estimator ``F -> P + sg[F - P]`` (:mod:`routesim.penalty_registry`):
        ``"switch"`` (the dot product ``N sum_i f_i P_i``), ``"quadratic"``
        (``1/2 ||F - Q||^2``), ``"entropy"`` (``KL(F || Q)``), ``"l1"``,
        ``"logsumexp"`` (a smooth ``max_i F_i / Q_i - 1``), or a registered
        user objective.
    target : list of float or None
        Target load distribution ``Q`` over the experts (each > 0, summing
        to 1); None = uniform ``1/N``.
    normalise : bool
        ``P`` from probabilities that sum to 1 per token (softmax, or sigmoid
        scores over their sum: Megatron) or, when false, the mean raw
        sigmoid score ``E[rho]``.
    temperature : float > 0
        ``tau`` of the ``logsumexp`` objective.
    module : str or None
        A module (dotted name or ``.py`` path) imported when the config is
        read, which registers the objective named in ``loss``
        (:func:`routesim.penalty_registry.register`); sweep workers import it
        too.
    normalization : {"megatron", "mixtral"}
        ``f_i = c_i / (K T)`` (the loss equals ``alpha`` at balance) or
        ``c_i / T`` (transformers' Mixtral loss: equals ``K * alpha``).
    f_map : {"unbiased", "realized"}
        Routing map of ``f``: the unbiased top-K of the logits (Megatron) or
        the biased selection that routed the tokens.
    z_loss : float >= 0
        Router z-loss coefficient ``beta``.
    alpha_schedule, z_loss_schedule : {"constant", "warmup", "cosine", "sigmoid"}
        Schedule of the balance weights (``alpha``, ``importance_loss``,
        ``load_loss``) and of ``z_loss``: linear warm-up over
        ``schedule_steps``, cosine annealing from the value down to
        ``schedule_final_fraction`` of it over ``schedule_steps``, or a
        sigmoid ramp centred at ``schedule_delay`` of width ``schedule_width``.
    schedule_steps : int > 0 or None
        Warm-up length or cosine horizon; None = ``run.steps``.
    schedule_final_fraction : float in [0, 1]
        End of the cosine annealing as a fraction of the start.
    schedule_delay : int >= 0
        Centre of the sigmoid ramp, in steps.
    schedule_width : float > 0
        Width of the sigmoid ramp, in steps.
    optimizer : {"sgd", "adam"}
        Router optimizer.
    learning_rate : float > 0
        Router learning rate (used only when the router learns).
    lr_schedule : {"constant", "cosine"}
        Cosine decays to ``lr_final_fraction * learning_rate`` over the run.
    lr_final_fraction : float in [0, 1]
        Floor of the cosine learning-rate schedule.
    adam_beta1, adam_beta2 : float in [0, 1)
        Adam moment decay rates.
    adam_eps : float > 0
        Adam denominator constant.
    noisy_gate : bool
        Shazeer's noisy top-K gate (needs ``router.score_function =
        "softmax"``): noise on in training, off in the evaluation window.
    noise_init_scale : float >= 0
        Standard deviation of the initial ``W_noise`` (0 as in the paper).
    importance_loss, load_loss : float >= 0
        Weights of ``CV(Importance)^2`` and ``CV(Load)^2`` (noisy gate only).
    affinity_scale : float >= 0
        Scale of the topic-expert affinities of the task proxy; under Adam
        only its ratio to the penalty weights matters (see
        ``docs/penalties.md``).
    quality_strength : float >= 0
        Rich-get-richer strength ``gamma`` (0 turns it off).
    quality_memory : float in [0, 1)
        EMA memory ``rho`` of the expert usage behind the quality.
    common_random_numbers : bool
        All points of replica ``r`` share its random numbers (topic
        centres, affinities, initial router, tokens, gate noise): a paired
        comparison of the points' treatments. False gives each point its own
        streams, as the exact engine does.

    Examples
    --------
    >>> PenaltyConfig(learn=True, type="switch", alpha=0.01).alpha
    0.01
    >>> PenaltyConfig(type="aux")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: penalty.type = 'aux': must be one of 'none', 'switch', 'sequence', 'global_batch'
    """

    learn: bool = False
    type: Literal["none", "switch", "sequence", "global_batch"] = "none"
    alpha: float = 0.0
    loss: str = "switch"
    target: tuple[float, ...] | None = None
    normalise: bool = True
    temperature: float = 0.1
    module: str | None = None
    normalization: Literal["megatron", "mixtral"] = "megatron"
    f_map: Literal["unbiased", "realized"] = "unbiased"
    z_loss: float = 0.0
    alpha_schedule: Literal["constant", "warmup", "cosine", "sigmoid"] = "constant"
    z_loss_schedule: Literal["constant", "warmup", "cosine", "sigmoid"] = "constant"
    schedule_steps: int | None = None
    schedule_final_fraction: float = 0.1
    schedule_delay: int = 0
    schedule_width: float = 10.0
    optimizer: Literal["sgd", "adam"] = "adam"
    learning_rate: float = 1e-2
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_final_fraction: float = 0.1
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    noisy_gate: bool = False
    noise_init_scale: float = 0.0
    importance_loss: float = 0.0
    load_loss: float = 0.0
    affinity_scale: float = 1e-3
    quality_strength: float = 0.0
    quality_memory: float = 0.9
    common_random_numbers: bool = True

    def __post_init__(self) -> None:
        check_types(self, "penalty")
        positive(self, "penalty", "alpha", "z_loss", "noise_init_scale", "importance_loss",
                  "load_loss", "affinity_scale", "quality_strength", allow_zero=True)
        positive(self, "penalty", "learning_rate", "schedule_width", "adam_eps", "temperature")
        if self.module is not None:
            try:
                import_objective_module(self.module)
            except Exception as err:  # any failure of the user's module is a config error
                raise ConfigError(f"penalty.module = {self.module!r}: cannot be imported "
                                  f"({type(err).__name__}: {err})") from None
        names = registered()
        require(self.loss in names, "penalty.loss", self.loss,
                 "must be one of " + ", ".join(repr(n) for n in names)
                 + " (add one with routesim.penalty_registry.register, or name the module "
                 "that registers it in penalty.module)")
        if self.target is not None:
            q = self.target
            require(all(math.isfinite(x) and x > 0 for x in q), "penalty.target", list(q),
                     "must be finite and > 0 (each entry)")
            require(abs(sum(q) - 1.0) < 1e-6, "penalty.target", list(q),
                     f"must sum to 1 (it sums to {sum(q):.6g})")
        for name in ("schedule_final_fraction", "lr_final_fraction"):
            value = getattr(self, name)
            require(0.0 <= value <= 1.0, f"penalty.{name}", value, "must be in [0, 1]")
        for name in ("adam_beta1", "adam_beta2", "quality_memory"):
            value = getattr(self, name)
            require(0.0 <= value < 1.0, f"penalty.{name}", value, "must be in [0, 1)")
        if self.schedule_steps is not None:
            require(self.schedule_steps >= 1, "penalty.schedule_steps", self.schedule_steps,
                     "must be an integer >= 1 (or omitted for run.steps)")
        require(self.schedule_delay >= 0, "penalty.schedule_delay", self.schedule_delay,
                 "must be an integer >= 0")

    @property
    def active(self) -> bool:
        """True when some penalty term has a non-zero weight or a type."""
        return (self.type != "none" or self.z_loss > 0 or self.importance_loss > 0
                or self.load_loss > 0)
