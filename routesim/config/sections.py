"""Config sections: run, batch, traffic."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ._checks import DATACLASS, check_types, positive, require
from ._numerics import parse_bytes

__all__ = ["RunConfig", "BatchConfig", "TrafficConfig"]


# ----------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------
@dataclass(**DATACLASS)
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
    kernel : {"auto", "generic", "numba", "cuda", "sparse"}
        Exact-engine routing code: ``generic`` is the array code (any
        backend); ``numba`` (NumPy backend, ``fast`` extra) and ``cuda``
        (CuPy backend) are compiled kernels for popularity traffic with
        normal noise, dropless token choice; ``auto`` picks the compiled one
        where it applies. All give the same counts up to float32 near-ties.
        ``sparse`` (NumPy backend, ``fast`` extra; never picked by ``auto``)
        draws only the experts near each token's top-K, in O(K) per token:
        selections with the same law as the others' but other random numbers
        (popularity traffic with any noise law, sigmoid or sqrt-softplus
        gate, dropless token choice, ``record_displacement = false``).
    max_memory : int > 0, str or None
        Memory a run may use: bytes, or a string such as ``"8GB"`` or
        ``"512MiB"`` (k, M, G, T are powers of 1000; Ki, Mi, Gi, Ti of
        1024). None: the memory available when the run starts
        (``MemAvailable``). A run whose estimated peak memory
        (:mod:`routesim.resources`) exceeds it is refused before it starts.
    record : {"full", "metrics"}
        What the results keep: ``full`` keeps the per-expert variables
        (``expert_load``, ``kept_load``, ``bias`` and every other variable
        with an ``expert`` dimension); ``metrics`` drops them and keeps the
        per-step metrics, so large sweeps stay small. Every metric is
        computed from the per-expert arrays before they are dropped.
    record_every : int > 0
        Keep steps ``0, n, 2n, ...`` of the per-step variables. Metrics that
        need every step (``maxvio_global`` over its trailing window,
        ``flip_fraction``, the whole-run and end-of-run MaxVio) are computed
        from every step before the others are thinned.
    oracle : {"auto", "on", "off"}
        Score every step's routed assignment against the optimal-assignment
        oracle (:mod:`routesim.assignment`; one LP per point for frozen
        traffic, per step and point otherwise): ``auto`` on frozen traffic
        (where it applies), ``on`` always (refused where it cannot apply),
        ``off`` never.

    Examples
    --------
    >>> RunConfig(max_memory="2 GiB").max_memory_bytes
    2147483648
    >>> RunConfig(steps=0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: run.steps = 0: must be an integer >= 1
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
    kernel: Literal["auto", "generic", "numba", "cuda", "sparse"] = "auto"
    max_memory: int | str | None = None
    record: Literal["full", "metrics"] = "full"
    record_every: int = 1
    oracle: Literal["auto", "on", "off"] = "auto"

    def __post_init__(self) -> None:
        check_types(self, "run")
        if self.max_memory is not None:
            parse_bytes("run.max_memory", self.max_memory)
        require(self.steps >= 1, "run.steps", self.steps, "must be an integer >= 1")
        require(self.replicas >= 1, "run.replicas", self.replicas, "must be an integer >= 1")
        require(0 <= self.seed < 2**63, "run.seed", self.seed, "must be an integer in [0, 2**63)")
        require(self.global_window >= 1, "run.global_window", self.global_window,
                 "must be an integer >= 1")
        require(1 <= self.record_every <= self.steps, "run.record_every", self.record_every,
                 f"must be an integer in [1, run.steps = {self.steps}]")

    @property
    def max_memory_bytes(self) -> int | None:
        """``max_memory`` in bytes (None when unset)."""
        return None if self.max_memory is None else parse_bytes("run.max_memory",
                                                                self.max_memory)


@dataclass(**DATACLASS)
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

    Examples
    --------
    Four sequences of 16 tokens in micro-batches of two sequences:

    >>> b = BatchConfig(num_sequences=4, seq_length=16, micro_batch_size=2)
    >>> b.tokens_per_step, b.sequences_per_micro_batch, b.num_micro_batches
    (64, 2, 2)
    >>> BatchConfig(num_sequences=3, micro_batch_size=2)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: batch.micro_batch_size = 2: must divide batch.num_sequences (3)
    """

    num_sequences: int = 16
    seq_length: int = 256
    micro_batch_size: int | None = None
    computation_batch_sizes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_types(self, "batch")
        require(self.num_sequences >= 1, "batch.num_sequences", self.num_sequences,
                 "must be an integer >= 1")
        require(self.seq_length >= 1, "batch.seq_length", self.seq_length,
                 "must be an integer >= 1")
        if self.micro_batch_size is not None:
            require(self.micro_batch_size >= 1 and self.num_sequences % self.micro_batch_size == 0,
                     "batch.micro_batch_size", self.micro_batch_size,
                     f"must divide batch.num_sequences ({self.num_sequences})")
        for i, size in enumerate(self.computation_batch_sizes):
            require(size >= 1 and self.num_sequences % size == 0,
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


@dataclass(**DATACLASS)
class TrafficConfig:
    """Where the router logits come from.

    Attributes
    ----------
    kind : {"popularity", "features", "trace", "frozen"}
        ``popularity``: logit ``z = mu + noise``; ``features``: topic-mixture
        token features through router weights, ``z = x @ W.T``; ``trace``:
        replay of a recorded logit trace; ``frozen``: one logit matrix per
        point (and replica), drawn once from ``frozen_source`` and replayed
        unchanged every step, so that the controller loop is deterministic.
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
        How ``mu`` (``popularity``) or the log topic weights (``features``)
        move over steps.
    drift_std : float >= 0
        Random-walk step standard deviation per expert (per topic) per step.
    drift_amplitude, drift_period : float
        Sinusoid ``mu_i(t) = mu_i + A sin(2 pi t / period + 2 pi i / N)``;
        for ``features`` ``log w_m(t) = log w_m + A sin(2 pi t / period +
        2 pi m / M)``, renormalised.
    regime_steps : list of int
        Steps at which ``mu`` (the topic weights) is replaced by a fresh
        random permutation of itself (regime switches).
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
        In a TOML file a relative path is read against the file's folder
        (not the working directory) and stored absolute; built in Python,
        it is relative to the working directory.
    frozen_source : {"popularity", "separation", "trace"}
        What ``frozen`` traffic replays: ``popularity`` is the first step of
        popularity traffic (``mu`` plus noise, no drift); ``separation`` is
        ``z = separation * N(0, 1)`` (so a sigmoid gate scores
        ``sigmoid(separation * N(0, 1))``); ``trace`` is the first step of
        ``traffic.trace`` (a file of logits).
    separation : float >= 0
        Scale of the ``separation`` source's normal logits.

    Examples
    --------
    >>> TrafficConfig(skew="zipf", zipf_exponent=1.2).zipf_exponent
    1.2
    >>> TrafficConfig(noise_scale=-1.0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: traffic.noise_scale = -1.0: must be a finite number >= 0
    """

    kind: Literal["popularity", "features", "trace", "frozen"] = "popularity"
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
    frozen_source: Literal["popularity", "separation", "trace"] = "popularity"
    separation: float = 1.0

    def __post_init__(self) -> None:
        check_types(self, "traffic")
        positive(self, "traffic", "linear_spread", "zipf_exponent", "noise_scale", "drift_std",
                  "drift_amplitude", "topic_spread", "router_init_scale", "separation",
                  allow_zero=True)
        positive(self, "traffic", "drift_period")
        require(0.0 <= self.seq_correlation < 1.0, "traffic.seq_correlation",
                 self.seq_correlation, "must be in [0, 1)")
        require(self.feature_dim >= 1, "traffic.feature_dim", self.feature_dim,
                 "must be an integer >= 1")
        require(self.num_topics >= 1, "traffic.num_topics", self.num_topics,
                 "must be an integer >= 1")
        for i, s in enumerate(self.regime_steps):
            require(s >= 1, f"traffic.regime_steps[{i}]", s, "must be an integer >= 1")
        require(list(self.regime_steps) == sorted(set(self.regime_steps)),
                 "traffic.regime_steps", list(self.regime_steps),
                 "must be strictly increasing")
        if self.topic_weights is not None:
            w = self.topic_weights
            require(len(w) == self.num_topics, "traffic.topic_weights", list(w),
                     f"must have traffic.num_topics ({self.num_topics}) entries")
            require(all(x >= 0 and math.isfinite(x) for x in w), "traffic.topic_weights",
                     list(w), "must be finite and >= 0")
            require(abs(sum(w) - 1.0) < 1e-6, "traffic.topic_weights", list(w),
                     f"must sum to 1 (they sum to {sum(w):.6g})")

    @property
    def replays_trace(self) -> bool:
        """True when the logits come from ``traffic.trace`` (``trace``, or ``frozen`` from it)."""
        return self.kind == "trace" or (self.kind == "frozen" and self.frozen_source == "trace")

    @property
    def popularity_noise(self) -> bool:
        """True when the logits are popularity plus noise (``popularity``, ``frozen`` from it)."""
        return self.kind == "popularity" or (self.kind == "frozen"
                                             and self.frozen_source == "popularity")
