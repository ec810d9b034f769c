"""The ``routesim`` pytest plugin: routesim's reference stability suite against your law.

Installed with the package (entry point ``pytest11: routesim``). Register a
law in a module of your own, then run the reference suite against it::

    pytest --pyargs routesim.testing.reference \\
        --routesim-module mypkg.laws --routesim-law my_law --routesim-rate 0.05

or set ``routesim_law``, ``routesim_module``, ``routesim_rate`` and
``routesim_params`` (``name=value`` pairs) in the ``[pytest]`` ini section.
Without a law the suite runs against the built-in ``proportional`` law at
rate 0.1, which is how routesim's own test run checks the suite itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pytest

__all__ = ["LawUnderTest", "law_under_test"]

#: The law the reference suite checks when none is given.
DEFAULT_LAW, DEFAULT_RATE = "proportional", 0.1


@dataclass(frozen=True)
class LawUnderTest:
    """The law the reference suite checks.

    Attributes
    ----------
    name : str
        A registered law (``routesim.controllers.registered()``).
    rate : float > 0
        ``controller.bias_update_rate``.
    params : mapping of str to float
        Other controller fields and the law's own registered parameters.
    module : str or None
        The module (dotted name or ``.py`` path) that registers the law.

    Examples
    --------
    >>> LawUnderTest("sign", 0.01).name
    'sign'
    """

    name: str
    rate: float
    params: Mapping[str, float] = field(default_factory=dict)
    module: str | None = None


def _parse_params(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in text.replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep:
            raise pytest.UsageError(f"--routesim-params: {item!r} is not name=value")
        try:
            out[key] = float(value)
        except ValueError:
            raise pytest.UsageError(f"--routesim-params: {key} = {value!r} is not a number") \
                from None
    return out


def law_under_test(config: Any) -> LawUnderTest:
    """Read the law from the command line or the ini file (the default if neither names one).

    Parameters
    ----------
    config : pytest.Config

    Returns
    -------
    LawUnderTest

    Examples
    --------
    >>> class Options:
    ...     def getoption(self, name): return None
    ...     def getini(self, name): return ""
    >>> law_under_test(Options())
    LawUnderTest(name='proportional', rate=0.1, params={}, module=None)
    """
    def option(name: str) -> Any:
        value = config.getoption(f"--routesim-{name}")
        return value if value is not None else (config.getini(f"routesim_{name}") or None)

    name = option("law") or DEFAULT_LAW
    rate = option("rate")
    try:
        rate = float(rate) if rate is not None else DEFAULT_RATE
    except ValueError:
        raise pytest.UsageError(f"--routesim-rate = {rate!r}: must be a number > 0") from None
    if not rate > 0:
        raise pytest.UsageError(f"--routesim-rate = {rate!r}: must be a number > 0")
    return LawUnderTest(name=name, rate=rate, params=_parse_params(option("params") or ""),
                        module=option("module"))


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("routesim", "routesim reference stability suite")
    group.addoption("--routesim-law", default=None, help="registered law to check")
    group.addoption("--routesim-module", default=None,
                    help="module (dotted name or .py path) that registers the law")
    group.addoption("--routesim-rate", default=None, help="controller.bias_update_rate")
    group.addoption("--routesim-params", default=None,
                    help="other parameters as name=value pairs, e.g. 'ki=0.01 momentum=0.5'")
    for name, text in (("law", "registered law to check"), ("module", "module registering it"),
                       ("rate", "bias_update_rate"), ("params", "name=value pairs")):
        parser.addini(f"routesim_{name}", text, default="")


def pytest_configure(config: Any) -> None:
    law = law_under_test(config)
    if law.module:
        from routesim.controllers import import_law_module  # noqa: PLC0415 (only when asked)

        import_law_module(law.module)


@pytest.fixture(scope="session")
def routesim_law(pytestconfig: Any) -> LawUnderTest:
    """The law under test (``--routesim-law``; ``proportional`` at 0.1 by default)."""
    from routesim import controllers  # noqa: PLC0415

    law = law_under_test(pytestconfig)
    if law.name not in controllers.registered():
        pytest.fail(f"--routesim-law = {law.name!r}: not a registered law; registered: "
                    + ", ".join(controllers.registered())
                    + " (name the module that registers it with --routesim-module)")
    return law
