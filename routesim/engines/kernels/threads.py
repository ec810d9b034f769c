"""Worker threads of the compiled kernels: one pool, tasks taken in groups as threads free up.

The Numba kernels release the GIL, so a process routes on several cores with plain
threads. Each call splits its tasks into groups and every thread (the calling one
included) takes the next free group until none is left: an uneven task never leaves
a core idle behind a fixed share of the work. When a thread fails (or the caller is
interrupted), the others stop after their current group and the call raises.
"""

from __future__ import annotations

import itertools
import operator
import os
import threading
from typing import Any, Callable

from ...exceptions import ConfigError

__all__ = ["default_threads", "run_tasks"]

_POOL: list = []


def default_threads() -> int:
    """Worker threads: ``NUMBA_NUM_THREADS`` (default: the machine's cores).

    Returns
    -------
    int

    Examples
    --------
    >>> import pytest
    >>> _ = pytest.importorskip("numba")
    >>> default_threads() >= 1
    True
    """
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def _pool(workers: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    if not _POOL or _POOL[0]._max_workers < workers or _POOL[1] != os.getpid():
        # a new pool after a fork: the parent's worker threads do not exist in the child
        _POOL[:] = [ThreadPoolExecutor(max_workers=workers, thread_name_prefix="routesim"),
                    os.getpid()]
    return _POOL[0]


def run_tasks(threads: int, n_tasks: int, fn: Callable[..., Any], args: tuple,
              groups_per_thread: int = 8) -> None:
    """Run ``fn(first, stop, *args)`` over tasks ``0 .. n_tasks - 1`` on ``threads`` threads.

    Parameters
    ----------
    threads : int
        Threads, the calling one included (at most ``n_tasks`` are used).
    n_tasks : int
        Tasks; ``fn`` gets consecutive ranges of them.
    fn : callable
        ``fn(first, stop, *args)``, a compiled function that releases the GIL.
    args : tuple
        Its other arguments.
    groups_per_thread : int
        Groups of tasks per thread: many small tasks (a sweep of tiny configs) then
        pay one call per group, not one per task, and a slow group is balanced by the
        others.

    Raises
    ------
    ConfigError
        If ``threads`` is not an integer >= 1 or ``n_tasks`` not one >= 0.

    Examples
    --------
    >>> seen = []
    >>> run_tasks(2, 10, lambda a, b, out: out.extend(range(a, b)), (seen,))
    >>> sorted(seen) == list(range(10))
    True
    """
    sizes = []
    for name, value, least in (("threads", threads, 1), ("n_tasks", n_tasks, 0)):
        try:  # NumPy integers too
            size = operator.index(value) if not isinstance(value, bool) else None
        except TypeError:
            size = None
        if size is None or size < least:
            raise ConfigError(f"{name} = {value!r}: must be an integer >= {least}")
        sizes.append(size)
    threads, n_tasks = sizes
    if n_tasks == 0:
        return
    threads = min(threads, n_tasks)
    if threads == 1:
        fn(0, n_tasks, *args)
        return
    pool = _pool(threads - 1)
    counter = itertools.count()  # next() is atomic under the GIL
    group = max(1, n_tasks // (groups_per_thread * threads))
    stop = threading.Event()  # set by a failing thread (or Ctrl-C): the others stop too

    def worker() -> None:
        try:
            while not stop.is_set():
                first = next(counter) * group
                if first >= n_tasks:
                    return
                fn(first, min(n_tasks, first + group), *args)
        except BaseException:
            stop.set()
            raise

    futures = [pool.submit(worker) for _ in range(threads - 1)]
    try:
        worker()  # the calling thread works too
        for f in futures:
            f.result()
    except BaseException:
        # the others finish their current group before the call raises, so no thread
        # still writes into the arrays once the caller has them back
        stop.set()
        for f in futures:
            f.exception()
        raise
