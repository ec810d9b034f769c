"""The registry of controller laws: one door for the built-in laws and users' own.

A law is a pure function with one signature::

    law(xp, bias_PRE, load_PRE, memory_PRE, params) -> (bias_PRE, memory_PRE)

``params`` maps each parameter name to a per-point array of shape (P, 1, 1)
(in the bias dtype), and each declared input (``"dual_estimate"``) to its
(P, R, E) array. :func:`register` records the law with what the config and
the engines need to know about it: its parameters (defaults and checks),
the :class:`~routesim.config.ControllerConfig` fields it reads, whether
``controller.warmup_steps`` holds it, whether its bias acts on the logits,
and its inputs.

This module sits below :mod:`routesim.config`: the config validates
``controller.type`` and ``controller.params`` against it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

__all__ = ["Param", "ControllerLaw", "register", "unregister", "registered", "get_law",
           "registered_temporarily", "import_law_module", "INPUTS", "CONFIG_FIELDS"]

#: Inputs a law may declare, besides bias, loads and memory: the window's
#: quantile dual estimate and the target load shares ``Q`` (P, 1, E), None
#: when every point's targets are uniform.
INPUTS = ("dual_estimate", "target_share", "zero_experts", "topk")

#: ControllerConfig fields a law may read (by their own names in ``params``).
CONFIG_FIELDS = ("bias_update_rate", "momentum", "bias_cap", "warmup_steps", "tanh_scale",
                 "quantile_ema")

Law = Callable[..., "tuple[Any, Any]"]


@dataclass(frozen=True)
class Param:
    """One parameter of a law in ``controller.params``: default and check.

    Attributes
    ----------
    default : float
        Value when the config does not set it.
    check : callable float -> bool, optional
        True when a value is allowed (the value is always a finite number).
    allowed : str
        What ``check`` allows, for the error message ("must be >= 0").

    Examples
    --------
    >>> p = Param(0.1, check=lambda v: v >= 0, allowed="must be >= 0")
    >>> p.problem(-1.0), p.problem(0.5)
    ('must be >= 0', None)
    """

    default: float
    check: Callable[[float], bool] | None = None
    allowed: str = "must be a finite number"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (None when it is allowed)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if not math.isfinite(value):
            return "must be a finite number"
        if self.check is not None and not self.check(float(value)):
            return self.allowed
        return None


@dataclass(frozen=True)
class ControllerLaw:
    """A registered law and what the config and the engines need to know about it.

    Attributes
    ----------
    name : str
        The ``controller.type`` that selects it.
    law : callable or None
        ``law(xp, bias_PRE, load_PRE, memory_PRE, params) -> (bias, memory)``;
        None for ``"none"`` (no update, no window).
    params : mapping of str to Param
        Its parameters in ``controller.params``.
    fields : tuple of str
        The ControllerConfig fields it reads (see :data:`CONFIG_FIELDS`).
    warmup : bool
        ``controller.warmup_steps`` windows pass without update.
    bias_on_logits : bool
        The bias is added to the logits, not to the gate scores.
    inputs : tuple of str
        Extra inputs (see :data:`INPUTS`).
    builtin : bool
        Shipped with routesim (cannot be replaced or removed).

    Examples
    --------
    >>> law = get_law("ema")
    >>> law.fields, law.warmup
    (('bias_update_rate', 'momentum', 'bias_cap'), True)
    >>> sorted(law.uses - set(law.fields))
    ['update_every', 'warmup_steps', 'window']
    """

    name: str
    law: Law | None
    params: Mapping[str, Param] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    warmup: bool = False
    bias_on_logits: bool = False
    inputs: tuple[str, ...] = ()
    builtin: bool = False

    @property
    def uses(self) -> frozenset[str]:
        """ControllerConfig fields and ``params.NAME`` entries this law reads."""
        window = ("window", "update_every") if self.law is not None else ()
        return frozenset(self.fields + window + ("warmup_steps",) * self.warmup
                         + tuple(f"params.{n}" for n in self.params))

    @property
    def needs_dual_estimate(self) -> bool:
        """True if the law reads the window's quantile dual estimate."""
        return "dual_estimate" in self.inputs


_REGISTRY: dict[str, ControllerLaw] = {}


def _same_law(a: Law | None, b: Law | None) -> bool:
    """The same function, or the same definition executed again (a module re-run)."""
    if a is b:
        return True
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (code_a is not None and code_b is not None
            and getattr(a, "__qualname__", None) == getattr(b, "__qualname__", None)
            and code_a.co_filename == code_b.co_filename)


def register(name: str, law: Law | None, *, params: Mapping[str, float | Param] | None = None,
             fields: tuple[str, ...] = (), warmup: bool = False, bias_on_logits: bool = False,
             inputs: tuple[str, ...] = (), replace: bool = False,
             builtin: bool = False) -> ControllerLaw:
    """Register a controller law under ``name`` (the ``controller.type`` that selects it).

    Parameters
    ----------
    name : str
        A Python identifier, not the name of a built-in law.
    law : callable
        ``law(xp, bias_PRE, load_PRE, memory_PRE, params) -> (bias_PRE,
        memory_PRE)``: array code over all points at once (``xp`` is the
        array namespace; ``params[NAME]`` has shape (P, 1, 1)). The memory
        (same shape as the bias) starts at 0. It must not mutate its inputs.
    params : dict of str to float or Param, optional
        Its parameters, set in ``[controller.params]`` and sweepable as
        ``controller.params.NAME``; a float is a default with no check.
    fields : tuple of str
        ControllerConfig fields the law reads, under their own names in
        ``params`` (e.g. ``("bias_update_rate",)``); see :data:`CONFIG_FIELDS`.
    warmup : bool
        Hold the law for the first ``controller.warmup_steps`` windows.
    bias_on_logits : bool
        The bias is added to the logits (as quantile balancing does).
    inputs : tuple of str
        ``("dual_estimate",)`` gives ``params["dual_estimate"]``, the
        window's quantile dual estimate (P, R, E) (exact engine only);
        ``("target_share",)`` gives ``params["target_share"]``, the target
        load shares ``Q`` (P, 1, E), or None when all are uniform. Only a
        law that declares it may run with ``controller.target_shares``.
        ``"zero_experts"`` and ``"topk"`` give ``router.zero_experts`` and
        ``router.topk`` of each point, shaped (P, 1, 1).
    replace : bool
        Replace a different law registered under the same name (registering
        the same function again always does).
    builtin : bool
        Protect the name from replacement and removal (the package's own
        laws are registered so).

    Returns
    -------
    ControllerLaw

    Raises
    ------
    ValueError
        On a bad name, parameter, field or input, or a name already taken.

    Examples
    --------
    >>> def damped_sign(xp, bias, load, memory, params):
    ...     mean = xp.mean(xp.astype(load, bias.dtype), axis=-1, keepdims=True)
    ...     return bias + params["gain"] * xp.sign(mean - load), memory
    >>> spec = register("damped_sign", damped_sign, params={"gain": 1e-3})
    >>> "damped_sign" in registered()
    True
    >>> unregister("damped_sign")
    """
    if not (isinstance(name, str) and name.isidentifier()):
        raise ValueError(f"controller name {name!r}: must be a Python identifier")
    if law is not None and not callable(law):
        raise ValueError(f"controller {name!r}: law = {law!r} must be callable")
    specs: dict[str, Param] = {}
    for key, value in (params or {}).items():
        if not (isinstance(key, str) and key.isidentifier()):
            raise ValueError(f"controller {name!r}: parameter name {key!r} must be an identifier")
        spec = value if isinstance(value, Param) else Param(value)
        why = spec.problem(spec.default)
        if why is not None:
            raise ValueError(f"controller {name!r}: default of {key} = {spec.default!r} {why}")
        specs[key] = spec
    for f in fields:
        if f not in CONFIG_FIELDS:
            raise ValueError(f"controller {name!r}: field {f!r} is not a controller field; "
                             f"allowed: {', '.join(CONFIG_FIELDS)}")
    for i in inputs:
        if i not in INPUTS:
            raise ValueError(f"controller {name!r}: input {i!r}; allowed: {', '.join(INPUTS)}")
    clash = set(specs) & (set(fields) | set(inputs))
    if clash:
        raise ValueError(f"controller {name!r}: parameter {sorted(clash)[0]!r} shadows a "
                         "controller field or input")
    old = _REGISTRY.get(name)
    if old is not None:
        if old.builtin:
            raise ValueError(f"controller {name!r}: a built-in law cannot be replaced; "
                             "choose another name")
        if not replace and not _same_law(old.law, law):
            raise ValueError(f"controller {name!r}: already registered (by {old.law!r}); "
                             "unregister it first or pass replace=True")
    entry = ControllerLaw(name=name, law=law, params=MappingProxyType(specs),
                          fields=tuple(fields), warmup=warmup, bias_on_logits=bias_on_logits,
                          inputs=tuple(inputs), builtin=builtin)
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a user law (a built-in one cannot be removed).

    Examples
    --------
    >>> unregister("sign")
    Traceback (most recent call last):
    ...
    ValueError: controller 'sign': a built-in law cannot be removed
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise KeyError(f"controller {name!r}: not registered; registered: "
                       + ", ".join(_REGISTRY))
    if entry.builtin:
        raise ValueError(f"controller {name!r}: a built-in law cannot be removed")
    del _REGISTRY[name]


def registered() -> tuple[str, ...]:
    """Names of the registered laws, built-in ones first, in registration order.

    Examples
    --------
    >>> registered()[:3]
    ('none', 'sign', 'sign_centred')
    """
    return tuple(_REGISTRY)


def get_law(name: str) -> ControllerLaw:
    """The registration of ``name``.

    Raises
    ------
    KeyError
        If ``name`` is not registered (the message lists those that are).

    Examples
    --------
    >>> get_law("quantile").bias_on_logits
    True
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"controller {name!r}: not registered; registered: "
                       + ", ".join(_REGISTRY)) from None


@contextlib.contextmanager
def registered_temporarily(name: str, law: Law, **kwargs: Any) -> Iterator[ControllerLaw]:
    """Register a law for the duration of a ``with`` block (tests, notebooks).

    Examples
    --------
    >>> def hold(xp, bias, load, memory, params):
    ...     return bias, memory
    >>> with registered_temporarily("hold", hold):
    ...     "hold" in registered()
    True
    >>> "hold" in registered()
    False
    """
    previous = _REGISTRY.get(name)
    entry = register(name, law, replace=True, **kwargs)
    try:
        yield entry
    finally:
        if previous is None:
            _REGISTRY.pop(name, None)
        else:
            _REGISTRY[name] = previous


_LOADED: dict[str, tuple[Any, tuple[str, ...]]] = {}


def import_law_module(module: str) -> Any:
    """Import the module that registers a law: a dotted name or a ``.py`` file path.

    A module is run once per process (relative paths from the working
    directory), and again only if a law it registered has since been
    unregistered. Spawned sweep workers rebuild the config, and so import
    it and register its laws too.

    Examples
    --------
    >>> import_law_module("routesim.controllers.laws").__name__
    'routesim.controllers.laws'
    """
    key = module if not module.endswith(".py") else str(Path(module).resolve())
    if key in _LOADED:
        mod, names = _LOADED[key]
        if all(n in _REGISTRY for n in names):
            return mod
    before = set(_REGISTRY)
    if not module.endswith(".py"):
        mod = importlib.import_module(module)
        if not set(_REGISTRY) - before and key in _LOADED:
            mod = importlib.reload(mod)  # a law it registered was removed: register again
    else:
        if not Path(key).is_file():
            raise FileNotFoundError(f"no file {module!r}")
        mod_name = "routesim_law_" + Path(key).stem
        spec = importlib.util.spec_from_file_location(mod_name, key)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod  # so that the law's functions pickle by reference
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[mod_name]
            raise
    _LOADED[key] = (mod, tuple(sorted(set(_REGISTRY) - before)))
    return mod
