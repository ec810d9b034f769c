"""Sweeps larger than one call: chunked, parallel, resumable.

``run_sweep(config, out_dir)`` splits the points of a config into chunks,
simulates each chunk (in worker processes, or on a dask cluster), and writes
each chunk's Dataset atomically to ``out_dir/chunks/``. A chunk file that
exists is a finished chunk: re-running the same command after an interrupt
only computes what is missing. The chunks are then joined along ``point``
into ``out_dir/results.nc``.

Because every point draws from the stream of its own global index
(:mod:`routesim.rng`), the joined result is identical to one
``simulate(config)`` call, however the points were chunked or distributed.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import sys
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import xarray as xr
from tqdm.auto import tqdm

from .config import Config, config_from_dict
from .exceptions import ConfigError
from .store import load, save

__all__ = ["plan_chunks", "run_sweep"]


def plan_chunks(num_points: int, points_per_chunk: int) -> list[list[int]]:
    """Consecutive point indices in chunks of at most ``points_per_chunk``.

    Examples
    --------
    >>> plan_chunks(5, 2)
    [[0, 1], [2, 3], [4]]
    """
    if points_per_chunk < 1:
        raise ConfigError(f"points_per_chunk = {points_per_chunk}: must be an integer >= 1")
    return [list(range(i, min(i + points_per_chunk, num_points)))
            for i in range(0, num_points, points_per_chunk)]


def _simulate_chunk(config_json: str, point_indices: list[int], path: str) -> str:
    """Worker: simulate one chunk and write it atomically (runs in a subprocess)."""
    import json

    from .simulate import simulate

    cfg = config_from_dict(json.loads(config_json))
    save(simulate(cfg, point_indices=point_indices, progress=False), path)
    return path


def _submit_all(executor: Any, config_json: str, todo: list) -> tuple[list, Any]:
    """Submit every chunk; returns the futures and the matching ``as_completed``."""
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError:
        Client = None
    if Client is not None and isinstance(executor, Client):
        # pure=False: identical arguments must still run (dask would merge them)
        futures = [executor.submit(_simulate_chunk, config_json, c, str(p), pure=False)
                   for c, p in todo]
        return futures, dask_as_completed
    futures = [executor.submit(_simulate_chunk, config_json, c, str(p)) for c, p in todo]
    return futures, as_completed


def _fingerprint(config: Config) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:12]


def run_sweep(config: Config, out_dir: str | Path, *, points_per_chunk: int = 1,
              workers: int = 1, executor: Executor | None = None,
              progress: bool | None = None) -> xr.Dataset:
    """Simulate every point of ``config`` in chunks and join the results.

    Parameters
    ----------
    config : Config
        The sweep.
    out_dir : str or Path
        Directory for ``chunks/`` and the joined ``results.nc``. Chunks
        already there (from an interrupted run of the same config) are kept.
    points_per_chunk : int >= 1
        Points simulated together in one task (one array program).
    workers : int >= 1
        Worker processes when no ``executor`` is given (1 = in this process).
    executor : concurrent.futures.Executor, optional
        Where to run the chunks, e.g. a ``distributed.Client`` (dask) or a
        ``ProcessPoolExecutor`` of your own. It must accept ``submit``.
    progress : bool or None
        Progress bar on stderr (None: only when stderr is a terminal).

    Returns
    -------
    xarray.Dataset
        Identical to ``simulate(config)``.
    """
    if workers < 1:
        raise ConfigError(f"workers = {workers}: must be an integer >= 1")
    out_dir = Path(out_dir)
    chunk_dir = out_dir / "chunks" / _fingerprint(config)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    chunks = plan_chunks(config.num_points, points_per_chunk)
    paths = [chunk_dir / f"points_{c[0]:05d}-{c[-1]:05d}.nc" for c in chunks]
    todo = [(c, p) for c, p in zip(chunks, paths) if not p.exists()]
    disable = (not sys.stderr.isatty()) if progress is None else (not progress)
    config_json = config.to_json()
    with tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc="sweep chunks",
              disable=disable, file=sys.stderr) as bar:
        if executor is None and workers == 1:
            for c, p in todo:
                _simulate_chunk(config_json, c, str(p))
                bar.update(1)
        else:
            own = executor is None
            if own:
                # spawn: never fork a process that may hold a CUDA context
                executor = ProcessPoolExecutor(
                    max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
            try:
                futures, waiter = _submit_all(executor, config_json, todo)
                for fut in waiter(futures):
                    fut.result()
                    bar.update(1)
            finally:
                if own:
                    executor.shutdown(cancel_futures=True)
    joined = xr.concat([load(p) for p in paths], dim="point", data_vars="minimal",
                       coords="minimal", compat="override", join="outer")
    save(joined, out_dir / "results.nc")
    return joined
