"""Shared fixtures: hypothesis profiles, backends, figure clean-up."""

import os

import matplotlib
import numpy as np
import pytest
from hypothesis import settings

import routesim.testing  # noqa: F401  (registers the hypothesis profiles ci and dev)

matplotlib.use("Agg")

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(params=["numpy", "array_api_strict"])
def xp(request):
    """Each array namespace the shared code must run on."""
    if request.param == "numpy":
        return np
    return pytest.importorskip("array_api_strict")


@pytest.fixture(autouse=True)
def mplcleanup():
    """Close every figure a test opened."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="session", autouse=True)
def plot_defaults_unchanged():
    """No test may leave the plot defaults modified."""
    from routesim.plot import defaults

    before = dict(defaults)
    yield
    assert defaults == before
