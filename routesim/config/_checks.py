"""Field checking shared by every config section: types, ranges, messages."""

from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import fields
from typing import Any, Literal

from ..exceptions import ConfigError

__all__ = ["DATACLASS", "check_types", "require", "positive"]

DATACLASS = dict(frozen=True, kw_only=True, slots=True)


# ----------------------------------------------------------------------------
# Generic field checking
# ----------------------------------------------------------------------------
def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a list of {_describe(args[0])}"
    if hint is type(None):
        return "none (omit the key)"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        hint, str(hint)
    )


@functools.cache
def _parts(hint: Any) -> tuple[Any, tuple]:
    """``(origin, args)`` of a type hint (worked out once per hint)."""
    return typing.get_origin(hint), typing.get_args(hint)


_PLAIN = {bool: (bool,), str: (str,)}


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Return ``value`` checked (and lightly converted) against a type hint."""
    plain = _PLAIN.get(hint) if type(hint) is type else None
    if plain is not None and isinstance(value, plain):  # the common case, quickly
        return value
    if hint is int and type(value) is int:
        return value
    if hint is float and type(value) is float and value == value:
        return value
    origin, args = _parts(hint)
    def bad() -> ConfigError:  # the message is written only when refused
        return ConfigError(f"{path} = {value!r}: must be {_describe(hint)}")

    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _coerce(path, value, arg)
            except ConfigError:
                continue
        raise bad()
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise bad()
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        return tuple(_coerce(f"{path}[{i}]", v, args[0]) for i, v in enumerate(value))
    if hint is type(None):
        if value is None:
            return None
        raise bad()
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = float(value)
            if math.isnan(value):
                raise ConfigError(f"{path} = nan: must be a number, not NaN")
            return value
        raise bad()
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad()
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a config class (resolved once per class)."""
    return typing.get_type_hints(cls)


def check_types(obj: Any, section: str) -> None:
    """Check and coerce every field of a config dataclass against its annotation.

    Parameters
    ----------
    obj : dataclass instance
        The section; coerced values (an int where a float is declared) are
        written back in place, which is why this runs in ``__post_init__``.
    section : str
        Section name used in messages (``router``).

    Raises
    ------
    ConfigError
        Naming ``section.field``, the value and the type allowed.

    Examples
    --------
    >>> from routesim.config import RouterConfig
    >>> RouterConfig(topk="2")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: router.topk = '2': must be an integer
    """
    hints = _type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        checked = _coerce(f"{section}.{f.name}", value, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def require(cond: bool, path: str, value: Any, allowed: str) -> None:
    """Raise the one-line ConfigError ``path = value: allowed`` unless ``cond`` holds.

    Parameters
    ----------
    cond : bool
        The check.
    path : str
        Dotted field name.
    value : object
        The value given.
    allowed : str
        What is allowed, as the end of the message.

    Examples
    --------
    >>> require(3 > 0, "run.steps", 3, "must be >= 1")
    >>> require(0 > 0, "run.steps", 0, "must be an integer >= 1")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: run.steps = 0: must be an integer >= 1
    """
    if not cond:
        raise ConfigError(f"{path} = {value!r}: {allowed}")


def positive(obj: Any, section: str, *names: str, allow_zero: bool = False) -> None:
    """Require the named fields of ``obj`` to be finite and > 0 (or >= 0); None passes.

    Parameters
    ----------
    obj : object
        The section.
    section : str
        Section name used in messages.
    *names : str
        Fields to check.
    allow_zero : bool
        Accept 0 as well.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> positive(SimpleNamespace(rate=0.0), "controller", "rate", allow_zero=True)
    >>> positive(SimpleNamespace(rate=float("inf")), "controller", "rate")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: controller.rate = inf: must be a finite number > 0
    """
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if allow_zero:
            require(value >= 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number >= 0")
        else:
            require(value > 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number > 0")
