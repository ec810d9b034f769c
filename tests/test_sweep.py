"""Chunked, parallel and resumed sweeps give the numbers of one call."""

import numpy as np
import pytest

from routesim import ConfigError, config_from_dict, simulate
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
    for var in ("load", "bias", "maxvio_batch", "maxvio_global_run"):
        np.testing.assert_array_equal(a[var].values, b[var].values)
    assert list(a["label"].values) == list(b["label"].values)


def test_chunks_in_this_process(whole, tmp_path):
    _same(run_sweep(CFG, tmp_path, points_per_chunk=4, progress=False), whole)
    assert (tmp_path / "results.nc").exists()


def test_two_worker_processes(whole, tmp_path):
    _same(run_sweep(CFG, tmp_path, points_per_chunk=2, workers=2, progress=False), whole)


def test_resume_recomputes_only_missing_chunks(whole, tmp_path):
    run_sweep(CFG, tmp_path, points_per_chunk=2, progress=False)
    files = sorted((tmp_path / "chunks").rglob("*.nc"))
    assert len(files) == 3
    stamps = {f: f.stat().st_mtime_ns for f in files}
    files[1].unlink()
    _same(run_sweep(CFG, tmp_path, points_per_chunk=2, progress=False), whole)
    assert files[0].stat().st_mtime_ns == stamps[files[0]]
    assert files[1].exists()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="points_per_chunk = 0"):
        plan_chunks(4, 0)
    with pytest.raises(ConfigError, match="workers = 0"):
        run_sweep(CFG, "/tmp/unused", workers=0)
