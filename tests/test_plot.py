"""routesim.plot: result objects, refused keywords, and the numbers each plot draws."""

from __future__ import annotations

import inspect

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from routesim import config_from_dict, simulate
from routesim import plot
from routesim.analysis import unstack_points

PLOTS = [plot.timeseries_plot, plot.sweep_plot, plot.load_heatmap, plot.bias_plot,
         plot.stability_map, plot.limit_cycle_plot, plot.leakage_plot, plot.compute_batch_plot]


@pytest.fixture(scope="module")
def grid_ds():
    cfg = config_from_dict({
        "run": {"steps": 6, "replicas": 3, "seed": 5},
        "batch": {"num_sequences": 2, "seq_length": 32, "computation_batch_sizes": [1, 2]},
        "router": {"num_experts": 8, "topk": 2},
        "traffic": {"skew": "zipf"},
        "sweep": {"controller.bias_update_rate": [1e-3, 1e-2, 1e-1],
                  "traffic.noise_scale": [0.5, 1.0]}})
    return simulate(cfg, progress=False)


@pytest.mark.parametrize("fn", PLOTS, ids=lambda f: f.__name__)
def test_unknown_keyword_is_refused_by_name(fn):
    first = next(iter(inspect.signature(fn).parameters))
    with pytest.raises(TypeError, match="'colour'"):
        fn(**{first: None}, colour="red")


def test_bad_values_are_refused_naming_the_argument(grid_ds):
    with pytest.raises(ValueError, match="band = 'sd'"):
        plot.timeseries_plot(grid_ds, band="sd")
    with pytest.raises(ValueError, match="x = 'rate'"):
        plot.sweep_plot(grid_ds, "maxvio_batch", "rate")
    with pytest.raises(ValueError, match="variable = 'maxvio_global_run'"):
        plot.sweep_plot(grid_ds, "maxvio_global_run", "controller.bias_update_rate")
    with pytest.raises(ValueError, match="window = 7"):
        plot.sweep_plot(grid_ds, "maxvio_batch", "controller.bias_update_rate", window=7)
    with pytest.raises(ValueError, match="point = 'nope'"):
        plot.load_heatmap(grid_ds, point="nope")


def test_sweep_plot_draws_replica_means_with_student_t_intervals(grid_ds):
    res = plot.sweep_plot(grid_ds, "maxvio_batch", "controller.bias_update_rate", window=3)
    assert isinstance(res, plot.PlotResult) and res.figure is res.axes.figure
    mv = grid_ds["maxvio_batch"].values[-3:].mean(axis=0)  # (point, replica), grid order
    mv = mv.reshape(3, 2, 3)  # (rate, noise, replica)
    for j, noise in enumerate([0.5, 1.0]):
        container = res.lines[f"noise_scale={noise:g}"][0]
        line = container.lines[0]
        np.testing.assert_allclose(line.get_ydata(), mv[:, j].mean(axis=1))
        np.testing.assert_allclose(line.get_xdata(), [1e-3, 1e-2, 1e-1])
        half = stats.t.ppf(0.975, 2) * mv[:, j].std(axis=1, ddof=1) / np.sqrt(3)
        segments = container.lines[2][0].get_segments()
        np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 2 * half, rtol=1e-9)
    assert "95% t-interval" in res.band


def test_flat_and_unstacked_results_draw_the_same_lines(grid_ds):
    a = plot.sweep_plot(grid_ds, "maxvio_batch", "traffic.noise_scale")
    b = plot.sweep_plot(unstack_points(grid_ds), "maxvio_batch", "traffic.noise_scale")
    assert list(a.lines) == list(b.lines) == ["bias_update_rate=0.001",
                                              "bias_update_rate=0.01", "bias_update_rate=0.1"]
    for k in a.lines:
        np.testing.assert_array_equal(a.lines[k][0].lines[0].get_ydata(),
                                      b.lines[k][0].lines[0].get_ydata())


def test_timeseries_band_is_the_replica_range(grid_ds):
    one = grid_ds.isel(point=[4])
    res = plot.timeseries_plot(one, "maxvio_batch")
    (label, (line, band)), = res.lines.items()
    y = one["maxvio_batch"].values[:, 0, :]
    np.testing.assert_allclose(line.get_ydata(), y.mean(axis=1))
    verts = band.get_paths()[0].vertices[:, 1]
    assert np.isclose(verts.max(), y.max()) and np.isclose(verts.min(), y.min())
    assert res.band == "band: min to max over 3 replicas"


def test_heatmap_shows_relative_load_error(grid_ds):
    res = plot.load_heatmap(grid_ds, point=2, replica=1)
    load = grid_ds["expert_load"].values[:, 2, 1, :].astype(float)
    expected = load / load.mean(axis=1, keepdims=True) - 1
    np.testing.assert_allclose(res.lines["loads"][0].get_array(), expected.T)


def test_compute_batch_reference_falls_as_one_over_sqrt_tokens(grid_ds):
    res = plot.compute_batch_plot(grid_ds.isel(point=[0]))
    ref = res.lines["1/sqrt(tokens)"][0]
    x, y = ref.get_xdata(), ref.get_ydata()
    np.testing.assert_allclose(x, [32, 64])
    np.testing.assert_allclose(y[1] / y[0], 1 / np.sqrt(2))


def test_steady_window_and_grid_view():
    ds = xr.Dataset({"v": (("step", "replica"), np.arange(8.0).reshape(4, 2))})
    assert plot.grid_view(ds) is ds
    np.testing.assert_allclose(plot.steady_values(ds, "v", 2).values, [5.0, 6.0])
    np.testing.assert_allclose(plot.steady_values(ds, "v").values, [6.0, 7.0])  # last quarter


def test_saved_pdf_embeds_truetype_fonts(tmp_path):
    res = plot.timeseries_plot(xr.Dataset({"maxvio_batch": (("step",), [1.0, 0.5])}))
    res.axes.set_title("fonts")
    pdf = plot.save_figure(res.figure, tmp_path / "f")[1].read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf
