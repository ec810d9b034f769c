"""routesim.analysis: a sweep's point axis as the grid's dimensions."""

import numpy as np
import pytest

from routesim import config_from_dict, simulate
from routesim.analysis import swept_keys, unstack_points

BASE = {"run": {"steps": 3, "replicas": 2}, "batch": {"num_sequences": 2, "seq_length": 16},
        "router": {"num_experts": 4, "topk": 1}}


def _sweep(mode="grid", **params):
    return simulate(config_from_dict({**BASE, "sweep": {"mode": mode, **params}}), progress=False)


def test_each_grid_cell_holds_the_point_with_those_settings():
    rates, scales = [1e-3, 1e-2], [0.5, 1.0, 2.0]
    ds = _sweep(**{"traffic.noise_scale": scales, "controller.bias_update_rate": rates})
    grid = unstack_points(ds)
    assert swept_keys(ds) == ["traffic.noise_scale", "controller.bias_update_rate"]
    assert grid["maxvio_batch"].dims == ("step", "replica", "traffic.noise_scale",
                                         "controller.bias_update_rate")
    # every flat point, found by its own coordinates, is the cell of the same settings
    for i in range(ds.sizes["point"]):
        one = ds.isel(point=i)
        cell = grid.sel({"traffic.noise_scale": float(one["traffic.noise_scale"]),
                         "controller.bias_update_rate": float(one["controller.bias_update_rate"])})
        np.testing.assert_array_equal(cell["expert_load"].values, one["expert_load"].values)
        np.testing.assert_array_equal(cell["bias"].values, one["bias"].values)


def test_unstacked_results_are_returned_unchanged():
    grid = unstack_points(_sweep(**{"controller.bias_update_rate": [1e-3, 1e-2]}))
    assert unstack_points(grid) is grid


@pytest.mark.parametrize("case, match", [
    ("zip", "only a 'grid'"), ("subset", "2 points of a 3-point grid"), ("none", "no swept")])
def test_what_has_no_grid_is_refused(case, match):
    if case == "zip":
        ds = _sweep("zip", **{"traffic.noise_scale": [0.5, 1.0],
                              "controller.bias_update_rate": [1e-3, 1e-2]})
    elif case == "subset":
        ds = _sweep(**{"traffic.noise_scale": [0.5, 1.0, 2.0]}).isel(point=[0, 2])
    else:
        ds = simulate(config_from_dict(BASE), progress=False)
    with pytest.raises(ValueError, match=match):
        unstack_points(ds)
