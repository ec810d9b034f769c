"""Numerical faults: refused at load time when the config decides them, caught while the
run goes otherwise (NumericalFault; CLI exit status 3, one line, finished work kept)."""

import copy

import numpy as np
import pytest

from routesim import config_from_dict, controllers
from routesim import simulate
from routesim.cli import main
from routesim.exceptions import ConfigError, NumericalFault

BASE = {"run": {"steps": 8, "kernel": "generic"},
        "batch": {"num_sequences": 2, "seq_length": 32},
        "router": {"num_experts": 8, "topk": 2}}
LEARN = {"run": {"steps": 6}, "traffic": {"kind": "features"},
         "batch": {"num_sequences": 2, "seq_length": 16},
         "router": {"num_experts": 4, "topk": 2}, "penalty": {"learn": True}}
MEANFIELD = {"run": {"steps": 8, "engine": "meanfield"},
             "batch": {"num_sequences": 2, "seq_length": 32},
             "router": {"num_experts": 8, "topk": 2}}


def _cfg(base, **changes):
    data = copy.deepcopy(base)
    for key, value in changes.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return data


# -- refused at load time -------------------------------------------------------------
@pytest.mark.parametrize("changes,field", [
    ({"controller__bias_update_rate": 1e39}, "controller.bias_update_rate = 1e+39"),
    ({"controller__type": "momentum_tanh", "controller__tanh_scale": 1e-50},
     "controller.tanh_scale = 1e-50"),
    ({"traffic__noise_scale": 1e300}, "traffic.noise_scale = 1e+300"),
    ({"traffic__drift": "random_walk", "traffic__drift_std": 1e300},
     "traffic.drift_std = 1e+300"),
    ({"traffic__drift": "sinusoid", "traffic__drift_amplitude": 1e39},
     "traffic.drift_amplitude = 1e+39"),
    ({"router__capacity_factor": 1e308}, "router.capacity_factor = 1e+308"),
    ({"router__bias_mode": "multiplicative", "controller__bias_update_rate": 1e-8},
     "controller.bias_update_rate = 1e-08"),
])
def test_faults_decidable_from_the_config_are_refused_at_load(changes, field):
    with pytest.raises(ConfigError) as err:
        config_from_dict(_cfg(BASE, **changes))
    assert str(err.value).startswith(field)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("changes", [
    # 1 + 1e-7 != 1 in float32 (spacing at 1 is 2**-23 = 1.19e-7; half of it rounds up)
    {"router__bias_mode": "multiplicative", "controller__bias_update_rate": 1e-7},
    {"router__bias_mode": "multiplicative", "controller__bias_update_rate": 1e-8,
     "run__bias_dtype": "float64"},
    {"controller__bias_update_rate": 1e-40},  # 0 + 1e-40 is a float32 subnormal, not 0
    {"controller__type": "momentum_tanh", "controller__tanh_scale": 2e-38},
    {"router__capacity_factor": 1e300},  # huge but finite: no drop, no overflow
    {"traffic__noise_scale": 1e36},  # 25 x 1e36 < 3.4e38
])
def test_near_limit_settings_are_accepted(changes):
    config_from_dict(_cfg(BASE, **changes))


def test_float32_steps_match_the_hand_computed_representability():
    # Independent reference: float32 rounding of 1 + u, written out by hand.
    assert np.float32(1.0) + np.float32(1e-8) == np.float32(1.0)
    assert np.float32(1.0) + np.float32(1e-7) == np.float32(1.0) + np.float32(2.0 ** -23)


# -- caught while the run goes ----------------------------------------------------------
def test_overflowing_bias_stops_at_the_first_non_finite_step():
    # Sign law at u = 1e38: |b| grows by at most u per window, so float32 (3.4e38)
    # cannot overflow before the 4th window (step 3); it must by the 8th.
    data = _cfg(BASE, sweep__parameters={"controller.bias_update_rate": [1e-3, 1e38]})
    with pytest.raises(NumericalFault) as err:
        simulate(config_from_dict(data), progress=False)
    msg = str(err.value)
    step = int(msg.split(",")[0].removeprefix("step "))
    assert 3 <= step <= 7
    assert "point 'bias_update_rate=1e+38' (index 1): bias is inf" in msg
    assert "controller.bias_update_rate" in msg and "\n" not in msg


def _inject_inf_at_window(monkeypatch, bad_window):
    """Make the sign law return +inf for expert 0 at window ``bad_window``."""
    calls = {"n": 0}
    real = controllers.sign_update

    def faulty(xp, bias, load, rate, *share):
        out = real(xp, bias, load, rate, *share)
        calls["n"] += 1
        if calls["n"] == bad_window + 1:
            out = xp.where(xp.arange(out.shape[-1]) == 0, xp.asarray(np.inf, dtype=out.dtype),
                           out)
        return out

    monkeypatch.setattr(controllers.laws, "sign_update", faulty)


@pytest.mark.parametrize("data", [BASE, _cfg(BASE, run__kernel="auto"), MEANFIELD, LEARN],
                         ids=["exact", "exact-kernel", "meanfield", "learning"])
def test_an_inf_injected_into_the_bias_is_caught_at_its_step(monkeypatch, data):
    cfg = config_from_dict(data)
    _inject_inf_at_window(monkeypatch, 2)  # one window per step: the bias after step 2
    with pytest.raises(NumericalFault) as err:
        simulate(cfg, progress=False)
    assert str(err.value).startswith("step 2, point 'sign' (index 0): bias is inf")


def test_an_inf_on_a_later_point_names_that_point(monkeypatch):
    data = _cfg(BASE, sweep__parameters={"controller.type": ["none", "sign"]})
    _inject_inf_at_window(monkeypatch, 0)
    with pytest.raises(NumericalFault, match=r"^step 0, point 'type=sign' \(index 1\)"):
        simulate(config_from_dict(data), point_indices=[1], progress=False)


def test_a_diverging_learning_router_is_caught():
    cfg = config_from_dict(_cfg(LEARN, penalty__learning_rate=1e300, penalty__type="switch",
                                penalty__alpha=1e300))
    with pytest.raises(NumericalFault, match=r"^step 0, .*router weights is (nan|inf); "
                                             r"likely cause: .*penalty.learning_rate"):
        simulate(cfg, progress=False)


def test_finite_runs_are_untouched():
    ds = simulate(config_from_dict(BASE), progress=False)
    assert np.isfinite(ds["bias"]).all()


# -- the command line ---------------------------------------------------------------------
FAULTY = """
[run]
steps = 8
kernel = "generic"
[batch]
num_sequences = 2
seq_length = 32
[router]
num_experts = 8
topk = 2
[sweep]
"controller.bias_update_rate" = [1e-3, 1e38]
"""


def test_cli_run_reports_a_fault_in_one_line_with_status_3_and_writes_nothing(tmp_path,
                                                                           capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAULTY)
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("routesim: numerical fault: step ")
    assert "bias is inf" in err and "Traceback" not in err
    assert not (out / "results.zarr").exists()


def test_cli_sweep_keeps_finished_chunks_on_a_fault(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAULTY)
    out = tmp_path / "out"
    assert main(["sweep", str(cfg), "--out", str(out), "--no-progress"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "index 1" in err and "finished chunks are kept" in err
    chunks = sorted(p.name for p in (out / "chunks").rglob("*.nc"))
    assert chunks == ["points_00000-00000.nc"]
    assert not (out / "results.zarr").exists()


def test_cli_refuses_a_load_time_fault_with_status_2(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(FAULTY.replace("1e38", "1e39"))
    assert main(["run", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "controller.bias_update_rate = 1e+39" in err
