"""Config section ``[controller]``: the bias controller, its law and the law's parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Mapping

from ..controllers.registry import get_law, import_law_module, registered
from ..exceptions import ConfigError
from ._checks import DATACLASS, check_types, positive, require
from ._rates import CRITICAL_RATE_LAWS, parse_rate

__all__ = ["ControllerConfig", "LawParameters"]


@dataclass(**DATACLASS)
class ControllerConfig:
    """Bias controller (load balancing without gradients).

    Attributes
    ----------
    type : str
        A registered law (:func:`routesim.controllers.registered`): the
        built-in ``none``, ``sign``, ``sign_centred``, ``proportional``,
        ``ema``, ``rms``, ``momentum_tanh``, ``quantile``, ``dual_ascent``, or one added with
        :func:`routesim.controllers.register`. See docs/controllers.md.
    bias_update_rate : float >= 0 or str
        ``u``, the rate (Megatron ``moe_router_bias_update_rate``), or a
        multiple of the critical rate predicted for the point's own scenario,
        ``"0.5 u_c"`` (laws ``proportional``, ``ema``, ``momentum_tanh``;
        sweepable), resolved to a number before the run and stored in
        ``sweep.resolved``. See "Loop gains of the laws" below.
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
    rate_schedule : {"constant", "cosine", "inv_sqrt", "inv"}
        Decay of ``bias_update_rate`` over the controller windows ``t``
        (0 for the first update): 1, a half-cosine to ``rate_final`` over
        ``rate_horizon`` windows, ``1 / sqrt(t + 1)``, ``1 / (t + 1)``.
        Multiplied by the warm-up and the freeze
        (:mod:`routesim.controllers.schedules`); the rate of each step is
        the Dataset variable ``bias_update_rate``.
    rate_warmup : int >= 0
        Windows of linear warm-up of the rate, ``min(1, (t + 1) / W)``.
    rate_horizon : int > 0 or None
        Cosine horizon in windows; None: the run's windows.
    rate_final : float in [0, 1]
        Cosine floor as a fraction of the initial rate.
    rate_freeze : int >= 0 or None
        First window with rate 0 (the bias is frozen from then on); None:
        never. (DeepSeek-V3 froze its bias for the last 500B of 14.8T tokens.)
    target_shares : list of float or None
        Target load share ``Q_i`` of each expert (>= 0, summing to 1); None:
        uniform. The laws balance towards ``Q_i * sum(c)`` (experts placed
        on devices of unequal speed); the oracle's capacities are
        ``T K Q`` and ``maxvio_target`` is MaxVio against ``Q``.
    params : table of str to float
        Parameters of a registered law (``[controller.params]``), each
        checked by the law's registration and sweepable as
        ``controller.params.NAME``; unset ones take the law's defaults.
    module : str or None
        Module imported before ``type`` is looked up, for a law that it
        registers: a dotted name (``mypkg.laws``) or a ``.py`` file path
        (relative to the working directory). Stored with the config, so
        sweep workers and re-read results register the law too.

    Examples
    --------
    >>> ControllerConfig(type="ema", momentum=0.5).momentum
    0.5
    >>> ControllerConfig(type="proportional", bias_update_rate="0.5 u_c").bias_update_rate
    '0.5 u_c'
    >>> ControllerConfig(type="sign", bias_update_rate="0.5 u_c")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: controller.bias_update_rate = '0.5 u_c': a rate in units of the critical rate needs controller.type in 'proportional', 'ema', 'momentum_tanh' (laws with a predicted critical rate), not 'sign' (a relay: it oscillates at every rate, with an amplitude that grows with the rate); give a number
    >>> ControllerConfig(momentum=1.0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: controller.momentum = 1.0: must be in [0, 1)
    """

    type: str = "sign"
    bias_update_rate: float | str = 1e-3
    window: Literal["micro_batch", "global_batch", "steps"] = "global_batch"
    update_every: int = 1
    momentum: float = 0.9
    bias_cap: float = 0.0
    warmup_steps: int = 0
    tanh_scale: float = 0.1
    quantile_ema: float = 0.0
    rate_schedule: Literal["constant", "cosine", "inv_sqrt", "inv"] = "constant"
    rate_warmup: int = 0
    rate_horizon: int | None = None
    rate_final: float = 0.0
    rate_freeze: int | None = None
    target_shares: tuple[float, ...] | None = None
    params: Mapping[str, float] = field(default_factory=lambda: LawParameters({}))
    module: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "controller")
        self._check_law()
        self._check_rate()
        positive(self, "controller", "bias_cap", allow_zero=True)
        positive(self, "controller", "tanh_scale")
        require(self.update_every >= 1, "controller.update_every", self.update_every,
                 "must be an integer >= 1")
        require(self.window == "steps" or self.update_every == 1, "controller.update_every",
                 self.update_every, "must be 1 unless controller.window = 'steps'")
        require(0.0 <= self.momentum < 1.0, "controller.momentum", self.momentum,
                 "must be in [0, 1)")
        require(0.0 <= self.quantile_ema < 1.0, "controller.quantile_ema", self.quantile_ema,
                 "must be in [0, 1)")
        require(self.warmup_steps >= 0, "controller.warmup_steps", self.warmup_steps,
                 "must be an integer >= 0")
        require(self.rate_warmup >= 0, "controller.rate_warmup", self.rate_warmup,
                 "must be an integer >= 0")
        if self.rate_horizon is not None:
            require(self.rate_horizon >= 1, "controller.rate_horizon", self.rate_horizon,
                     "must be an integer >= 1")
        require(0.0 <= self.rate_final <= 1.0, "controller.rate_final", self.rate_final,
                 "must be in [0, 1] (a negative floor would give negative rates)")
        if self.rate_freeze is not None:
            require(self.rate_freeze >= 0, "controller.rate_freeze", self.rate_freeze,
                     "must be an integer >= 0")
        if self.target_shares is not None:
            q = list(self.target_shares)
            require(all(math.isfinite(x) and x >= 0 for x in q), "controller.target_shares", q,
                     "must be finite and >= 0")
            require(abs(sum(q) - 1.0) <= 1e-6, "controller.target_shares", q,
                     f"must sum to 1 (they sum to {sum(q):.6g})")

    def _check_rate(self) -> None:
        """A number >= 0, or ``"<m> u_c"`` for a law with a predicted critical rate."""
        rate = self.bias_update_rate
        if not isinstance(rate, str):
            positive(self, "controller", "bias_update_rate", allow_zero=True)
            return
        parse_rate(rate)
        if self.type not in CRITICAL_RATE_LAWS:
            relay = (" (a relay: it oscillates at every rate, with an amplitude that grows "
                     "with the rate)" if self.type in ("sign", "sign_centred") else "")
            raise ConfigError(
                f"controller.bias_update_rate = {rate!r}: a rate in units of the critical "
                "rate needs controller.type in "
                + ", ".join(repr(x) for x in CRITICAL_RATE_LAWS)
                + f" (laws with a predicted critical rate), not {self.type!r}{relay}; "
                "give a number")

    def _check_law(self) -> None:
        """``type`` against the registry, ``params`` against the law's checks."""
        if self.module is not None:
            try:
                import_law_module(self.module)
            except Exception as err:  # any failure of the user's module is a config error
                raise ConfigError(f"controller.module = {self.module!r}: cannot be imported "
                                  f"({type(err).__name__}: {err})") from None
        names = registered()
        require(self.type in names, "controller.type", self.type,
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
