"""Per-point controller parameters and the window update of every point at once.

Counting is separate from updating: the engine accumulates the loads ``c``
of one window (micro-batch, global batch or n steps) and calls
:func:`update_bias` once at the window's end; the new bias routes the *next*
window (the one-window lag of every real implementation, which keeps
routing causal).

Shape legend: P points, R replicas, E experts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .registry import CONFIG_FIELDS, ControllerLaw, get_law, registered
from .schedules import rate_factor

__all__ = ["ControllerParams", "make_controller_params", "update_bias", "LawParams"]


@dataclass(frozen=True)
class ControllerParams:
    """Per-point laws and their settings as host arrays of shape (P,).

    Attributes
    ----------
    types : tuple of str
        ``controller.type`` of each point.
    fields_P : dict of str to ndarray (P,)
        Every controller field a law may read (:data:`~.registry.CONFIG_FIELDS`).
    law_params_P : dict of str to dict of str to ndarray (P,)
        For each law present, its ``controller.params`` values; points of
        other laws carry the law's defaults (they are computed, then masked).
    router_P : dict of str to ndarray (P,)
        ``zero_experts`` and ``topk`` of each point (inputs a law may declare).
    schedule_P : dict of str to ndarray (P,)
        Rate schedule of each point: ``decay`` (str), ``warmup``,
        ``horizon``, ``final``, ``freeze`` (:func:`.schedules.rate_factor`);
        empty: constant rates.
    target_PE : ndarray (P, E) or None
        Target load shares ``Q``; None when every point's are uniform.

    Examples
    --------
    >>> from routesim import Config
    >>> params = make_controller_params([Config()])
    >>> params.types, params.fields_P["bias_update_rate"].tolist(), params.any_quantile
    (('sign',), [0.001], False)
    """

    types: tuple[str, ...]
    fields_P: Mapping[str, np.ndarray]
    law_params_P: Mapping[str, Mapping[str, np.ndarray]]
    router_P: Mapping[str, np.ndarray] | None = None
    schedule_P: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    target_PE: np.ndarray | None = None

    def rate_factor_P(self, windows_done: int) -> np.ndarray:
        """Each point's rate-schedule factor for window ``windows_done``: (P,).

        Examples
        --------
        >>> from routesim import Config
        >>> cfg = Config().replace(**{"controller.rate_schedule": "inv"})
        >>> make_controller_params([cfg, Config()]).rate_factor_P(3).tolist()
        [0.25, 1.0]
        """
        if not self.schedule_P:
            return np.ones(len(self.types))
        s = self.schedule_P
        return rate_factor(s["decay"], windows_done, s["warmup"], s["horizon"], s["final"],
                           s["freeze"])

    @classmethod
    def from_columns(cls, types: Sequence[str], fields_P: Mapping[str, Any],
                     user_params: Sequence[Mapping[str, float]] | None = None,
                     schedule_P: Mapping[str, Any] | None = None,
                     target_PE: np.ndarray | None = None) -> "ControllerParams":
        """Build from per-point columns; missing fields are 0, missing params their defaults.

        Examples
        --------
        >>> p = ControllerParams.from_columns(["proportional"] * 2,
        ...                                   {"bias_update_rate": [0.1, 0.2]})
        >>> p.fields_P["bias_update_rate"].tolist(), p.fields_P["momentum"].tolist()
        ([0.1, 0.2], [0.0, 0.0])
        """
        types = tuple(types)
        size = len(types)
        cols = {name: np.broadcast_to(np.asarray(fields_P.get(name, 0.0), dtype=np.float64),
                                      (size,)).copy() for name in CONFIG_FIELDS}
        given = list(user_params) if user_params is not None else [{}] * size
        law_params: dict[str, dict[str, np.ndarray]] = {}
        for name in dict.fromkeys(types):
            spec = get_law(name)
            law_params[name] = {
                key: np.array([g.get(key, p.default) if t == name else p.default
                               for t, g in zip(types, given)], dtype=np.float64)
                for key, p in spec.params.items()}
        return cls(types=types, fields_P=cols, law_params_P=law_params,
                   schedule_P=dict(schedule_P or {}), target_PE=target_PE)

    @property
    def laws(self) -> tuple[ControllerLaw, ...]:
        """The registered laws present, in registry order."""
        present = set(self.types)
        return tuple(get_law(n) for n in registered() if n in present)

    @property
    def on_logits_P(self) -> np.ndarray:
        """Bool (P,): the point's bias acts on the logits (quantile balancing)."""
        return np.array([get_law(t).bias_on_logits for t in self.types])

    @property
    def any_quantile(self) -> bool:
        """True if some point's bias acts on logits or its law reads the dual estimate."""
        return any(law.bias_on_logits or law.needs_dual_estimate for law in self.laws)


def make_controller_params(points: Sequence[Any]) -> ControllerParams:
    """Collect per-point controller settings (set-up, not the hot path).

    Parameters
    ----------
    points : sequence of Config
        The points of a sweep (each with a ``controller`` section).

    Examples
    --------
    >>> from routesim import Config
    >>> cfg = Config().replace(**{"controller.type": "ema", "controller.momentum": 0.5})
    >>> params = make_controller_params([Config(), cfg])
    >>> params.types, params.fields_P["momentum"].tolist()
    (('sign', 'ema'), [0.9, 0.5])
    """
    ctrl = [p.controller for p in points]
    schedule: dict[str, Any] = {}
    if any(c.rate_schedule != "constant" or c.rate_warmup or c.rate_freeze is not None
           for c in ctrl):
        windows = [_windows(p) for p in points]
        schedule = {
            "decay": np.array([c.rate_schedule for c in ctrl]),
            "warmup": np.array([c.rate_warmup for c in ctrl], dtype=np.float64),
            "horizon": np.array([c.rate_horizon or w for c, w in zip(ctrl, windows)],
                                dtype=np.float64),
            "final": np.array([c.rate_final for c in ctrl], dtype=np.float64),
            "freeze": np.array([np.inf if c.rate_freeze is None else c.rate_freeze
                                for c in ctrl], dtype=np.float64)}
    target = None
    if any(c.target_shares is not None for c in ctrl):
        n = len(next(c.target_shares for c in ctrl if c.target_shares is not None))
        target = np.array([c.target_shares if c.target_shares is not None else [1.0 / n] * n
                           for c in ctrl], dtype=np.float64)
    params = ControllerParams.from_columns(
        [c.type for c in ctrl], {f: [getattr(c, f) for c in ctrl] for f in CONFIG_FIELDS},
        [getattr(c, "params", {}) for c in ctrl], schedule, target)
    router = {name: np.array([getattr(p.router, name, 0) for p in points], dtype=np.float64)
              for name in ("zero_experts", "topk")}
    return dataclasses.replace(params, router_P=router)


def _windows(point: Any) -> int:
    """Controller windows in a run of ``point`` (the default cosine horizon)."""
    c, steps = point.controller, point.run.steps
    if c.window == "micro_batch":
        return steps * point.batch.num_micro_batches
    if c.window == "steps":
        return max(steps // c.update_every, 1)
    return steps


class LawParams(Mapping):
    """What a law reads by name: per-point parameters (P, 1, 1) and declared inputs.

    Arrays are made on first access, in the bias dtype on the bias's
    namespace.

    Examples
    --------
    >>> import numpy as np
    >>> view = LawParams(np, np.float64, {"gain": np.array([1.0, 2.0])}, {})
    >>> view["gain"].shape, sorted(view)
    ((2, 1, 1), ['gain'])
    """

    def __init__(self, xp: ModuleType, dtype: Any, columns_P: Mapping[str, np.ndarray],
                 inputs: Mapping[str, Any]) -> None:
        self._xp, self._dtype, self._columns, self._inputs = xp, dtype, columns_P, inputs
        self._cache: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._inputs:
            return self._inputs[name]
        if name not in self._cache:
            column = self._columns[name]  # KeyError names a parameter the law did not declare
            self._cache[name] = self._xp.reshape(
                self._xp.asarray(column, dtype=self._dtype), (-1, 1, 1))
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._columns) + list(self._inputs))

    def __len__(self) -> int:
        return len(self._columns) + len(self._inputs)


def update_bias(xp: ModuleType, params: ControllerParams, bias_PRE: Any, memory_PRE: Any,
                load_PRE: Any, estimate_PRE: Any, windows_done: int) -> tuple[Any, Any]:
    """Apply each point's law to its window loads; returns ``(bias, memory)``.

    Points are grouped by law: each registered law present runs once on the
    whole (P, R, E) array and ``where`` keeps it for its own points, so the
    cost does not grow with the number of points.

    Parameters
    ----------
    xp : namespace
    params : ControllerParams
        Per-point laws and settings.
    bias_PRE, memory_PRE : arrays (P, R, E)
    load_PRE : int array (P, R, E)
        Loads counted over the window that just ended.
    estimate_PRE : array (P, R, E) or None
        Quantile-balancing dual estimate of the window (as a bias), the
        ``dual_estimate`` input of the laws that declare it.
    windows_done : int
        Windows completed before this one (for warm-up).

    Examples
    --------
    Two points, the sign law at ``u = 1e-3`` and the proportional law at
    ``u = 0.1``, on the same window loads:

    >>> import numpy as np
    >>> from routesim import Config
    >>> prop = Config().replace(**{"controller.type": "proportional",
    ...                            "controller.bias_update_rate": 0.1})
    >>> params = make_controller_params([Config(), prop])
    >>> load = np.broadcast_to(np.array([40, 30, 20, 10]), (2, 1, 4))
    >>> bias, _ = update_bias(np, params, np.zeros((2, 1, 4)), np.zeros((2, 1, 4)), load,
    ...                       None, 0)
    >>> np.round(bias[:, 0], 12).tolist()
    [[-0.001, -0.001, 0.001, 0.001], [-0.06, -0.02, 0.02, 0.06]]
    """
    dtype = bias_PRE.dtype
    new_bias, new_memory = bias_PRE, memory_PRE
    types = np.asarray(params.types)
    factor_P = params.rate_factor_P(windows_done) if params.schedule_P else None
    target = None
    if params.target_PE is not None:
        target = xp.reshape(xp.asarray(params.target_PE, dtype=dtype),
                            (len(params.types), 1, -1))
    for law in params.laws:
        if law.law is None:
            continue
        inputs = {"dual_estimate": estimate_PRE} if law.needs_dual_estimate else {}
        for name in ("zero_experts", "topk"):
            if name in law.inputs:
                inputs[name] = xp.reshape(xp.asarray(params.router_P[name], dtype=dtype),
                                          (-1, 1, 1))
        if "target_share" in law.inputs:
            inputs["target_share"] = target
        columns = {**{f: params.fields_P[f] for f in law.fields},
                   **params.law_params_P.get(law.name, {})}
        if factor_P is not None and "bias_update_rate" in columns:
            columns["bias_update_rate"] = columns["bias_update_rate"] * factor_P
        b, m = law.law(xp, bias_PRE, load_PRE, memory_PRE,
                       LawParams(xp, dtype, columns, inputs))
        chosen_P = types == law.name
        if law.warmup:
            chosen_P = chosen_P & (windows_done >= params.fields_P["warmup_steps"])
        mask = xp.reshape(xp.asarray(chosen_P), (-1, 1, 1))
        new_bias = xp.where(mask, xp.astype(b, dtype), new_bias)
        new_memory = xp.where(mask, xp.astype(m, dtype), new_memory)
    return new_bias, new_memory
