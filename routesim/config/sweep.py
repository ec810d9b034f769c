"""Config section ``[sweep]``: the points of a sweep and the fields they may vary."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ._checks import DATACLASS, check_types, require
from ._numerics import MAX_POINTS
from ._rates import RESOLVABLE

__all__ = ["SweepConfig", "SWEEPABLE", "LAW_PARAMS", "is_sweepable"]


@dataclass(**DATACLASS)
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
    resolved : dict of str to list of float
        Per-point numbers that replace an expression at each point:
        ``{"controller.bias_update_rate": [...]}`` holds the rate of each
        point where the config gives it in units of the critical rate
        (``"0.5 u_c"``). Written by :func:`routesim.theory.resolve_rates`
        before a run, so that a run of the stored config repeats the same
        numbers; :meth:`Config.replace` drops it (the next run resolves
        again).

    Examples
    --------
    A grid of two lists of two values is four points, the last key varying fastest:

    >>> sweep = SweepConfig(parameters={"traffic.skew": ["uniform", "zipf"],
    ...                                 "controller.bias_update_rate": [1e-3, 1e-2]})
    >>> sweep.num_points, sweep.assignments()[1]
    (4, {'traffic.skew': 'uniform', 'controller.bias_update_rate': 0.01})
    >>> SweepConfig(mode="zip", parameters={"traffic.noise_scale": [1.0, 2.0],
    ...                                     "controller.bias_update_rate": [1e-3]})
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: sweep.mode = 'zip': 'zip' needs lists of equal length, got {'traffic.noise_scale': 2, 'controller.bias_update_rate': 1}
    """

    mode: Literal["grid", "zip"] = "grid"
    parameters: dict = field(default_factory=dict)
    labels: tuple[str, ...] | None = None
    resolved: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, "sweep")
        params = {}
        for key, values in self.parameters.items():
            require(is_sweepable(key), f"sweep.{key}", values,
                     "cannot be swept; sweepable fields: " + ", ".join(sorted(SWEEPABLE))
                     + ", controller.params.NAME")
            require(isinstance(values, (list, tuple)) and len(values) >= 1, f"sweep.{key}",
                     values, "must be a non-empty list of values")
            params[key] = tuple(values)
        object.__setattr__(self, "parameters", params)
        if self.mode == "zip" and params:
            lengths = {k: len(v) for k, v in params.items()}
            require(len(set(lengths.values())) == 1, "sweep.mode", self.mode,
                     f"'zip' needs lists of equal length, got {lengths}")
        require(self.num_points <= MAX_POINTS, "sweep.parameters", f"<{self.num_points} points>",
                 f"at most {MAX_POINTS} points (each is built and checked when the config is "
                 "read); split the sweep into several configs")
        if self.labels is not None:
            require(len(self.labels) == self.num_points, "sweep.labels", list(self.labels),
                     f"must have one label per point ({self.num_points})")
        self._check_resolved()

    def _check_resolved(self) -> None:
        require(isinstance(self.resolved, dict), "sweep.resolved", self.resolved,
                 "must be a table of field names to lists of numbers")
        out = {}
        for key, values in self.resolved.items():
            require(key in RESOLVABLE, f"sweep.resolved.{key}", values,
                     "only " + ", ".join(RESOLVABLE) + " is resolved before a run")
            ok = (isinstance(values, (list, tuple)) and len(values) == self.num_points
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v) and v >= 0 for v in values))
            require(ok, f"sweep.resolved.{key}", values,
                     f"must be a list of one finite number >= 0 per point ({self.num_points})")
            out[key] = tuple(float(v) for v in values)
        object.__setattr__(self, "resolved", out)

    def __eq__(self, other: object) -> bool:
        # The order of the axes is the order of the points: {a, b} != {b, a}.
        if not isinstance(other, SweepConfig):
            return NotImplemented
        return ((self.mode, list(self.parameters.items()), self.labels, self.resolved)
                == (other.mode, list(other.parameters.items()), other.labels, other.resolved))

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
                              "drift_period", "topic_spread", "separation")]
    + [f"controller.{n}" for n in ("type", "bias_update_rate", "momentum", "bias_cap",
                                   "warmup_steps", "tanh_scale", "quantile_ema",
                                   "rate_schedule", "rate_warmup", "rate_horizon",
                                   "rate_final", "rate_freeze")]
    + [f"penalty.{n}" for n in ("type", "loss", "alpha", "z_loss", "learning_rate",
                                "importance_loss", "load_loss", "affinity_scale",
                                "quality_strength")]
)

#: Dotted prefix of a law's parameters, sweepable by name (``controller.params.ki``).
LAW_PARAMS = "controller.params."


def is_sweepable(key: str) -> bool:
    """True for a field of :data:`SWEEPABLE` or a law parameter ``controller.params.NAME``.

    Examples
    --------
    >>> is_sweepable("controller.params.ki"), is_sweepable("router.topk")
    (True, False)
    """
    return key in SWEEPABLE or (key.startswith(LAW_PARAMS)
                                and key[len(LAW_PARAMS):].isidentifier())
