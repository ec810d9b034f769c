"""routesim.analysis: a sweep's point axis as the grid's dimensions."""

import math
import statistics

import numpy as np
import scipy.stats
import xarray as xr
import pytest

from routesim import ConfigError, config_from_dict, simulate
from routesim.analysis import steady, swept_keys, unstack_points

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


# --- steady state ---------------------------------------------------------------------------

def _brute_force(x_SPR, steps, window, rtol=0.05, atol=0.0, z=3.0, confidence=0.95):
    """The criterion of routesim.analysis.steady, one point and replica at a time."""
    stride = int(steps[1] - steps[0])
    w = window // stride
    n = len(steps)
    nb = n // w
    lead = n - nb * w
    out = []
    for p in range(x_SPR.shape[1]):
        first = []
        for r in range(x_SPR.shape[2]):
            blocks = [x_SPR[lead + k * w: lead + (k + 1) * w, p, r] for k in range(nb)]
            final = statistics.fmean(blocks[-1])
            sd = statistics.stdev(blocks[-1]) if w > 1 else 0.0
            band = rtol * abs(final) + atol + z * sd * math.sqrt(2 / w)
            k = nb - 1
            while k > 0 and abs(statistics.fmean(blocks[k - 1]) - final) <= band:
                k -= 1
            first.append(k)
        k = max(first)
        start = lead + k * w
        means = [statistics.fmean(x_SPR[start:, p, r]) for r in range(x_SPR.shape[2])]
        low, high = scipy.stats.t.interval(confidence, len(means) - 1,
                                           loc=statistics.fmean(means),
                                           scale=scipy.stats.sem(means))
        out.append({"settled_step": int(steps[start]), "settled": nb - k >= 2,
                    "mean": statistics.fmean(means), "ci_low": low, "ci_high": high})
    return out


def _hand_built(noise=0.01, seed=0):
    """100 steps, 3 points, 3 replicas: a level of 5 until a known step, then 1 (plus noise).

    Point 0: replicas leave the transient at steps 37, 52 and 20, so with blocks of 10 steps
    counted from the end, the point settles at step 60 (block 50-59 still holds two steps at 5).
    Point 1: settled from the start. Point 2: still moving in the last blocks (never settles).
    """
    rng = np.random.default_rng(seed)
    s = np.arange(100)[:, None]
    x = np.empty((100, 3, 3))
    x[:, 0, :] = np.where(s < np.array([37, 52, 20]), 5.0, 1.0)
    x[:, 1, :] = 2.0
    x[:, 2, :] = np.where(s < np.array([85, 88, 92]), 4.0, 1.0)
    x += noise * rng.uniform(-1, 1, x.shape)
    return xr.Dataset({"cv": (("step", "point", "replica"), x)},
                      coords={"step": np.arange(100), "label": ("point", ["a", "b", "c"])})


def test_steady_finds_the_known_settling_step_and_matches_a_brute_force_loop():
    ds = _hand_built()
    st = steady(ds, "cv", window=10)
    assert st["settled_step"].values.tolist() == [60, 0, 90]
    assert st["settled"].values.tolist() == [True, True, False]
    ref = _brute_force(ds["cv"].values, ds["step"].values, 10)
    for p, want in enumerate(ref):
        assert int(st["settled_step"][p]) == want["settled_step"]
        assert bool(st["settled"][p]) == want["settled"]
        if want["settled"]:
            for key in ("mean", "ci_low", "ci_high"):
                assert float(st[key][p]) == pytest.approx(want[key], rel=1e-12)
        else:  # flagged: no steady value
            assert np.isnan(st["mean"][p]) and np.isnan(st["ci_low"][p])
    assert float(st["mean"][0]) == pytest.approx(1.0, abs=0.01)
    assert st.attrs["window"] == 10 and "final block" in st.attrs["criterion"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steady_on_noisy_series_matches_the_brute_force_loop(seed):
    # noise comparable to the band: the blocks near the tolerance are decided the same way
    ds = _hand_built(noise=0.5, seed=seed).isel(step=slice(3, None))  # a leading remainder
    st = steady(ds, "cv", window=7, rtol=0.02, z=1.0)
    ref = _brute_force(ds["cv"].values, ds["step"].values, 7, rtol=0.02, z=1.0)
    assert st["settled_step"].values.tolist() == [r["settled_step"] for r in ref]
    for p, want in enumerate(ref):
        if want["settled"]:
            assert float(st["ci_high"][p]) == pytest.approx(want["ci_high"], rel=1e-12)


def test_steady_interval_is_students_t_across_replicas():
    x = np.ones((20, 1, 4)) * np.array([1.0, 2.0, 4.0, 7.0])  # constant per replica
    ds = xr.Dataset({"cv": (("step", "point", "replica"), x)}, coords={"step": np.arange(20)})
    st = steady(ds, "cv", window=5, confidence=0.9)
    low, high = scipy.stats.t.interval(0.9, 3, loc=3.5, scale=np.std([1, 2, 4, 7], ddof=1) / 2)
    assert float(st["mean"][0]) == 3.5 and int(st["settled_step"][0]) == 0
    assert (float(st["ci_low"][0]), float(st["ci_high"][0])) == pytest.approx((low, high))


def test_steady_takes_flat_or_unstacked_and_thinned_results():
    cfg = config_from_dict({**BASE, "run": {"steps": 40, "replicas": 3},
                            "sweep": {"traffic.noise_scale": [0.5, 1.0],
                                      "controller.bias_update_rate": [1e-3, 1e-2]}})
    ds = simulate(cfg, progress=False)
    flat = steady(ds, "maxvio_batch", window=10)
    grid = steady(unstack_points(ds), "maxvio_batch", window=10)
    for i in range(ds.sizes["point"]):
        cell = grid.sel({"traffic.noise_scale": float(ds["traffic.noise_scale"][i]),
                         "controller.bias_update_rate":
                             float(ds["controller.bias_update_rate"][i])})
        for key in ("mean", "settled_step", "settled"):
            np.testing.assert_array_equal(cell[key].values, flat[key].values[i])
    # every 5th step: blocks of 10 steps are 2 samples; the same as thinning by hand
    thinned = simulate(cfg.replace(**{"run.record_every": 5}), progress=False)
    by_hand = ds.isel(step=slice(None, None, 5))
    xr.testing.assert_identical(steady(thinned, "maxvio_batch", window=10),
                                steady(by_hand, "maxvio_batch", window=10))
    with pytest.raises(ValueError, match="window = 7: must be a multiple"):
        steady(thinned, "maxvio_batch", window=7)
    with pytest.raises(ValueError, match="variable = 'maxvio_global_run'"):
        steady(ds, "maxvio_global_run")
    with pytest.raises(ConfigError, match=r"confidence = 1.0: must be in \(0, 1\)"):
        steady(ds, "maxvio_batch", confidence=1.0)
    with pytest.raises(ConfigError, match="rtol = -0.1: must be >= 0"):
        steady(ds, "maxvio_batch", rtol=-0.1)


def test_maxvio_plot_draws_the_same_lines_from_flat_or_unstacked_results():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from routesim.plot import maxvio_plot

    ds = _sweep(**{"traffic.noise_scale": [0.5, 1.0], "controller.bias_update_rate": [1e-3, 1e-2]})
    flat, grid = maxvio_plot(ds, smooth=1), maxvio_plot(unstack_points(ds), smooth=1)
    assert [ln.get_label() for ln in grid.lines] == list(ds["label"].values)
    for a, b in zip(flat.lines, grid.lines):
        np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
    plt.close("all")
