"""Errors by kind: each failure has its own class, a subclass of the matching builtin,
and a message that holds the values involved."""

from __future__ import annotations

import numpy as np
import pytest

import routesim
from routesim import (ConfigError, ResultsFileError, SolverError, UnstableLoopError)
from routesim.store import load
from routesim.theory import equilibrium, linear_plant, relay_cycle, steady_error_covariance


def test_solver_error_when_equilibrium_cannot_reach_tol():
    mu = np.array([1.0, 0.0, -1.0])
    with pytest.raises(SolverError) as info:
        equilibrium(mu, topk=1, max_iter=1, tol=1e-15)
    err = info.value
    assert isinstance(err, RuntimeError) and not isinstance(err, ValueError)
    assert "max_iter = 1" in str(err) and "1e-15" in str(err)


def test_solver_error_when_the_relay_loop_does_not_repeat_within_its_cap():
    plant = linear_plant(2.0 * (np.eye(2) - 0.5), [0.35, -0.35])
    with pytest.raises(SolverError, match=r"max_steps = 1 steps \(rate = 0.1,") as info:
        relay_cycle(plant, 0.1, np.zeros(2), max_steps=1)
    assert isinstance(info.value, RuntimeError) and not isinstance(info.value, ValueError)
    # with room the same loop settles into its period-2 cycle
    assert relay_cycle(plant, 0.1, np.zeros(2))["period"] == 2


def test_unstable_loop_error_names_rate_and_spectral_radius():
    # proportional law on a = I: the error mode moves by 1 - u * 1 per window,
    # so u = 3 gives a spectral radius |1 - 3| = 2 (hand computed)
    with pytest.raises(UnstableLoopError) as info:
        steady_error_covariance("proportional", 3.0, np.eye(2), np.eye(2))
    err = info.value
    assert isinstance(err, ArithmeticError) and not isinstance(err, ValueError)
    assert "rate = 3.0" in str(err) and "spectral radius 2 >= 1" in str(err)
    # u = 0.5: radius 0.5, stable, a stationary covariance exists
    assert np.all(np.isfinite(steady_error_covariance("proportional", 0.5, np.eye(2),
                                                      np.eye(2))))


def test_results_file_error_for_a_missing_file(tmp_path):
    path = tmp_path / "missing.nc"
    with pytest.raises(ResultsFileError) as info:
        load(path)
    err = info.value
    assert isinstance(err, OSError) and not isinstance(err, ValueError)
    assert str(path) in str(err) and "does not exist" in str(err)


def test_results_file_error_for_an_unreadable_file(tmp_path):
    path = tmp_path / "results.nc"
    path.write_bytes(b"not a netCDF file")
    with pytest.raises(ResultsFileError, match="cannot be read") as info:
        load(path)
    assert isinstance(info.value, OSError) and str(path) in str(info.value)


def test_argument_errors_stay_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"rate = -1.0"):
        relay_cycle(linear_plant(np.eye(2), [0.0, 0.0]), -1.0, np.zeros(2))
    with pytest.raises(ConfigError, match=r"must end in one of"):
        load(tmp_path / "results.txt")


def test_classes_are_exported():
    for name in ("SolverError", "UnstableLoopError", "ResultsFileError"):
        assert name in routesim.__all__ and getattr(routesim, name).__module__ == \
            "routesim.exceptions"
