"""The whole config: points, cross-section rules, reading from TOML."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..controllers.registry import get_law
from ..exceptions import ConfigError
from ._checks import DATACLASS, check_types, require
from ._numerics import check_numerics
from ._rates import check_rate_expression
from ._ignored import check_ignored, check_kernel, set_fields_by_value
from ._trace import check_trace
from .penalty import PenaltyConfig
from .controller import ControllerConfig, LawParameters
from .model import ModelConfig, PlacementConfig, check_model_cross
from .router import RouterConfig
from .sections import BatchConfig, RunConfig, TrafficConfig
from .sweep import SweepConfig, is_sweepable

__all__ = ["Config", "load_config", "config_from_dict", "oracle_unsupported",
           "ORACLE_MAX_VARIABLES"]

#: Largest assignment LP (tokens per step x experts) the oracle is asked to solve.
ORACLE_MAX_VARIABLES = 1 << 20


def oracle_unsupported(cfg: Any) -> str | None:
    """Why the assignment oracle cannot score a run of this point (None when it can).

    The oracle compares each step's top K of ``s + b`` with the optimal
    assignment of the same scores, so it needs token-choice routing with an
    additive bias and no group limit, on logits that can be drawn again.

    Examples
    --------
    >>> from routesim import Config
    >>> oracle_unsupported(Config()) is None
    True
    >>> oracle_unsupported(Config().replace(**{"router.num_groups": 4, "router.group_topk": 2}))
    'group-limited routing (router.num_groups) is not a top-K of s + b'
    """
    r = cfg.router
    if cfg.penalty.learn:
        return "the learning router's logits change with its weights"
    if cfg.run.engine != "exact":
        return f"run.engine = {cfg.run.engine!r} routes no tokens"
    if r.router_type != "token_choice":
        return f"router.router_type = {r.router_type!r} is not a top-K of s + b"
    if r.num_groups is not None:
        return "group-limited routing (router.num_groups) is not a top-K of s + b"
    if r.bias_mode != "additive":
        return f"router.bias_mode = {r.bias_mode!r} is not a top-K of s + b"
    if cfg.model.num_layers > 1:
        return "model.num_layers > 1: the oracle scores one layer"
    if getattr(r, "zero_experts", 0):
        return "router.zero_experts: zero-computation experts have no capacity to price"
    return None


def _replace_section(section: Any, changes: dict[str, Any]) -> Any:
    """``dataclasses.replace`` that also takes ``params.NAME`` (a law parameter)."""
    plain = {k: v for k, v in changes.items() if not k.startswith("params.")}
    nested = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("params.")}
    if nested:
        plain["params"] = {**plain.get("params", section.params), **nested}
    return dataclasses.replace(section, **plain)


#: id(config) -> (config, its points): the most recent configs' points (they are frozen).
_POINTS_CACHE: dict[int, tuple[Any, tuple]] = {}
_POINTS_CACHE_SIZE = 4

_SECTIONS = {
    "run": RunConfig,
    "batch": BatchConfig,
    "traffic": TrafficConfig,
    "router": RouterConfig,
    "controller": ControllerConfig,
    "penalty": PenaltyConfig,
    "model": ModelConfig,
    "placement": PlacementConfig,
    "sweep": SweepConfig,
}


@dataclass(**DATACLASS)
class Config:
    """A whole simulation: one instance of each section.

    Cross-section rules are checked here (for every point of the sweep).

    Examples
    --------
    A sweep of two rates is two points, each a config without sweep:

    >>> from routesim.config import RouterConfig, SweepConfig
    >>> cfg = Config(sweep=SweepConfig(parameters={"controller.bias_update_rate": [1e-3, 1e-2]}))
    >>> cfg.num_points, cfg.point_labels()
    (2, ('bias_update_rate=0.001', 'bias_update_rate=0.01'))
    >>> cfg.points()[1].controller.bias_update_rate, cfg.points()[1].sweep.parameters
    (0.01, {})
    >>> config_from_dict(cfg.to_dict()) == cfg, cfg.replace(**{"router.topk": 2}).router.topk
    (True, 2)

    A rule across sections, refused with one line:

    >>> Config(router=RouterConfig(router_type="expert_choice", capacity_factor=1.0))
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: router.capacity_factor = 1.0: Expert Choice fills every expert exactly; omit the capacity factor
    """

    run: RunConfig = field(default_factory=RunConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    traffic: TrafficConfig = field(default_factory=TrafficConfig)
    router: RouterConfig = field(default_factory=RouterConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    penalty: PenaltyConfig = field(default_factory=PenaltyConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def __post_init__(self) -> None:
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise ConfigError(f"{name} = {value!r}: must be a {cls.__name__}")
        # Building the points runs every per-field check on the swept values.
        points = self.points()
        for point in points:
            point._check_cross()
        check_kernel(points)
        if self.traffic.replays_trace:
            check_trace(self.traffic.trace, self.router.num_experts, self.batch.tokens_per_step)
        check_ignored(self, points, set_fields_by_value(self))

    # -- cross-section rules -------------------------------------------------
    def _check_cross(self) -> None:
        r, b, c = self.router, self.batch, self.controller
        tokens_mb = b.sequences_per_micro_batch * b.seq_length
        law = get_law(c.type)
        dual = law.needs_dual_estimate or law.bias_on_logits  # quantile balancing and kin
        if dual:
            require(tokens_mb * r.topk % r.num_experts == 0, "controller.type", c.type,
                     f"quantile balancing needs tokens per micro-batch x topk "
                     f"({tokens_mb} x {r.topk}) divisible by router.num_experts "
                     f"({r.num_experts})")
            require(r.num_groups is None, "controller.type", c.type,
                     "quantile balancing cannot be combined with group-limited routing "
                     "(router.num_groups)")
            require(r.bias_mode == "additive", "controller.type", c.type,
                     "quantile balancing needs router.bias_mode = 'additive'")
        if r.router_type == "expert_choice":
            block = r.expert_choice_block or tokens_mb
            require(tokens_mb % block == 0, "router.expert_choice_block", block,
                     f"must divide the tokens per micro-batch ({tokens_mb})")
            require(block * r.topk % r.num_experts == 0, "router.expert_choice_block", block,
                     f"K*T/N = {r.topk}*{block}/{r.num_experts} must be an integer")
            require(r.dropless, "router.capacity_factor", r.capacity_factor,
                     "Expert Choice fills every expert exactly; omit the capacity factor")
            require(not dual, "controller.type", c.type,
                     "Expert Choice takes no quantile dual; use another controller or none")
        if c.type == "zero_budget":
            require(r.zero_experts >= 1, "controller.type", c.type,
                     "needs zero-computation experts: set router.zero_experts >= 1")
            budget = c.params.get("ffn_budget", law.params["ffn_budget"].default)
            require(0.0 <= budget <= r.topk, "controller.params.ffn_budget", budget,
                     f"must be in [0, router.topk] = [0, {r.topk}] (FFN experts per token)")
        if r.router_type == "expert_choice" and r.expert_choice_shuffle:
            block = r.expert_choice_block or tokens_mb
            require(block < tokens_mb, "router.expert_choice_shuffle", True,
                     f"has no effect with a block of the whole micro-batch ({tokens_mb} "
                     "tokens): set router.expert_choice_block smaller")
        if r.router_type == "expert_threshold":
            require(r.dropless, "router.capacity_factor", r.capacity_factor,
                     "Expert Threshold routing is dropless here; omit the capacity factor")
            require(not dual, "controller.type", c.type,
                     "Expert Threshold takes no quantile dual; use another controller or none")
            require(tokens_mb * r.topk >= r.num_experts, "router.router_type", r.router_type,
                     f"Expert Threshold needs K * T / N >= 1 per micro-batch "
                     f"({r.topk} x {tokens_mb} / {r.num_experts})")
        if r.router_type in ("hash", "expert_threshold"):
            require(self.run.engine == "exact", "router.router_type", r.router_type,
                     "runs on run.engine = 'exact'")
        if r.router_type == "hash":
            require(r.dropless, "router.capacity_factor", r.capacity_factor,
                     "hash routing is dropless here; omit the capacity factor")
            require(self.traffic.kind == "popularity" and not dual, "router.router_type",
                     r.router_type, "hash routing draws its own token ids: needs "
                     "traffic.kind = 'popularity' and no quantile controller")
        if self.penalty.learn or self.penalty.type != "none" or self.penalty.z_loss > 0:
            require(self.traffic.kind == "features", "traffic.kind", self.traffic.kind,
                     "a learnable router or a penalty needs traffic.kind = 'features'")
        self._check_learning()
        check_model_cross(self)
        check_rate_expression(self)
        check_numerics(self)
        if c.target_shares is not None:
            require(len(c.target_shares) == r.num_experts, "controller.target_shares",
                     list(c.target_shares),
                     f"must have one share per expert (router.num_experts = {r.num_experts})")
            require("target_share" in law.inputs or law.law is None, "controller.target_shares",
                     list(c.target_shares), f"controller.type = {c.type!r} does not read "
                     "target shares (a law declares the input 'target_share')")
        why = oracle_unsupported(self)
        if self.run.oracle == "on":
            require(why is None, "run.oracle", "on", str(why))
        if self.run.oracle == "on" or (self.run.oracle == "auto" and why is None
                                       and self.traffic.kind == "frozen"):
            size = b.tokens_per_step * r.num_experts
            require(size <= ORACLE_MAX_VARIABLES, "run.oracle", self.run.oracle,
                     f"the oracle's LP would have tokens per step x experts = {size} "
                     f"variables (at most {ORACLE_MAX_VARIABLES}); use fewer tokens per step "
                     "or set run.oracle = 'off'")

    def _check_learning(self) -> None:
        """Rules of the learning router (routesim.engines.learner)."""
        pen, r = self.penalty, self.router
        if not pen.learn:
            if pen.active:
                field_name = "type" if pen.type != "none" else next(
                    n for n in ("z_loss", "importance_loss", "load_loss") if getattr(pen, n) > 0)
                require(False, f"penalty.{field_name}", getattr(pen, field_name),
                         "a penalty acts through a learning router: set penalty.learn = true")
            require(not pen.noisy_gate, "penalty.noisy_gate", pen.noisy_gate,
                     "the noisy gate belongs to a learning router: set penalty.learn = true")
            return
        gates = ("softmax", "sigmoid")
        if pen.type != "none":
            require(r.score_function in gates, "penalty.type", pen.type,
                     f"the balance loss supports router.score_function in {gates}, "
                     f"not {r.score_function!r}")
        require(r.score_function in gates, "router.score_function", r.score_function,
                 "the learning router's gradients are written for 'softmax' and 'sigmoid'")
        if pen.noisy_gate:
            require(r.score_function == "softmax", "penalty.noisy_gate", pen.noisy_gate,
                     "the noisy top-K gate is a softmax gate: needs router.score_function = "
                     f"'softmax', not {r.score_function!r}")
        if pen.target is not None:
            require(len(pen.target) == r.num_experts, "penalty.target", list(pen.target),
                     f"must have router.num_experts ({r.num_experts}) entries")
        require(pen.normalization == "megatron" or pen.loss == "switch", "penalty.normalization",
                 pen.normalization, f"'mixtral' scales the dot-product loss only (penalty.loss = "
                 f"'switch', not {pen.loss!r}): the objectives read F as a distribution")
        for name in ("importance_loss", "load_loss"):
            value = getattr(pen, name)
            require(value == 0 or pen.noisy_gate, f"penalty.{name}", value,
                     "the importance and load losses belong to the noisy gate: set "
                     "penalty.noisy_gate = true (or the weight to 0)")
        require(self.run.engine == "exact", "run.engine", self.run.engine,
                 "a learning router needs run.engine = 'exact'")
        require(r.router_type == "token_choice", "router.router_type", r.router_type,
                 "the learning router is token choice")
        law = get_law(self.controller.type)
        require(not (law.needs_dual_estimate or law.bias_on_logits), "controller.type",
                 self.controller.type,
                 "quantile balancing is not supported with a learning router")

    # -- points --------------------------------------------------------------
    def points(self) -> tuple["Config", ...]:
        """The configs of every point, with the sweep applied and removed.

        Built once per config (when it is checked) and remembered for the
        few most recent configs, so a run does not build every point again.
        """
        cached = _POINTS_CACHE.get(id(self))
        if cached is not None and cached[0] is self:
            return cached[1]
        out = []
        for i, assignment in enumerate(self.sweep.assignments()):
            sections = {name: getattr(self, name) for name in _SECTIONS if name != "sweep"}
            by_section: dict[str, dict[str, Any]] = {}
            for key, value in assignment.items():
                section, name = key.split(".", 1)
                by_section.setdefault(section, {})[name] = value
            for key, values in self.sweep.resolved.items():
                section, name = key.split(".", 1)
                written = by_section.get(section, {}).get(name, getattr(sections[section], name))
                if not isinstance(written, str) and written != values[i]:
                    raise ConfigError(f"sweep.resolved.{key}[{i}] = {values[i]!r}: point {i} "
                                      f"sets the number {written!r}; a resolved value stands "
                                      "only for an expression such as '0.5 u_c'")
                by_section.setdefault(section, {})[name] = values[i]
            for section, changes in by_section.items():
                try:
                    sections[section] = _replace_section(sections[section], changes)
                except ConfigError as err:
                    raise ConfigError(f"sweep point {i}: {err}") from None
            out.append(_build_plain(sections))
        points = tuple(out)
        _POINTS_CACHE[id(self)] = (self, points)
        while len(_POINTS_CACHE) > _POINTS_CACHE_SIZE:
            del _POINTS_CACHE[next(iter(_POINTS_CACHE))]  # the oldest entry
        return points

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
                if v is None or (isinstance(v, LawParameters) and not v):
                    continue
                if f.name == "resolved" and not v:
                    continue
                if isinstance(v, tuple):
                    v = list(v)
                if isinstance(v, LawParameters):
                    v = dict(v)
                elif isinstance(v, dict):
                    v = {k: list(x) for k, x in v.items()}
                if isinstance(v, float) and math.isinf(v):
                    v = "inf"
                d[f.name] = v
            out[name] = d
        return out

    def to_json(self) -> str:
        """The config as a JSON string (stored in result attrs).

        Keys keep their order: the order of the sweep axes is the order of
        the points (and so of their random streams), and must survive a
        round trip through :func:`config_from_dict`.
        """
        return json.dumps(self.to_dict())

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
        if "sweep.resolved" not in changes and self.sweep.resolved:
            # a change may move the critical rate: the next run resolves again
            sections["sweep"] = dataclasses.replace(self.sweep, resolved={})
        for section, ch in by_section.items():
            known = {f.name for f in fields(_SECTIONS[section])}
            for name in ch:
                if name not in known and not is_sweepable(f"{section}.{name}"):
                    raise ConfigError(f"{section}.{name}: unknown field; allowed: "
                                      + ", ".join(sorted(known)))
            sections[section] = _replace_section(sections[section], ch)
        return Config(**sections)


_NO_SWEEP = SweepConfig()


def _build_plain(sections: dict[str, Any]) -> Config:
    """A Config without sweep, skipping the point expansion (no recursion)."""
    cfg = object.__new__(Config)
    for name in _SECTIONS:
        object.__setattr__(cfg, name, sections.get(name) or _NO_SWEEP)
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
            if key in ("mode", "labels", "resolved"):
                kwargs[key] = value
            elif key == "parameters" and isinstance(value, dict):
                params.update(value)
            elif "." in key:
                params[key] = value
            else:
                raise ConfigError(f"sweep.{key}: unknown key; use 'mode', 'labels', 'resolved' "
                                  "or a dotted field name such as 'controller.bias_update_rate'")
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


def _resolve_trace(data: dict[str, Any], folder: Path) -> None:
    """Make a relative ``traffic.trace`` path absolute, against the config file's folder.

    The absolute path is what the config stores, so a run re-read from its
    results finds the same file from any working directory.
    """
    traffic = data.get("traffic")
    trace = traffic.get("trace") if isinstance(traffic, dict) else None
    if isinstance(trace, str) and trace != "builtin" and not Path(trace).is_absolute():
        traffic["trace"] = os.path.abspath(folder / trace)


def load_config(path: str | Path) -> Config:
    """Read a TOML file into a validated :class:`Config`.

    Parameters
    ----------
    path : str or Path
        The TOML file. A relative ``traffic.trace`` path in it is read
        against the file's folder and stored absolute.

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, is empty, holds an invalid
        value, or sets a field that would have no effect (written fields count
        as set even at their default value; see ``routesim.config._ignored``).

    Examples
    --------
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "c.toml").write_text("[router]\\nnum_experts = 16\\ntopk = 2\\n")
    >>> load_config(folder / "c.toml").router.num_experts
    16
    >>> _ = (folder / "typo.toml").write_text("[router]\\ntop_k = 2\\n")
    >>> load_config(folder / "typo.toml")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: router.top_k = 2: unknown key; allowed: bias_mode, capacity_factor, expert_choice_block, expert_choice_shuffle, group_topk, hash_vocab_size, hash_zipf_exponent, num_experts, num_groups, pre_softmax, router_type, score_function, threshold_ema, token_drop_policy, topk, topk_scaling_factor, zero_experts
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
    if not data:
        raise ConfigError(f"config file {str(path)!r}: is empty; allowed: a TOML file with at "
                          "least one section, e.g. [router]")
    _resolve_trace(data, path.parent)
    cfg = config_from_dict(data)
    # In a file, a written field counts as set even at its default value.
    written = {f"{s}.{k}" for s, table in data.items() if s != "sweep" for k in table}
    check_ignored(cfg, cfg.points(), written | set_fields_by_value(cfg))
    return cfg
