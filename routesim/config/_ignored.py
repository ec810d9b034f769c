"""Settings that would have no effect are refused, like unknown keys.

A field is *set* when

- it is written in the TOML file (:func:`routesim.load_config`), whatever
  its value;
- built in Python or from a dict (:func:`routesim.config_from_dict`, which
  also reads configs stored in results), its value differs from the
  default: a stored config lists every field, so presence says nothing there;
- it is swept (``[sweep]``): then it counts as set at every point.

A set field is refused when no point of the sweep uses it (a field that one
point uses may be carried by the others: ``momentum`` with a sweep over
``sign`` and ``ema``). Defaults never trigger a refusal.

Each rule maps a field to a function of one point that returns why that
point ignores the field (None when it uses it).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from ..controllers.registry import get_law, registered
from ..exceptions import ConfigError
from .kernel import check_kernel  # noqa: F401 (core refuses kernels and ignored fields together)

if TYPE_CHECKING:  # pragma: no cover
    from .core import Config

__all__ = ["set_fields_by_value", "check_ignored", "check_kernel"]

_Why = Callable[[Any], "str | None"]


def _only(cond: Callable[[Any], bool], why: str) -> _Why:
    return lambda p: None if cond(p) else why(p) if callable(why) else why


def _only_laws(users: Sequence[str]) -> str:
    return ", ".join(repr(x) for x in users) + (" do" if len(users) > 1 else " does")


def _controller(name: str) -> _Why:
    """A controller field (or ``params.NAME``): used by the laws whose registration reads it."""
    def why(p: Any) -> str | None:
        law = get_law(p.controller.type)
        if name in law.uses:
            return None
        users = [n for n in registered() if name in get_law(n).uses]
        if users:
            return (f"controller.type = {law.name!r} does not use it (only "
                    f"{_only_laws(users)})")
        takes = ", ".join(law.params) or "none"
        return (f"controller.type = {law.name!r} does not use it and no registered law does "
                f"(its parameters: {takes})")
    return why


def _traffic(kind: str, extra: Callable[[Any], bool] = lambda p: True,
             extra_why: str = "") -> _Why:
    def why(p: Any) -> str | None:
        if p.traffic.kind != kind:
            return f"traffic.kind = {p.traffic.kind!r} does not use it (only {kind!r} does)"
        return None if extra(p) else extra_why.format(p=p)
    return why


def _popularity_noise(p: Any) -> str | None:
    """Fields of popularity-plus-noise logits: ``popularity`` traffic or ``frozen`` from it."""
    t = p.traffic
    if t.popularity_noise:
        return None
    if t.kind == "frozen":
        return (f"traffic.frozen_source = {t.frozen_source!r} does not use it (only "
                "'popularity' does)")
    return f"traffic.kind = {t.kind!r} does not use it (only 'popularity' and 'frozen' do)"


def _popularity_noise_if(cond: Callable[[Any], bool], extra_why: str) -> _Why:
    return lambda p: _popularity_noise(p) or (None if cond(p) else extra_why.format(p=p))


def _frozen(source: str | None = None) -> _Why:
    def why(p: Any) -> str | None:
        t = p.traffic
        if t.kind != "frozen":
            return f"traffic.kind = {t.kind!r} does not use it (only 'frozen' does)"
        if source is not None and t.frozen_source != source:
            return (f"traffic.frozen_source = {t.frozen_source!r} does not use it (only "
                    f"{source!r} does)")
        return None
    return why


def _drifting(extra: Callable[[Any], bool] = lambda p: True, extra_why: str = "") -> _Why:
    """A drift field: popularity traffic drifts mu, features traffic its topic weights."""
    def why(p: Any) -> str | None:
        if p.traffic.kind not in ("popularity", "features"):
            return (f"traffic.kind = {p.traffic.kind!r} does not use it (only 'popularity' "
                    "and 'features' do)")
        return None if extra(p) else extra_why.format(p=p)
    return why


def _learning(extra: Callable[[Any], bool] = lambda p: True, extra_why: str = "") -> _Why:
    def why(p: Any) -> str | None:
        if not p.penalty.learn:
            return "it acts only on a learning router: set penalty.learn = true"
        return None if extra(p) else extra_why.format(p=p)
    return why


def _schedules_used(p: Any) -> list[str]:
    pen = p.penalty
    used = []
    if pen.type != "none" or pen.importance_loss > 0 or pen.load_loss > 0:
        used.append(pen.alpha_schedule)
    if pen.z_loss > 0:
        used.append(pen.z_loss_schedule)
    return used


#: Field -> why a point ignores it (None when the point uses it).
RULES: dict[str, _Why] = {
    # run
    "run.kernel": lambda p: ("run.engine = 'meanfield' routes no tokens"
                             if p.run.engine == "meanfield" else
                             "the learning router (penalty.learn) routes with the generic code"
                             if p.penalty.learn else None),
    "run.oracle": _only(lambda p: p.run.oracle != "off" or p.traffic.kind == "frozen",
                        "the oracle is off unless traffic.kind = 'frozen' (run.oracle = 'auto')"),
    "run.common_random_numbers": _only(
        lambda p: not p.penalty.learn,
        "the learning router has its own switch, penalty.common_random_numbers"),
    # traffic
    "traffic.skew": _popularity_noise,
    "traffic.linear_spread": _popularity_noise_if(lambda p: p.traffic.skew == "linear",
                                                  "traffic.skew = {p.traffic.skew!r} does not "
                                                  "use it (only 'linear' does)"),
    "traffic.zipf_exponent": _popularity_noise_if(lambda p: p.traffic.skew == "zipf",
                                                  "traffic.skew = {p.traffic.skew!r} does not "
                                                  "use it (only 'zipf' does)"),
    "traffic.noise": _popularity_noise,
    "traffic.noise_scale": _popularity_noise,
    "traffic.seq_correlation": _popularity_noise,
    "traffic.drift": _drifting(),
    "traffic.drift_std": _drifting(lambda p: p.traffic.drift == "random_walk",
                                  "traffic.drift = {p.traffic.drift!r} does not use it "
                                  "(only 'random_walk' does)"),
    "traffic.drift_amplitude": _drifting(lambda p: p.traffic.drift == "sinusoid",
                                        "traffic.drift = {p.traffic.drift!r} does not use it "
                                        "(only 'sinusoid' does)"),
    "traffic.drift_period": _drifting(lambda p: p.traffic.drift == "sinusoid",
                                     "traffic.drift = {p.traffic.drift!r} does not use it "
                                     "(only 'sinusoid' does)"),
    "traffic.regime_steps": _drifting(lambda p: p.traffic.drift == "regime",
                                     "traffic.drift = {p.traffic.drift!r} does not use it "
                                     "(only 'regime' does)"),
    **{f"traffic.{n}": _traffic("features")
       for n in ("feature_dim", "num_topics", "topic_weights", "topic_spread",
                 "router_init_scale", "topic_by_micro_batch")},
    "traffic.trace": lambda p: (None if p.traffic.replays_trace else _traffic("trace")(p)
                                if p.traffic.kind != "frozen" else _frozen("trace")(p)),
    "traffic.frozen_source": _frozen(),
    "traffic.separation": _frozen("separation"),
    # router
    "router.token_drop_policy": _only(
        lambda p: not p.router.dropless,
        "routing is dropless (no router.capacity_factor), so no token is dropped"),
    "router.expert_choice_block": _only(
        lambda p: p.router.router_type == "expert_choice",
        lambda p: f"router.router_type = {p.router.router_type!r} does not use it (only "
                  "'expert_choice' does)"),
    **{f"router.{n}": _only(
        lambda p: p.router.router_type == "hash" or p.model.hash_layers > 0,
        lambda p: f"router.router_type = {p.router.router_type!r} does not use it (only "
                  "'hash' or model.hash_layers > 0 do)")
       for n in ("hash_vocab_size", "hash_zipf_exponent")},
    "router.expert_choice_shuffle": _only(
        lambda p: p.router.router_type == "expert_choice",
        lambda p: f"router.router_type = {p.router.router_type!r} does not use it (only "
                  "'expert_choice' does)"),
    "router.threshold_ema": _only(
        lambda p: p.router.router_type == "expert_threshold",
        lambda p: f"router.router_type = {p.router.router_type!r} does not use it (only "
                  "'expert_threshold' does)"),
    "controller.type": _only(
        lambda p: p.router.router_type != "hash" or p.controller.type == "none",
        "hash routing takes no bias (a fixed table routes every token id); use 'none'"),
    "router.pre_softmax": _only(
        lambda p: p.router.score_function == "softmax"
        and not (p.penalty.learn and p.penalty.noisy_gate),
        lambda p: ("the noisy top-K gate (penalty.noisy_gate) always weights by the softmax "
                   "over the K chosen logits" if p.router.score_function == "softmax" else
                   f"router.score_function = {p.router.score_function!r} does not use it "
                   "(only 'softmax' does)")),
    # controller
    # (who uses what comes from the registry: routesim.controllers.register)
    "controller.bias_update_rate": _controller("bias_update_rate"),
    "controller.window": _controller("window"),
    "controller.update_every": lambda p: (
        _controller("update_every")(p) or (None if p.controller.window == "steps" else
                                           f"controller.window = {p.controller.window!r} "
                                           "does not use it (only 'steps' does)")),
    "controller.momentum": _controller("momentum"),
    "controller.bias_cap": _controller("bias_cap"),
    "controller.warmup_steps": _controller("warmup_steps"),
    "controller.tanh_scale": _controller("tanh_scale"),
    "controller.quantile_ema": _controller("quantile_ema"),
    **{f"controller.{n}": _controller("bias_update_rate")
       for n in ("rate_schedule", "rate_warmup", "rate_freeze")},
    **{f"controller.{n}": lambda p: (_controller("bias_update_rate")(p) or (
        None if p.controller.rate_schedule == "cosine" else
        f"controller.rate_schedule = {p.controller.rate_schedule!r} does not use it "
        "(only 'cosine' does)")) for n in ("rate_horizon", "rate_final")},
    "controller.target_shares": lambda p: (
        "controller.type = 'none' does not balance" if p.controller.type == "none" else None),
    # penalty
    **{f"penalty.{n}": _learning()
       for n in ("optimizer", "learning_rate", "lr_schedule", "affinity_scale",
                 "quality_strength", "common_random_numbers", "noisy_gate", "z_loss", "type")},
    **{f"penalty.{n}": _learning(lambda p: p.penalty.type != "none",
                                 "penalty.type = 'none' does not use it (set a balance loss "
                                 "type)")
       for n in ("alpha", "normalization", "f_map", "loss", "target", "module")},
    "penalty.normalise": lambda p: (
        _learning(lambda q: q.penalty.type != "none",
                  "penalty.type = 'none' does not use it (set a balance loss type)")(p)
        or (None if p.router.score_function == "sigmoid" and not p.penalty.noisy_gate else
            "a softmax gate's scores already sum to 1 (only a sigmoid gate's E[rho] "
            "differs from P)")),
    "penalty.temperature": _learning(
        lambda p: p.penalty.type != "none" and p.penalty.loss == "logsumexp",
        "penalty.loss = {p.penalty.loss!r} does not use it (only 'logsumexp' does)"),
    "penalty.alpha_schedule": _learning(
        lambda p: p.penalty.type != "none" or p.penalty.importance_loss > 0
        or p.penalty.load_loss > 0,
        "no balance weight (penalty.type, importance_loss, load_loss) to schedule"),
    "penalty.z_loss_schedule": _learning(lambda p: p.penalty.z_loss > 0,
                                         "penalty.z_loss = 0 leaves nothing to schedule"),
    "penalty.schedule_steps": _learning(
        lambda p: any(s in ("warmup", "cosine") for s in _schedules_used(p)),
        "no schedule in use is 'warmup' or 'cosine'"),
    "penalty.schedule_final_fraction": _learning(
        lambda p: "cosine" in _schedules_used(p), "no schedule in use is 'cosine'"),
    "penalty.schedule_delay": _learning(lambda p: "sigmoid" in _schedules_used(p),
                                        "no schedule in use is 'sigmoid'"),
    "penalty.schedule_width": _learning(lambda p: "sigmoid" in _schedules_used(p),
                                        "no schedule in use is 'sigmoid'"),
    **{f"penalty.{n}": _learning(lambda p: p.penalty.optimizer == "adam",
                                 "penalty.optimizer = {p.penalty.optimizer!r} does not use it "
                                 "(only 'adam' does)")
       for n in ("adam_beta1", "adam_beta2", "adam_eps")},
    "penalty.lr_final_fraction": _learning(lambda p: p.penalty.lr_schedule == "cosine",
                                           "penalty.lr_schedule = {p.penalty.lr_schedule!r} "
                                           "does not use it (only 'cosine' does)"),
    **{f"penalty.{n}": _learning(lambda p: p.penalty.noisy_gate,
                                 "it belongs to the noisy gate: set penalty.noisy_gate = true")
       for n in ("noise_init_scale", "importance_loss", "load_loss")},
    "penalty.quality_memory": _learning(lambda p: p.penalty.quality_strength > 0,
                                        "penalty.quality_strength = 0 turns the quality off"),
    # model and placement
    "model.layer_correlation": _only(lambda p: p.model.num_layers > 1,
                                     "model.num_layers = 1 has one popularity order"),
    **{f"placement.{n}": _only(lambda p: p.placement.active,
                               "placement.ep_size is not set (no placement)")
       for n in ("map", "optimise")},
    "placement.replicate_hottest": _only(
        lambda p: p.placement.active and p.placement.planned,
        lambda p: ("placement.ep_size is not set (no placement)" if not p.placement.active
                   else "placement.optimise = 'none' packs no replicas (use 'greedy')")),
}


def set_fields_by_value(cfg: "Config") -> set[str]:
    """Dotted names of the fields that differ from their default, plus the swept ones.

    Examples
    --------
    >>> from routesim.config import Config, ControllerConfig
    >>> sorted(set_fields_by_value(Config(controller=ControllerConfig(type="ema", momentum=0.5))))
    ['controller.momentum', 'controller.type']
    """
    out = set(cfg.sweep.parameters)
    for name in ("run", "batch", "traffic", "router", "controller", "penalty", "model",
                 "placement"):
        section = getattr(cfg, name)
        for f in dataclasses.fields(section):
            if f.default is not dataclasses.MISSING and getattr(section, f.name) != f.default:
                out.add(f"{name}.{f.name}")
    out.update(f"controller.params.{k}" for k in cfg.controller.params)  # present = set
    return out


def check_ignored(cfg: "Config", points: Sequence["Config"], set_fields: Iterable[str]) -> None:
    """Refuse a set field that no point uses (see the module docstring).

    Raises
    ------
    ConfigError
        Naming the first such field (in rule order), its value and why.

    Examples
    --------
    The sign law uses no momentum, so a momentum set by hand is refused:

    >>> from routesim.config import Config
    >>> cfg = Config()
    >>> check_ignored(cfg, cfg.points(), {"controller.type"})   # used: nothing to say
    >>> check_ignored(cfg, cfg.points(), {"controller.momentum"})
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: controller.momentum = 0.9: has no effect, controller.type = 'sign' does not use it (only 'ema', 'momentum_tanh' do); remove it
    """
    set_fields = set(set_fields)
    law_params = {f: _controller(f.removeprefix("controller."))
                  for f in sorted(set_fields) if f.startswith("controller.params.")}
    for path, why in {**RULES, **law_params}.items():
        if path not in set_fields:
            continue
        first = why(points[0])
        if first is None or any(why(p) is None for p in points[1:]):
            continue
        section, name = path.split(".", 1)
        value = (cfg.controller.params.get(name.removeprefix("params."))
                 if name.startswith("params.") else getattr(getattr(cfg, section), name, None))
        value = cfg.sweep.parameters.get(path, value)
        value = list(value) if isinstance(value, tuple) else value
        where = " at any point of the sweep" if len(points) > 1 else ""
        raise ConfigError(f"{path} = {value!r}: has no effect{where}, {first}; "
                          "remove it")
