"""Mean-field surrogate: rounding, design effect, draw statistics, and agreement
with the exact engine on small scenarios that still discriminate."""

import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from routesim import ConfigError, controllers
from routesim import simulate
from routesim.config import config_from_dict
from routesim.engines.meanfield import (
    compare_engines,
    threshold_design_effect,
    make_meanfield_simulator,
    make_plan_meanfield,
    round_to_total,
    settling_step,
)
from routesim.engines.meanfield_reference import corrected_p, current_p, relative_change
from routesim.run import simulate_meanfield
from routesim.theory.expected_load import load_map, selection_covariance
from routesim.traffic import popularity

N, K, S, L = 16, 4, 16, 256  # T = 4096 tokens per step
T = S * L


def _cfg(engine="meanfield", steps=100, replicas=1, traffic=None, controller=None, batch=None,
         router=None, sweep=None, seed=3):
    data = {
        "run": {"steps": steps, "replicas": replicas, "engine": engine, "seed": seed,
                "record_displacement": False},
        "batch": {"num_sequences": S, "seq_length": L, **(batch or {})},
        "router": {"num_experts": N, "topk": K, **(router or {})},
        "traffic": traffic or {},
        "controller": controller or {"type": "none"},
    }
    if sweep:
        data["sweep"] = sweep
    return config_from_dict(data)


# ----------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------
def _largest_remainder(x, total):
    """Plain-Python largest-remainder rounding (the reference)."""
    x = [max(v, 0.0) for v in x]
    s = sum(x)
    x = [v * total / s for v in x] if s > 0 else x
    base = [math.floor(v) for v in x]
    order = sorted(range(len(x)), key=lambda i: (-(x[i] - base[i]), i))
    for i in order[: total - sum(base)]:
        base[i] += 1
    return base


@given(st.lists(st.floats(-5.0, 1e4, allow_nan=False), min_size=2, max_size=12),
       st.integers(1, 10**6))
def test_round_to_total_matches_largest_remainder(x, total):
    if sum(max(v, 0.0) for v in x) <= 1e-6:
        x = [1.0] + x[1:]
    got = round_to_total(np, np.array(x), total)
    assert got.sum() == total and got.min() >= 0
    ref = _largest_remainder(x, total)
    # Floating rescaling may reorder near-equal remainders; the counts differ by at most 1.
    assert np.max(np.abs(got - np.array(ref))) <= 1


@pytest.mark.parametrize("p, rho, length", [(0.125, 0.05, 256), (0.03, 0.3, 64),
                                            (0.6, 0.1, 10)])
def test_design_effect_against_bivariate_normal(p, rho, length):
    t = stats.norm.isf(p)
    both = stats.multivariate_normal([0, 0], [[1, rho], [rho, 1]]).cdf([-t, -t])
    icc = (both - p * p) / (p * (1 - p))
    got = threshold_design_effect(np.array([p]), rho, length)[0]
    assert got == pytest.approx(1 + (length - 1) * icc, rel=1e-5)


def test_design_effect_close_to_the_conditional_load_map_estimate():
    # Second method: C = Cov_a(p(a)) by averaging the exact load map over the shared
    # component (theory.maxvio); the closed form overstates the extra variance a little.
    from routesim.theory.maxvio import design_effect, sequence_covariance

    mu, b = popularity("linear", N, linear_spread=0.5), np.linspace(-0.05, 0.05, N)
    seq = sequence_covariance(mu, b, topk=K, seq_correlation=0.3, draws=1024)
    reference = design_effect(selection_covariance(mu, b, topk=K), seq, L)
    got = threshold_design_effect(load_map(mu, b, topk=K), 0.3, L)
    assert reference.min() > 30
    ratio = (got - 1) / (reference - 1)  # the reference has about 4 % Monte Carlo error
    assert np.all((ratio > 0.85) & (ratio < 1.25)), ratio
    assert 0.98 < ratio.mean() < 1.15


def test_design_effect_matches_exact_engine_variance():
    # Independent reference: the exact engine's load variance with correlated sequences.
    rho = 0.1
    ds = simulate(_cfg("exact", steps=200, traffic={"seq_correlation": rho}), progress=False)
    load = ds["expert_load"].values[:, 0, 0, :].astype(float)
    p = K / N
    measured = load.var(axis=0, ddof=1).mean() / (T * p * (1 - p))
    predicted = threshold_design_effect(np.array([p]), rho, L)[0]
    assert predicted > 5  # the inflation is large, so the check has teeth
    assert measured == pytest.approx(predicted, rel=0.1)


def test_settling_step():
    assert settling_step(np.array([1.0, 0.5, 0.25, 0.1]), 0.3, smooth=1) == 2
    assert settling_step(np.array([1.0, 1.0, 0.0, 0.0]), 0.5, smooth=2) == 2
    assert settling_step(np.ones(4), 0.5) == 4


# ----------------------------------------------------------------------------
# Draws against the theory they are built from
# ----------------------------------------------------------------------------
def test_loads_have_the_load_map_mean_and_selection_covariance():
    mu = popularity("linear", N, linear_spread=0.5)
    steps = 3000
    ds = simulate_meanfield(_cfg(steps=steps, traffic={"skew": "linear", "linear_spread": 0.5}),
                            progress=False)
    load = ds["expert_load"].values[:, 0, 0, :].astype(float)
    assert np.all(load.sum(axis=1) == T * K)
    p = load_map(mu, np.zeros(N), topk=K)
    cov = T * selection_covariance(mu, np.zeros(N), topk=K)
    se = np.sqrt(np.diag(cov) / steps)
    assert np.all(np.abs(load.mean(axis=0) - T * p) < 4.5 * se)
    sample = np.cov(load, rowvar=False)
    np.testing.assert_allclose(np.diag(sample), np.diag(cov), rtol=0.1)
    off = ~np.eye(N, dtype=bool)
    assert np.abs(sample[off] - cov[off]).max() < 0.12 * np.diag(cov).max()
    assert int(ds["meanfield_evaluations"].sum()) == 1  # fixed bias: one exact evaluation


def test_loads_carry_the_design_effect():
    rho = 0.1
    ds = simulate_meanfield(_cfg(steps=2000, traffic={"seq_correlation": rho}), progress=False)
    load = ds["expert_load"].values[:, 0, 0, :].astype(float)
    p = K / N
    measured = load.var(axis=0, ddof=1).mean() / (T * p * (1 - p))
    assert measured == pytest.approx(threshold_design_effect(np.array([p]), rho, L)[0], rel=0.08)


def test_linearised_map_stays_within_tolerance_of_the_exact_map():
    cfg = _cfg(steps=60, traffic={"skew": "linear", "linear_spread": 0.5},
               controller={"type": "sign", "bias_update_rate": 2e-3})
    init, step = make_meanfield_simulator(cfg, tolerance=0.05)
    state = init()
    mu = popularity("linear", N, linear_spread=0.5)
    worst = 0.0
    for _ in range(60):
        state, _ = step(state)
        ref = state.reference
        b = np.asarray(state.bias_PRE, dtype=float)
        lin = ref.p_PRE + (ref.jac_PREE @ (b - ref.bias_PRE)[..., None])[..., 0]
        exact = load_map(mu, b[0, 0], topk=K)
        worst = max(worst, float(np.max(np.abs(lin[0, 0] - exact) / exact)))
    assert state.evaluations > 3  # the transient forced re-evaluations
    assert worst < 3e-3  # second order in the 5 % tolerance


def test_corrected_map_within_its_tolerance_of_the_exact_map():
    """The fast path (exact linear terms + the threshold map's remainder) against the
    exact quadrature at moves on the re-evaluation boundary (N = 64, K = 8):
    within 1.5e-3 of each p_i, where the linear terms alone are 1-5 % off."""
    n, k = 64, 8
    cfg = config_from_dict({
        "run": {"engine": "meanfield"}, "batch": {"num_sequences": 16, "seq_length": 16},
        "router": {"num_experts": n, "topk": k},
        "traffic": {"skew": "linear", "linear_spread": 0.5, "drift": "random_walk",
                    "drift_std": 1e-3}})
    plan = make_plan_meanfield(cfg)
    mu0 = popularity("linear", n, linear_spread=0.5)[None, None]
    ref, _, _ = current_p(plan, None, np.zeros((1, 1, n)), mu0)
    rng = np.random.default_rng(11)

    def on_boundary(jac, d):  # scale a move so that its linear term predicts the tolerance
        r = relative_change((jac @ d[..., None])[..., 0], ref.p_PRE, plan.p_floor)
        return d * (plan.tolerance / r[..., None])

    for with_mu in (False, True):
        db = on_boundary(ref.jac_PREE, rng.standard_normal((1, 1, n)))
        dmu = (on_boundary(ref.jac_mu_PREE, rng.standard_normal((1, 1, n))) if with_mu
               else np.zeros((1, 1, n)))
        p, r_bias, r_mu, _ = corrected_p(plan, ref, db, mu0 + dmu)
        assert r_bias[0, 0] == pytest.approx(plan.tolerance)  # not re-evaluated yet
        exact = load_map(mu0 + dmu, db, topk=k)
        linear = (ref.p_PRE + (ref.jac_PREE @ db[..., None])[..., 0]
                  + (ref.jac_mu_PREE @ dmu[..., None])[..., 0])
        assert np.max(np.abs(p - exact) / exact) < 1.5e-3
        assert np.max(np.abs(linear - exact) / exact) > 1e-2  # the remainder matters


# ----------------------------------------------------------------------------
# The loop around the draws
# ----------------------------------------------------------------------------
def test_bias_follows_the_controller_law_on_recorded_loads():
    cfg = _cfg(steps=40, replicas=2, traffic={"skew": "zipf", "zipf_exponent": 0.5},
               controller={"type": "proportional", "bias_update_rate": 5e-3})
    ds = simulate(cfg, progress=False)
    assert ds.attrs["engine"] == "meanfield"
    bias = ds["bias"].values
    load = ds["expert_load"].values
    params = controllers.make_controller_params(cfg.points())
    b = np.zeros_like(bias[0])
    for t in range(bias.shape[0]):
        np.testing.assert_allclose(bias[t], b, atol=1e-6)
        b, _ = controllers.update_bias(np, params, b, np.zeros_like(b), load[t], None, t)


def test_points_do_not_depend_on_their_neighbours_and_seeds_repeat():
    cfg = _cfg(steps=30, replicas=2, traffic={"skew": "linear"},
               controller={"type": "sign", "bias_update_rate": 1e-3},
               sweep={"controller.bias_update_rate": [1e-3, 3e-3]})
    both = simulate(cfg, progress=False)
    alone = simulate(cfg, point_indices=[1], progress=False)
    np.testing.assert_array_equal(both["expert_load"].values[:, 1], alone["expert_load"].values[:, 0])
    again = simulate(cfg, progress=False)
    np.testing.assert_array_equal(both["expert_load"].values, again["expert_load"].values)
    assert not np.array_equal(both["expert_load"].values[:, 0, 0], both["expert_load"].values[:, 0, 1])


def test_capacity_keeps_at_most_cap_per_micro_batch():
    cap_factor = 1.0
    cfg = _cfg(steps=5, batch={"micro_batch_size": 4}, router={"capacity_factor": cap_factor},
               traffic={"skew": "linear", "linear_spread": 1.0})
    ds = simulate(cfg, progress=False)
    cap = math.ceil(cap_factor * 4 * L * K / N)
    kept, load = ds["kept_load"].values, ds["expert_load"].values
    assert np.all(kept <= 4 * cap) and np.all(kept <= load)
    assert np.all(kept.max(axis=-1) < load.max(axis=-1))  # the busiest expert lost tokens
    assert np.all(ds["drop_rate"].values > 0)


@pytest.mark.parametrize("changes, field", [
    ({"controller": {"type": "quantile"}}, "controller.type"),
    ({"traffic": {"kind": "features"}}, "traffic.kind"),
    ({"traffic": {"noise": "logistic", "seq_correlation": 0.1}}, "traffic.seq_correlation"),
    ({"router": {"num_groups": 4, "group_topk": 2}}, "router.num_groups"),
])
def test_unmodelled_settings_are_refused(changes, field):
    cfg = _cfg(traffic=changes.get("traffic"), controller=changes.get("controller"),
               router=changes.get("router"))
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        simulate(cfg, progress=False)


# ----------------------------------------------------------------------------
# Agreement with the exact engine (the surrogate is trusted only where it agrees)
# ----------------------------------------------------------------------------
# Many short sequences: the sum over sequences must be near-Gaussian (design effect 3.6).
SEQ_CORR = {"batch": {"num_sequences": 256, "seq_length": 16},
            "traffic": {"skew": "linear", "linear_spread": 0.5, "seq_correlation": 0.3},
            "controller": {"type": "sign", "bias_update_rate": 2e-3}}


def _pair(spec, steps=400, replicas=4):
    out = {}
    for engine in ("exact", "meanfield"):
        out[engine] = simulate(_cfg(engine, steps=steps, replicas=replicas, **spec),
                               progress=False)
    return out


def _rel(a, b):
    return abs(b - a) / a


def test_agrees_with_exact_engine_with_sequence_correlation():
    res = _pair(SEQ_CORR)
    stats_ = compare_engines(res["exact"], res["meanfield"], burn_in=150)
    for name, (a, b) in stats_.items():
        assert _rel(a, b) <= 0.10, (name, a, b)
    assert stats_["settling_step"][0] > 20  # there is a transient to settle
    # Negative control: without the design effect the fluctuations are far too small.
    spec = {**SEQ_CORR, "traffic": {**SEQ_CORR["traffic"], "seq_correlation": 0.0}}
    plain = simulate_meanfield(_cfg("meanfield", steps=400, replicas=4, **spec),
                               progress=False, tolerance=0.2)  # a coarse map is enough here
    bad = compare_engines(res["exact"], plain, burn_in=150)
    assert _rel(*bad["maxvio_mean"]) > 0.2 and _rel(*bad["maxvio_std"]) > 0.2


def test_agrees_with_exact_engine_proportional_micro_batch():
    spec = {"traffic": {"skew": "zipf", "zipf_exponent": 0.5},
            "batch": {"micro_batch_size": 4},
            "controller": {"type": "proportional", "bias_update_rate": 2e-3,
                           "window": "micro_batch"}}
    res = _pair(spec)
    stats_ = compare_engines(res["exact"], res["meanfield"], burn_in=150)
    for name, (a, b) in stats_.items():
        assert _rel(a, b) <= 0.10, (name, a, b)
    assert stats_["settling_step"][0] > 10


def test_backends_agree_and_computation_batches_nest():
    spec = dict(steps=15, replicas=2, traffic={"skew": "linear"},
                batch={"micro_batch_size": 4, "computation_batch_sizes": [2, S]},
                router={"capacity_factor": 1.2},
                controller={"type": "ema", "bias_update_rate": 1e-2, "window": "micro_batch"})
    ref = simulate(_cfg(**spec), progress=False)
    strict = _cfg(**spec).replace(**{"run.backend": "array_api_strict"})
    got = simulate(strict, progress=False)
    np.testing.assert_array_equal(got["expert_load"].values, ref["expert_load"].values)
    np.testing.assert_allclose(got["bias"].values, ref["bias"].values, rtol=1e-6)
    # A computation batch of the whole step is the step itself.
    np.testing.assert_allclose(ref["maxvio_compute"].values[..., 1], ref["maxvio_batch"].values)
    # Sub-batches have equal totals, so the mean of their maxima is at least the whole's.
    small, whole = ref["maxvio_compute"].values[..., 0], ref["maxvio_batch"].values
    assert np.all(small >= whole - 1e-12) and small.mean() > whole.mean()


def test_a_chunked_meanfield_sweep_equals_the_whole_run(tmp_path):
    # the evaluation count is per point and replica: chunking cannot change it
    from routesim import run_sweep

    cfg = _cfg(steps=30, replicas=2, traffic={"skew": "linear", "linear_spread": 0.5},
               controller={"type": "sign", "bias_update_rate": 2e-3},
               sweep={"controller.bias_update_rate": [1e-3, 2e-3, 4e-3]})
    whole = simulate(cfg, progress=False)
    chunked = run_sweep(cfg, tmp_path / "sweep", points_per_chunk=1, progress=False)
    xr.testing.assert_identical(chunked, whole)
    assert whole["meanfield_evaluations"].dims == ("point", "replica")
    assert (whole["meanfield_evaluations"].values >= 1).all()
