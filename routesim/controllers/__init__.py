"""Bias controllers: pure update laws behind one signature and a public registry.

Every law, built-in or a user's, has the signature::

    law(xp, bias_PRE, load_PRE, memory_PRE, params) -> (bias_PRE, memory_PRE)

and is selected by ``controller.type``. :func:`register` adds a law (with
its parameters, set in ``[controller.params]`` and sweepable as
``controller.params.NAME``); the built-in laws (``none``, ``sign``,
``sign_centred``, ``proportional``, ``ema``, ``rms``, ``momentum_tanh``,
``quantile``, ``dual_ascent``; formulas in :mod:`routesim.controllers.laws`) register through
the same door. :func:`update_bias` applies each point's law at the end of a
window, in every engine. See docs/controllers.md.

Modules: ``registry`` (register, the law records), ``laws`` (the built-in
laws), ``dispatch`` (per-point parameters, :func:`update_bias`),
``schedules`` (rate schedules).
"""

from . import laws  # noqa: F401  (registers the built-in laws)
from .dispatch import ControllerParams, LawParams, make_controller_params, update_bias
from .laws import (
    dual_ascent_update,
    ema_update,
    momentum_tanh_update,
    proportional_update,
    quantile_update,
    rms_update,
    sign_centred_update,
    sign_update,
)
from .schedules import RateSchedule, rate_factor
from .registry import (
    ControllerLaw,
    Param,
    get_law,
    import_law_module,
    register,
    registered,
    registered_temporarily,
    unregister,
)

__all__ = [
    "register",
    "unregister",
    "registered",
    "registered_temporarily",
    "get_law",
    "import_law_module",
    "Param",
    "ControllerLaw",
    "LawParams",
    "ControllerParams",
    "make_controller_params",
    "update_bias",
    "sign_update",
    "sign_centred_update",
    "proportional_update",
    "ema_update",
    "rms_update",
    "momentum_tanh_update",
    "quantile_update",
    "dual_ascent_update",
    "RateSchedule",
    "rate_factor",
]
