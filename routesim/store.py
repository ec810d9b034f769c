"""Saving and loading results without ever leaving a half-written file.

Results are written to a temporary sibling and moved into place with
``os.replace`` (atomic on one file system): an interrupt or a failure leaves
the previous file intact. Files made from the old results (figures) can be
named in ``derived``: they are removed just before the new results move in,
so none is ever left beside results it does not show.
:func:`check_output_dir` refuses a directory that cannot be written before
any work starts. Two formats: zarr (``.zarr``, the default for results of
``routesim run`` and ``routesim sweep``; compressed with Blosc-Zstandard and
chunked along ``point`` and ``step`` so that no chunk exceeds
:data:`CHUNK_BYTES`) and netCDF 3 (``.nc``, through SciPy, one file; the
format of sweep chunk files).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import xarray as xr

from .exceptions import ConfigError, ResultsFileError

__all__ = ["save", "load", "check_output_dir", "CHUNK_BYTES", "zarr_encoding"]

_FORMATS = (".nc", ".zarr")

#: Largest uncompressed zarr chunk, in bytes.
CHUNK_BYTES = 16 * 2**20


def _check_suffix(path: Path) -> str:
    if path.suffix not in _FORMATS:
        raise ConfigError(f"output path {str(path)!r}: must end in one of {', '.join(_FORMATS)}")
    return path.suffix


def _without_encoding(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy without the encodings read from an earlier file.

    Datasets joined from chunk files carry each chunk's string width in their
    encoding (a longer label in another chunk would not fit it); a Dataset
    read from zarr carries its chunks and compressors. The file written is
    described by :func:`save` alone.
    """
    ds = ds.copy(deep=False)
    for var in ds.variables.values():
        var.encoding = {}
    return ds


def _chunks(var: xr.Variable, limit: int) -> tuple[int, ...]:
    """Chunk shape of ``var``: halve ``point`` (then ``step``) until a chunk fits ``limit``."""
    chunks = dict(var.sizes)
    for dim in ("point", "step", *var.dims):
        while (dim in chunks and chunks[dim] > 1
               and var.dtype.itemsize * max(1, _prod(chunks.values())) > limit):
            chunks[dim] = -(-chunks[dim] // 2)
    return tuple(chunks[d] for d in var.dims)


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def zarr_encoding(ds: xr.Dataset, limit: int = CHUNK_BYTES) -> dict:
    """The zarr encoding :func:`save` writes: Blosc-Zstandard, chunks of at most ``limit`` bytes.

    Parameters
    ----------
    ds : xarray.Dataset
    limit : int
        Largest uncompressed chunk in bytes.

    Returns
    -------
    dict
        Variable name to its encoding (``chunks`` and the compressor).

    Examples
    --------
    >>> import numpy as np
    >>> ds = xr.Dataset({"expert_load": (("step", "point", "expert"), np.zeros((4, 10, 8), "int32"))})
    >>> zarr_encoding(ds, limit=4 * 4 * 3 * 8)["expert_load"]["chunks"]  # 10 points -> 5 -> 3
    (4, 3, 8)
    """
    import numcodecs
    import zarr

    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    key, value = (("compressors", (compressor,)) if int(zarr.__version__.split(".")[0]) >= 3
                  else ("compressor", compressor))
    return {name: {"chunks": _chunks(var, limit), key: value}
            for name, var in ds.variables.items() if var.ndim > 0}


def save(ds: xr.Dataset, path: str | Path, *, derived: Sequence[str | Path] = ()) -> Path:
    """Write ``ds`` atomically to ``path`` (``.nc`` or ``.zarr``).

    Parameters
    ----------
    ds : xarray.Dataset
    path : str or Path
    derived : sequence of str or Path
        Files made from the previous contents of ``path`` (e.g. figures);
        those that exist are removed once the new file is complete and just
        before it replaces the old one.

    Returns
    -------
    Path
        The written path.

    Examples
    --------
    >>> import tempfile
    >>> ds = xr.Dataset({"load": ("expert", [3.0, 1.0])}, attrs={"seed": 7})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = save(ds, Path(d) / "results.nc")
    ...     back = load(path)
    >>> path.name, back["load"].values.tolist(), int(back.attrs["seed"])
    ('results.nc', [3.0, 1.0], 7)
    >>> with tempfile.TemporaryDirectory() as d:  # zarr: compressed, a directory
    ...     back = load(save(ds, Path(d) / "results.zarr"))
    >>> back.identical(ds)
    True
    """
    path = Path(path)
    suffix = _check_suffix(path)
    ds = _without_encoding(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        if suffix == ".nc":
            ds.to_netcdf(tmp, engine="scipy")
            _remove(derived)
            os.replace(tmp, path)
        else:
            # consolidated metadata: xarray.open_zarr(path) reads it in one file, quietly
            ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2,
                       encoding=zarr_encoding(ds))
            _remove(derived)
            if path.exists():
                old = tmp_dir / (path.name + ".old")
                os.replace(path, old)
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _remove(paths: Sequence[str | Path]) -> None:
    for p in paths:
        Path(p).unlink(missing_ok=True)


def check_output_dir(path: str | Path, field: str = "out_dir") -> Path:
    """Refuse, before any work, a directory that cannot be created or written.

    The directory (and any missing parents) is created to prove it can be,
    a file is written in it and removed, and what was created is removed
    again, so nothing is left behind when the work never starts.

    Parameters
    ----------
    path : str or Path
    field : str
        The name to report (a CLI option or a parameter).

    Returns
    -------
    Path

    Raises
    ------
    ConfigError
        Naming ``field``, the path and the reason.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> base = pathlib.Path(tempfile.mkdtemp())
    >>> (base / "f").write_text("x")
    1
    >>> check_output_dir(base / "f" / "out", "--out")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: --out = '.../f/out': cannot be created or written (Not a directory)
    >>> check_output_dir(base / "new", "--out").exists()
    False
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field} = {str(path)!r}: exists and is not a directory")
    missing = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ConfigError(f"{field} = {str(path)!r}: cannot be created or written "
                          f"({err.strerror or err})") from None
    finally:
        for p in missing:  # deepest first
            try:
                p.rmdir()
            except FileNotFoundError:
                continue
            except OSError:
                break
    return path


def load(path: str | Path) -> xr.Dataset:
    """Read a Dataset written by :func:`save` (fully into memory).

    Parameters
    ----------
    path : str or Path
        A ``.nc`` (netCDF) or ``.zarr`` path written by :func:`save`.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    ConfigError
        If the suffix is not one that :func:`save` writes.
    ResultsFileError
        If the file does not exist or cannot be read as a Dataset.

    Examples
    --------
    >>> load("/nonexistent/results.nc")
    Traceback (most recent call last):
    ...
    routesim.exceptions.ResultsFileError: results path '/nonexistent/results.nc': does not exist
    """
    path = Path(path)
    suffix = _check_suffix(path)
    if not path.exists():
        raise ResultsFileError(f"results path {str(path)!r}: does not exist")
    try:
        if suffix == ".nc":
            with xr.open_dataset(path, engine="scipy") as ds:
                return ds.load()
        # stores written before their metadata was consolidated are read all the same
        consolidated = (path / ".zmetadata").is_file()
        return xr.open_zarr(path, consolidated=consolidated).load()
    except (OSError, ValueError, TypeError, KeyError) as err:  # truncated, empty or foreign
        raise ResultsFileError(f"results path {str(path)!r}: cannot be read as a Dataset "
                               f"({type(err).__name__}: {err})") from err
