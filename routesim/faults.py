"""Numerical faults: a cheap finite check of an engine's state after every step.

A NaN or an Inf in the bias, the controller memory, the popularity, the
learning router's weights or the router logits would otherwise be written into the
results as ordinary numbers (a NaN bias still routes, and the loads stay
finite integers, so MaxVio looks plausible). :func:`make_step_check` returns
a function that each engine's loop calls after every step; on the first
non-finite value it raises :class:`routesim.exceptions.NumericalFault` with
one line naming the step, the point, the variable and the likely cause.

The check costs one sum per checked array (NaN and Inf propagate through a
sum); only when a sum is not finite are the values themselves inspected, to
tell a fault from a sum that merely overflowed and to find the point.

The exact engine reports the sum of each step's logits (``logit_sum_PR``)
on its generic path; a compiled kernel (``run.kernel``) keeps its logits to
itself and relies on the load-time bound on the logits below.

What can be decided from the config alone (a bias step that
``run.bias_dtype`` cannot represent, a capacity that overflows, a
``tanh_scale`` that is zero in the bias dtype, logits beyond float32) is
refused when the config is built (:mod:`routesim.config._numerics`).

Examples
--------
>>> import numpy as np
>>> from types import SimpleNamespace
>>> from routesim.config import Config
>>> check = make_step_check(Config(), None, np)
>>> state = SimpleNamespace(step=4, bias_PRE=np.array([[[0.0, np.inf]]]))
>>> check(state, SimpleNamespace())  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
routesim.exceptions.NumericalFault: step 3, point 'sign' (index 0): bias is inf; likely cause: ...
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ._backend import to_numpy
from .exceptions import NumericalFault

__all__ = ["CAUSES", "make_step_check", "checked_arrays"]

_OPTIMIZER = ("the router's optimizer diverged: lower penalty.learning_rate or the penalty "
              "weights (alpha, z_loss)")

#: Likely cause of a non-finite value, per checked variable.
CAUSES = {
    "bias": ("the bias overflowed run.bias_dtype: controller.bias_update_rate too large "
             "(or the controller loop unstable); lower it or use run.bias_dtype = 'float64'"),
    "controller memory": ("the controller memory overflowed: check controller.bias_update_rate,"
                          " controller.tanh_scale and controller.momentum"),
    "quantile estimate": "the quantile dual estimate overflowed: the logits are too large",
    "popularity": ("the popularity logits overflowed float32: traffic.drift_std or "
                   "traffic.drift_amplitude too large"),
    "router weights": _OPTIMIZER,
    "noise-gate weights": _OPTIMIZER,
    "optimizer state": _OPTIMIZER,
    "expert usage": "the expert usage overflowed: check penalty.quality_memory",
    "logits": ("the router logits overflowed: " + _OPTIMIZER.split(": ", 1)[1]
               + ", or lower traffic.topic_spread"),
    "mean-field load map": ("the mean-field load map is not finite at this bias: the bias or "
                            "the popularity has left float range; try run.engine = 'exact'"),
}


def checked_arrays(state: Any, out: Any) -> Iterator[tuple[str, Any]]:
    """The ``(variable, array)`` pairs of an engine's state and step output to check.

    Every array has the point axis first. Attributes an engine does not have
    are skipped, so one function serves the exact, mean-field and learning
    engines.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> state = SimpleNamespace(bias_PRE=np.zeros((1, 1, 2)))
    >>> out = SimpleNamespace(load_PRE=np.ones((1, 1, 2)))
    >>> [name for name, _ in checked_arrays(state, out)]
    ['bias']
    """
    for attr, name in (("bias_PRE", "bias"), ("memory_PRE", "controller memory"),
                       ("window_estimate_PRE", "quantile estimate"),
                       ("weight_PRED", "router weights"),
                       ("noise_weight_PRED", "noise-gate weights"), ("usage_PRE", "expert usage")):
        value = getattr(state, attr, None)
        if value is not None:
            yield name, value
    for value in getattr(state, "moments", ()) or ():
        yield "optimizer state", value
    tstate = getattr(state, "traffic", None)
    if tstate is not None and getattr(tstate, "mu_PRE", None) is not None:
        yield "popularity", tstate.mu_PRE
    reference = getattr(state, "reference", None)
    if reference is not None:
        yield "mean-field load map", reference.p_PRE
    # the exact engine's per-step sum of its logits; the learning router's statistics
    if getattr(out, "logit_sum_PR", None) is not None:
        yield "logits", out.logit_sum_PR
    extra = getattr(out, "extra", None)
    for attr in ("max_logit_PR", "logit_spread_PR"):
        if getattr(extra, attr, None) is not None:
            yield "logits", getattr(extra, attr)


def _bad_points(xp: ModuleType, array: Any) -> tuple[np.ndarray, str] | None:
    """None if every value is finite; else the bad points (bool (P,)) and 'nan' or 'inf'."""
    if isinstance(array, np.ndarray):
        xp = np  # host arrays of the mean-field reference
    if array.dtype not in (xp.float32, xp.float64):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(float(to_numpy(xp.sum(array)))):  # the cheap path
            return None
    host = to_numpy(array).reshape(array.shape[0], -1)
    bad_P = ~np.all(np.isfinite(host), axis=1)
    if not bad_P.any():
        return None  # the sum overflowed; every value is finite
    return bad_P, ("nan" if np.isnan(host[bad_P]).any() else "inf")


def make_step_check(config: Any, point_indices: Sequence[int] | None,
                    xp: ModuleType) -> Callable[[Any, Any], None]:
    """A function ``check(state, out)`` that raises on the first non-finite value.

    Parameters
    ----------
    config : Config
        The run (for the point labels).
    point_indices : sequence of int or None
        The points being run (global indices); None for all.
    xp : namespace
        The engine's array namespace.

    Returns
    -------
    callable (state, out) -> None
        Call it with the state after a step and that step's output; the step
        reported is ``state.step - 1``.

    Raises
    ------
    NumericalFault
        From the returned function, with the step, the point label and
        index, the variable, ``nan`` or ``inf`` and the likely cause.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 2, "topk": 1}})
    >>> check = make_step_check(cfg, None, np)
    >>> check(SimpleNamespace(step=1, bias_PRE=np.zeros((1, 1, 2))), None)  # finite: silent
    >>> check(SimpleNamespace(step=5, bias_PRE=np.full((1, 1, 2), np.nan)), None)
    Traceback (most recent call last):
    ...
    routesim.exceptions.NumericalFault: step 4, point ...: bias is nan; likely cause: ...
    """
    labels = config.point_labels()
    indices = list(range(len(labels)) if point_indices is None else point_indices)
    layers = config.model.num_layers  # rows of the point axis per point

    def check(state: Any, out: Any) -> None:
        for name, array in checked_arrays(state, out):
            found = _bad_points(xp, array)
            if found is None:
                continue
            bad_P, kind = found
            row = int(np.argmax(bad_P))
            p = indices[row // layers]
            where = f", layer {row % layers}" if layers > 1 else ""
            raise NumericalFault(f"step {state.step - 1}, point {labels[p]!r} (index {p}"
                                 f"{where}): {name} is {kind}; likely cause: {CAUSES[name]}")

    return check
