"""Exceptions raised by routesim.

Both subclass a builtin so that callers who catch ``ValueError`` or
``TypeError`` keep working.
"""

__all__ = ["ConfigError", "BackendError"]


class ConfigError(ValueError):
    """Invalid configuration or argument.

    The message always names the field (as a dotted path such as
    ``router.topk``), the value that was given and what is allowed.
    """


class BackendError(TypeError):
    """An array backend was asked for that cannot be used here."""
