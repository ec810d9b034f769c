"""Resource bombs are refused before any allocation; the estimate tracks measured memory."""

import time
import tracemalloc

import pytest

from routesim import config_from_dict, resources
from routesim import simulate
from routesim.cli import main
from routesim.config import RunConfig
from routesim.exceptions import ConfigError, ResourceError
from routesim.sweep import run_sweep

BOMBS = {
    "num_experts": ({"router": {"num_experts": 10**9}}, "router.num_experts (1000000000)"),
    "replicas": ({"run": {"replicas": 10**9}}, "run.replicas (1000000000)"),
    "feature_dim": ({"traffic": {"kind": "features", "feature_dim": 10**9}},
                    "traffic.feature_dim (1000000000)"),
    "feature_dim_learning": ({"traffic": {"kind": "features", "feature_dim": 10**9},
                             "penalty": {"learn": True}}, "traffic.feature_dim (1000000000)"),
    "steps": ({"run": {"steps": 10**12}}, "run.steps (1000000000000)"),
    "tokens_per_step": ({"batch": {"num_sequences": 4 * 10**9, "seq_length": 250}},
                        "batch.num_sequences (4000000000)"),
    "meanfield_experts": ({"run": {"engine": "meanfield"}, "router": {"num_experts": 10**6}},
                          "router.num_experts (1000000)"),
    "grid": ({"sweep": {"parameters": {
        "controller.bias_update_rate": [1e-3 + i * 1e-7 for i in range(10**4)],
        "traffic.noise_scale": [1.0 + i for i in range(10**4)]}}},
        "sweep.parameters = '<100000000 points>'"),
}


@pytest.mark.parametrize("name", list(BOMBS))
def test_each_bomb_is_refused_within_a_second_naming_the_field(name):
    data, field = BOMBS[name]
    start = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        simulate(config_from_dict(data), progress=False)
    assert time.perf_counter() - start < 1.0
    assert field in str(err.value) and "\n" not in str(err.value)


def test_a_bomb_is_refused_by_the_cli_before_anything_is_written(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[router]\nnum_experts = 1000000000\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "router.num_experts (1000000000)" in err
    assert not out.exists()
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_run_sweep_counts_one_chunk_per_worker(tmp_path):
    data = {"run": {"steps": 4}, "batch": {"num_sequences": 2, "seq_length": 32},
            "router": {"num_experts": 8, "topk": 2},
            "sweep": {"parameters": {"controller.bias_update_rate": [1e-3, 2e-3, 3e-3]}}}
    one = resources.estimate(config_from_dict(data), [0]).bytes
    data["run"]["max_memory"] = int(2.5 * one)  # 2 workers fit, 3 do not
    cfg = config_from_dict(data)
    run_sweep(cfg, tmp_path / "a", workers=1)
    with pytest.raises(ResourceError, match="3 workers x"):
        run_sweep(cfg, tmp_path / "b", workers=3)
    assert not (tmp_path / "b").exists()


def test_a_normal_config_passes_and_keeps_its_progress_setting():
    cfg = config_from_dict({})
    for progress in (None, False, True):
        assert resources.check(cfg, None, progress) is progress


def test_a_long_run_is_announced_and_shows_progress(monkeypatch, capsys):
    monkeypatch.setattr(resources, "LONG_RUN_OPERATIONS", 1000)
    cfg = config_from_dict({})
    assert resources.check(cfg, None, None) is True
    assert resources.check(cfg, None, False) is False
    err = capsys.readouterr().err
    assert err.count("routesim: a long run: about") == 2 and "run.steps (200)" in err


@pytest.mark.parametrize("value,size", [(1000, 1000), ("8GB", 8 * 10**9), ("512MiB", 2**29),
                                        ("1.5 kB", 1500), ("2e3", 2000)])
def test_max_memory_accepts_bytes_and_units(value, size):
    assert RunConfig(max_memory=value).max_memory_bytes == size


@pytest.mark.parametrize("value", ["lots", "8 XB", 0, -5, "0GB", 1.5])
def test_max_memory_refuses_other_values(value):
    with pytest.raises(ConfigError, match=r"^run\.max_memory = "):
        RunConfig(max_memory=value)


def test_max_memory_refuses_a_run_above_it():
    data = {"run": {"steps": 4, "max_memory": "1kB"}, "batch": {"num_sequences": 2,
            "seq_length": 32}, "router": {"num_experts": 8, "topk": 2}}
    with pytest.raises(ResourceError, match=r"more than the run\.max_memory \(1 kB\)"):
        simulate(config_from_dict(data), progress=False)
    data["run"]["max_memory"] = "1GB"
    simulate(config_from_dict(data), progress=False)


# Mid-size runs, each dominated by one term of the estimate. What is measured: the
# tracemalloc peak of NumPy/Python allocations during simulate() (the generic array code;
# compiled kernels allocate outside tracemalloc's view), after a warm-up run.
MEASURED = {
    "recorded outputs": {"run": {"steps": 1500, "replicas": 2, "kernel": "generic"},
                         "batch": {"num_sequences": 2, "seq_length": 16},
                         "router": {"num_experts": 64, "topk": 4}},
    "routed chunk (capacity)": {"run": {"steps": 2, "kernel": "generic"},
                                "batch": {"num_sequences": 32, "seq_length": 256},
                                "router": {"num_experts": 64, "topk": 8,
                                           "capacity_factor": 1.25}},
    "routed chunk (dropless)": {"run": {"steps": 2, "kernel": "generic", "replicas": 2},
                                "batch": {"num_sequences": 64, "seq_length": 256},
                                "router": {"num_experts": 64, "topk": 8}},
    "learning logits": {"run": {"steps": 3}, "traffic": {"kind": "features",
                                                         "feature_dim": 64},
                        "batch": {"num_sequences": 16, "seq_length": 128},
                        "router": {"num_experts": 64, "topk": 4},
                        "penalty": {"learn": True, "optimizer": "adam"}},
    "learning logits (capacity)": {"run": {"steps": 3}, "traffic": {"kind": "features",
                                                                    "feature_dim": 64},
                                   "batch": {"num_sequences": 16, "seq_length": 128,
                                             "micro_batch_size": 4},
                                   "router": {"num_experts": 64, "topk": 4,
                                              "capacity_factor": 1.0},
                                   "penalty": {"learn": True, "optimizer": "adam",
                                               "type": "switch", "alpha": 0.01}},
}


@pytest.mark.parametrize("name", list(MEASURED))
def test_estimate_is_within_a_factor_two_of_the_measured_peak(name):
    cfg = config_from_dict(MEASURED[name])
    simulate(cfg.replace(**{"run.steps": 1}), progress=False)  # warm caches and imports
    tracemalloc.start()
    try:
        simulate(cfg, progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ratio = resources.estimate(cfg).bytes / peak
    assert 0.5 < ratio < 2.0, (name, ratio)
