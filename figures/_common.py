"""Shared by the figure scripts: run a config once, cache its results."""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from routesim import load, load_config, save
from routesim import simulate

ROOT = Path(__file__).resolve().parent.parent


def results_for(example: str, results_dir: Path | None = None) -> xr.Dataset:
    """Results of ``examples/<example>.toml``, simulated once and cached as netCDF."""
    results_dir = results_dir or ROOT / "results" / example
    path = results_dir / "results.nc"
    if path.exists():
        return load(path)
    ds = simulate(load_config(ROOT / "examples" / f"{example}.toml"))
    save(ds, path)
    return ds
