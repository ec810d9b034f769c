"""Controllers: each law against a plain-Python loop, and their invariants."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from routesim import controllers as C
from routesim.config import config_from_dict

LOADS = np.array([[[40.0, 30.0, 20.0, 10.0], [25.0, 25.0, 25.0, 25.0]]])  # (P=1, R=2, E=4)


def _sign(x):
    return int(x > 0) - int(x < 0)


def _py_sign(bias, load, u):
    m = sum(load) / len(load)
    return [b + u * _sign(m - c) for b, c in zip(bias, load)]


def _py_sign_centred(bias, load, u):
    m = sum(load) / len(load)
    d = [u * _sign(m - c) for c in load]
    md = sum(d) / len(d)
    return [b + x - md for b, x in zip(bias, d)]


def _py_prop(bias, load, u):
    m = sum(load) / len(load)
    return [b + u * (m - c) / m for b, c in zip(bias, load)]


def _py_ema(bias, load, ema, u, beta, cap):
    n = len(load)
    total = sum(load)
    ema = [beta * e + (1 - beta) * c / total for e, c in zip(ema, load)]
    d = [u * (1 / n - e) for e in ema]
    md = sum(d) / n
    new = [b + x - md for b, x in zip(bias, d)]
    if cap > 0:
        new = [min(max(v, -cap), cap) for v in new]
    return new, ema


def _py_rms(bias, load, u):
    n = len(load)
    total = sum(load)
    dev = [c / total - 1 / n for c in load]
    rms = math.sqrt(sum(x * x for x in dev) / n)
    if rms == 0:
        return list(bias)
    return [b - u * x / rms for b, x in zip(bias, dev)]


def _py_tanh(bias, load, vel, u, beta, kappa):
    m = sum(load) / len(load)
    vel = [beta * v + (1 - beta) * math.tanh(((m - c) / m) / kappa) for v, c in zip(vel, load)]
    d = [u * v for v in vel]
    md = sum(d) / len(d)
    return [b + x - md for b, x in zip(bias, d)], vel


def _rows(a):
    return [list(map(float, a[0, r])) for r in range(a.shape[1])]


def test_sign_against_python_and_megatron_formula():
    bias = np.array([[[0.1, 0.0, -0.2, 0.3], [0.0, 0.0, 0.0, 0.0]]])
    got = C.sign_update(np, bias, LOADS, 1e-3)
    for r in range(2):
        np.testing.assert_allclose(got[0, r], _py_sign(bias[0, r], LOADS[0, r], 1e-3))
    # Megatron get_updated_expert_bias: offset = average - tokens; bias + sign(offset) * rate
    tokens = LOADS[0, 0]
    average = tokens.sum() / tokens.size
    megatron = bias[0, 0] + np.sign(average - tokens) * 1e-3
    np.testing.assert_array_equal(got[0, 0], megatron)
    # sign(0) = 0: a balanced window leaves the bias as it was
    np.testing.assert_array_equal(got[0, 1], bias[0, 1])


def test_sign_centred_and_proportional_and_rms():
    bias = np.array([[[0.1, 0.0, -0.2, 0.3], [0.5, 0.0, 0.0, 0.0]]])
    for fn, ref in ((C.sign_centred_update, _py_sign_centred),
                    (C.proportional_update, _py_prop), (C.rms_update, _py_rms)):
        got = fn(np, bias, LOADS, 0.01)
        for r in range(2):
            np.testing.assert_allclose(got[0, r], ref(list(bias[0, r]), list(LOADS[0, r]), 0.01),
                                       atol=1e-15)


@pytest.mark.parametrize("cap", [0.0, 0.004])
def test_ema_against_python(cap):
    bias = np.zeros((1, 2, 4))
    ema = np.zeros((1, 2, 4))
    ref_b = [[0.0] * 4, [0.0] * 4]
    ref_e = [[0.0] * 4, [0.0] * 4]
    for _ in range(5):
        bias, ema = C.ema_update(np, bias, LOADS, ema, 0.05, 0.9, np.float64(cap))
        for r in range(2):
            ref_b[r], ref_e[r] = _py_ema(ref_b[r], list(LOADS[0, r]), ref_e[r], 0.05, 0.9, cap)
    np.testing.assert_allclose(_rows(bias), ref_b, atol=1e-15)
    np.testing.assert_allclose(_rows(ema), ref_e, atol=1e-15)


def test_momentum_tanh_against_python():
    bias = np.zeros((1, 2, 4))
    vel = np.zeros((1, 2, 4))
    ref = [([0.0] * 4, [0.0] * 4) for _ in range(2)]
    for _ in range(4):
        bias, vel = C.momentum_tanh_update(np, bias, LOADS, vel, 0.01, 0.8, 0.1)
        ref = [_py_tanh(ref[r][0], list(LOADS[0, r]), ref[r][1], 0.01, 0.8, 0.1)
               for r in range(2)]
    np.testing.assert_allclose(_rows(bias), [x[0] for x in ref], atol=1e-15)


def test_quantile_update_recentres():
    bias = np.array([[[1.0, 2.0, 3.0]]])
    est = np.array([[[0.0, 1.0, 5.0]]])
    got = C.quantile_update(np, bias, est, 0.25)
    blend = 0.25 * bias + 0.75 * est
    np.testing.assert_allclose(got, blend - blend.mean())


def _params(types, rates, **kw):
    cfg = config_from_dict({"sweep": {"mode": "zip", "controller.type": list(types),
                                      "controller.bias_update_rate": list(rates)},
                            "controller": kw})
    return C.make_controller_params(cfg.points())


def test_update_bias_dispatches_each_point_to_its_law(xp):
    types = ["none", "sign", "proportional", "sign_centred"]
    params = _params(types, [0.1, 0.01, 0.02, 0.03])
    load = np.broadcast_to(LOADS[:, :1], (4, 1, 4)).copy()
    bias = np.zeros((4, 1, 4))
    got, _ = C.update_bias(xp, params, xp.asarray(bias), xp.asarray(bias), xp.asarray(load),
                           None, 0)
    got = np.asarray(got)
    np.testing.assert_array_equal(got[0, 0], 0.0)
    np.testing.assert_allclose(got[1, 0], _py_sign([0] * 4, LOADS[0, 0], 0.01))
    np.testing.assert_allclose(got[2, 0], _py_prop([0] * 4, LOADS[0, 0], 0.02))
    np.testing.assert_allclose(got[3, 0], _py_sign_centred([0] * 4, LOADS[0, 0], 0.03))


def test_warmup_holds_ema():
    params = _params(["ema"], [0.5], warmup_steps=2)
    bias = np.zeros((1, 1, 4))
    load = LOADS[:, :1]
    held, _ = C.update_bias(np, params, bias, bias, load, None, windows_done=1)
    moved, _ = C.update_bias(np, params, bias, bias, load, None, windows_done=2)
    assert np.all(held == 0) and np.any(moved != 0)


loads_strategy = arrays(np.int64, (3, 8), elements=st.integers(0, 1000))


@given(loads_strategy, st.floats(1e-4, 0.1))
def test_centred_sign_keeps_mean_bias(load, u):
    bias = np.zeros((1, 3, 8))
    for _ in range(5):
        bias = C.sign_centred_update(np, bias, load[None], u)
    np.testing.assert_allclose(bias.mean(axis=-1), 0.0, atol=1e-12)


@given(st.lists(loads_strategy, min_size=1, max_size=20), st.floats(1e-4, 0.1))
def test_sign_bias_moves_at_most_u_per_window(loads, u):
    bias = np.zeros((1, 3, 8))
    for t, load in enumerate(loads, start=1):
        bias = C.sign_update(np, bias, load[None], u)
        assert np.max(np.abs(bias)) <= u * t * (1 + 1e-12)


# -- the registry: a user's law in every engine and in sweeps ---------------
import json  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

from routesim import ConfigError, load, simulate  # noqa: E402
from routesim.cli import main as cli_main  # noqa: E402

EXAMPLE = Path(__file__).parent.parent / "examples" / "pi_controller.py"


def _pi(xp, bias, load, memory, params):
    """PI on the relative error; the integral is the memory."""
    load = xp.astype(load, bias.dtype)
    mean = xp.mean(load, axis=-1, keepdims=True)
    err = xp.where(mean > 0, (mean - load) / xp.where(mean > 0, mean, 1.0), 0.0)
    integral = memory + err
    return params["kp"] * err + params["ki"] * integral, integral


NONNEG = dict(check=lambda v: v >= 0, allowed="must be >= 0")


@pytest.fixture
def pi():
    with C.registered_temporarily("pi", _pi, params={"kp": C.Param(0.05, **NONNEG),
                                                     "ki": C.Param(0.01, **NONNEG)}) as law:
        yield law


def _py_pi(loads_SE, kp, ki):
    """Brute force: the bias after each window, one expert at a time in plain Python."""
    n = len(loads_SE[0])
    integral, out = [0.0] * n, []
    for load in loads_SE:
        m = sum(float(c) for c in load) / n
        err = [(m - float(c)) / m if m > 0 else 0.0 for c in load]
        integral = [i + e for i, e in zip(integral, err)]
        out.append([kp * e + ki * i for e, i in zip(err, integral)])
    return out


def _check_against_python(ds, kis, kp=0.05):
    """bias[t + 1] is the law applied to the loads of steps 0..t (one window per step)."""
    load, bias = ds["expert_load"].values, ds["bias"].values  # (S, P, R, E)
    for p, ki in enumerate(kis):
        for r in range(load.shape[2]):
            want = _py_pi(load[:-1, p, r], kp, ki)
            np.testing.assert_allclose(bias[1:, p, r], want, rtol=1e-12, atol=1e-14)
    assert np.ptp(bias[-1, 0, 0]) > 0  # the law did act


SMALL = {"run": {"steps": 6, "replicas": 2, "seed": 3, "bias_dtype": "float64"},
         "batch": {"num_sequences": 4, "seq_length": 16},
         "router": {"num_experts": 8, "topk": 2}, "traffic": {"skew": "linear"},
         "controller": {"type": "pi"}}
ENGINES = {
    "exact": {},
    "exact-generic": {"run": {**SMALL["run"], "kernel": "generic"}},
    "meanfield": {"run": {**SMALL["run"], "engine": "meanfield"}},
    "learning": {"traffic": {"kind": "features"}, "penalty": {"learn": True},
                 "router": {**SMALL["router"], "score_function": "softmax"}},
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_user_law_runs_in_every_engine_and_matches_python(pi, engine):
    data = {**SMALL, **ENGINES[engine],
            "sweep": {"controller.params.ki": [0.0, 0.02]}}
    ds = simulate(config_from_dict(data), progress=False)
    _check_against_python(ds, [0.0, 0.02])


def test_user_law_sweep_through_the_cli(pi, tmp_path, capsys):
    cfg = tmp_path / "pi.toml"
    cfg.write_text('[run]\nsteps = 5\nbias_dtype = "float64"\n[batch]\nnum_sequences = 4\n'
                   'seq_length = 16\n[router]\nnum_experts = 8\ntopk = 2\n[traffic]\n'
                   'skew = "linear"\n[controller]\ntype = "pi"\n[controller.params]\n'
                   'kp = 0.05\n[sweep]\n"controller.params.ki" = [0.0, 0.01, 0.03]\n')
    assert cli_main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    ds = load(tmp_path / "out" / "results.zarr")
    _check_against_python(ds, [0.0, 0.01, 0.03])
    stored = json.loads(ds.attrs["config"])
    assert stored["controller"]["params"] == {"kp": 0.05}
    assert stored["sweep"]["parameters"]["controller.params.ki"] == [0.0, 0.01, 0.03]
    assert list(ds["label"].values) == ["params.ki=0.0", "params.ki=0.01", "params.ki=0.03"]


def test_spawned_sweep_workers_register_the_law_from_controller_module(tmp_path):
    """Workers start fresh: the config names the file that registers the law."""
    cfg = tmp_path / "pi.toml"
    cfg.write_text('[run]\nsteps = 4\nbias_dtype = "float64"\n[batch]\nnum_sequences = 4\n'
                   'seq_length = 16\n[router]\nnum_experts = 8\ntopk = 2\n[traffic]\n'
                   f'skew = "linear"\n[controller]\ntype = "pi"\nmodule = {str(EXAMPLE)!r}\n'
                   '[controller.params]\nkp = 0.05\n'
                   '[sweep]\n"controller.params.ki" = [0.0, 0.01]\n')
    try:
        assert cli_main(["sweep", str(cfg), "--out", str(tmp_path / "out"), "--workers", "2",
                         "--no-progress"]) == 0
        ds = load(tmp_path / "out" / "results.zarr")
        _check_against_python(ds, [0.0, 0.01])
    finally:
        C.unregister("pi")


def test_example_pi_controller_runs_a_sweep(tmp_path, capsys):
    try:
        example = C.import_law_module(str(EXAMPLE))
        ds = example.main(out_dir=tmp_path / "pi", steps=8, workers=1)
    finally:
        C.unregister("pi")
    assert ds.sizes["point"] == 3 and "late MaxVio" in capsys.readouterr().out
    assert np.isfinite(ds["maxvio_batch"].values).all()


@pytest.mark.parametrize("data,message", [
    ({"params": {"ki": -1.0}}, "controller.params.ki = -1.0: must be >= 0"),
    ({"params": {"kp": float("nan")}}, "controller.params.kp = nan: must be a finite number"),
    ({"params": {"kp": "fast"}}, "controller.params.kp = 'fast': must be a number"),
    ({"params": {"kk": 0.1}}, "controller.params.kk = 0.1: has no effect"),
    ({"momentum": 0.5}, "controller.momentum = 0.5: has no effect"),
])
def test_invalid_user_law_settings_are_refused_in_one_line(pi, data, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        config_from_dict({"controller": {"type": "pi", **data}})
    assert "\n" not in str(err.value)


def test_swept_invalid_parameter_and_unused_parameter_are_refused(pi):
    with pytest.raises(ConfigError, match=re.escape("controller.params.ki = -0.5: must be")):
        config_from_dict({"controller": {"type": "pi"},
                          "sweep": {"controller.params.ki": [0.1, -0.5]}})
    with pytest.raises(ConfigError, match=re.escape("controller.params.ki = 0.1: has no effect, "
                                                    "controller.type = 'sign' does not use "
                                                    "it (only 'pi' does)")):
        config_from_dict({"controller": {"type": "sign", "params": {"ki": 0.1}}})
    # a parameter used by one point of the sweep is accepted
    cfg = config_from_dict({"controller": {"params": {"ki": 0.1}},
                            "sweep": {"controller.type": ["sign", "pi"]}})
    assert [p.controller.type for p in cfg.points()] == ["sign", "pi"]


def test_unknown_type_is_refused_listing_the_registered_names(pi):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"controller": {"type": "pid"}})
    msg = str(err.value)
    assert msg.startswith("controller.type = 'pid': must be a registered controller: none, sign,")
    assert "quantile, dual_ascent, zero_budget, pi" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="controller.module = 'no_such_mod': cannot be imported"):
        config_from_dict({"controller": {"type": "pid", "module": "no_such_mod"}})


def test_params_round_trip_and_replace_by_dotted_path(pi):
    cfg = config_from_dict({"controller": {"type": "pi", "params": {"ki": 0.02}}})
    assert config_from_dict(json.loads(cfg.to_json())) == cfg
    again = cfg.replace(**{"controller.params.kp": 0.3})
    assert dict(again.controller.params) == {"ki": 0.02, "kp": 0.3}
    assert "params" not in config_from_dict({}).to_dict()["controller"]  # stored as before


def test_registry_refuses_clashes_and_restores_temporary_laws(pi):
    with pytest.raises(ValueError, match="already registered"):
        C.register("pi", C.laws._sign)
    with pytest.raises(ValueError, match="built-in law cannot be replaced"):
        C.register("sign", _pi)
    with pytest.raises(ValueError, match="built-in law cannot be removed"):
        C.unregister("ema")
    with pytest.raises(ValueError, match="default of ki = -1"):
        C.register("bad", _pi, params={"ki": C.Param(-1.0, **NONNEG)})
    with pytest.raises(ValueError, match="field 'gain'"):
        C.register("bad", _pi, fields=("gain",))
    with C.registered_temporarily("pi", C.laws._sign, fields=("bias_update_rate",)):
        assert C.get_law("pi").law is C.laws._sign
    assert C.get_law("pi").law is _pi
    assert "bad" not in C.registered()


def test_builtin_laws_through_the_registry_equal_the_plain_formulas():
    """Each built-in registration reads its parameters by the right name."""
    cfgs = {
        "sign": ({}, lambda b, l, m: (C.sign_update(np, b, l, 0.02), m)),
        "ema": ({"momentum": 0.5, "bias_cap": 0.01},
                lambda b, l, m: C.ema_update(np, b, l, m, 0.02, 0.5, 0.01)),
        "momentum_tanh": ({"momentum": 0.3, "tanh_scale": 0.2},
                          lambda b, l, m: C.momentum_tanh_update(np, b, l, m, 0.02, 0.3, 0.2)),
        "rms": ({}, lambda b, l, m: (C.rms_update(np, b, l, 0.02), m)),
    }
    bias, memory = np.full((1, 2, 4), 0.003), np.full((1, 2, 4), 0.1)
    for law, (extra, ref) in cfgs.items():
        cfg = config_from_dict({"controller": {"type": law, "bias_update_rate": 0.02, **extra}})
        got = C.update_bias(np, C.make_controller_params(cfg.points()), bias, memory, LOADS,
                            None, 0)
        for a, b in zip(got, ref(bias, LOADS, memory)):
            np.testing.assert_array_equal(a, b)
    est = np.array([[[0.2, -0.1, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0]]])
    cfg = config_from_dict({"controller": {"type": "quantile", "quantile_ema": 0.25}})
    got, _ = C.update_bias(np, C.make_controller_params(cfg.points()), bias, memory, LOADS, est,
                           0)
    np.testing.assert_array_equal(got, C.quantile_update(np, bias, est, 0.25))
