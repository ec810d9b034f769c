"""Config sections: run, batch, traffic, router, controller."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping

from ..controllers.registry import get_law, import_law_module, registered
from ..exceptions import ConfigError
from ._checks import _DATACLASS, _check_types, _positive, _require
from ._numerics import parse_bytes

__all__ = ["RunConfig", "BatchConfig", "TrafficConfig", "RouterConfig", "ControllerConfig",
           "LawParameters"]


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
    max_memory : int > 0, str or None
        Memory a run may use: bytes, or a string such as ``"8GB"`` or
        ``"512MiB"`` (k, M, G, T are powers of 1000; Ki, Mi, Gi, Ti of
        1024). None: the memory available when the run starts
        (``MemAvailable``). A run whose estimated peak memory
        (:mod:`routesim.resources`) exceeds it is refused before it starts.
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
    max_memory: int | str | None = None

    def __post_init__(self) -> None:
        _check_types(self, "run")
        if self.max_memory is not None:
            parse_bytes("run.max_memory", self.max_memory)
        _require(self.steps >= 1, "run.steps", self.steps, "must be an integer >= 1")
        _require(self.replicas >= 1, "run.replicas", self.replicas, "must be an integer >= 1")
        _require(0 <= self.seed < 2**63, "run.seed", self.seed, "must be an integer in [0, 2**63)")
        _require(self.global_window >= 1, "run.global_window", self.global_window,
                 "must be an integer >= 1")

    @property
    def max_memory_bytes(self) -> int | None:
        """``max_memory`` in bytes (None when unset)."""
        return None if self.max_memory is None else parse_bytes("run.max_memory",
                                                                self.max_memory)


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
    pre_softmax : bool
        Softmax only. False (Megatron's default): the weights are the softmax
        over the K chosen logits and sum to 1 per token; True (Megatron
        ``moe_router_pre_softmax``): the full-softmax probabilities of the
        chosen experts. Selection is the same either way.
    bias_mode : {"additive", "multiplicative"}
        Selection on ``s + b`` (bias starts at 0) or ``s * b`` (starts at 1).
    num_groups, group_topk : int or None
        Group-limited top-K (DeepSeek-V3): keep the ``group_topk`` best of
        ``num_groups`` groups, scored by the sum of their top
        ``topk // group_topk`` scores; the others are masked with -inf.
    topk_scaling_factor : float > 0 or None
        Multiplies the gate weights (DeepSeek-V3: 2.5).
    capacity_factor : float > 0 or None
        Capacity ``ceil((T * K / N) * C)`` per micro-batch, in Megatron's
        floating-point order; None or inf = dropless.
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
    pre_softmax: bool = False
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
        _require(not self.pre_softmax or self.score_function == "softmax",
                 "router.pre_softmax", self.pre_softmax,
                 f"applies only to score_function = 'softmax' (not "
                 f"{self.score_function!r}); remove it")
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
        A registered law (:func:`routesim.controllers.registered`): the
        built-in ``none``, ``sign``, ``sign_centred``, ``proportional``,
        ``ema``, ``rms``, ``momentum_tanh``, ``quantile``, or one added with
        :func:`routesim.controllers.register`. See docs/controllers.md.
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
        Soft-clamp scale of ``momentum_tanh``: ``tanh(e / tanh_scale)``, so
        SMEBU's ``tanh(kappa e)`` is ``tanh_scale = 1 / kappa`` (0.5 for kappa = 2).
    quantile_ema : float in [0, 1)
        Memory of the quantile-balancing dual (Megatron
        ``moe_router_quantile_balancing_ema``).
    params : table of str to float
        Parameters of a registered law (``[controller.params]``), each
        checked by the law's registration and sweepable as
        ``controller.params.NAME``; unset ones take the law's defaults.
    module : str or None
        Module imported before ``type`` is looked up, for a law that it
        registers: a dotted name (``mypkg.laws``) or a ``.py`` file path
        (relative to the working directory). Stored with the config, so
        sweep workers and re-read results register the law too.
    """

    type: str = "sign"
    bias_update_rate: float = 1e-3
    window: Literal["micro_batch", "global_batch", "steps"] = "global_batch"
    update_every: int = 1
    momentum: float = 0.9
    bias_cap: float = 0.0
    warmup_steps: int = 0
    tanh_scale: float = 0.1
    quantile_ema: float = 0.0
    params: Mapping[str, float] = field(default_factory=lambda: LawParameters({}))
    module: str | None = None

    def __post_init__(self) -> None:
        _check_types(self, "controller")
        self._check_law()
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

    def _check_law(self) -> None:
        """``type`` against the registry, ``params`` against the law's checks."""
        if self.module is not None:
            try:
                import_law_module(self.module)
            except Exception as err:  # any failure of the user's module is a config error
                raise ConfigError(f"controller.module = {self.module!r}: cannot be imported "
                                  f"({type(err).__name__}: {err})") from None
        names = registered()
        _require(self.type in names, "controller.type", self.type,
                 "must be a registered controller: " + ", ".join(names) + " (add one with "
                 "routesim.controllers.register, or name the module that registers it in "
                 "controller.module)")
        if not isinstance(self.params, Mapping):
            raise ConfigError(f"controller.params = {self.params!r}: must be a table of "
                              "parameter names to numbers")
        law = get_law(self.type)
        values = {}
        for key, value in self.params.items():
            spec = law.params.get(key)
            why = spec.problem(value) if spec is not None else None
            if why is not None:
                raise ConfigError(f"controller.params.{key} = {value!r}: {why} (parameter of "
                                  f"controller.type = {self.type!r})")
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            values[str(key)] = float(value) if number else value
        object.__setattr__(self, "params", LawParameters(values))


class LawParameters(Mapping):
    """Frozen table of a law's parameters (``controller.params``): hashable, picklable.

    Examples
    --------
    >>> p = LawParameters({"ki": 0.1})
    >>> p["ki"], p == {"ki": 0.1}, dict(p)
    (0.1, True, {'ki': 0.1})
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_data", dict(data))

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("LawParameters is frozen")

    def __reduce__(self) -> tuple:
        return (LawParameters, (self._data,))

    def __repr__(self) -> str:
        return repr(self._data)
