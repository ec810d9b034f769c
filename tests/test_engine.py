"""The exact engine against a plain-Python loop, across backends and splits."""

import math

import numpy as np
import pytest
import xarray as xr

from routesim import config_from_dict, traffic
from routesim.engines import exact as engine
from routesim import simulate
from routesim.engines.exact import make_simulator
from routesim.gates import gate
from routesim.rng import point_keys

SMALL = {
    "run": {"steps": 6, "replicas": 2, "seed": 3},
    "batch": {"num_sequences": 4, "seq_length": 16, "micro_batch_size": 2},
    "router": {"num_experts": 8, "topk": 2},
    "traffic": {"skew": "linear", "linear_spread": 1.0},
}


def _cfg(**over):
    data = {k: dict(v) for k, v in SMALL.items()}
    for key, value in over.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return config_from_dict(data)


def _python_reference(cfg):
    """Plain loops: per token sort, count, per-window sign update (no numpy maths)."""
    p = cfg.points()[0]
    n, k, L = p.router.num_experts, p.router.topk, p.batch.seq_length
    mb_tokens = p.batch.sequences_per_micro_batch * L
    params = traffic.make_traffic_params([p])
    keys = point_keys(p.run.seed, [0], p.run.replicas)
    state = traffic.init_traffic(np, params, keys)
    u = p.controller.bias_update_rate
    loads = []
    for r in range(p.run.replicas):
        bias = [0.0] * n
        per_step = []
        for t in range(p.run.steps):
            step_load = [0] * n
            for mb in range(p.batch.num_micro_batches):
                z = traffic.logits(np, params, state, keys, t, mb * mb_tokens, mb_tokens)
                s = gate(np, p.router.score_function, z)[0, r]
                window = [0] * n
                for row in s:
                    order = sorted(range(n), key=lambda i: -(float(row[i]) + np.float32(bias[i])))
                    for i in order[:k]:
                        window[i] += 1
                        step_load[i] += 1
                if p.controller.window == "micro_batch":
                    mean = sum(window) / n
                    bias = [np.float32(b + u * ((mean > c) - (mean < c)))
                            for b, c in zip(bias, window)]
            if p.controller.window == "global_batch":
                mean = sum(step_load) / n
                bias = [np.float32(b + u * ((mean > c) - (mean < c)))
                        for b, c in zip(bias, step_load)]
            per_step.append(step_load)
        loads.append(per_step)
    return np.transpose(np.asarray(loads), (1, 0, 2))  # (S, R, E)


@pytest.mark.parametrize("window", ["global_batch", "micro_batch"])
def test_engine_matches_python_loop(window):
    cfg = _cfg(controller__window=window, controller__bias_update_rate=0.05)
    ds = simulate(cfg, progress=False)
    np.testing.assert_array_equal(ds["expert_load"].values[:, 0], _python_reference(cfg))


def test_loads_sum_to_k_times_tokens_and_capacity_holds():
    cfg = _cfg(router__capacity_factor=1.0, router__token_drop_policy="position")
    ds = simulate(cfg, progress=False)
    assert np.all(ds["expert_load"].sum("expert") == 2 * 64)
    cap = math.ceil(1.0 * 32 * 2 / 8)
    # kept loads are per step = 2 micro-batches, each capped
    assert int(ds["kept_load"].max()) <= 2 * cap
    assert float(ds["drop_rate"].mean()) > 0


def test_infinite_capacity_equals_dropless():
    a = simulate(_cfg(), progress=False)
    b = simulate(_cfg(router__capacity_factor=math.inf), progress=False)
    xr.testing.assert_identical(a.drop_vars([], errors="ignore")["expert_load"], b["expert_load"])
    np.testing.assert_array_equal(b["drop_rate"], 0.0)


def test_same_seed_identical_dataset_and_other_seed_differs():
    a = simulate(_cfg(), progress=False)
    b = simulate(_cfg(), progress=False)
    xr.testing.assert_identical(a, b)
    c = simulate(_cfg(run__seed=4), progress=False)
    assert not np.array_equal(a["expert_load"], c["expert_load"])


def test_split_points_give_the_same_numbers():
    cfg = config_from_dict(
        {**SMALL, "sweep": {"controller.bias_update_rate": [1e-3, 1e-2, 0.1],
                            "traffic.noise_scale": [0.5, 1.0]}})
    whole = simulate(cfg, progress=False)
    first = simulate(cfg, point_indices=[0, 1, 2], progress=False)
    rest = simulate(cfg, point_indices=[5, 3, 4], progress=False)
    joined = xr.concat([first, rest], dim="point").sortby("point")
    for var in ("expert_load", "bias", "maxvio_batch", "maxvio_global_run", "displacement"):
        np.testing.assert_array_equal(joined[var].values, whole[var].values)


def test_numpy_and_array_api_strict_agree():
    strict = pytest.importorskip("array_api_strict")
    cfg = config_from_dict({**SMALL, "batch": {"num_sequences": 4, "seq_length": 16,
                                               "micro_batch_size": 2,
                                               "computation_batch_sizes": [1, 2]},
                            "router": {"num_experts": 8, "topk": 2, "capacity_factor": 1.2},
                            "traffic": {"skew": "zipf", "seq_correlation": 0.3},
                            "sweep": {"controller.type": ["sign", "ema", "quantile"]}})
    outs = {}
    for name, xp in (("numpy", np), ("strict", strict)):
        init, step = make_simulator(cfg, xp=xp)
        state = init()
        loads, biases = [], []
        for _ in range(5):
            state, out = step(state)
            loads.append(np.asarray(out.load_PRE))
            biases.append(np.asarray(out.bias_PRE))
        outs[name] = (np.stack(loads), np.stack(biases))
    np.testing.assert_array_equal(outs["numpy"][0], outs["strict"][0])
    np.testing.assert_allclose(outs["numpy"][1], outs["strict"][1], rtol=1e-6, atol=1e-7)


def test_step_does_not_mutate_its_input():
    init, step = make_simulator(_cfg())
    s0 = init()
    bias_before = s0.bias_PRE.copy()
    s1, _ = step(s0)
    s1b, _ = step(s0)
    np.testing.assert_array_equal(s0.bias_PRE, bias_before)
    np.testing.assert_array_equal(s1.bias_PRE, s1b.bias_PRE)
    assert s0.step == 0 and s1.step == 1


def test_update_every_n_steps_holds_bias_between_updates():
    ds = simulate(_cfg(controller__window="steps", controller__update_every=3,
                       controller__bias_update_rate=0.01), progress=False)
    b = ds["bias"].values
    np.testing.assert_array_equal(b[1], b[0])
    np.testing.assert_array_equal(b[2], b[0])
    assert not np.array_equal(b[3], b[2])


def test_multiplicative_bias_starts_at_one():
    ds = simulate(_cfg(router__bias_mode="multiplicative"), progress=False)
    np.testing.assert_array_equal(ds["bias"].isel(step=0), 1.0)


def test_controllers_reduce_imbalance():
    cfg = config_from_dict({"run": {"steps": 80}, "batch": {"num_sequences": 8,
                                                            "seq_length": 128},
                            "router": {"num_experts": 16, "topk": 2},
                            "traffic": {"skew": "linear", "linear_spread": 1.5},
                            "sweep": {"mode": "zip",
                                      "controller.type": ["none", "sign", "proportional"],
                                      "controller.bias_update_rate": [0, 0.01, 0.05]}})
    ds = simulate(cfg, progress=False)
    tail = ds["maxvio_batch"].isel(step=slice(-20, None)).mean(["step", "replica"]).values
    assert tail[1] < 0.5 * tail[0] and tail[2] < 0.5 * tail[0]


def test_common_random_numbers_give_points_the_same_traffic():
    # sign and sign_centred differ only by a common shift of the bias, which
    # never changes a top-K selection: with common random numbers the two
    # points must route identically (up to float32 rounding of s + b).
    cfg = config_from_dict({**SMALL, "run": {"steps": 6, "replicas": 2, "seed": 3,
                                             "common_random_numbers": True,
                                             "bias_dtype": "float64"},
                            "sweep": {"controller.type": ["sign", "sign_centred"]}})
    ds = simulate(cfg, progress=False)
    np.testing.assert_array_equal(ds["expert_load"].isel(point=0), ds["expert_load"].isel(point=1))
    assert not np.array_equal(ds["expert_load"].isel(replica=0), ds["expert_load"].isel(replica=1))
    off = simulate(cfg.replace(**{"run.common_random_numbers": False}), progress=False)
    assert not np.array_equal(off["expert_load"].isel(point=0), off["expert_load"].isel(point=1))


# Every law, each at a point index other than 0 in one of the two orders.
_TYPES = ("none", "sign", "sign_centred", "proportional", "ema", "rms", "momentum_tanh",
          "quantile")
_WINDOWS = [{"window": "micro_batch"}, {"window": "global_batch"},
            {"window": "steps", "update_every": 2}]


@pytest.mark.parametrize("order", [_TYPES[1:] + _TYPES[:1], _TYPES[::-1]],
                         ids=["quantile_last", "quantile_first"])
@pytest.mark.parametrize("window", _WINDOWS, ids=[w["window"] for w in _WINDOWS])
def test_each_law_gives_its_numbers_at_any_point_index(monkeypatch, order, window):
    # Small chunks: the whole sweep routes one sequence per chunk, a lone
    # point two, while the micro-batch has four sequences. A quantile point
    # needs its dual estimate over the whole micro-batch wherever it sits.
    monkeypatch.setattr(engine, "ENGINE_CHUNK_ELEMENTS", 2 * 2 * 16 * 8)
    cfg = config_from_dict({
        "run": {"steps": 5, "replicas": 2, "seed": 11},
        "batch": {"num_sequences": 8, "seq_length": 16, "micro_batch_size": 4},
        "router": {"num_experts": 8, "topk": 2},
        "traffic": {"skew": "linear", "linear_spread": 1.0},
        "controller": {"bias_update_rate": 0.05, "quantile_ema": 0.5, "warmup_steps": 1,
                       **window},
        "sweep": {"controller.type": list(order)}})
    whole = simulate(cfg, progress=False)
    assert whole.sizes["point"] == len(_TYPES)
    for i in range(len(order)):
        alone = simulate(cfg, point_indices=[i], progress=False)
        xr.testing.assert_identical(alone, whole.isel(point=[i]))


# ----------------------------------------------------------------------------
# the per-step finite check of the logits
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("router", [{}, {"router_type": "expert_choice"}])
def test_a_nan_in_the_logits_is_caught_naming_logits_step_and_point(monkeypatch, router):
    from routesim import NumericalFault, config_from_dict, simulate, traffic

    original = traffic.logits
    bad_step, bad_point = 2, 1

    def poisoned(xp, params, tstate, keys_PR, step, *args, **kwargs):
        z = original(xp, params, tstate, keys_PR, step, *args, **kwargs)
        if step == bad_step:  # one logit of one token of point 1
            z = np.array(z, copy=True)
            z[bad_point, 0, 3, 0] = np.nan
        return z

    monkeypatch.setattr(traffic, "logits", poisoned)
    cfg = config_from_dict({
        "run": {"steps": 5, "kernel": "generic", "record_displacement": False},
        "batch": {"num_sequences": 2, "seq_length": 16},
        "router": {"num_experts": 8, "topk": 2, **router},
        "controller": {"type": "sign"},
        "sweep": {"controller.bias_update_rate": [1e-3, 2e-3]}})
    with pytest.raises(NumericalFault, match=r"^step 2, point .* \(index 1\): logits is nan"):
        simulate(cfg, progress=False)
