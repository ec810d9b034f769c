"""A rate in units of the critical rate: ``bias_update_rate = "0.5 u_c"``.

``u_c`` is the rate at which the linearised loop of the point's own scenario
loses stability (:func:`routesim.theory.critical_rate`). The config layer
only reads the expression and refuses it where no critical rate is
predicted; :func:`routesim.theory.resolve_rates` turns it into a number
before a run and stores the number in ``sweep.resolved``.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..exceptions import ConfigError

__all__ = ["CRITICAL_RATE_LAWS", "RESOLVABLE", "parse_rate", "critical_rate_blockers"]

#: Laws with a predicted critical rate (the linear laws of routesim.theory.stability).
CRITICAL_RATE_LAWS = ("proportional", "ema", "momentum_tanh")

#: Fields that may hold an expression resolved before the run (``sweep.resolved``).
RESOLVABLE = ("controller.bias_update_rate",)

_EXPR = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)?\s*\*?\s*u_c\s*$")


def parse_rate(value: str, path: str = "controller.bias_update_rate") -> float:
    """The multiple of ``u_c`` in an expression such as ``"0.5 u_c"``.

    Parameters
    ----------
    value : str
        ``"<number> u_c"`` (``"u_c"`` alone is 1); the number is >= 0.
    path : str
        Field named in the error message.

    Returns
    -------
    float

    Raises
    ------
    ConfigError
        If the string is not such an expression.

    Examples
    --------
    >>> parse_rate("0.5 u_c"), parse_rate("2u_c"), parse_rate("u_c")
    (0.5, 2.0, 1.0)
    >>> parse_rate("0.5 uc")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: controller.bias_update_rate = '0.5 uc': must be a number >= 0 or a multiple of the critical rate such as '0.5 u_c'
    """
    m = _EXPR.match(value)
    mult = float(m.group(1)) if m and m.group(1) is not None else 1.0
    if m is None or not math.isfinite(mult):
        raise ConfigError(f"{path} = {value!r}: must be a number >= 0 or a multiple of the "
                          "critical rate such as '0.5 u_c'")
    return mult


def critical_rate_blockers(point: Any) -> list[tuple[str, Any, str]]:
    """Settings of one point for which no critical rate is predicted.

    Each entry is ``(field, value, why)``. The theory's loop gain needs
    popularity traffic that does not drift, dropless token-choice routing
    without group limits, a fixed router, and a load map with an exact
    derivative (not an additive bias on softmax probabilities).

    Examples
    --------
    >>> from routesim.config import Config, RouterConfig
    >>> critical_rate_blockers(Config())
    []
    >>> [b[0] for b in critical_rate_blockers(Config(router=RouterConfig(capacity_factor=1.0)))]
    ['router.capacity_factor']
    """
    t, r, pen = point.traffic, point.router, point.penalty
    out = []
    if t.kind != "popularity":
        out.append(("traffic.kind", t.kind, "the theory needs popularity traffic"))
    elif t.drift != "none":
        out.append(("traffic.drift", t.drift, "the popularity moves, and the loop gain with it"))
    if r.router_type != "token_choice":
        out.append(("router.router_type", r.router_type, "Expert Choice is not modelled"))
    if r.num_groups is not None:
        out.append(("router.num_groups", r.num_groups, "group-limited top-K is not modelled"))
    if not r.dropless:
        out.append(("router.capacity_factor", r.capacity_factor,
                    "capacity drops are not modelled"))
    if pen.learn:
        out.append(("penalty.learn", pen.learn, "a learning router is not modelled"))
    if r.score_function == "softmax" and r.bias_mode == "additive":
        out.append(("router.score_function", r.score_function,
                    "an additive bias on softmax probabilities has no exact loop gain"))
    return out


def check_rate_expression(point: Any) -> None:
    """Refuse a ``u_c`` rate at a point where no critical rate is predicted (one line)."""
    c = point.controller
    if not isinstance(c.bias_update_rate, str):
        return
    blockers = critical_rate_blockers(point)
    if blockers:
        path, value, why = blockers[0]
        raise ConfigError(f"controller.bias_update_rate = {c.bias_update_rate!r}: no critical "
                          f"rate is predicted with {path} = {value!r} ({why}); give a number")
