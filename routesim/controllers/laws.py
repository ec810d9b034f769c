"""The built-in bias laws, registered through :func:`routesim.controllers.register`.

Each law is written twice: a plain function with its own arguments (the
formula, documented and tested on its own, e.g. :func:`sign_update`), and a
short adapter with the common signature
``law(xp, bias_PRE, load_PRE, memory_PRE, params) -> (bias_PRE, memory_PRE)``
that reads its parameters by name and is what the registry holds.

With ``c_bar = mean_i c_i`` and load fractions ``F_i = c_i / sum_j c_j``:

=================  ==========================================================
``none``           no update
``sign``           ``b += u * sign(c_bar - c)`` (Loss-Free, Megatron
                   ``get_updated_expert_bias``: no centring, sign(0) = 0)
``sign_centred``   ``d = u * sign(c_bar - c); b += d - mean(d)`` (torchtitan)
``proportional``   ``b += u * (c_bar - c) / c_bar`` (relative error; moe-lab)
``ema``            ``m = beta m + (1 - beta) F; d = u (1/N - m);
                   b = clip(b + d - mean(d), -cap, cap)`` after warm-up
                   (axolotl ``AuxFreeShim.update_bias``; cap 0 = no clamp)
``rms``            ``b -= u (F - 1/N) / RMS(F - 1/N)`` (Su Jianlin)
``momentum_tanh``  ``v = beta v + (1 - beta) tanh(((c_bar - c) / c_bar) / kappa);
                   d = u v; b += d - mean(d)`` after warm-up (SMEBU-like;
                   ``tanh_scale = 1 / kappa`` of SMEBU's ``tanh(kappa e)``)
``dual_ascent``    ``b += u * (c_tgt - c)``: dual (sub)gradient ascent on the
                   capacity prices, ``u`` in score units per assignment
                   (``proportional`` is this law with ``u / c_bar``)
``quantile``       ``b = ema * b + (1 - ema) * b_hat; b -= mean(b)`` with
                   ``b_hat`` the one-shot dual estimate of the window
                   (Megatron ``qb_dual_update``; the bias acts on logits)
``zero_budget``    ``b += u E (target - F)`` with targets ``(k_e / K) / (E - Z)``
                   per FFN expert and ``(1 - k_e / K) / Z`` per zero expert
                   (the last ``router.zero_experts``; LongCat-Flash): FFN
                   experts balanced, ``k_e`` FFN experts per token on average
=================  ==========================================================

With target load shares ``Q`` (``controller.target_shares``, the input
``target_share`` of shape (P, 1, E)), ``c_bar`` in the error terms becomes
each expert's target ``c_tgt = Q_i * sum_j c_j`` and ``1/N`` becomes ``Q``;
the relative errors keep ``c_bar`` as their scale. Uniform rows use
``c_bar`` itself, so uniform targets give the same numbers as none.

Shape legend: P points, R replicas, E experts.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Mapping

from .registry import Param, register

__all__ = [
    "target_load",
    "dual_ascent_update",
    "sign_update",
    "sign_centred_update",
    "proportional_update",
    "ema_update",
    "rms_update",
    "momentum_tanh_update",
    "quantile_update",
    "zero_budget_update",
]


def _mean(xp: ModuleType, x: Any) -> Any:
    return xp.mean(x, axis=-1, keepdims=True)


def _uniform(xp: ModuleType, share: Any) -> Any:
    return xp.all(share == share[..., :1], axis=-1, keepdims=True)


def target_load(xp: ModuleType, load: Any, share: Any = None) -> Any:
    """Each expert's target load ``Q_i * sum_j c_j`` (the mean ``c_bar`` for uniform ``Q``).

    Parameters
    ----------
    load : array (..., E)
        In the bias dtype.
    share : array (..., E) or None
        Target shares ``Q``; None (or a uniform row) is ``1 / N``.

    Examples
    --------
    >>> import numpy as np
    >>> load = np.array([40., 30., 20., 10.])
    >>> target_load(np, load).tolist(), target_load(np, load, np.array([.4, .3, .2, .1])).tolist()
    ([25.0], [40.0, 30.0, 20.0, 10.0])
    """
    mean = _mean(xp, load)
    if share is None:
        return mean
    total = xp.sum(load, axis=-1, keepdims=True)
    return xp.where(_uniform(xp, share), mean, xp.astype(share, load.dtype) * total)


def _shares(xp: ModuleType, share: Any, n: int, dtype: Any) -> Any:
    """``Q`` with uniform rows exactly ``1 / N``."""
    if share is None:
        return 1.0 / n
    return xp.where(_uniform(xp, share), 1.0 / n, xp.astype(share, dtype))


def dual_ascent_update(xp: ModuleType, bias: Any, load: Any, step: Any, share: Any = None
                       ) -> Any:
    """Dual (sub)gradient ascent on the capacity prices: ``b + eta * (c_tgt - c)``.

    With prices ``p = -b`` the dual function is ``g(p) = sum_t topK_sum(s_t -
    p) + sum_i C_i p_i``, whose gradient is ``C_i - c_i(p)``; a descent step
    on ``g`` of size ``eta`` moves the bias by ``eta * (C_i - c_i)``. The
    window's capacities are its targets ``c_tgt`` (:func:`target_load`), so
    ``eta`` is in score units per assignment of load error.

    Examples
    --------
    >>> import numpy as np
    >>> dual_ascent_update(np, np.zeros(4), np.array([40., 30., 20., 10.]), 0.004).tolist()
    [-0.06, -0.02, 0.02, 0.06]
    """
    load = xp.astype(load, bias.dtype)
    return bias + step * (target_load(xp, load, share) - load)


def sign_update(xp: ModuleType, bias: Any, load: Any, rate: Any, share: Any = None) -> Any:
    """Loss-Free / Megatron sign law: ``b + u * sign(mean(c) - c)``.

    Examples
    --------
    >>> import numpy as np
    >>> sign_update(np, np.zeros(4), np.array([40., 30., 20., 10.]), 1e-3)
    array([-0.001, -0.001,  0.001,  0.001])
    """
    load = xp.astype(load, bias.dtype)
    return bias + rate * xp.sign(target_load(xp, load, share) - load)


def sign_centred_update(xp: ModuleType, bias: Any, load: Any, rate: Any,
                        share: Any = None) -> Any:
    """torchtitan's sign law, mean-centred so that ``sum(b)`` never moves.

    Examples
    --------
    One overloaded expert against three underloaded ones (mean 25): the
    steps ``u * (-1, 1, 1, 1)`` lose their mean ``u / 2``.

    >>> import numpy as np
    >>> b = sign_centred_update(np, np.zeros(4), np.array([40., 20., 20., 20.]), 0.01)
    >>> np.round(b, 12).tolist()
    [-0.015, 0.005, 0.005, 0.005]
    """
    load = xp.astype(load, bias.dtype)
    delta = rate * xp.sign(target_load(xp, load, share) - load)
    return bias + (delta - _mean(xp, delta))


def proportional_update(xp: ModuleType, bias: Any, load: Any, rate: Any,
                        share: Any = None) -> Any:
    """Proportional law on the relative error: ``b + u * (c_bar - c) / c_bar``.

    A window with no tokens (``c_bar = 0``) leaves the bias unchanged.

    Examples
    --------
    Relative errors ``(25 - c) / 25`` are (-0.6, -0.2, 0.2, 0.6):

    >>> import numpy as np
    >>> b = proportional_update(np, np.zeros(4), np.array([40., 30., 20., 10.]), 0.1)
    >>> np.round(b, 12).tolist()
    [-0.06, -0.02, 0.02, 0.06]
    """
    load = xp.astype(load, bias.dtype)
    mean = _mean(xp, load)
    safe = xp.where(mean > 0, mean, 1.0)
    return bias + xp.where(mean > 0, rate * (target_load(xp, load, share) - load) / safe, 0.0)


def _fractions(xp: ModuleType, load: Any, dtype: Any) -> Any:
    load = xp.astype(load, dtype)
    total = xp.sum(load, axis=-1, keepdims=True)
    return load / xp.where(total > 0, total, 1.0)


def ema_update(xp: ModuleType, bias: Any, load: Any, ema: Any, rate: Any, momentum: Any,
               cap: Any, share: Any = None) -> tuple[Any, Any]:
    """axolotl's EMA-filtered proportional law with centring and clamp.

    Returns ``(bias, ema)``. ``cap <= 0`` disables the clamp.

    Examples
    --------
    Fractions (0.4, 0.3, 0.2, 0.1) into an empty EMA with momentum 0.5 give
    ``m = (0.2, 0.15, 0.1, 0.05)``, steps ``1/4 - m = (0.05, 0.1, 0.15, 0.2)``
    and, centred, (-0.075, -0.025, 0.025, 0.075); the cap 0.05 clips the ends.

    >>> import numpy as np
    >>> load = np.array([40., 30., 20., 10.])
    >>> b, m = ema_update(np, np.zeros(4), load, np.zeros(4), 1.0, 0.5, np.float64(0.0))
    >>> np.round(b, 12).tolist(), np.round(m, 12).tolist()
    ([-0.075, -0.025, 0.025, 0.075], [0.2, 0.15, 0.1, 0.05])
    >>> b, _ = ema_update(np, np.zeros(4), load, np.zeros(4), 1.0, 0.5, np.float64(0.05))
    >>> np.round(b, 12).tolist()
    [-0.05, -0.025, 0.025, 0.05]
    """
    n = bias.shape[-1]
    ema = momentum * ema + (1.0 - momentum) * _fractions(xp, load, bias.dtype)
    delta = rate * (_shares(xp, share, n, bias.dtype) - ema)
    new = bias + (delta - _mean(xp, delta))
    capped = xp.clip(new, -cap, cap)
    return xp.where(cap > 0, capped, new), ema


def rms_update(xp: ModuleType, bias: Any, load: Any, rate: Any, share: Any = None) -> Any:
    """Su's RMS-normalised law: ``b - u (F - 1/N) / RMS(F - 1/N)`` (0 when balanced).

    Examples
    --------
    ``F - 1/4 = (0.15, 0.05, -0.05, -0.15)`` has RMS ``sqrt(0.0125)``, so the
    step is ``-u (3, 1, -1, -3) / sqrt(5)``:

    >>> import numpy as np
    >>> b = rms_update(np, np.zeros(4), np.array([40., 30., 20., 10.]), 0.1)
    >>> np.round(b, 6).tolist()
    [-0.134164, -0.044721, 0.044721, 0.134164]
    >>> rms_update(np, np.zeros(2), np.array([5., 5.]), 0.1).tolist()  # balanced
    [0.0, 0.0]
    """
    n = bias.shape[-1]
    dev = _fractions(xp, load, bias.dtype) - _shares(xp, share, n, bias.dtype)
    rms = xp.sqrt(_mean(xp, dev * dev))
    return bias - xp.where(rms > 0, rate * dev / xp.where(rms > 0, rms, 1.0), 0.0)


def momentum_tanh_update(xp: ModuleType, bias: Any, load: Any, velocity: Any, rate: Any,
                         momentum: Any, tanh_scale: Any, share: Any = None
                         ) -> tuple[Any, Any]:
    """SMEBU-like law: tanh soft clamp of the relative error, momentum, centring.

    ``v = beta v + (1 - beta) tanh(e / s)`` with ``e = (c_bar - c) / c_bar``
    and ``s = tanh_scale``; ``d = u v``; ``b += d - mean(d)``. Near balance the
    gain is ``u / s`` per unit of relative error; far from it each step is at
    most ``u``. SMEBU writes the clamp ``tanh(kappa e)``: ``tanh_scale`` is
    ``1 / kappa``, so its published constants (lambda = 5e-4, beta = 0.5,
    kappa = 2) are ``rate = 5e-4``, ``momentum = 0.5``, ``tanh_scale = 0.5``.
    Returns ``(bias, velocity)``.

    Examples
    --------
    Relative errors (-0.6, -0.2, 0.2, 0.6) through ``tanh(e / 0.5)`` are
    (-0.8337, -0.3799, 0.3799, 0.8337); momentum 0.5 halves them:

    >>> import numpy as np
    >>> b, v = momentum_tanh_update(np, np.zeros(4), np.array([40., 30., 20., 10.]),
    ...                             np.zeros(4), 0.01, 0.5, 0.5)
    >>> np.round(v, 4).tolist()
    [-0.4168, -0.19, 0.19, 0.4168]
    >>> np.round(b, 6).tolist()
    [-0.004168, -0.0019, 0.0019, 0.004168]
    """
    load = xp.astype(load, bias.dtype)
    mean = _mean(xp, load)
    err = xp.where(mean > 0, (target_load(xp, load, share) - load)
                   / xp.where(mean > 0, mean, 1.0), 0.0)
    velocity = momentum * velocity + (1.0 - momentum) * xp.tanh(err / tanh_scale)
    delta = rate * velocity
    return bias + (delta - _mean(xp, delta)), velocity


def quantile_update(xp: ModuleType, bias: Any, estimate: Any, ema: Any) -> Any:
    """Quantile balancing: blend the dual estimate into the bias, then re-centre.

    Examples
    --------
    ``0.5 b + 0.5 b_hat = (0.25, 0, -0.1, 0.05)``, whose mean 0.05 is removed:

    >>> import numpy as np
    >>> b = quantile_update(np, np.array([0.1, 0.0, 0.0, -0.1]),
    ...                     np.array([0.4, 0.0, -0.2, 0.2]), 0.5)
    >>> np.round(b, 12).tolist()
    [0.2, -0.05, -0.15, 0.0]
    """
    new = ema * bias + (1.0 - ema) * estimate
    return new - _mean(xp, new)


# ----------------------------------------------------------------------------
# The common signature: law(xp, bias, load, memory, params) -> (bias, memory)
# ----------------------------------------------------------------------------
# The plain functions are looked up at call time (module globals), so that a
# test may swap one of them.
def _sign(xp: ModuleType, bias: Any, load: Any, memory: Any,
          params: Mapping[str, Any]) -> tuple[Any, Any]:
    return sign_update(xp, bias, load, params["bias_update_rate"],
                       params.get("target_share")), memory


def _sign_centred(xp: ModuleType, bias: Any, load: Any, memory: Any,
                  params: Mapping[str, Any]) -> tuple[Any, Any]:
    return sign_centred_update(xp, bias, load, params["bias_update_rate"],
                               params.get("target_share")), memory


def _proportional(xp: ModuleType, bias: Any, load: Any, memory: Any,
                  params: Mapping[str, Any]) -> tuple[Any, Any]:
    return proportional_update(xp, bias, load, params["bias_update_rate"],
                               params.get("target_share")), memory


def _dual_ascent(xp: ModuleType, bias: Any, load: Any, memory: Any,
                 params: Mapping[str, Any]) -> tuple[Any, Any]:
    return dual_ascent_update(xp, bias, load, params["bias_update_rate"],
                              params.get("target_share")), memory


def _rms(xp: ModuleType, bias: Any, load: Any, memory: Any,
         params: Mapping[str, Any]) -> tuple[Any, Any]:
    return rms_update(xp, bias, load, params["bias_update_rate"],
                      params.get("target_share")), memory


def _ema(xp: ModuleType, bias: Any, load: Any, memory: Any,
         params: Mapping[str, Any]) -> tuple[Any, Any]:
    return ema_update(xp, bias, load, memory, params["bias_update_rate"], params["momentum"],
                      params["bias_cap"], params.get("target_share"))


def _momentum_tanh(xp: ModuleType, bias: Any, load: Any, memory: Any,
                   params: Mapping[str, Any]) -> tuple[Any, Any]:
    return momentum_tanh_update(xp, bias, load, memory, params["bias_update_rate"],
                                params["momentum"], params["tanh_scale"],
                                params.get("target_share"))


def _quantile(xp: ModuleType, bias: Any, load: Any, memory: Any,
              params: Mapping[str, Any]) -> tuple[Any, Any]:
    return quantile_update(xp, bias, params["dual_estimate"], params["quantile_ema"]), memory


def zero_budget_update(xp: ModuleType, bias: Any, load: Any, rate: Any, budget: Any,
                       zero: Any, topk: Any) -> Any:
    """LongCat-Flash's budget law for zero-computation experts (proportional on shares).

    The last ``Z`` experts are identity experts. The target share of the
    assignments is ``(budget / K) / (E - Z)`` for each FFN expert and
    ``(1 - budget / K) / Z`` for each zero expert, and
    ``b += rate * E * (target - share)``: the FFN experts are balanced among
    themselves while the mean number of FFN experts per token is steered to
    ``budget``.

    Examples
    --------
    Four FFN experts and two zero experts, K = 2, budget 1 (half of each
    token's choices to FFN experts): targets 1/8 and 1/4.

    >>> import numpy as np
    >>> load = np.array([30., 20., 20., 10., 10., 10.])          # shares 0.3 .. 0.1
    >>> b = zero_budget_update(np, np.zeros(6), load, 1.0, 1.0, 2.0, 2.0)
    >>> np.round(b, 12).tolist()
    [-1.05, -0.45, -0.45, 0.15, 0.9, 0.9]
    """
    n = bias.shape[-1]
    share = _fractions(xp, load, bias.dtype)
    index = xp.reshape(xp.arange(n, dtype=bias.dtype), (1,) * (bias.ndim - 1) + (n,))
    is_zero = index >= n - zero
    ffn = budget / topk
    target = xp.where(is_zero, (1.0 - ffn) / xp.where(zero > 0, zero, 1.0), ffn / (n - zero))
    return bias + rate * n * (target - share)


def _zero_budget(xp: ModuleType, bias: Any, load: Any, memory: Any,
                 params: Mapping[str, Any]) -> tuple[Any, Any]:
    return zero_budget_update(xp, bias, load, params["bias_update_rate"], params["ffn_budget"],
                              params["zero_experts"], params["topk"]), memory


_RATE = ("bias_update_rate",)
_Q = ("target_share",)
register("none", None, builtin=True)
register("sign", _sign, fields=_RATE, inputs=_Q, builtin=True)
register("sign_centred", _sign_centred, fields=_RATE, inputs=_Q, builtin=True)
register("proportional", _proportional, fields=_RATE, inputs=_Q, builtin=True)
register("ema", _ema, fields=_RATE + ("momentum", "bias_cap"), warmup=True, inputs=_Q,
         builtin=True)
register("rms", _rms, fields=_RATE, inputs=_Q, builtin=True)
register("momentum_tanh", _momentum_tanh, fields=_RATE + ("momentum", "tanh_scale"),
         warmup=True, inputs=_Q, builtin=True)
register("quantile", _quantile, fields=("quantile_ema",), bias_on_logits=True,
         inputs=("dual_estimate", "target_share"), builtin=True)
register("dual_ascent", _dual_ascent, fields=_RATE, inputs=_Q, builtin=True)
register("zero_budget", _zero_budget, fields=_RATE, inputs=("zero_experts", "topk"),
         params={"ffn_budget": Param(1.0, check=lambda v: v >= 0, allowed="must be >= 0")},
         builtin=True)
