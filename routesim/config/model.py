"""Config sections ``[model]`` (layers) and ``[placement]`` (experts on expert-parallel ranks)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ._checks import DATACLASS, check_types, require

__all__ = ["ModelConfig", "PlacementConfig"]


@dataclass(**DATACLASS)
class ModelConfig:
    """The MoE layers of the model.

    Every layer is simulated as its own router: its own popularity, noise
    stream, bias and controller state. The layers run side by side on the
    engine's point axis and come back on a ``layer`` dimension of the Dataset.

    Attributes
    ----------
    num_layers : int >= 1
        ``L``, MoE layers. With one layer the popularity is the skew vector
        itself (``traffic.skew``); with several, each layer assigns the same
        popularity values to its experts in its own order.
    layer_correlation : float in [0, 1]
        Correlation ``c`` of the Gaussian copula that orders each layer's
        experts: layer ``l`` ranks its experts by
        ``g_l = sqrt(c) g + sqrt(1 - c) e_l`` (``g``, ``e_l`` independent
        standard normal vectors) and gives the largest popularity to the
        highest rank. ``c = 0``: independent layers; ``c = 1``: every layer
        has the same popular experts. The Spearman correlation of two
        layers' popularity is ``(6 / pi) arcsin(c / 2)``.
    hash_layers : int in [0, num_layers]
        The first ``hash_layers`` layers are hash-routed (DeepSeek-V4): a
        fixed token-id to experts table per layer, with
        ``router.hash_vocab_size`` and ``router.hash_zipf_exponent``
        (:mod:`routesim.routing.hash`); the other layers use the
        ``[router]`` section (token choice). Other per-layer router settings
        are not supported; dense layers carry no MoE and are not simulated.

    Examples
    --------
    >>> ModelConfig(num_layers=16, layer_correlation=0.5).num_layers
    16
    >>> ModelConfig(layer_correlation=1.5)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: model.layer_correlation = 1.5: must be in [0, 1]
    """

    num_layers: int = 1
    layer_correlation: float = 0.0
    hash_layers: int = 0

    def __post_init__(self) -> None:
        check_types(self, "model")
        require(self.num_layers >= 1, "model.num_layers", self.num_layers,
                 "must be an integer >= 1")
        require(0.0 <= self.layer_correlation <= 1.0, "model.layer_correlation",
                 self.layer_correlation, "must be in [0, 1]")
        require(0 <= self.hash_layers <= self.num_layers, "model.hash_layers", self.hash_layers,
                 f"must be an integer in [0, model.num_layers] = [0, {self.num_layers}]")


@dataclass(**DATACLASS)
class PlacementConfig:
    """Experts placed on expert-parallel ranks.

    Attributes
    ----------
    ep_size : int >= 1 or None
        Expert-parallel ranks; must divide ``router.num_experts`` (each rank
        holds ``N / ep_size`` experts). None: no placement metrics.
        The experts of one expert-parallel group compute the tokens of the
        micro-batches of its ``ep_size`` data-parallel ranks at once, so the
        computation batch is ``batch.micro_batch_size x ep_size`` sequences
        (Megatron-LM: micro-batch size times the data-parallel size of the
        expert group); it must divide ``batch.num_sequences``.
    map : list of int or None
        Rank of each expert (``N`` entries in ``[0, ep_size)``, each rank
        holding ``N / ep_size`` experts). None: contiguous, expert ``i`` on
        rank ``i // (N / ep_size)``.
    optimise : {"none", "greedy"}
        ``greedy``: also place the experts by their mean load over the run
        (EPLB-style balanced packing: heaviest first, each to the least
        loaded rank with a free slot) and report the rank imbalance of that
        placement beside the base one.
    replicate_hottest : int >= 0
        Redundant expert slots (EPLB's ``num_redundant_experts``): before
        packing, each one goes to the expert with the largest load per copy,
        and the copies of an expert split its load evenly. ``N +
        replicate_hottest`` must be a multiple of ``ep_size``. Needs
        ``optimise = "greedy"``.

    Examples
    --------
    >>> PlacementConfig(ep_size=4, optimise="greedy", replicate_hottest=4).replicate_hottest
    4
    >>> PlacementConfig(ep_size=0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: placement.ep_size = 0: must be an integer >= 1
    """

    ep_size: int | None = None
    map: tuple[int, ...] | None = None
    optimise: Literal["none", "greedy"] = "none"
    replicate_hottest: int = 0

    def __post_init__(self) -> None:
        check_types(self, "placement")
        if self.ep_size is not None:
            require(self.ep_size >= 1, "placement.ep_size", self.ep_size,
                     "must be an integer >= 1")
        require(self.replicate_hottest >= 0, "placement.replicate_hottest",
                 self.replicate_hottest, "must be an integer >= 0")

    @property
    def active(self) -> bool:
        """True when experts are placed on ranks (``ep_size`` set)."""
        return self.ep_size is not None

    @property
    def planned(self) -> bool:
        """True when an optimised placement is reported beside the base one."""
        return self.optimise != "none"


def check_model_cross(cfg: object) -> None:
    """Rules between ``[model]``, ``[placement]`` and the other sections (one point).

    Examples
    --------
    >>> from routesim import config_from_dict
    >>> config_from_dict({"router": {"num_experts": 8, "topk": 2},
    ...                   "placement": {"ep_size": 3}})
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: placement.ep_size = 3: must divide router.num_experts (8)
    """
    pl, n, b = cfg.placement, cfg.router.num_experts, cfg.batch
    engine_ok = cfg.run.engine == "exact" and not cfg.penalty.learn
    if cfg.model.num_layers > 1:
        require(engine_ok, "model.num_layers", cfg.model.num_layers,
                "several layers need run.engine = 'exact' without penalty.learn")
        require(cfg.traffic.kind == "popularity", "model.num_layers", cfg.model.num_layers,
                "several layers need traffic.kind = 'popularity' (each layer has its own "
                "popularity order)")
    if cfg.model.hash_layers:
        r = cfg.router
        require(r.router_type == "token_choice" and r.dropless, "model.hash_layers",
                cfg.model.hash_layers, "hash-routed first layers need dropless token choice "
                "in the other layers (router.router_type, router.capacity_factor)")
        from ..controllers.registry import get_law
        law = get_law(cfg.controller.type)
        require(not (law.bias_on_logits or law.needs_dual_estimate), "model.hash_layers",
                cfg.model.hash_layers, "cannot be combined with quantile balancing")
    if not pl.active:
        return
    ep = pl.ep_size
    require(engine_ok, "placement.ep_size", ep,
            "placement needs run.engine = 'exact' without penalty.learn (it counts the "
            "loads of each computation batch)")
    require(n % ep == 0, "placement.ep_size", ep, f"must divide router.num_experts ({n})")
    require(cfg.router.zero_experts == 0, "placement.ep_size", ep,
            "zero-computation experts (router.zero_experts) are not placed on ranks; "
            "remove one or the other")
    batch_seqs = b.sequences_per_micro_batch * ep
    require(b.num_sequences % batch_seqs == 0, "placement.ep_size", ep,
            f"the computation batch, batch.micro_batch_size x ep_size = "
            f"{b.sequences_per_micro_batch} x {ep} = {batch_seqs} sequences, must divide "
            f"batch.num_sequences ({b.num_sequences})")
    if pl.map is not None:
        require(len(pl.map) == n, "placement.map", list(pl.map),
                f"must give the rank of every expert: {n} entries (router.num_experts), "
                f"not {len(pl.map)}")
        bad = [r for r in pl.map if not 0 <= r < ep]
        require(not bad, "placement.map", list(pl.map),
                f"ranks must lie in [0, ep_size) = [0, {ep}); got {bad[0] if bad else ''}")
        counts = [list(pl.map).count(r) for r in range(ep)]
        odd = next((r for r, c in enumerate(counts) if c != n // ep), None)
        require(odd is None, "placement.map", list(pl.map),
                f"each rank holds N / ep_size = {n // ep} experts; rank {odd} holds "
                f"{counts[odd] if odd is not None else 0}")
    if pl.replicate_hottest:
        slots = n + pl.replicate_hottest
        require(slots % ep == 0, "placement.replicate_hottest", pl.replicate_hottest,
                f"N + replicate_hottest = {slots} must be a multiple of ep_size ({ep})")
