"""Sweeps larger than one call: chunked, parallel, resumable.

``run_sweep(config, out_dir)`` splits the points of a config into chunks,
simulates each chunk (in worker processes, or on a dask cluster), and writes
each chunk's Dataset atomically to ``out_dir/chunks/`` (netCDF). A chunk file
that exists is a finished chunk: re-running the same command after an
interrupt only computes what is missing. The chunks are then joined along
``point`` into ``out_dir/results.zarr`` (compressed zarr, see
:mod:`routesim.store`), and the chunk files are removed. Re-running a
finished sweep reads ``results.zarr`` back instead of computing it again.

Nothing is lost and nothing is left behind on an interrupt:

- the config is stored as ``out_dir/config.json``; a different config is
  refused on that directory unless ``overwrite=True``;
- a chunk file that cannot be read, or holds other points or another config
  (truncated, empty), is removed and computed again;
- worker processes ignore Ctrl-C (the parent stops them) and exit on their
  own when the parent dies, even by SIGKILL: a watchdog thread polls the
  parent's pid, and on Linux the kernel sends them SIGTERM
  (``PR_SET_PDEATHSIG``); a stopped worker removes its unfinished write;
- on Ctrl-C the workers are stopped at once and :class:`SweepInterrupted`
  says how many chunks were kept.

Worker processes are started with ``spawn``, which imports the calling
script again in every worker: a script that calls ``run_sweep(workers > 1)``
must do so under ``if __name__ == "__main__":`` (a worker that meets the call
while importing the script refuses it with that advice). With a dask
``distributed.Client`` the workers send each chunk's Dataset back and this
process writes it, so the workers need no access to ``out_dir`` (no shared
file system across hosts).

Because every point draws from the stream of its own global index
(:mod:`routesim.rng`), the joined result is identical to one
``simulate(config)`` call, however the points were chunked or distributed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Iterator, Sequence

import xarray as xr
from tqdm.auto import tqdm

from .config import Config, config_from_dict
from . import resources
from .exceptions import ConfigError
from .store import check_output_dir, load, save
from .theory.from_config import resolve_rates

#: Seconds between a worker's checks that its parent is alive.
_WATCH_INTERVAL = 0.2
#: Seconds to wait for stopped workers before killing them.
_STOP_TIMEOUT = 5.0


class SweepInterrupted(KeyboardInterrupt):
    """A sweep stopped by Ctrl-C (or SIGTERM turned into it); finished chunks are kept.

    Attributes
    ----------
    kept, total : int
        Chunks on disk and chunks in the sweep.
    chunk_dir : Path
        Where the kept chunks are.

    Examples
    --------
    >>> err = SweepInterrupted(1, 3, "out/chunks/abc")
    >>> isinstance(err, KeyboardInterrupt), err.kept, err.total
    (True, 1, 3)
    >>> str(err)
    'interrupted: 1 of 3 chunks kept in out/chunks/abc; re-run the same command to resume'
    """

    def __init__(self, kept: int, total: int, chunk_dir: Path):
        super().__init__(kept, total, chunk_dir)
        self.kept, self.total, self.chunk_dir = kept, total, chunk_dir

    def __str__(self) -> str:
        return (f"interrupted: {self.kept} of {self.total} chunks kept in {self.chunk_dir}; "
                "re-run the same command to resume")

__all__ = ["plan_chunks", "run_sweep", "worker_pool", "default_threads_per_worker",
           "SweepInterrupted", "RESULTS"]

#: The joined results in ``out_dir``.
RESULTS = "results.zarr"


def plan_chunks(num_points: int, points_per_chunk: int) -> list[list[int]]:
    """Consecutive point indices in chunks of at most ``points_per_chunk``.

    Parameters
    ----------
    num_points : int
        Points of the sweep.
    points_per_chunk : int >= 1
        Largest chunk.

    Returns
    -------
    list of list of int

    Examples
    --------
    >>> plan_chunks(5, 2)
    [[0, 1], [2, 3], [4]]
    """
    if points_per_chunk < 1:
        raise ConfigError(f"points_per_chunk = {points_per_chunk}: must be an integer >= 1")
    return [list(range(i, min(i + points_per_chunk, num_points)))
            for i in range(0, num_points, points_per_chunk)]


#: The chunk file this worker process is writing (for clean-up when stopped).
_writing: Path | None = None


def _simulate_chunk(config_json: str, point_indices: list[int], path: str,
                    write: bool = True) -> Any:
    """Worker: simulate one chunk and write it atomically (or return it: ``write=False``)."""
    global _writing
    from .run import simulate

    cfg = config_from_dict(json.loads(config_json))
    if not write:
        return simulate(cfg, point_indices=point_indices, progress=False)
    _writing = Path(path)
    try:
        save(simulate(cfg, point_indices=point_indices, progress=False), path)
    finally:
        _writing = None
    return path


def _exit_worker(signum: int | None = None, frame: Any = None) -> None:
    """Remove this worker's unfinished chunk write and exit at once."""
    path = _writing
    if path is not None:
        for tmp in path.parent.glob(f".{path.name}.*"):
            shutil.rmtree(tmp, ignore_errors=True)
    os._exit(1)


def _set_parent_death_signal() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # no libc prctl: the watchdog still works
        pass


def _watch_parent(parent_pid: int) -> None:
    """Exit this process as soon as ``parent_pid`` is no longer its parent."""
    while os.getppid() == parent_pid:
        time.sleep(_WATCH_INTERVAL)
    _exit_worker()


def _init_worker(parent_pid: int) -> None:
    """Worker start-up: Ctrl-C is the parent's to handle; die with the parent."""
    # a terminal's Ctrl-C reaches the whole process group; a worker torn mid-task
    # can hang the pool, so the parent alone decides and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # tqdm's default lock is a named semaphore that a stopped worker would leak
    tqdm.set_lock(threading.RLock())
    # SIGTERM (from the parent stopping the pool, or the kernel when it dies)
    signal.signal(signal.SIGTERM, _exit_worker)
    _set_parent_death_signal()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True,
                     name="routesim-watch-parent").start()


def _stop_workers(executor: ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel what is queued, terminate what runs, reap."""
    # the pool's own processes (private attribute; public only from Python 3.14)
    processes = list((getattr(executor, "_processes", None) or {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + _STOP_TIMEOUT
    for proc in processes:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()


def default_threads_per_worker(workers: int) -> int | None:
    """Routing threads for each of ``workers`` local workers: the cores shared out.

    ``None`` (each worker keeps Numba's own choice) when ``NUMBA_NUM_THREADS`` is set,
    so that a setting of the user's wins. The numbers of a sweep do not depend on it.

    Parameters
    ----------
    workers : int
        Worker processes.

    Returns
    -------
    int or None
        ``max(1, cores // workers)``, the cores being those this process may run on.

    Raises
    ------
    ConfigError
        If ``workers`` is not an integer >= 1.

    Examples
    --------
    >>> import os
    >>> saved = os.environ.pop("NUMBA_NUM_THREADS", None)
    >>> default_threads_per_worker(10**6)
    1
    >>> os.environ["NUMBA_NUM_THREADS"] = "3"
    >>> default_threads_per_worker(2) is None
    True
    >>> _ = os.environ.pop("NUMBA_NUM_THREADS")
    >>> if saved is not None:
    ...     os.environ["NUMBA_NUM_THREADS"] = saved
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers = {workers!r}: must be an integer >= 1")
    if os.environ.get("NUMBA_NUM_THREADS"):
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // workers)


@contextlib.contextmanager
def worker_pool(workers: int, *,
                threads_per_worker: int | None = None) -> Iterator[ProcessPoolExecutor]:
    """A pool of fresh worker processes that die with this one, for scripts beside sweeps.

    The sweep's own workers, as a context manager: spawned (never forked), Ctrl-C
    ignored in the workers (the parent decides), each worker stopped by the kernel
    and by a watchdog when its parent dies, and, when the ``with`` block raises
    (Ctrl-C included), the queued tasks cancelled and the running workers terminated
    before the exception goes on.

    Parameters
    ----------
    workers : int
        Worker processes (at least 1).
    threads_per_worker : int, optional
        Threads of the compiled routing kernels in each worker
        (``NUMBA_NUM_THREADS``; default: Numba's own default).

    Returns
    -------
    context manager of ProcessPoolExecutor

    Examples
    --------
    >>> with worker_pool(1, threads_per_worker=1) as pool:
    ...     pool.submit(abs, -3).result()
    3
    """
    sizes = [("workers", workers)]
    if threads_per_worker is not None:
        sizes.append(("threads_per_worker", threads_per_worker))
    for name, value in sizes:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= 1")
    saved = os.environ.get("NUMBA_NUM_THREADS")
    if threads_per_worker is not None:
        # read by each worker when it loads Numba; workers start as tasks are submitted
        os.environ["NUMBA_NUM_THREADS"] = str(int(threads_per_worker))
    executor = ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker, initargs=(os.getpid(),))
    try:
        yield executor
    except BaseException:
        _stop_workers(executor)
        raise
    finally:
        executor.shutdown(cancel_futures=True)
        if saved is None:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved


def _submit_all(executor: Any, config_json: str, todo: list) -> tuple[dict, Any]:
    """Submit every chunk; returns ``{future: path to write or None}`` and ``as_completed``.

    A dask ``Client``'s workers may run on other hosts: they send the chunk
    back and this process writes it (the path); local workers write their
    own chunk (None).
    """
    try:
        from distributed import Client
        from distributed import as_completed as dask_as_completed
    except ImportError:
        pass
    else:
        if isinstance(executor, Client):
            # pure=False: identical arguments must still run (dask would merge them)
            return ({executor.submit(_simulate_chunk, config_json, c, str(p), False,
                                     pure=False): p for c, p in todo}, dask_as_completed)
    return ({executor.submit(_simulate_chunk, config_json, c, str(p)): None for c, p in todo},
            as_completed)


def _fingerprint(config: Config) -> str:
    return hashlib.sha256(config.to_json().encode()).hexdigest()[:12]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _stored_config(out_dir: Path) -> str | None:
    """The config JSON of the sweep already in ``out_dir``, if any."""
    stored = out_dir / "config.json"
    if stored.exists():
        return stored.read_text()
    if (out_dir / RESULTS).exists():
        try:
            return load(out_dir / RESULTS).attrs.get("config")
        except Exception:  # unreadable results: nothing to compare, rewritten below
            return None
    return None


def _check_same_config(out_dir: Path, config_json: str, fingerprint: str) -> None:
    """Refuse to mix results of two configs in one directory."""
    stored = _stored_config(out_dir)
    if stored is not None and stored != config_json:
        try:
            old, new = _flat(json.loads(stored)), _flat(json.loads(config_json))
            fields = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        except ValueError:
            fields = []
        what = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in fields[:4]) \
            or "its text"
        raise ConfigError(f"out_dir (--out) = {str(out_dir)!r}: holds a sweep of another config "
                          f"(differs in {what}); use overwrite (--overwrite) or another "
                          "directory")
    chunks = out_dir / "chunks"
    others = [p.name for p in chunks.iterdir() if p.name != fingerprint] \
        if chunks.is_dir() else []
    if others:
        raise ConfigError(f"out_dir (--out) = {str(out_dir)!r}: holds chunks of another config "
                          f"({chunks / others[0]}); use overwrite (--overwrite) or another "
                          "directory")


def _clear(out_dir: Path, derived: Sequence[str | Path]) -> None:
    """Remove a previous sweep's files (``overwrite``)."""
    shutil.rmtree(out_dir / "chunks", ignore_errors=True)
    shutil.rmtree(out_dir / RESULTS, ignore_errors=True)
    for p in (out_dir / "config.json", *derived):
        Path(p).unlink(missing_ok=True)


def _complete(out_dir: Path, config_json: str, num_points: int) -> xr.Dataset | None:
    """The joined results already in ``out_dir``, if they hold every point of this config."""
    path = out_dir / RESULTS
    if not path.exists() or (out_dir / "chunks").exists():
        return None
    try:
        ds = load(path)
    except Exception:  # unreadable: computed and written again
        return None
    if ds.attrs.get("config") != config_json or ds["point"].values.tolist() != list(
            range(num_points)):
        return None
    return ds


def _finished(path: Path, points: list[int], config_json: str) -> bool:
    """Whether ``path`` is a complete chunk of these points and this config."""
    if not path.exists():
        return False
    try:
        ds = load(path)
        ok = (ds.attrs.get("config") == config_json
              and ds["point"].values.tolist() == points)
    except Exception:  # truncated, empty or foreign: computed again
        ok = False
    if not ok:
        path.unlink(missing_ok=True)
    return ok


def _remove_partial_writes(chunk_dir: Path) -> None:
    """Temporary directories of chunk writes that a stopped worker left."""
    for tmp in chunk_dir.glob(".points_*.nc.*"):
        shutil.rmtree(tmp, ignore_errors=True)


def _compute(todo: list, config_json: str, workers: int, executor: Any, bar: Any) -> None:
    """Simulate and write every chunk in ``todo``."""
    if executor is None and workers == 1:
        for c, p in todo:
            _simulate_chunk(config_json, c, str(p))
            bar.update(1)
        return
    if executor is None:
        # the pool also stops its running workers when this raises (Ctrl-C, a failed chunk)
        with worker_pool(workers,
                         threads_per_worker=default_threads_per_worker(workers)) as pool:
            _compute_on(pool, todo, config_json, bar)
    else:  # a caller's executor (dask): its queued chunks are cancelled on a failure
        _compute_on(executor, todo, config_json, bar)


def _compute_on(executor: Any, todo: list, config_json: str, bar: Any) -> None:
    """Submit every chunk to ``executor`` and save the results as they come."""
    futures, waiter = _submit_all(executor, config_json, todo)
    try:
        for fut in waiter(list(futures)):
            try:
                result = fut.result()
            except BrokenProcessPool as err:
                raise RuntimeError(
                    "a sweep worker process stopped before finishing its chunk (killed, out of "
                    "memory, or a script that calls run_sweep(workers > 1) outside "
                    "'if __name__ == \"__main__\":', which every worker imports again)") from err
            if futures[fut] is not None:
                save(result, futures[fut])
            bar.update(1)
    except BaseException:
        # stop the rest now rather than after it finishes (a pool of our own also
        # terminates its running workers)
        for fut in futures:
            fut.cancel()
        raise


def run_sweep(config: Config, out_dir: str | Path, *, points_per_chunk: int = 1,
              workers: int = 1, executor: Executor | None = None,
              progress: bool | None = None, overwrite: bool = False,
              derived: Sequence[str | Path] = ()) -> xr.Dataset:
    """Simulate every point of ``config`` in chunks and join the results.

    Parameters
    ----------
    config : Config
        The sweep.
    out_dir : str or Path
        Directory for ``config.json``, ``chunks/`` and the joined
        ``results.zarr``. Chunks already there (from an interrupted run of
        the same config) are kept; unreadable ones are computed again. With
        local workers it must be writable by them; a dask ``Client``'s
        workers need no access to it.
    points_per_chunk : int >= 1
        Points simulated together in one task (one array program).
    workers : int >= 1
        Worker processes when no ``executor`` is given (1 = in this process).
        Workers import the calling script again: call ``run_sweep`` under
        ``if __name__ == "__main__":``.
    executor : concurrent.futures.Executor, optional
        Where to run the chunks, e.g. a ``distributed.Client`` (dask) or a
        ``ProcessPoolExecutor`` of your own. It must accept ``submit``.
    progress : bool or None
        Progress bar on stderr (None: only when stderr is a terminal).
    overwrite : bool
        Replace the sweep of another config found in ``out_dir`` (otherwise
        refused).
    derived : sequence of str or Path
        Files made from ``results.zarr`` (figures): removed just before it is
        replaced, and on ``overwrite``.

    Returns
    -------
    xarray.Dataset
        Identical to ``simulate(config)``. The chunk files are removed once
        it is written; a finished sweep of the same config in ``out_dir``
        is read back, not computed again.

    Raises
    ------
    ConfigError
        Before any work: bad arguments, an ``out_dir`` that cannot be created
        or written, or one holding a sweep of another config.
    SweepInterrupted
        On Ctrl-C; the finished chunks are kept for a resume.

    Examples
    --------
    Three points in chunks of two, joined into the Dataset that one
    ``simulate`` call gives; the chunk files go once the join is written:

    >>> import os, tempfile
    >>> from routesim import Config, simulate
    >>> cfg = Config().replace(**{
    ...     "run.steps": 3, "router.num_experts": 4, "router.topk": 2,
    ...     "batch.num_sequences": 2, "batch.seq_length": 8,
    ...     "sweep.parameters": {"controller.bias_update_rate": [0.0, 0.01, 0.1]}})
    >>> with tempfile.TemporaryDirectory() as out:
    ...     ds = run_sweep(cfg, out, points_per_chunk=2)
    ...     sorted(os.listdir(out))
    ['config.json', 'results.zarr']
    >>> dict(ds.sizes), ds.identical(simulate(cfg, progress=False))
    ({'step': 3, 'point': 3, 'replica': 1, 'expert': 4}, True)
    """
    if workers < 1:
        raise ConfigError(f"workers = {workers}: must be an integer >= 1")
    if workers > 1 and executor is None and _importing_main_in_worker():
        raise ConfigError(f"workers = {workers}: run_sweep was called while a worker process "
                          "imported the calling script; call it under "
                          "'if __name__ == \"__main__\":'")
    config = resolve_rates(config)  # once, before chunking: every chunk runs these numbers
    # one chunk per worker in memory at once; refused before anything is written
    resources.check(config, range(min(points_per_chunk, config.num_points)), False,
                    copies=1 if executor is not None else min(workers, config.num_points))
    out_dir = check_output_dir(out_dir, "out_dir")
    config_json = config.to_json()
    fingerprint = _fingerprint(config)
    if overwrite:
        _clear(out_dir, derived)
    else:
        _check_same_config(out_dir, config_json, fingerprint)
        done = _complete(out_dir, config_json, config.num_points)
        if done is not None:
            return done
    chunk_dir = out_dir / "chunks" / fingerprint
    try:
        chunk_dir.mkdir(parents=True, exist_ok=True)
        if not (out_dir / "config.json").exists():
            _write_text(out_dir / "config.json", config_json)
    except OSError as err:
        raise ConfigError(f"out_dir = {str(out_dir)!r}: cannot be written "
                          f"({err.strerror or err})") from None
    _remove_partial_writes(chunk_dir)
    chunks = plan_chunks(config.num_points, points_per_chunk)
    paths = [chunk_dir / f"points_{c[0]:05d}-{c[-1]:05d}.nc" for c in chunks]
    todo = [(c, p) for c, p in zip(chunks, paths) if not _finished(p, c, config_json)]
    disable = (not sys.stderr.isatty()) if progress is None else (not progress)
    with tqdm(total=len(chunks), initial=len(chunks) - len(todo), desc="sweep chunks",
              disable=disable, file=sys.stderr) as bar:
        try:
            _compute(todo, config_json, workers, executor, bar)
        except KeyboardInterrupt as err:
            _remove_partial_writes(chunk_dir)
            kept = sum(p.exists() for p in paths)
            raise SweepInterrupted(kept, len(chunks), chunk_dir) from err
    joined = xr.concat([load(p) for p in paths], dim="point", data_vars="minimal",
                       coords="minimal", compat="override", join="outer")
    joined = joined.assign_coords(label=joined["label"].astype(str))  # one width for all
    save(joined, out_dir / RESULTS, derived=derived)
    shutil.rmtree(out_dir / "chunks", ignore_errors=True)
    return joined


def _importing_main_in_worker() -> bool:
    """Whether this is a spawned process still importing the parent's script.

    ``_inheriting`` is what :mod:`multiprocessing` itself checks to refuse
    starting processes at that moment.
    """
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
