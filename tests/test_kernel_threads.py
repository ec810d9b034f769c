"""Worker threads of the compiled kernels (routesim.engines.kernels.threads)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from routesim.engines.kernels.threads import run_tasks


@pytest.mark.parametrize("threads, n_tasks", [(1, 5), (2, 1), (2, 7), (3, 64), (2, 1000)])
def test_every_task_runs_once(threads: int, n_tasks: int) -> None:
    runs_T = np.zeros(n_tasks, np.int64)

    def fn(first: int, stop: int) -> None:
        runs_T[first:stop] += 1

    run_tasks(threads, n_tasks, fn, ())
    assert runs_T.tolist() == [1] * n_tasks


def test_threads_share_the_work() -> None:
    # Tasks that wait (the GIL released, as in the compiled kernels): each thread takes
    # the next free group, so both threads route about half of the tasks.
    done_by: dict[int, int] = {}
    lock = threading.Lock()

    def fn(first: int, stop: int) -> None:
        time.sleep(0.004 * (stop - first))
        with lock:
            me = threading.get_ident()
            done_by[me] = done_by.get(me, 0) + stop - first

    run_tasks(2, 64, fn, ())
    assert sum(done_by.values()) == 64
    assert len(done_by) == 2 and min(done_by.values()) >= 16, done_by


def test_an_error_reaches_the_caller() -> None:
    def fn(first: int, stop: int) -> None:
        if first <= 5 < stop:
            raise FloatingPointError("task 5")

    with pytest.raises(FloatingPointError, match="task 5"):
        run_tasks(2, 16, fn, ())


def test_a_failure_stops_the_other_threads():
    # 64 groups of one task; the calling thread's first group fails at once, the other
    # thread's groups each wait 20 ms: the other thread stops after its current group
    # instead of running the remaining ones, and the call returns only then.
    ran: list[int] = []
    caller = threading.get_ident()

    def fn(first: int, stop: int) -> None:
        if threading.get_ident() == caller:
            raise FloatingPointError(f"task {first}")
        time.sleep(0.02)
        ran.append(first)

    with pytest.raises(FloatingPointError):
        run_tasks(2, 64, fn, (), groups_per_thread=32)
    done = len(ran)
    time.sleep(0.1)
    assert len(ran) == done, "a thread kept working after the call returned"
    assert done <= 3, ran


@pytest.mark.parametrize("threads, n_tasks, field", [
    (0, 4, "threads"), (2.0, 4, "threads"), (True, 4, "threads"), (2, -1, "n_tasks"),
])
def test_bad_sizes_are_refused(threads, n_tasks, field):
    from routesim import ConfigError

    with pytest.raises(ConfigError, match=f"^{field} = "):
        run_tasks(threads, n_tasks, lambda a, b: None, ())


def test_no_task_runs_nothing():
    calls = []
    run_tasks(2, 0, lambda a, b: calls.append((a, b)), ())
    assert calls == []


def test_numpy_integer_sizes_are_taken():
    runs_T = np.zeros(6, np.int64)

    def fn(first: int, stop: int) -> None:
        runs_T[first:stop] += 1

    run_tasks(np.int64(2), np.int32(6), fn, ())
    assert runs_T.tolist() == [1] * 6
