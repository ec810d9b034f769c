"""Saving and loading results without ever leaving a half-written file.

Results are written to a temporary sibling and moved into place with
``os.replace`` (atomic on one file system): an interrupt or a failure leaves
the previous file intact. netCDF (``.nc``, through SciPy, no extra
dependency) and zarr (``.zarr``, needs the ``io`` extra) are supported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import xarray as xr

from .exceptions import ConfigError

__all__ = ["save", "load"]

_FORMATS = (".nc", ".zarr")


def _check_suffix(path: Path) -> str:
    if path.suffix not in _FORMATS:
        raise ConfigError(f"output path {str(path)!r}: must end in one of {', '.join(_FORMATS)}")
    return path.suffix


def save(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` atomically to ``path`` (``.nc`` or ``.zarr``).

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or Path

    Returns
    -------
    Path
        The written path.
    """
    path = Path(path)
    suffix = _check_suffix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        if suffix == ".nc":
            ds.to_netcdf(tmp, engine="scipy")
            os.replace(tmp, path)
        else:
            ds.to_zarr(tmp, mode="w", consolidated=False, zarr_format=2)
            if path.exists():
                old = tmp_dir / (path.name + ".old")
                os.replace(path, old)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def load(path: str | Path) -> xr.Dataset:
    """Read a Dataset written by :func:`save` (fully into memory)."""
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.exists():
        raise ConfigError(f"results path {str(path)!r}: does not exist")
    if suffix == ".nc":
        with xr.open_dataset(path, engine="scipy") as ds:
            return ds.load()
    return xr.open_zarr(path, consolidated=False).load()
