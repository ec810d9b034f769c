"""Interrupts lose nothing and leave nothing behind.

A killed or interrupted ``routesim sweep --workers 2`` leaves no worker
running, keeps its finished chunks and resumes to the numbers of an
uninterrupted run; unreadable chunks are computed again; a changed config,
or an ``--out`` that cannot be written, is refused before any work; figures
never sit beside results they do not show.
"""

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xarray as xr

from routesim import ConfigError, load_config
from routesim.cli import main
from routesim.store import load
from routesim.sweep import run_sweep

# Four chunks of two points, of two to three seconds each: a 2-worker sweep is
# still busy when its first chunk appears, even on a loaded machine (where the
# test's own polling may lag by a second).
SLOW = """
[run]
steps = 250
seed = 3
[batch]
num_sequences = 8
seq_length = 256
[router]
num_experts = 32
topk = 4
[sweep]
"controller.bias_update_rate" = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
"""

TINY = """
[run]
steps = 4
seed = 1
[batch]
num_sequences = 2
seq_length = 16
[router]
num_experts = 8
topk = 2
[sweep]
"controller.bias_update_rate" = [1e-3, 1e-2, 1e-1]
"""

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


@pytest.fixture(scope="module")
def slow(tmp_path_factory):
    """The slow config and its uninterrupted sweep (same chunking, in this process)."""
    base = tmp_path_factory.mktemp("slow")
    path = base / "slow.toml"
    path.write_text(SLOW)
    cfg = load_config(path)
    return path, cfg, run_sweep(cfg, base / "whole", points_per_chunk=2, progress=False)


def _group(pgid: int) -> list[str]:
    """Live (non-zombie) processes of process group ``pgid``, from /proc."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(d.name)
    return found


def _chunks(out: Path) -> list[Path]:
    return sorted(out.glob("chunks/*/points_*.nc"))


def _default_sigint() -> None:
    """The sweep's own Ctrl-C handling, whatever this test process inherited: a shell
    that starts a job in the background ignores SIGINT for it, and children inherit
    that (a Python started with SIGINT ignored keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _start_then_signal(cfg_path: Path, out: Path, sig: int, to_group: bool):
    """Start a 2-worker sweep in its own session; signal it once a chunk exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "routesim", "sweep", str(cfg_path), "--out", str(out),
         "--chunk", "2", "--workers", "2", "--no-progress"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while not _chunks(out):
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no chunk within 120 s"
        time.sleep(0.05)
    assert len(_chunks(out)) < 4, "the sweep finished before it could be interrupted"
    if to_group:  # a terminal's Ctrl-C reaches every process of the foreground group
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    return proc, time.monotonic()


def _assert_no_process_left(pgid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _group(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _group(pgid) == [], f"processes of the sweep still running after {within} s"


@needs_proc
@pytest.mark.parametrize("sig,to_group", [(signal.SIGKILL, False), (signal.SIGTERM, False),
                                          (signal.SIGINT, True)],
                         ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_signal_stops_every_worker_and_resume_is_identical(slow, tmp_path, sig, to_group):
    cfg_path, cfg, whole = slow
    out = tmp_path / "out"
    proc, sent = _start_then_signal(cfg_path, out, sig, to_group)
    try:
        err = proc.communicate(timeout=15)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the sweep did not exit within 15 s of the signal")
    waited = time.monotonic() - sent
    _assert_no_process_left(proc.pid)
    kept = _chunks(out)
    assert 1 <= len(kept) < 4
    assert not list(out.glob("chunks/*/.*")), "a partial write was left behind"
    if sig != signal.SIGKILL:
        assert proc.returncode == 128 + sig, err
        assert waited < 10, f"stopped {waited:.1f} s after the signal"
        assert f"interrupted: {len(kept)} of 4 chunks kept in" in err, err
        assert "re-run the same command to resume" in err and "Traceback" not in err
    assert all(p.stat().st_size > 0 for p in kept)
    resumed = run_sweep(cfg, out, points_per_chunk=2, progress=False)
    xr.testing.assert_identical(resumed, whole)
    xr.testing.assert_identical(load(out / "results.zarr"), whole)


@pytest.fixture()
def tiny(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path, load_config(path)


def test_truncated_and_empty_chunks_are_computed_again(tiny, tmp_path, monkeypatch):
    import routesim.sweep as sweep

    _, cfg = tiny
    whole = run_sweep(cfg, tmp_path / "a", progress=False)
    out = tmp_path / "b"
    real, ran = sweep._simulate_chunk, []

    def stop_at_last(config_json, points, path, write=True):
        if points == [2]:
            raise KeyboardInterrupt
        return real(config_json, points, path, write)

    monkeypatch.setattr(sweep, "_simulate_chunk", stop_at_last)
    with pytest.raises(sweep.SweepInterrupted):
        run_sweep(cfg, out, progress=False)
    first, second = _chunks(out)
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])  # truncated
    (second.parent / "points_00002-00002.nc").write_bytes(b"")             # empty
    monkeypatch.setattr(sweep, "_simulate_chunk", lambda *a: ran.append(a[1]) or real(*a))
    xr.testing.assert_identical(run_sweep(cfg, out, progress=False), whole)
    assert ran == [[0], [2]]  # the good chunk (point 1) is not computed again


def _tree(path: Path) -> dict:
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_changed_config_refused_unless_overwrite(tiny, tmp_path, capsys):
    path, cfg = tiny
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 0
    before = _tree(out / "results.zarr")
    path.write_text(TINY.replace("steps = 4", "steps = 5"))
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "run.steps (4 -> 5)" in err and "--overwrite" in err and err.count("\n") == 1
    assert _tree(out / "results.zarr") == before
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    new = run_sweep(load_config(path), tmp_path / "fresh", progress=False)
    xr.testing.assert_identical(load(out / "results.zarr"), new)
    assert not (out / "chunks").exists()  # removed with the join
    with pytest.raises(ConfigError, match="another config"):
        run_sweep(cfg, out, progress=False)


def _uncreatable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    paths = [blocker / "out"]
    if Path("/proc/self").exists():  # nothing can be created there, not even by root
        paths.append(Path("/proc/routesim-no-such-dir/out"))
    return paths


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_uncreatable_out_refused_before_work(tiny, tmp_path, capsys, monkeypatch, command):
    engine = importlib.import_module("routesim.run")  # the module, not the function

    def no_work(*args, **kwargs):
        raise AssertionError("simulated before the output was checked")

    monkeypatch.setattr(engine, "simulate", no_work)
    path, _ = tiny
    for out in _uncreatable(tmp_path):
        assert main([command, str(path), "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"--out = {str(out)!r}" in err and "cannot be created" in err
        assert "Traceback" not in err and err.count("\n") == 1


FIGURES = ("maxvio_batch.png", "maxvio_batch.pdf")


def test_no_stale_figure_beside_new_results(tiny, tmp_path):
    path, _ = tiny
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert all((out / f).exists() for f in FIGURES)
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--no-plot",
                 "--seed", "7"]) == 0
    assert not any((out / f).exists() for f in FIGURES)
    assert main(["run", str(path), "--out", str(out), "--no-progress", "--seed", "7"]) == 0
    # the results of a sweep replace those of the run: the run's figure goes with them
    assert main(["sweep", str(path), "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert not any((out / f).exists() for f in FIGURES)


def test_interrupted_figure_write_keeps_the_previous_file(tiny, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path, _ = tiny
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    names = sorted(p.name for p in out.iterdir())
    before = {f: (out / f).read_bytes() for f in FIGURES}

    def torn(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", torn)
    from routesim.plot import save_figure

    fig = Figure()
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, out / "maxvio_batch")
    assert {f: (out / f).read_bytes() for f in FIGURES} == before
    assert sorted(p.name for p in out.iterdir()) == names


POOL_SCRIPT = """
import os, sys, time
from pathlib import Path
from routesim.sweep import worker_pool


def busy(folder):
    Path(folder, str(os.getpid())).touch()
    time.sleep(60)


if __name__ == "__main__":
    folder = sys.argv[2]
    with worker_pool(2, threads_per_worker=1) as pool:
        running = [pool.submit(busy, folder) for _ in range(2)]
        while len(os.listdir(folder)) < 2:  # both workers busy
            time.sleep(0.05)
        print("busy", flush=True)
        sys.stdin.readline()  # the test has seen the workers
        if sys.argv[1] == "raise":
            raise RuntimeError("stop")
        running[0].result()
"""


def _alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@needs_proc
@pytest.mark.parametrize("how", ["parent killed", "error in the block"])
def test_worker_pool_leaves_no_worker_behind(tmp_path, how):
    """Two workers busy for a minute: they stop within seconds when their parent is
    killed (SIGKILL: no clean-up code runs in it) or leaves the block with an error."""
    script, pids = tmp_path / "pool.py", tmp_path / "pids"
    script.write_text(POOL_SCRIPT)
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, str(script),
                             "wait" if how == "parent killed" else "raise", str(pids)],
                            start_new_session=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "busy", proc.stderr.read()
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        if how == "parent killed":
            proc.kill()
        err = proc.communicate("go\n", timeout=15)[1]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    if how != "parent killed":
        assert proc.returncode == 1 and "RuntimeError: stop" in err, err
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "a worker outlived its pool"
    _assert_no_process_left(proc.pid)
