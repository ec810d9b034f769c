"""Field checking shared by every config section: types, ranges, messages."""

from __future__ import annotations

import functools
import math
import types
import typing
from dataclasses import fields
from typing import Any, Literal

from ..exceptions import ConfigError

_DATACLASS = dict(frozen=True, kw_only=True, slots=True)


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


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Return ``value`` checked (and lightly converted) against a type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
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


def _check_types(obj: Any, section: str) -> None:
    hints = _type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        checked = _coerce(f"{section}.{f.name}", value, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)


def _require(cond: bool, path: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(f"{path} = {value!r}: {allowed}")


def _positive(obj: Any, section: str, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value is None:
            continue
        if allow_zero:
            _require(value >= 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number >= 0")
        else:
            _require(value > 0 and math.isfinite(value), f"{section}.{name}", value,
                     "must be a finite number > 0")
