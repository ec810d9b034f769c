"""Exceptions raised by routesim, one class per kind of failure.

Each subclasses the matching builtin, so that callers who catch
``ValueError``, ``TypeError``, ``FloatingPointError``, ``RuntimeError``,
``ArithmeticError`` or ``OSError`` keep working. Every message names the
values involved.

=====================  ======================  ==========================================
class                  builtin                 raised for
=====================  ======================  ==========================================
``ConfigError``        ``ValueError``          an invalid configuration field or argument
``ResourceError``      ``ConfigError``         a run beyond the memory or work allowed
``BackendError``       ``TypeError``           an array backend that cannot be used here
``NumericalFault``     ``FloatingPointError``  NaN or Inf in an engine's state
``SolverError``        ``RuntimeError``        a solver or search that did not converge
``UnstableLoopError``  ``ArithmeticError``     a steady state asked of an unstable loop
``ResultsFileError``   ``OSError``             a results file missing or unreadable
=====================  ======================  ==========================================
"""

__all__ = [
    "ConfigError",
    "BackendError",
    "ResourceError",
    "NumericalFault",
    "SolverError",
    "UnstableLoopError",
    "ResultsFileError",
]


class ConfigError(ValueError):
    """Invalid configuration or argument.

    The message always names the field (as a dotted path such as
    ``router.topk``), the value that was given and what is allowed.

    Examples
    --------
    >>> from routesim.config import RouterConfig
    >>> RouterConfig(topk=0)
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: router.topk = 0: must be an integer in [1, router.num_experts) = [1, 64)
    """


class BackendError(TypeError):
    """An array backend was asked for that cannot be used here.

    Examples
    --------
    >>> from routesim._backend import get_namespace
    >>> get_namespace("torch")
    Traceback (most recent call last):
    ...
    routesim.exceptions.BackendError: backend = 'torch': must be one of numpy, cupy, array_api_strict
    """


class ResourceError(ConfigError):
    """A run whose estimated memory or work is beyond what is allowed.

    Raised before any allocation (:func:`routesim.resources.check`); the
    message names the fields that drive the estimate and the estimate.

    Examples
    --------
    >>> issubclass(ResourceError, ConfigError)
    True
    """


class NumericalFault(FloatingPointError):
    """A non-finite value (NaN or Inf) appeared in an engine's state.

    Raised at the end of the first step that produced it
    (:mod:`routesim.faults`); the one-line message names the step, the point
    label, the variable and its likely cause.

    Examples
    --------
    >>> issubclass(NumericalFault, FloatingPointError)
    True
    """


class SolverError(RuntimeError):
    """A solver or search did not converge within its iteration cap.

    The message names the solver, its cap and how far it got (for example
    :func:`routesim.theory.equilibrium` and its residual).

    Examples
    --------
    >>> import numpy as np
    >>> from routesim.theory import linear_plant, relay_cycle
    >>> plant = linear_plant(2.0 * (np.eye(2) - 0.5), [0.35, -0.35])
    >>> relay_cycle(plant, 0.1, np.zeros(2), max_steps=1)
    Traceback (most recent call last):
    ...
    routesim.exceptions.SolverError: relay_cycle: the sign loop did not repeat a state within max_steps = 1 steps (rate = 0.1, centred = False); raise max_steps
    """


class UnstableLoopError(ArithmeticError):
    """A stationary quantity was asked of a control loop that is unstable.

    The message names the rate and the loop's spectral radius (>= 1).

    Examples
    --------
    >>> import numpy as np
    >>> from routesim.theory import steady_error_covariance
    >>> steady_error_covariance("proportional", 3.0, np.eye(2), np.eye(2))
    Traceback (most recent call last):
    ...
    routesim.exceptions.UnstableLoopError: rate = 3.0: the loop is unstable (spectral radius 2 >= 1), no stationary state
    """


class ResultsFileError(OSError):
    """A results file that does not exist or cannot be read.

    The message names the path (and the reader's own error).

    Examples
    --------
    >>> from routesim.store import load
    >>> load("/nonexistent/results.nc")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ResultsFileError: results path '/nonexistent/results.nc': does not exist
    """
