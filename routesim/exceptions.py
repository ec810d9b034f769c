"""Exceptions raised by routesim.

Each subclasses a builtin so that callers who catch ``ValueError``,
``TypeError`` or ``FloatingPointError`` keep working.
"""

__all__ = ["ConfigError", "BackendError", "ResourceError", "NumericalFault"]


class ConfigError(ValueError):
    """Invalid configuration or argument.

    The message always names the field (as a dotted path such as
    ``router.topk``), the value that was given and what is allowed.
    """


class BackendError(TypeError):
    """An array backend was asked for that cannot be used here."""


class ResourceError(ConfigError):
    """A run whose estimated memory or work is beyond what is allowed.

    Raised before any allocation (:func:`routesim.resources.check`); the
    message names the fields that drive the estimate and the estimate.
    """


class NumericalFault(FloatingPointError):
    """A non-finite value (NaN or Inf) appeared in an engine's state.

    Raised at the end of the first step that produced it
    (:mod:`routesim.faults`); the one-line message names the step, the point
    label, the variable and its likely cause.
    """
