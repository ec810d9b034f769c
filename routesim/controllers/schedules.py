"""Rate schedules: the factor by which a law's rate is multiplied at each window.

A schedule is a product of factors of the window index ``t`` (0 for the
first update), so warm-up, decay and freeze compose::

    u(t) = u0 * warmup(t) * decay(t) * freeze(t)

=============  ==============================================================
``constant``   1
``cosine``     ``final + (1 - final) (1 + cos(pi min(t, H) / H)) / 2``
               over a horizon of ``H`` windows, then ``final``
``inv_sqrt``   ``1 / sqrt(t + 1)``
``inv``        ``1 / (t + 1)`` (``u0 / t`` with ``t`` counted from 1)
warm-up        ``min(1, (t + 1) / W)`` over ``W`` windows (none when 0)
freeze         0 from window ``F`` on (DeepSeek-V3 set its rate to 0 for the
               last 500B of 14.8T tokens)
=============  ==============================================================

:func:`rate_factor` evaluates every point's schedule at once (one
expression per decay kind present, no loop over points); :class:`RateSchedule`
is one schedule, composable with ``*`` with another or with any callable
factor of ``t``.

Shape legend: P points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..exceptions import ConfigError

__all__ = ["DECAYS", "RateSchedule", "rate_factor", "linear_warmup", "cosine_decay",
           "inv_sqrt_decay", "inv_decay", "freeze_at", "compose"]

#: The decay kinds of ``controller.rate_schedule``.
DECAYS = ("constant", "cosine", "inv_sqrt", "inv")

Factor = Callable[[Any], Any]


def _number(x: Any, inf: bool = False) -> bool:
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and (math.isfinite(x) or (inf and x == math.inf)))


def linear_warmup(t: Any, windows: float) -> np.ndarray:
    """``min(1, (t + 1) / W)`` (1 when ``W = 0``).

    Examples
    --------
    >>> linear_warmup(np.arange(5), 4).tolist()
    [0.25, 0.5, 0.75, 1.0, 1.0]
    """
    t = np.asarray(t, dtype=np.float64)
    w = np.asarray(windows, dtype=np.float64)
    return np.where(w > 0, np.minimum(1.0, (t + 1.0) / np.where(w > 0, w, 1.0)), 1.0)


def cosine_decay(t: Any, horizon: float, final: float = 0.0) -> np.ndarray:
    """Half-cosine from 1 to ``final`` over ``horizon`` windows, then ``final``.

    Examples
    --------
    >>> cosine_decay(np.arange(0, 6, 2), 4, 0.0).round(12).tolist()
    [1.0, 0.5, 0.0]
    """
    t = np.asarray(t, dtype=np.float64)
    h = np.maximum(np.asarray(horizon, dtype=np.float64), 1.0)
    return final + (1.0 - final) * 0.5 * (1.0 + np.cos(math.pi * np.minimum(t, h) / h))


def inv_sqrt_decay(t: Any) -> np.ndarray:
    """``1 / sqrt(t + 1)``.

    Examples
    --------
    >>> inv_sqrt_decay(np.array([0, 3])).tolist()
    [1.0, 0.5]
    """
    return 1.0 / np.sqrt(np.asarray(t, dtype=np.float64) + 1.0)


def inv_decay(t: Any) -> np.ndarray:
    """``1 / (t + 1)``.

    Examples
    --------
    >>> inv_decay(np.array([0, 3])).tolist()
    [1.0, 0.25]
    """
    return 1.0 / (np.asarray(t, dtype=np.float64) + 1.0)


def freeze_at(t: Any, window: float) -> np.ndarray:
    """1 before window ``F``, 0 from it on (``inf``: never).

    Examples
    --------
    >>> freeze_at(np.arange(4), 2).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    return np.where(np.asarray(t, dtype=np.float64) < window, 1.0, 0.0)


def compose(*factors: Factor) -> Factor:
    """The product of schedule factors, each a function of ``t``.

    Examples
    --------
    >>> f = compose(lambda t: linear_warmup(t, 2), inv_decay)
    >>> f(np.arange(3)).tolist()
    [0.5, 0.5, 0.3333333333333333]
    """
    def product(t: Any) -> np.ndarray:
        out = np.ones_like(np.asarray(t, dtype=np.float64))
        for f in factors:
            out = out * f(t)
        return out
    return product


@dataclass(frozen=True)
class RateSchedule:
    """One rate schedule: decay kind, warm-up, cosine horizon and floor, freeze.

    Attributes
    ----------
    decay : {"constant", "cosine", "inv_sqrt", "inv"}
    warmup : int >= 0
        Windows of linear warm-up (0: none).
    horizon : float > 0
        Cosine horizon in windows.
    final : float in [0, 1]
        Cosine floor, as a fraction of the initial rate.
    freeze : float
        First window with rate 0 (``inf``: never).

    Examples
    --------
    >>> s = RateSchedule("inv", warmup=2, freeze=4)
    >>> s(np.arange(6)).tolist()
    [0.5, 0.5, 0.3333333333333333, 0.25, 0.0, 0.0]
    >>> (s * (lambda t: 2.0))(np.array([3])).tolist()  # composed with a constant factor
    [0.5]
    >>> RateSchedule("cosine", final=-0.5)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: final = -0.5: must be in [0, 1] (a negative floor would give negative rates)
    """

    decay: str = "constant"
    warmup: int = 0
    horizon: float = 1.0
    final: float = 0.0
    freeze: float = math.inf

    def __post_init__(self) -> None:
        checks = [
            ("decay", self.decay in DECAYS, "must be one of " + ", ".join(DECAYS)),
            ("warmup", _number(self.warmup) and self.warmup >= 0, "must be a number >= 0"),
            ("horizon", _number(self.horizon) and self.horizon > 0, "must be a number > 0"),
            ("final", _number(self.final) and 0.0 <= self.final <= 1.0,
             "must be in [0, 1] (a negative floor would give negative rates)"),
            ("freeze", _number(self.freeze, inf=True) and self.freeze >= 0,
             "must be a number >= 0 (inf: never)")]
        for name, ok, allowed in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: {allowed}")

    def __call__(self, t: Any) -> np.ndarray:
        return rate_factor([self.decay], t, [self.warmup], [self.horizon], [self.final],
                           [self.freeze])[..., 0] if np.ndim(t) else rate_factor(
            [self.decay], t, [self.warmup], [self.horizon], [self.final], [self.freeze])[0]

    def __mul__(self, other: Factor) -> Factor:
        return compose(self, other)


def rate_factor(decay_P: Sequence[str], t: Any, warmup_P: Any, horizon_P: Any, final_P: Any,
                freeze_P: Any) -> np.ndarray:
    """Every point's schedule factor at window ``t``: (P,), or (T, P) for an array ``t``.

    Parameters
    ----------
    decay_P : sequence of str
        Each point's decay kind (:data:`DECAYS`).
    t : int or int array (T,)
        Window index (0 for the first update).
    warmup_P, horizon_P, final_P, freeze_P : arrays (P,)

    Examples
    --------
    >>> rate_factor(["constant", "inv_sqrt", "cosine"], 3, [0, 0, 0], [1, 1, 6],
    ...             [0, 0, 0], [np.inf, np.inf, 3]).round(6).tolist()
    [1.0, 0.5, 0.0]
    """
    decay = np.asarray(decay_P)
    tt = np.asarray(t, dtype=np.float64)[..., None]
    out = np.ones(np.broadcast_shapes(tt.shape, decay.shape))
    for kind in set(decay.tolist()):
        if kind == "constant":
            continue
        value = {"cosine": lambda: cosine_decay(tt, np.asarray(horizon_P, dtype=np.float64),
                                                np.asarray(final_P, dtype=np.float64)),
                 "inv_sqrt": lambda: inv_sqrt_decay(tt) + 0 * out,
                 "inv": lambda: inv_decay(tt) + 0 * out}[kind]()
        out = np.where(decay == kind, value, out)
    return out * linear_warmup(tt, np.asarray(warmup_P, dtype=np.float64)) * freeze_at(
        tt, np.asarray(freeze_P, dtype=np.float64))
