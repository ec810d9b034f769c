"""``routesim.predict`` against the exact engine on the same configs.

References: the engine's measurements (token frequencies, late MaxVio,
stability of the loop), never the formulas ``predict`` is built from.
"""

from __future__ import annotations

import numpy as np
import pytest

from routesim import ConfigError, TheoryWarning, config_from_dict, predict, simulate
from routesim.theory import not_modelled

BASE = {"run": {"steps": 120, "replicas": 2, "bias_dtype": "float64",
                "record_displacement": False},
        "router": {"num_experts": 8, "topk": 2},
        "batch": {"num_sequences": 4, "seq_length": 256},
        "traffic": {"skew": "zipf"}}


def _config(controller: dict, sweep: dict | None = None, **sections) -> dict:
    data = {**BASE, "controller": controller, **sections}
    if sweep:
        data["sweep"] = sweep
    return config_from_dict(data)


@pytest.fixture(scope="module")
def proportional():
    """One grid of rates around u_c, predicted and simulated."""
    cfg = _config({"type": "proportional"},
                  {"controller.bias_update_rate": ["0.3 u_c", "0.8 u_c", "0.9 u_c", "1.1 u_c"]})
    return predict(cfg), simulate(cfg, progress=False)


def _late_maxvio(sim):
    half = sim.sizes["step"] // 2
    return sim["maxvio_batch"].isel(step=slice(half, None)).mean(["step", "replica"]).values


def test_points_line_up_with_simulate(proportional):
    pred, sim = proportional
    for name in ("point", "label", "controller.bias_update_rate",
                 "controller.bias_update_rate.resolved"):
        assert (pred[name].values == sim[name].values).all(), name
    assert pred.attrs["config"] == sim.attrs["config"]


def test_steady_maxvio_matches_the_engine_below_u_c(proportional):
    # the engine's late MaxVio_batch (two replicas, 60 steps) within 10 % of the
    # stationary loop driven by counting noise, up to 0.9 u_c
    pred, sim = proportional
    mv = _late_maxvio(sim)
    ratio = mv[:3] / pred["maxvio_steady"].values[:3]
    assert np.all(np.abs(ratio - 1.0) < 0.10), ratio


def test_critical_rate_separates_settling_from_oscillation(proportional):
    # just below u_c the engine settles to its noise floor; just above, the
    # fastest mode grows until the loop saturates in a period-2 oscillation:
    # MaxVio far above the floor, and most bias updates reverse direction
    pred, sim = proportional
    mv = _late_maxvio(sim)
    assert np.isnan(pred["maxvio_steady"].values[3])
    assert "critical rate" in str(pred["note"].values[3])
    assert mv[3] > 1.5 * mv[2] and mv[3] > 1.5 * float(pred["maxvio_steady"][2]), mv
    # the bias itself: below u_c it sits near b*, above it swings around b*
    off = (sim["bias"] - sim["bias"].mean("expert") - pred["equilibrium_bias"])
    swing = np.abs(off).isel(step=slice(60, None)).max(["step", "replica", "expert"]).values
    assert swing[3] > 2 * swing[2], swing


def test_settling_time_matches_the_engine():
    # steps until the engine's replica-mean bias stays within 10 % of its initial
    # distance from b* (last exit, whole steps) against the prediction
    cfg = _config({"momentum": 0.5, "tanh_scale": 0.5},
                  {"mode": "zip",
                   "controller.type": ["proportional", "proportional", "ema", "momentum_tanh"],
                   "controller.bias_update_rate": ["0.05 u_c", "0.1 u_c", "0.05 u_c",
                                                   "0.05 u_c"]},
                  run={**BASE["run"], "steps": 80})
    pred = predict(cfg)
    sim = simulate(cfg, progress=False)
    bias = sim["bias"].mean("replica").values  # (S, P, E)
    bstar = pred["equilibrium_bias"].values
    off = np.max(np.abs(bias - bias.mean(-1, keepdims=True) - bstar), axis=-1)
    outside = off > 0.1 * np.max(np.abs(bstar), axis=-1)
    measured = outside.shape[0] - np.argmax(outside[::-1], axis=0)  # last exit + 1
    predicted = pred["settling_steps"].values
    assert not outside[-10:].any()
    assert np.all(np.abs(measured - predicted) <= np.maximum(1.0, 0.1 * predicted)), (
        measured, predicted)
    fast = predict(cfg, settling="linear")  # the spectral radius alone, no loop
    np.testing.assert_array_equal(fast["settling_steps"].values,
                                  pred["settling_steps_linear"].values)


def test_load_map_matches_token_frequencies_without_control():
    # no controller: the bias stays 0 and every token is routed by the zero-bias map
    cfg = _config({"type": "none"}, run={**BASE["run"], "steps": 60})
    pred = predict(cfg)
    sim = simulate(cfg, progress=False)
    tokens = cfg.batch.tokens_per_step * cfg.run.steps * cfg.run.replicas
    freq = sim["expert_load"].sum(["step", "replica"]).values[0] / tokens
    p = pred["load_map"].values[0]
    se = np.sqrt(p * (1 - p) / tokens)
    assert np.all(np.abs(freq - p) < 5 * se), (freq, p)
    # and the uncontrolled MaxVio (the Zipf plateau plus counting noise)
    mv = float(sim["maxvio_batch"].mean())
    assert abs(mv / float(pred["maxvio_zero_bias"][0]) - 1) < 0.03
    assert float(pred["maxvio_steady"][0]) == float(pred["maxvio_zero_bias"][0])


def test_sign_law_amplitudes_match_the_engine():
    # the relay on 16 experts: bias RMS about its mean (stochastic chain) within 8 %,
    # MaxVio within 12 % (noise-dominated, r ~ 1: the chain; relay-dominated, r ~ 11:
    # the period-2 cycle from b = 0 plus counting noise)
    cfg = _config({"type": "sign"}, {"controller.bias_update_rate": [0.01, 0.1]},
                  run={**BASE["run"], "steps": 200},
                  router={"num_experts": 16, "topk": 2})
    pred = predict(cfg)
    sim = simulate(cfg, progress=False)
    late = sim.isel(step=slice(100, None))
    bias = late["bias"] - late["bias"].mean("expert")
    amp = np.sqrt(((bias - bias.mean("step")) ** 2).mean(["step", "replica", "expert"])).values
    assert np.all(np.abs(amp / pred["sign_bias_amplitude"].values - 1) < 0.08), amp
    r = pred["relay_ratio"].values
    assert r[0] < 3 and r[1] >= 8, r
    mv = late["maxvio_batch"].mean(["step", "replica"]).values
    assert np.all(np.abs(mv / pred["maxvio_steady"].values - 1) < 0.12), mv
    assert np.isnan(pred["sign_cycle_period"].values[0])
    assert pred["sign_cycle_period"].values[1] == 2
    assert np.isnan(pred["critical_rate"].values).all()


def test_settings_the_theory_leaves_out_are_named():
    cfg = _config({"type": "proportional", "bias_update_rate": 0.05},
                  router={"num_experts": 8, "topk": 2, "capacity_factor": 1.25})
    with pytest.warns(TheoryWarning, match="router.capacity_factor"):
        ds = predict(cfg)
    assert "router.capacity_factor = 1.25" in ds.attrs["not_modelled"]
    assert not_modelled(_config({"type": "proportional"}).points()[0]) == []
    features = _config({"type": "proportional"}, traffic={"kind": "features"})
    with pytest.raises(ConfigError, match="traffic.kind"):
        predict(features)


def test_predict_stays_the_function_after_its_module_is_imported():
    import routesim
    import routesim.prediction  # noqa: F401  (a doctest run imports it like this)

    assert callable(routesim.predict) and routesim.predict is routesim.prediction.predict
