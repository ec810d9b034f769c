"""Configuration: frozen dataclasses, validated in one place, read from TOML.

A :class:`Config` has one section per component (``run``, ``batch``,
``traffic``, ``router``, ``controller``, ``penalty``, ``sweep``). Option names
follow Megatron-LM's where one exists (``topk``, ``score_function``,
``bias_update_rate``, ``capacity_factor``, ``token_drop_policy``,
``num_groups``, ``group_topk``, ``topk_scaling_factor``).

Every invalid value raises :class:`routesim.ConfigError` when the dataclass is
built, before any work starts. The message names the field path
(``router.topk``), the value and what is allowed. Unknown keys in a TOML file
or a dict are refused: a typo is never silently ignored.

A sweep turns one config into several *points*: ``[sweep]`` maps dotted field
names to lists of values, combined as a grid (cartesian product) or zipped.
Only fields that the engine can vary along its ``point`` axis may be swept
(:data:`SWEEPABLE`); the shape-defining ones (experts, top-k, batch) are the
same for every point.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from .exceptions import ConfigError

__all__ = [
    "RunConfig",
    "BatchConfig",
    "TrafficConfig",
    "RouterConfig",
    "ControllerConfig",
    "PenaltyConfig",
    "SweepConfig",
    "Config",
    "SWEEPABLE",
    "CONTROLLER_TYPES",
    "load_config",
    "config_from_dict",
]

CONTROLLER_TYPES = (
    "none",
    "sign",
    "sign_centred",
    "proportional",
    "ema",
    "rms",
    "momentum_tanh",
    "quantile",
)

_DATACLASS = dict(frozen=True, kw_only=True, slots=True)


# ----------------------------------------------------------------------------
# Generic field checking
# ----------------------------------------------------------------------------
def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if hint is type(None):
        return "none (omit the key)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Return ``value`` checked (and lightly converted) against a type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    bad = ConfigError(f"{path} = {value!r}: must be {_describe(hint)}")
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(path, value, arg)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is type(None):
        if value is None:
            return None
        raise bad
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{path} = nan: must be a number, not NaN")
            return value
        raise bad
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad
    return value


def _check_types(obj: Any, section: str) -> None:
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        checked = _coerce(f"{section}.{f.name}", value, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def _require(cond: bool, path: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{path} = {value!r}: {allowed}")


def _positive(obj: Any, section: str, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if allow_zero:
            _require(value >= 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number >= 0")
        else:
            _require(value > 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number > 0")


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------
@dataclass(**_DATACLASS)
class RunConfig:
    """How long to run and on what.

    Attributes
    ----------
    steps : int > 0
        Training steps (global batches) to simulate.
    replicas : int > 0
        Independent replicas per point (own random stream each).
    seed : int >= 0
        Root seed. Point ``p``, replica ``r`` draws from
        ``SeedSequence(seed, spawn_key=(p, r))``.
    backend : {"numpy", "cupy", "array_api_strict"}
        Array namespace.
    engine : {"exact", "meanfield"}
        ``exact`` draws every token; ``meanfield`` draws loads from the
        expected-load map plus Gaussian fluctuations.
    bias_dtype : {"float32", "float64"}
        Floating type of the bias (1e-3 steps survive in both).
    global_window : int > 0
        Trailing window, in steps, of ``maxvio_global``.
    record_displacement : bool
        Also compute the unbiased top-K to measure displacement (costs a
        second selection).
    common_random_numbers : bool
        Give every point the streams of point 0 (replicas still differ), so
        the points of a sweep see the same traffic and differ only in their
        treatment. A point's numbers then depend on neither its index nor
        its neighbours. (The learning router has its own switch,
        ``penalty.common_random_numbers``.)
    kernel : {"auto", "generic", "numba", "cuda"}
        Exact-engine routing code: ``generic`` is the array code (any
        backend); ``numba`` (NumPy backend, ``fast`` extra) and ``cuda``
        (CuPy backend) are compiled kernels for popularity traffic with
        normal noise, dropless token choice; ``auto`` picks the compiled one
        where it applies. All give the same counts up to float32 near-ties.
    """

    steps: int = 200
    replicas: int = 1
    seed: int = 0
    backend: Literal["numpy", "cupy", "array_api_strict"] = "numpy"
    engine: Literal["exact", "meanfield"] = "exact"
    bias_dtype: Literal["float32", "float64"] = "float32"
    global_window: int = 100
    record_displacement: bool = True
    common_random_numbers: bool = False
    kernel: Literal["auto", "generic", "numba", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _check_types(self, "run")
        _require(self.steps >= 1, "run.steps", self.steps, "must be an integer >= 1")
        _require(self.replicas >= 1, "run.replicas", self.replicas, "must be an integer >= 1")
        _require(0 <= self.seed < 2**63, "run.seed", self.seed, "must be an integer in [0, 2**63)")
        _require(self.global_window >= 1, "run.global_window", self.global_window,
                 "must be an integer >= 1")


@dataclass(**_DATACLASS)
class BatchConfig:
    """Batch structure of one training step.

    Attributes
    ----------
    num_sequences : int > 0
        Sequences per global batch (one step).
    seq_length : int > 0
        Tokens per sequence.
    micro_batch_size : int > 0 or None
        Sequences per micro-batch; must divide ``num_sequences``. None means
        one micro-batch per step. Capacity is applied per micro-batch.
    computation_batch_sizes : list of int
        Sizes, in sequences, at which ``maxvio_compute`` is measured; each
        must divide ``num_sequences``.
    """

    num_sequences: int = 16
    seq_length: int = 256
    micro_batch_size: int | None = None
    computation_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_types(self, "batch")
        _require(self.num_sequences >= 1, "batch.num_sequences", self.num_sequences,
                 "must be an integer >= 1")
        _require(self.seq_length >= 1, "batch.seq_length", self.seq_length,
                 "must be an integer >= 1")
        if self.micro_batch_size is not None:
            _require(self.micro_batch_size >= 1 and self.num_sequences % self.micro_batch_size == 0,
                     "batch.micro_batch_size", self.micro_batch_size,
                     f"must divide batch.num_sequences ({self.num_sequences})")
        for i, size in enumerate(self.computation_batch_sizes):
            _require(size >= 1 and self.num_sequences % size == 0,
                     f"batch.computation_batch_sizes[{i}]", size,
                     f"must divide batch.num_sequences ({self.num_sequences})")

    @property
    def tokens_per_step(self) -> int:
        """Tokens in one global batch, ``num_sequences * seq_length``."""
        return self.num_sequences * self.seq_length

    @property
    def sequences_per_micro_batch(self) -> int:
        """Sequences in one micro-batch."""
        return self.micro_batch_size or self.num_sequences

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per step."""
        return self.num_sequences // self.sequences_per_micro_batch


@dataclass(**_DATACLASS)
class TrafficConfig:
    """Where the router logits come from.

    Attributes
    ----------
    kind : {"popularity", "features", "trace"}
        ``popularity``: logit ``z = mu + noise``; ``features``: topic-mixture
        token features through router weights, ``z = x @ W.T``; ``trace``:
        replay of a recorded logit trace.
    skew : {"uniform", "linear", "zipf"}
        Shape of the popularity vector ``mu`` over experts.
    linear_spread : float >= 0
        For ``linear``: ``mu`` runs from ``+linear_spread`` to ``-linear_spread``.
    zipf_exponent : float >= 0
        For ``zipf``: ``softmax(mu)`` is proportional to ``(i + 1) ** -a``.
    noise : {"normal", "logistic", "gumbel"}
        Law of the per-token, per-expert logit noise.
    noise_scale : float >= 0
        Scale of that noise (standard deviation for ``normal``).
    seq_correlation : float in [0, 1)
        Share ``rho`` of the noise variance shared by all tokens of a
        sequence (per expert); tokens of one sequence then correlate with
        coefficient ``rho``.
    drift : {"none", "random_walk", "sinusoid", "regime"}
        How ``mu`` moves over steps.
    drift_std : float >= 0
        Random-walk step standard deviation per expert per step.
    drift_amplitude, drift_period : float
        Sinusoid ``mu_i(t) = mu_i + A sin(2 pi t / period + 2 pi i / N)``.
    regime_steps : list of int
        Steps at which ``mu`` is replaced by a fresh random permutation of
        itself (regime switches).
    feature_dim : int > 0
        ``d`` of the token features (``features``).
    num_topics : int > 0
        Topics of the feature mixture.
    topic_weights : list of float or None
        Mixture weights, summing to 1; None = equal.
    topic_spread : float >= 0
        Within-topic standard deviation of the features (topic centres have
        unit norm on average).
    router_init_scale : float >= 0
        Standard deviation of each entry of the router weights ``W``
        (a token's logits then have standard deviation about
        ``router_init_scale * |x|``).
    topic_by_micro_batch : bool
        Draw one topic per micro-batch (domain-homogeneous micro-batches).
    trace : str
        ``"builtin"`` for the trace shipped with the package, or a path to a
        ``.npz`` file holding ``logits`` of shape (steps, tokens, experts).
    """

    kind: Literal["popularity", "features", "trace"] = "popularity"
    skew: Literal["uniform", "linear", "zipf"] = "uniform"
    linear_spread: float = 1.0
    zipf_exponent: float = 1.0
    noise: Literal["normal", "logistic", "gumbel"] = "normal"
    noise_scale: float = 1.0
    seq_correlation: float = 0.0
    drift: Literal["none", "random_walk", "sinusoid", "regime"] = "none"
    drift_std: float = 0.0
    drift_amplitude: float = 0.0
    drift_period: float = 100.0
    regime_steps: tuple[int, ...] = ()
    feature_dim: int = 16
    num_topics: int = 4
    topic_weights: tuple[float, ...] | None = None
    topic_spread: float = 0.5
    router_init_scale: float = 1.0
    topic_by_micro_batch: bool = False
    trace: str = "builtin"

    def __post_init__(self) -> None:
        _check_types(self, "traffic")
        _positive(self, "traffic", "linear_spread", "zipf_exponent", "noise_scale", "drift_std",
                  "drift_amplitude", "topic_spread", "router_init_scale", allow_zero=True)
        _positive(self, "traffic", "drift_period")
        _require(0.0 <= self.seq_correlation < 1.0, "traffic.seq_correlation",
                 self.seq_correlation, "must be in [0, 1)")
        _require(self.feature_dim >= 1, "traffic.feature_dim", self.feature_dim,
                 "must be an integer >= 1")
        _require(self.num_topics >= 1, "traffic.num_topics", self.num_topics,
                 "must be an integer >= 1")
        for i, s in enumerate(self.regime_steps):
            _require(s >= 1, f"traffic.regime_steps[{i}]", s, "must be an integer >= 1")
        _require(list(self.regime_steps) == sorted(set(self.regime_steps)),
                 "traffic.regime_steps", list(self.regime_steps),
                 "must be strictly increasing")
        if self.topic_weights is not None:
            w = self.topic_weights
            _require(len(w) == self.num_topics, "traffic.topic_weights", list(w),
                     f"must have traffic.num_topics ({self.num_topics}) entries")
            _require(all(x >= 0 and math.isfinite(x) for x in w), "traffic.topic_weights",
                     list(w), "must be finite and >= 0")
            _require(abs(sum(w) - 1.0) < 1e-6, "traffic.topic_weights", list(w),
                     f"must sum to 1 (they sum to {sum(w):.6g})")


@dataclass(**_DATACLASS)
class RouterConfig:
    """Gate, selection and capacity.

    Attributes
    ----------
    num_experts : int >= 2
        ``N``, routed experts.
    topk : int in [1, num_experts)
        ``K``, experts per token (token choice).
    score_function : {"softmax", "sigmoid", "sqrtsoftplus"}
        Gate applied to the logits.
    bias_mode : {"additive", "multiplicative"}
        Selection on ``s + b`` (bias starts at 0) or ``s * b`` (starts at 1).
    num_groups, group_topk : int or None
        Group-limited top-K (DeepSeek-V3): keep the ``group_topk`` best of
        ``num_groups`` groups, scored by the sum of their top
        ``topk // group_topk`` scores; the others are masked with -inf.
    topk_scaling_factor : float > 0 or None
        Multiplies the gate weights (DeepSeek-V3: 2.5).
    capacity_factor : float > 0 or None
        Capacity ``ceil(C * T * K / N)`` per micro-batch; None or inf =
        dropless.
    token_drop_policy : {"probs", "position"}
        Which tokens an over-full expert keeps: the highest gate weights, or
        the first in Megatron's [sequence position, batch] order.
    router_type : {"token_choice", "expert_choice"}
        ``expert_choice``: each expert takes its top ``K * T / N`` tokens of a
        block of ``expert_choice_block`` tokens.
    expert_choice_block : int > 0 or None
        Block size for Expert Choice (None = one micro-batch).
    """

    num_experts: int = 64
    topk: int = 8
    score_function: Literal["softmax", "sigmoid", "sqrtsoftplus"] = "sigmoid"
    bias_mode: Literal["additive", "multiplicative"] = "additive"
    num_groups: int | None = None
    group_topk: int | None = None
    topk_scaling_factor: float | None = None
    capacity_factor: float | None = None
    token_drop_policy: Literal["probs", "position"] = "probs"
    router_type: Literal["token_choice", "expert_choice"] = "token_choice"
    expert_choice_block: int | None = None

    def __post_init__(self) -> None:
        _check_types(self, "router")
        _require(self.num_experts >= 2, "router.num_experts", self.num_experts,
                 "must be an integer >= 2")
        _require(1 <= self.topk < self.num_experts, "router.topk", self.topk,
                 f"must be an integer in [1, router.num_experts) = [1, {self.num_experts})")
        if (self.num_groups is None) != (self.group_topk is None):
            raise ConfigError(
                f"router.num_groups = {self.num_groups!r}, router.group_topk = "
                f"{self.group_topk!r}: set both or neither")
        if self.num_groups is not None:
            g, gk = self.num_groups, self.group_topk
            _require(g >= 1 and self.num_experts % g == 0, "router.num_groups", g,
                     f"must divide router.num_experts ({self.num_experts})")
            _require(1 <= gk <= g, "router.group_topk", gk,
                     f"must be in [1, router.num_groups] = [1, {g}]")
            _require(self.topk % gk == 0, "router.group_topk", gk,
                     f"must divide router.topk ({self.topk})")
            _require(gk * (self.num_experts // g) >= self.topk, "router.group_topk", gk,
                     f"keeps {gk * (self.num_experts // g)} experts, fewer than "
                     f"router.topk ({self.topk})")
            _require(self.topk // gk <= self.num_experts // g, "router.group_topk", gk,
                     "topk // group_topk must not exceed the experts per group")
        _positive(self, "router", "topk_scaling_factor")
        if self.capacity_factor is not None:
            _require(self.capacity_factor > 0, "router.capacity_factor", self.capacity_factor,
                     "must be > 0 (omit it, or use inf, for dropless routing)")
        if self.expert_choice_block is not None:
            _require(self.expert_choice_block >= 1, "router.expert_choice_block",
                     self.expert_choice_block, "must be an integer >= 1")

    @property
    def dropless(self) -> bool:
        """True when no token can be dropped."""
        return self.capacity_factor is None or math.isinf(self.capacity_factor)


@dataclass(**_DATACLASS)
class ControllerConfig:
    """Bias controller (load balancing without gradients).

    Attributes
    ----------
    type : str
        One of :data:`CONTROLLER_TYPES`. See :mod:`routesim.controllers`.
    bias_update_rate : float >= 0
        ``u``, the rate (Megatron ``moe_router_bias_update_rate``).
    window : {"micro_batch", "global_batch", "steps"}
        Loads are counted over this window and the bias is updated at its
        end; ``steps`` updates every ``update_every`` steps.
    update_every : int > 0
        Steps per window when ``window = "steps"``.
    momentum : float in [0, 1)
        EMA momentum (``ema``) or momentum (``momentum_tanh``).
    bias_cap : float >= 0
        Clamp of the bias to [-cap, cap] (``ema``); 0 turns it off.
    warmup_steps : int >= 0
        Windows without update at the start (``ema``, ``momentum_tanh``).
    tanh_scale : float > 0
        Soft-clamp scale ``kappa`` of ``momentum_tanh``.
    quantile_ema : float in [0, 1)
        Memory of the quantile-balancing dual (Megatron
        ``moe_router_quantile_balancing_ema``).
    """

    type: Literal["none", "sign", "sign_centred", "proportional", "ema", "rms",
                  "momentum_tanh", "quantile"] = "sign"
    bias_update_rate: float = 1e-3
    window: Literal["micro_batch", "global_batch", "steps"] = "global_batch"
    update_every: int = 1
    momentum: float = 0.9
    bias_cap: float = 0.0
    warmup_steps: int = 0
    tanh_scale: float = 0.1
    quantile_ema: float = 0.0

    def __post_init__(self) -> None:
        _check_types(self, "controller")
        _positive(self, "controller", "bias_update_rate", "bias_cap", allow_zero=True)
        _positive(self, "controller", "tanh_scale")
        _require(self.update_every >= 1, "controller.update_every", self.update_every,
                 "must be an integer >= 1")
        _require(self.window == "steps" or self.update_every == 1, "controller.update_every",
                 self.update_every, "must be 1 unless controller.window = 'steps'")
        _require(0.0 <= self.momentum < 1.0, "controller.momentum", self.momentum,
                 "must be in [0, 1)")
        _require(0.0 <= self.quantile_ema < 1.0, "controller.quantile_ema", self.quantile_ema,
                 "must be in [0, 1)")
        _require(self.warmup_steps >= 0, "controller.warmup_steps", self.warmup_steps,
                 "must be an integer >= 0")


@dataclass(**_DATACLASS)
class PenaltyConfig:
    """Gradient-based balancing on a learnable router (``traffic.kind = "features"``).

    With ``learn = true`` the router weights ``W`` (and, for the noisy gate,
    ``W_noise``) take one optimizer step per global batch on the task-loss
    proxy (:mod:`routesim.task_proxy`) plus the penalties
    (:mod:`routesim.penalties`, :mod:`routesim.noisy_gate`); a bias
    controller may run beside them. See ``docs/penalties.md``.

    Attributes
    ----------
    learn : bool
        Train the router weights (runs :mod:`routesim.learner`).
    type : {"none", "switch", "sequence", "global_batch"}
        Auxiliary balance loss ``alpha * N * sum_i f_i P_i`` per micro-batch,
        per sequence, or with ``f`` accumulated over the global batch.
    alpha : float >= 0
        Balance-loss coefficient.
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
    """

    learn: bool = False
    type: Literal["none", "switch", "sequence", "global_batch"] = "none"
    alpha: float = 0.0
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
        _check_types(self, "penalty")
        _positive(self, "penalty", "alpha", "z_loss", "noise_init_scale", "importance_loss",
                  "load_loss", "affinity_scale", "quality_strength", allow_zero=True)
        _positive(self, "penalty", "learning_rate", "schedule_width", "adam_eps")
        for name in ("schedule_final_fraction", "lr_final_fraction"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"penalty.{name}", value, "must be in [0, 1]")
        for name in ("adam_beta1", "adam_beta2", "quality_memory"):
            value = getattr(self, name)
            _require(0.0 <= value < 1.0, f"penalty.{name}", value, "must be in [0, 1)")
        if self.schedule_steps is not None:
            _require(self.schedule_steps >= 1, "penalty.schedule_steps", self.schedule_steps,
                     "must be an integer >= 1 (or omitted for run.steps)")
        _require(self.schedule_delay >= 0, "penalty.schedule_delay", self.schedule_delay,
                 "must be an integer >= 0")

    @property
    def active(self) -> bool:
        """True when some penalty term has a non-zero weight or a type."""
        return (self.type != "none" or self.z_loss > 0 or self.importance_loss > 0
                or self.load_loss > 0)


@dataclass(**_DATACLASS)
class SweepConfig:
    """Points of a sweep.

    Attributes
    ----------
    mode : {"grid", "zip"}
        ``grid``: cartesian product of the value lists; ``zip``: the i-th
        point takes the i-th value of every list (equal lengths).
    parameters : dict of str to list
        Dotted field name (one of :data:`SWEEPABLE`) to its values.
    labels : list of str or None
        One label per point (default: built from the swept values).
    """

    mode: Literal["grid", "zip"] = "grid"
    parameters: dict = field(default_factory=dict)
    labels: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        _check_types(self, "sweep")
        params = {}
        for key, values in self.parameters.items():
            _require(key in SWEEPABLE, f"sweep.{key}", values,
                     "cannot be swept; sweepable fields: " + ", ".join(sorted(SWEEPABLE)))
            _require(isinstance(values, (list, tuple)) and len(values) >= 1, f"sweep.{key}",
                     values, "must be a non-empty list of values")
            params[key] = tuple(values)
        object.__setattr__(self, "parameters", params)
        if self.mode == "zip" and params:
            lengths = {k: len(v) for k, v in params.items()}
            _require(len(set(lengths.values())) == 1, "sweep.mode", self.mode,
                     f"'zip' needs lists of equal length, got {lengths}")
        if self.labels is not None:
            _require(len(self.labels) == self.num_points, "sweep.labels", list(self.labels),
                     f"must have one label per point ({self.num_points})")

    @property
    def num_points(self) -> int:
        """Number of points the sweep defines (1 without parameters)."""
        if not self.parameters:
            return 1
        lengths = [len(v) for v in self.parameters.values()]
        return lengths[0] if self.mode == "zip" else math.prod(lengths)

    def assignments(self) -> list[dict[str, Any]]:
        """One ``{dotted_name: value}`` dict per point, in point order."""
        if not self.parameters:
            return [{}]
        keys = list(self.parameters)
        if self.mode == "zip":
            rows = zip(*(self.parameters[k] for k in keys))
        else:
            rows = itertools.product(*(self.parameters[k] for k in keys))
        return [dict(zip(keys, row)) for row in rows]


#: Fields that may differ between the points of one run.
SWEEPABLE = frozenset(
    [f"traffic.{n}" for n in ("skew", "linear_spread", "zipf_exponent", "noise_scale",
                              "seq_correlation", "drift_std", "drift_amplitude",
                              "drift_period", "topic_spread")]
    + [f"controller.{n}" for n in ("type", "bias_update_rate", "momentum", "bias_cap",
                                   "warmup_steps", "tanh_scale", "quantile_ema")]
    + [f"penalty.{n}" for n in ("type", "alpha", "z_loss", "learning_rate", "importance_loss",
                                "load_loss", "affinity_scale", "quality_strength")]
)

_SECTIONS = {
    "run": RunConfig,
    "batch": BatchConfig,
    "traffic": TrafficConfig,
    "router": RouterConfig,
    "controller": ControllerConfig,
    "penalty": PenaltyConfig,
    "sweep": SweepConfig,
}


@dataclass(**_DATACLASS)
class Config:
    """A whole simulation: one instance of each section.

    Cross-section rules are checked here (for every point of the sweep).
    """

    run: RunConfig = field(default_factory=RunConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ConfigError(f"{name} = {value!r}: must be a {cls.__name__}")
        # Building the points runs every per-field check on the swept values.
        for point in self.points():
            point._check_cross()

    # -- cross-section rules -------------------------------------------------
    def _check_cross(self) -> None:
        r, b, c = self.router, self.batch, self.controller
        tokens_mb = b.sequences_per_micro_batch * b.seq_length
        if c.type == "quantile":
            _require(tokens_mb * r.topk % r.num_experts == 0, "controller.type", c.type,
                     f"quantile balancing needs tokens per micro-batch x topk "
                     f"({tokens_mb} x {r.topk}) divisible by router.num_experts "
                     f"({r.num_experts})")
            _require(r.num_groups is None, "controller.type", c.type,
                     "quantile balancing cannot be combined with group-limited routing "
                     "(router.num_groups)")
            _require(r.bias_mode == "additive", "controller.type", c.type,
                     "quantile balancing needs router.bias_mode = 'additive'")
        if r.router_type == "expert_choice":
            block = r.expert_choice_block or tokens_mb
            _require(tokens_mb % block == 0, "router.expert_choice_block", block,
                     f"must divide the tokens per micro-batch ({tokens_mb})")
            _require(block * r.topk % r.num_experts == 0, "router.expert_choice_block", block,
                     f"K*T/N = {r.topk}*{block}/{r.num_experts} must be an integer")
            _require(r.dropless, "router.capacity_factor", r.capacity_factor,
                     "Expert Choice fills every expert exactly; omit the capacity factor")
            _require(c.type in ("none", "sign", "sign_centred", "proportional", "ema", "rms",
                                "momentum_tanh"), "controller.type", c.type,
                     "Expert Choice takes no quantile dual; use another controller or none")
        if self.penalty.learn or self.penalty.type != "none" or self.penalty.z_loss > 0:
            _require(self.traffic.kind == "features", "traffic.kind", self.traffic.kind,
                     "a learnable router or a penalty needs traffic.kind = 'features'")
        self._check_learning()

    def _check_learning(self) -> None:
        """Rules of the learning router (routesim.learner)."""
        pen, r = self.penalty, self.router
        if not pen.learn:
            if pen.active:
                field_name = "type" if pen.type != "none" else next(
                    n for n in ("z_loss", "importance_loss", "load_loss") if getattr(pen, n) > 0)
                _require(False, f"penalty.{field_name}", getattr(pen, field_name),
                         "a penalty acts through a learning router: set penalty.learn = true")
            _require(not pen.noisy_gate, "penalty.noisy_gate", pen.noisy_gate,
                     "the noisy gate belongs to a learning router: set penalty.learn = true")
            return
        gates = ("softmax", "sigmoid")
        if pen.type != "none":
            _require(r.score_function in gates, "penalty.type", pen.type,
                     f"the balance loss supports router.score_function in {gates}, "
                     f"not {r.score_function!r}")
        _require(r.score_function in gates, "router.score_function", r.score_function,
                 "the learning router's gradients are written for 'softmax' and 'sigmoid'")
        if pen.noisy_gate:
            _require(r.score_function == "softmax", "penalty.noisy_gate", pen.noisy_gate,
                     "the noisy top-K gate is a softmax gate: needs router.score_function = "
                     f"'softmax', not {r.score_function!r}")
        for name in ("importance_loss", "load_loss"):
            value = getattr(pen, name)
            _require(value == 0 or pen.noisy_gate, f"penalty.{name}", value,
                     "the importance and load losses belong to the noisy gate: set "
                     "penalty.noisy_gate = true (or the weight to 0)")
        _require(self.run.engine == "exact", "run.engine", self.run.engine,
                 "a learning router needs run.engine = 'exact'")
        _require(r.dropless, "router.capacity_factor", r.capacity_factor,
                 "the learning router routes dropless: omit it (or use inf)")
        _require(r.router_type == "token_choice", "router.router_type", r.router_type,
                 "the learning router is token choice")
        _require(self.controller.type != "quantile", "controller.type", self.controller.type,
                 "quantile balancing is not supported with a learning router")

    # -- points --------------------------------------------------------------
    def points(self) -> tuple["Config", ...]:
        """The configs of every point, with the sweep applied and removed."""
        out = []
        for i, assignment in enumerate(self.sweep.assignments()):
            sections = {name: getattr(self, name) for name in _SECTIONS if name != "sweep"}
            by_section: dict[str, dict[str, Any]] = {}
            for key, value in assignment.items():
                section, name = key.split(".", 1)
                by_section.setdefault(section, {})[name] = value
            for section, changes in by_section.items():
                try:
                    sections[section] = dataclasses.replace(sections[section], **changes)
                except ConfigError as err:
                    raise ConfigError(f"sweep point {i}: {err}") from None
            out.append(_build_plain(sections))
        return tuple(out)

    @property
    def num_points(self) -> int:
        """Points of the sweep."""
        return self.sweep.num_points

    def point_labels(self) -> tuple[str, ...]:
        """A short label per point."""
        if self.sweep.labels is not None:
            return tuple(self.sweep.labels)
        labels = []
        for assignment in self.sweep.assignments():
            if not assignment:
                labels.append(self.controller.type)
            else:
                labels.append(", ".join(f"{k.split('.', 1)[1]}={v}" for k, v in assignment.items()))
        return tuple(labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (TOML/JSON-compatible; None values omitted)."""
        out: dict[str, Any] = {}
        for name in _SECTIONS:
            section = getattr(self, name)
            d = {}
            for f in fields(section):
                v = getattr(section, f.name)
                if v is None:
                    continue
                if isinstance(v, tuple):
                    v = list(v)
                if isinstance(v, dict):
                    v = {k: list(x) for k, x in v.items()}
                if isinstance(v, float) and math.isinf(v):
                    v = "inf"
                d[f.name] = v
            out[name] = d
        return out

    def to_json(self) -> str:
        """The config as a JSON string (stored in result attrs)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def replace(self, **changes: Any) -> "Config":
        """Copy with dotted-name changes, e.g. ``cfg.replace(**{"router.topk": 2})``."""
        sections = {name: getattr(self, name) for name in _SECTIONS}
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            if "." not in key or key.split(".", 1)[0] not in _SECTIONS:
                raise ConfigError(f"{key} = {value!r}: unknown field; use 'section.field' with "
                                  f"section one of {', '.join(_SECTIONS)}")
            section, name = key.split(".", 1)
            by_section.setdefault(section, {})[name] = value
        for section, ch in by_section.items():
            known = {f.name for f in fields(_SECTIONS[section])}
            for name in ch:
                if name not in known:
                    raise ConfigError(f"{section}.{name}: unknown field; allowed: "
                                      + ", ".join(sorted(known)))
            sections[section] = dataclasses.replace(sections[section], **ch)
        return Config(**sections)


def _build_plain(sections: dict[str, Any]) -> Config:
    """A Config without sweep, skipping the point expansion (no recursion)."""
    cfg = object.__new__(Config)
    for name in _SECTIONS:
        object.__setattr__(cfg, name, sections.get(name, SweepConfig()))
    return cfg


# ----------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------
def _section_from_dict(name: str, cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{name} = {data!r}: must be a table of settings")
    known = {f.name for f in fields(cls)}
    if cls is SweepConfig:
        kwargs = {}
        params = {}
        for key, value in data.items():
            if key in ("mode", "labels"):
                kwargs[key] = value
            elif key == "parameters" and isinstance(value, dict):
                params.update(value)
            elif "." in key:
                params[key] = value
            else:
                raise ConfigError(f"sweep.{key}: unknown key; use 'mode', 'labels' or a dotted "
                                  "field name such as 'controller.bias_update_rate'")
        return SweepConfig(parameters=params, **kwargs)
    for key in data:
        if key not in known:
            close = [k for k in known if k.lower() == str(key).lower().replace("-", "_")]
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{name}.{key} = {data[key]!r}: unknown key{hint}; allowed: "
                              + ", ".join(sorted(known)))
    values = dict(data)
    for key, value in values.items():
        if value == "inf":
            values[key] = math.inf
    try:
        return cls(**values)
    except TypeError as err:  # pragma: no cover - guarded by the key check above
        raise ConfigError(f"{name}: {err}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested dicts (as read from TOML).

    Parameters
    ----------
    data : dict
        ``{section: {field: value}}``; missing sections take defaults.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        On an unknown section or key, a wrong type or a value out of range.

    Examples
    --------
    >>> cfg = config_from_dict({"router": {"num_experts": 16, "topk": 2}})
    >>> cfg.router.topk
    2
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config = {data!r}: must be a table of sections")
    sections = {}
    for key, value in data.items():
        if key not in _SECTIONS:
            raise ConfigError(f"{key}: unknown section; allowed: " + ", ".join(_SECTIONS))
        sections[key] = _section_from_dict(key, _SECTIONS[key], value)
    return Config(**sections)


def load_config(path: str | Path) -> Config:
    """Read a TOML file into a validated :class:`Config`.

    Parameters
    ----------
    path : str or Path
        The TOML file.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or holds an invalid value.
    """
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"config file {str(path)!r}: cannot be read ({err.strerror})") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {str(path)!r}: not valid TOML ({err})") from None
    return config_from_dict(data)
