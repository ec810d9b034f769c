"""Chunked, parallel and resumed sweeps give the numbers of one call."""

import json
import warnings

import numpy as np
import pytest
import xarray as xr

from routesim import ConfigError, config_from_dict, load_config
from routesim import simulate
from routesim.cli import main
from routesim.store import load
from routesim.sweep import plan_chunks, run_sweep

CFG = config_from_dict({
    "run": {"steps": 5, "seed": 9},
    "batch": {"num_sequences": 2, "seq_length": 32},
    "router": {"num_experts": 8, "topk": 2},
    "sweep": {"controller.bias_update_rate": [1e-3, 1e-2, 5e-2],
              "controller.type": ["sign", "proportional"]},
})


@pytest.fixture(scope="module")
def whole():
    return simulate(CFG, progress=False)


def _same(a, b):
    for var in ("expert_load", "bias", "maxvio_batch", "maxvio_global_run"):
        np.testing.assert_array_equal(a[var].values, b[var].values)
    assert list(a["label"].values) == list(b["label"].values)


def test_chunks_in_this_process(whole, tmp_path):
    with warnings.catch_warnings(record=True) as caught:  # labels of several widths
        warnings.simplefilter("always")
        _same(run_sweep(CFG, tmp_path, points_per_chunk=4, progress=False), whole)
    assert [str(w.message) for w in caught] == []
    # joined into compressed zarr; the chunk files are gone once it is written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "results.zarr"]
    meta = json.loads((tmp_path / "results.zarr" / "expert_load" / ".zarray").read_text())
    assert meta["compressor"]["cname"] == "zstd"


def test_two_worker_processes(whole, tmp_path):
    _same(run_sweep(CFG, tmp_path, points_per_chunk=2, workers=2, progress=False), whole)


def test_resume_recomputes_only_missing_chunks(whole, tmp_path, monkeypatch):
    import routesim.sweep as sweep

    real, ran = sweep._simulate_chunk, []

    def failing(config_json, points, path, write=True):
        ran.append(points[0])
        if points[0] == 2:
            raise RuntimeError("chunk failed")
        return real(config_json, points, path, write)

    monkeypatch.setattr(sweep, "_simulate_chunk", failing)
    with pytest.raises(RuntimeError, match="chunk failed"):
        run_sweep(CFG, tmp_path, points_per_chunk=2, progress=False)
    files = sorted((tmp_path / "chunks").rglob("*.nc"))
    assert [f.name for f in files] == ["points_00000-00001.nc"]  # kept for the resume
    monkeypatch.setattr(sweep, "_simulate_chunk", lambda *a: ran.append(a[1][0]) or real(*a))
    ran.clear()
    _same(run_sweep(CFG, tmp_path, points_per_chunk=2, progress=False), whole)
    assert ran == [2, 4]  # the kept chunk is not computed again
    assert not (tmp_path / "chunks").exists()
    # a finished sweep is read back, not computed again
    ran.clear()
    _same(run_sweep(CFG, tmp_path, points_per_chunk=2, progress=False), whole)
    assert ran == []


def test_bad_arguments():
    with pytest.raises(ConfigError, match="points_per_chunk = 0"):
        plan_chunks(4, 0)
    with pytest.raises(ConfigError, match="workers = 0"):
        run_sweep(CFG, "/tmp/unused", workers=0)


# Axes not in alphabetical order (traffic before controller, type before rate):
# a sorted copy of the config would number the points, and draw their random
# streams, differently.
GRID_TOML = """
[run]
steps = 4
seed = 5
replicas = 2

[batch]
num_sequences = 2
seq_length = 16

[router]
num_experts = 8
topk = 2

[traffic]
skew = "linear"

[sweep]
"traffic.noise_scale" = [0.5, 1.5]
"controller.type" = ["sign", "proportional", "ema"]
"controller.bias_update_rate" = [0.05]
"""


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    path = tmp_path_factory.mktemp("grid") / "grid.toml"
    path.write_text(GRID_TOML)
    cfg = load_config(path)
    assert list(cfg.sweep.parameters) == ["traffic.noise_scale", "controller.type",
                                          "controller.bias_update_rate"]
    return path, cfg, simulate(cfg, progress=False)


def test_grid_order_run_cli(grid, tmp_path):
    path, _, whole = grid
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress", "--no-plot"]) == 0
    xr.testing.assert_identical(load(tmp_path / "results.zarr"), whole)


@pytest.mark.parametrize("chunk", [1, 2])
def test_grid_order_sweep_cli(grid, tmp_path, chunk):
    path, _, whole = grid
    assert main(["sweep", str(path), "--out", str(tmp_path), "--chunk", str(chunk),
                 "--workers", "2", "--no-progress"]) == 0
    xr.testing.assert_identical(load(tmp_path / "results.zarr"), whole)


def test_grid_order_dask_cluster(grid, tmp_path):
    distributed = pytest.importorskip("distributed")
    _, cfg, whole = grid
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        ds = run_sweep(cfg, tmp_path, points_per_chunk=2, executor=client, progress=False)
    xr.testing.assert_identical(ds, whole)
    xr.testing.assert_identical(load(tmp_path / "results.zarr"), whole)


def test_grid_order_rerun_from_stored_config(grid):
    _, cfg, whole = grid
    again = config_from_dict(json.loads(whole.attrs["config"]))
    assert again == cfg
    xr.testing.assert_identical(simulate(again, progress=False), whole)


@pytest.mark.parametrize("kw,field", [({"workers": 0}, "workers"), ({"workers": True}, "workers"),
                                      ({"workers": 2, "threads_per_worker": 0},
                                       "threads_per_worker"),
                                      ({"workers": 2, "threads_per_worker": 1.5},
                                       "threads_per_worker")])
def test_worker_pool_refuses_bad_sizes(kw, field):
    from routesim.sweep import worker_pool

    with pytest.raises(ConfigError, match=rf"^{field} = .*: must be an integer >= 1$"):
        with worker_pool(**kw):
            pass


def test_local_workers_share_out_the_cores(whole, tmp_path, monkeypatch):
    """Each of W workers routes on cores // W threads, unless NUMBA_NUM_THREADS is set."""
    import os

    import routesim.sweep as sweep_module

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    seen = []
    real_pool = sweep_module.worker_pool

    def recording_pool(workers, **kw):
        pool = real_pool(workers, **kw)
        seen.append(kw.get("threads_per_worker"))
        return pool

    monkeypatch.setattr(sweep_module, "worker_pool", recording_pool)
    monkeypatch.delenv("NUMBA_NUM_THREADS", raising=False)
    _same(run_sweep(CFG, tmp_path / "a", points_per_chunk=3, workers=2, progress=False), whole)
    monkeypatch.setenv("NUMBA_NUM_THREADS", "1")
    _same(run_sweep(CFG, tmp_path / "b", points_per_chunk=3, workers=2, progress=False), whole)
    assert seen == [max(1, cores // 2), None]


@pytest.mark.parametrize("workers", [0, -2, 1.5, True])
def test_default_threads_per_worker_refuses_bad_counts(workers):
    from routesim.sweep import default_threads_per_worker

    with pytest.raises(ConfigError, match="^workers = "):
        default_threads_per_worker(workers)
