"""Balance objectives ``phi(F)`` on the load distribution, and their registry.

Su Jianlin's recipe (MoE Tour, part 2) turns any balance objective written on
the load distribution ``F`` (``F_i``: share of the assignments that expert
``i`` receives, summing to 1) into an auxiliary loss: replace ``F`` by the
straight-through estimate ``P + sg[F - P]``, with ``P`` the mean router
probability (or the mean raw score ``E[rho]``). The forward value is
``phi(F)``; the gradient is ``sum_i (dphi / dF_i)(F) grad P_i``
(:func:`routesim.learning.balance_family.family_loss`).

An objective is a small object: its value ``phi(xp, F_GE, Q_E, temperature)``
(one value per leading index) and its derivative
``dphi(xp, F_GE, Q_E, temperature)`` (same shape as ``F``), with ``Q`` the
target distribution (uniform ``1/N`` by default, ``penalty.target``) and
``temperature`` the ``penalty.temperature`` (read by ``logsumexp`` only).
Built-ins, registered through the same door as a user's (:func:`register`):

===============  ======================================  ================================
``loss``         ``phi(F)``                              ``dphi / dF_i``
===============  ======================================  ================================
``switch``       ``sum_i F_i^2 / (2 Q_i)``, reported as  ``F_i / Q_i``
                 the dot product ``sum_i F_i P_i / Q_i``
                 (Switch/GShard ``N sum_i f_i P_i``)
``quadratic``    ``1/2 sum_i (F_i - Q_i)^2``             ``F_i - Q_i``
``entropy``      ``sum_i F_i log(F_i / Q_i)`` (KL; the   ``log(F_i / Q_i) + 1``
                 negative entropy plus a constant for
                 uniform ``Q``)
``l1``           ``sum_i |F_i - Q_i|``                   ``sign(F_i - Q_i)``
``logsumexp``    ``tau log sum_i exp(r_i / tau)``,       ``softmax(r / tau)_i / Q_i``
                 ``r_i = F_i / Q_i - 1`` (a smooth
                 ``max_i r_i``, i.e. MaxVio)
===============  ======================================  ================================

``entropy`` floors ``F`` at :data:`ENTROPY_FLOOR` (a dead expert has
``F_i = 0`` and ``log 0`` is infinite). ``switch`` is *linear*: its reported
value is ``sum_i sg[dphi/dF_i] P_i``, the first-order form whose gradient is
the same as the straight-through one (:attr:`BalanceObjective.linear`).

This module sits below :mod:`routesim.config`, which validates
``penalty.loss`` against it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

__all__ = ["BalanceObjective", "register", "unregister", "registered", "get_objective",
           "registered_temporarily", "import_objective_module", "ENTROPY_FLOOR"]

#: Floor of ``F`` inside the entropy loss's logarithm.
ENTROPY_FLOOR = 1e-9

Phi = Callable[[ModuleType, Any, Any, float], Any]


@dataclass(frozen=True)
class BalanceObjective:
    """A balance objective ``phi(F)`` and its derivative.

    Attributes
    ----------
    name : str
        The ``penalty.loss`` that selects it.
    phi : callable ``(xp, F_GE, Q_E, temperature) -> value (..., G)``
        The objective on load distributions ``F`` (last axis: experts).
    dphi : callable ``(xp, F_GE, Q_E, temperature) -> (..., G, E)``
        Its gradient with respect to ``F``.
    linear : bool
        Report ``sum_i sg[dphi/dF_i] P_i`` (the dot-product form) instead of
        ``phi(F)`` as the loss value; the gradient is the same.
    builtin : bool
        Shipped with routesim (cannot be replaced or removed).

    Examples
    --------
    >>> import numpy as np
    >>> quad = get_objective("quadratic")
    >>> F, Q = np.array([0.5, 0.25, 0.25]), np.full(3, 1 / 3)
    >>> round(float(quad.phi(np, F, Q, 1.0)), 6), quad.dphi(np, F, Q, 1.0).round(4).tolist()
    (0.020833, [0.1667, -0.0833, -0.0833])
    """

    name: str
    phi: Phi
    dphi: Phi
    linear: bool = False
    builtin: bool = False


_REGISTRY: dict[str, BalanceObjective] = {}


def register(name: str, phi: Phi, dphi: Phi, *, linear: bool = False, replace: bool = False,
             builtin: bool = False) -> BalanceObjective:
    """Register a balance objective under ``name`` (the ``penalty.loss`` that selects it).

    Parameters
    ----------
    name : str
        A Python identifier, not the name of a built-in objective.
    phi : callable
        ``phi(xp, F_GE, Q_E, temperature) -> array (..., G)``: array code on
        load distributions ``F`` of any leading shape (``xp`` the array
        namespace, ``Q`` the target, positive and summing to 1).
    dphi : callable
        ``dphi(xp, F_GE, Q_E, temperature) -> array (..., G, E)``: the
        gradient of ``phi`` with respect to ``F``.
    linear : bool
        Report the dot-product value ``sum_i dphi_i P_i`` instead of ``phi(F)``.
    replace : bool
        Replace a user objective already registered under ``name``.
    builtin : bool
        Protect the name (the package's own objectives are registered so).

    Returns
    -------
    BalanceObjective

    Raises
    ------
    ValueError
        On a bad name or a name already taken.

    Examples
    --------
    A squared-log objective ``1/2 sum_i log(F_i / Q_i)^2``:

    >>> def phi(xp, F, Q, tau):
    ...     return 0.5 * xp.sum(xp.log(F / Q) ** 2, axis=-1)
    >>> def dphi(xp, F, Q, tau):
    ...     return xp.log(F / Q) / F
    >>> spec = register("squared_log", phi, dphi)
    >>> "squared_log" in registered()
    True
    >>> unregister("squared_log")
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"balance objective name {name!r}: must be a Python identifier")
    if not (callable(phi) and callable(dphi)):
        raise ValueError(f"balance objective {name!r}: phi and dphi must be callables")
    old = _REGISTRY.get(name)
    if old is not None and (old.builtin or not replace) and not (
            old.phi is phi and old.dphi is dphi):
        raise ValueError(f"balance objective {name!r} is already registered"
                         + ("" if old.builtin else " (pass replace=True to replace it)"))
    spec = BalanceObjective(name=name, phi=phi, dphi=dphi, linear=linear, builtin=builtin)
    _REGISTRY[name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a user objective (built-ins cannot be removed).

    Parameters
    ----------
    name : str
        A registered user objective.

    Raises
    ------
    ValueError
        If it is not registered or is built in.

    Examples
    --------
    >>> unregister("quadratic")
    Traceback (most recent call last):
    ...
    ValueError: balance objective 'quadratic' is built in and cannot be removed
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"balance objective {name!r} is not registered")
    if spec.builtin:
        raise ValueError(f"balance objective {name!r} is built in and cannot be removed")
    del _REGISTRY[name]


def registered() -> tuple[str, ...]:
    """Names of the registered objectives, built-ins first.

    Returns
    -------
    tuple of str

    Examples
    --------
    >>> registered()[:5]
    ('switch', 'quadratic', 'entropy', 'l1', 'logsumexp')
    """
    return tuple(_REGISTRY)


def get_objective(name: str) -> BalanceObjective:
    """The objective registered under ``name``.

    Parameters
    ----------
    name : str
        A ``penalty.loss`` value.

    Returns
    -------
    BalanceObjective

    Raises
    ------
    ValueError
        If no objective is registered under ``name``.

    Examples
    --------
    >>> get_objective("switch").linear
    True
    >>> get_objective("kl")
    Traceback (most recent call last):
    ...
    ValueError: balance objective 'kl' is not registered (registered: 'switch', 'quadratic', 'entropy', 'l1', 'logsumexp')
    """
    spec = _REGISTRY.get(name)
    if spec is None:
        names = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"balance objective {name!r} is not registered (registered: {names})")
    return spec


@contextlib.contextmanager
def registered_temporarily(name: str, phi: Phi, dphi: Phi, **kwargs: Any
                           ) -> Iterator[BalanceObjective]:
    """Register an objective for the duration of a ``with`` block.

    Parameters
    ----------
    name, phi, dphi, **kwargs
        As for :func:`register`.

    Returns
    -------
    context manager yielding the BalanceObjective

    Examples
    --------
    >>> import numpy as np
    >>> with registered_temporarily("half_quad", lambda xp, F, Q, t: 0.25 * xp.sum(
    ...         (F - Q) ** 2, axis=-1), lambda xp, F, Q, t: 0.5 * (F - Q)) as spec:
    ...     spec.name in registered()
    True
    >>> "half_quad" in registered()
    False
    """
    spec = register(name, phi, dphi, **kwargs)
    try:
        yield spec
    finally:
        if _REGISTRY.get(name) is spec:
            del _REGISTRY[name]


#: Modules imported by :func:`import_objective_module`: key -> (module, names it registered).
_LOADED: dict[str, tuple[Any, tuple[str, ...]]] = {}


def import_objective_module(module: str) -> Any:
    """Import the module that registers an objective: a dotted name or a ``.py`` file path.

    Run once per process, and again only if an objective it registered has
    since been removed. ``penalty.module`` calls it when the config is read,
    so that spawned sweep workers, which rebuild the config, register the
    objective too.

    Parameters
    ----------
    module : str
        A dotted module name, or a path ending in ``.py``.

    Returns
    -------
    module
        The imported module.

    Examples
    --------
    >>> import_objective_module("routesim.penalty_registry").__name__
    'routesim.penalty_registry'
    """
    key = module if not module.endswith(".py") else str(Path(module).resolve())
    if key in _LOADED and all(n in _REGISTRY for n in _LOADED[key][1]):
        return _LOADED[key][0]
    before = set(_REGISTRY)
    if not module.endswith(".py"):
        mod = importlib.import_module(module)
        if key in _LOADED:
            mod = importlib.reload(mod)  # an objective it registered was removed
    else:
        if not Path(key).is_file():
            raise FileNotFoundError(f"no file {module!r}")
        mod_name = "routesim_objective_" + Path(key).stem
        spec = importlib.util.spec_from_file_location(mod_name, key)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = mod
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[mod_name]
            raise
    _LOADED[key] = (mod, tuple(sorted(set(_REGISTRY) - before)))
    return mod


# ----------------------------------------------------------------------------
# The built-in objectives
# ----------------------------------------------------------------------------
def _switch_phi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return 0.5 * xp.sum(F * F / Q, axis=-1)


def _switch_dphi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return F / Q


def _quadratic_phi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return 0.5 * xp.sum((F - Q) ** 2, axis=-1)


def _quadratic_dphi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return F - Q


def _entropy_phi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return xp.sum(F * xp.log(xp.maximum(F, ENTROPY_FLOOR) / Q), axis=-1)


def _entropy_dphi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return xp.log(xp.maximum(F, ENTROPY_FLOOR) / Q) + 1.0


def _l1_phi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return xp.sum(xp.abs(F - Q), axis=-1)


def _l1_dphi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    return xp.sign(F - Q)


def _lse_parts(xp: ModuleType, F: Any, Q: Any, tau: float) -> tuple[Any, Any, Any]:
    r = (F / Q - 1.0) / tau
    rmax = xp.max(r, axis=-1, keepdims=True)
    e = xp.exp(r - rmax)
    return rmax, e, xp.sum(e, axis=-1, keepdims=True)


def _lse_phi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    rmax, _, total = _lse_parts(xp, F, Q, tau)
    return tau * (rmax + xp.log(total))[..., 0]


def _lse_dphi(xp: ModuleType, F: Any, Q: Any, tau: float) -> Any:
    _, e, total = _lse_parts(xp, F, Q, tau)
    return e / total / Q


register("switch", _switch_phi, _switch_dphi, linear=True, builtin=True)
register("quadratic", _quadratic_phi, _quadratic_dphi, builtin=True)
register("entropy", _entropy_phi, _entropy_dphi, builtin=True)
register("l1", _l1_phi, _l1_dphi, builtin=True)
register("logsumexp", _lse_phi, _lse_dphi, builtin=True)
