"""Command line: summary, outputs, and one-line errors with exit status 2."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from routesim.cli import main

BAD = sorted((Path(__file__).parent / "bad_configs").glob("*.toml"))

TINY = """
[run]
steps = 4
[batch]
num_sequences = 2
seq_length = 32
[router]
num_experts = 8
topk = 2
[sweep]
"controller.type" = ["sign", "none"]
"""


def test_run_prints_summary_and_writes_outputs(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    assert main(["run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "MaxVio_batch" in out and "MaxVio_global" in out
    assert "type=sign" in out and "type=none" in out
    assert (tmp_path / "out" / "results.zarr").is_dir()
    for name in ("maxvio_batch.png", "maxvio_batch.pdf"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_run_without_out_writes_under_results_and_says_so(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "tiny_cfg.toml"
    cfg.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), "--no-progress", "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "results: results/tiny_cfg/results.zarr" in out and "no --out given" in out
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["tiny_cfg"]
    assert main(["run", str(cfg), "--no-progress", "--no-save"]) == 0
    assert "results:" not in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    (["--no-save", "--out", "o"], "--no-save: cannot be combined with --out = 'o'"),
    (["--no-save", "--no-plot"], "--no-plot: has no effect with --no-save"),
])
def test_conflicting_output_flags_refused(tmp_path, monkeypatch, capsys, args, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(cfg), *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == [cfg]


@pytest.mark.parametrize("args,needle", [
    (["run", "missing.toml"], "cannot be read"),
    (["run", "{cfg}", "--seed", "-1"], "--seed = -1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, needle):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    args = [a.replace("{cfg}", str(cfg)) for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and err.count("\n") == 1


def test_bad_config_via_module_entry_point(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[router]\ntopk = 100\nnum_experts = 8\n")
    proc = subprocess.run([sys.executable, "-m", "routesim", "run", str(cfg)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "router.topk = 100" in proc.stderr and "Traceback" not in proc.stderr


def test_unusable_backend_refused_before_work(tmp_path, capsys):
    from routesim._backend import cupy_available

    if cupy_available()[0]:
        pytest.skip("a GPU is present")
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    assert main(["run", str(cfg), "--backend", "cupy", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cupy" in err
    if importlib.util.find_spec("cupy") is None:  # the error says how to install it
        assert "pip install 'routesim[gpu]'" in err
    assert not (tmp_path / "o").exists()


def test_sweep_command_resumable(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(TINY)
    out = tmp_path / "sw"
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 0
    first = capsys.readouterr().out
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 0
    assert capsys.readouterr().out == first
    assert main(["sweep", str(cfg), "--out", str(out), "--chunk", "0"]) == 2


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_corpus_through_the_cli(path, tmp_path, monkeypatch, capsys):
    """`routesim run FILE --out DIR`: exit 2, one line naming the field, nothing written."""
    monkeypatch.chdir(path.parent)  # trace paths in the corpus are relative to it
    field = path.read_text().splitlines()[0].removeprefix("# field: ")
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("routesim: error: ") and captured.err.count("\n") == 1
    assert field in captured.err and "Traceback" not in captured.err
    assert not out.exists()


def test_bad_trace_through_the_cli_subprocess(tmp_path):
    trace = tmp_path / "t.npz"
    trace.write_text("not an archive")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[traffic]\nkind = 'trace'\ntrace = '{trace}'\n")
    proc = subprocess.run([sys.executable, "-m", "routesim", "run", str(cfg),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"traffic.trace = '{trace}': is not an .npz archive" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_run_summarises_several_layers_by_their_median(tmp_path, capsys):
    """A multi-layer run prints one row per point, each value the median over layers."""
    path = tmp_path / "layers.toml"
    path.write_text("[run]\nsteps = 4\n[model]\nnum_layers = 3\n"
                    "[router]\nnum_experts = 8\ntopk = 2\n"
                    "[batch]\nnum_sequences = 4\nseq_length = 16\nmicro_batch_size = 1\n"
                    "[placement]\nep_size = 2\n")
    assert main(["run", str(path), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the median over the 3 layers" in out and out.count("\nsign ") == 1
