"""Results round-trip through netCDF and zarr; failures leave old files intact."""

import numpy as np
import pytest
import xarray as xr

from routesim import ConfigError, config_from_dict, load, save
from routesim import simulate


@pytest.fixture(scope="module")
def ds():
    cfg = config_from_dict({"run": {"steps": 3}, "batch": {"num_sequences": 2, "seq_length": 16,
                                                           "computation_batch_sizes": [1]},
                            "router": {"num_experts": 8, "topk": 2},
                            "sweep": {"controller.bias_update_rate": [1e-3, 1e-2]}})
    return simulate(cfg, progress=False)


def test_netcdf_round_trip(ds, tmp_path):
    path = save(ds, tmp_path / "r.nc")
    back = load(path)
    for var in ds.data_vars:
        np.testing.assert_array_equal(back[var].values, ds[var].values)
    assert back.attrs["config"] == ds.attrs["config"]
    assert list(back["label"].values) == list(ds["label"].values)


def test_zarr_round_trip(ds, tmp_path):
    pytest.importorskip("zarr")
    path = save(ds, tmp_path / "r.zarr")
    back = load(path)
    xr.testing.assert_equal(back[["expert_load", "bias", "maxvio_batch"]],
                            ds[["expert_load", "bias", "maxvio_batch"]])


def test_zarr_results_open_with_plain_xarray(ds, tmp_path):
    """``xarray.open_zarr(path)`` with its defaults: no warning, the same Dataset."""
    pytest.importorskip("zarr")
    import warnings

    path = save(ds, tmp_path / "r.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = xr.open_zarr(path).load()
    xr.testing.assert_identical(back, load(path))


def test_zarr_results_without_consolidated_metadata_still_load(ds, tmp_path):
    pytest.importorskip("zarr")
    path = tmp_path / "old.zarr"
    ds.to_zarr(path, consolidated=False, zarr_format=2)
    xr.testing.assert_equal(load(path)[["expert_load", "bias"]], ds[["expert_load", "bias"]])


def test_failed_write_keeps_previous_file(ds, tmp_path, monkeypatch):
    path = save(ds, tmp_path / "r.nc")
    before = path.read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        save(ds, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.nc"]


def test_bad_suffix(ds, tmp_path):
    with pytest.raises(ConfigError, match="must end in"):
        save(ds, tmp_path / "r.csv")


def test_derived_files_go_when_results_are_replaced(ds, tmp_path):
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"old figure")
    save(ds, tmp_path / "r.nc", derived=[figure])
    assert not figure.exists()


def test_failed_write_keeps_derived_files(ds, tmp_path, monkeypatch):
    path = save(ds, tmp_path / "r.nc")
    figure = tmp_path / "fig.png"
    figure.write_bytes(b"figure of r.nc")

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        save(ds, path, derived=[figure])
    assert figure.read_bytes() == b"figure of r.nc"
