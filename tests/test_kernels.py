"""Compiled routing kernels against the generic array code and against theory."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routesim import ConfigError, config_from_dict, rng
from routesim import simulate
from routesim.engines.kernels import choose_kernel, numba_available, unsupported_reason
from routesim.gates import gate
from routesim.routing import select_topk

pytestmark = pytest.mark.skipif(not numba_available()[0], reason=numba_available()[1])

if numba_available()[0]:
    from routesim.engines.kernels import numba as kn
    from routesim.engines.kernels import numba_math as nm


def _cfg(kernel, **over):
    data = {
        "run": {"steps": 5, "replicas": 2, "seed": 11, "kernel": kernel},
        "batch": {"num_sequences": 2, "seq_length": 640, "micro_batch_size": 1,
                  "computation_batch_sizes": [1]},
        "router": {"num_experts": 24, "topk": 3},
        "traffic": {"skew": "zipf", "zipf_exponent": 0.8},
        "controller": {"type": "sign", "bias_update_rate": 0.02, "window": "micro_batch"},
    }
    for key, value in over.items():
        if key == "sweep":
            data["sweep"] = value
            continue
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return config_from_dict(data)


CASES = {
    "sigmoid": {},
    "softmax": {"router__score_function": "softmax"},
    "sqrtsoftplus": {"router__score_function": "sqrtsoftplus"},
    "multiplicative": {"router__bias_mode": "multiplicative"},
    "correlated": {"traffic__seq_correlation": 0.4},
    "odd_experts": {"router__num_experts": 21, "router__topk": 4},
    "few_experts": {"router__num_experts": 6, "router__topk": 2},
    "sweep": {"sweep": {"controller.bias_update_rate": [0.0, 0.05],
                        "traffic.noise_scale": [0.5, 2.0]}},
}


@pytest.mark.parametrize("case", list(CASES))
def test_numba_engine_equals_generic_engine(case):
    """Same draws, same selections: loads, displacement and the bias path agree exactly."""
    over = CASES[case]
    a = simulate(_cfg("numba", **over), progress=False)
    b = simulate(_cfg("generic", **over), progress=False)
    np.testing.assert_array_equal(a["expert_load"].values, b["expert_load"].values)
    np.testing.assert_array_equal(a["bias"].values, b["bias"].values)
    # equal displaced counts; the shares differ only in the last bit of their division
    np.testing.assert_allclose(a["displacement"].values, b["displacement"].values, rtol=1e-12,
                               atol=0)


def test_exact_ties_break_alike_on_every_path():
    """A bias of 2**16 leaves s + b on a float32 grid of 2**-7: ties in most tokens.

    NumPy, array-api-strict and the Numba kernel pick the lower expert index
    among equal selection scores, so their loads are equal, not close.
    """
    over = {"controller__bias_update_rate": 2.0 ** 16}
    runs = [simulate(_cfg(kernel, run__backend=backend, **over), progress=False)
            for backend, kernel in (("numpy", "generic"), ("array_api_strict", "generic"),
                                    ("numpy", "numba"))]
    bias = runs[0]["bias"].values
    assert np.abs(bias).max() >= 2.0 ** 16  # the bias did move onto the coarse grid
    for other in runs[1:]:
        np.testing.assert_array_equal(other["expert_load"].values, runs[0]["expert_load"].values)
        np.testing.assert_allclose(other["displacement"].values,
                                   runs[0]["displacement"].values, rtol=1e-12, atol=0)


def _one_step(n, k, gname, mult, bias_scale, noise_scale, tokens, seed, filtered):
    keys = rng.point_keys(seed, [0, 1], 1)
    mu = np.stack([np.linspace(1.5, -1.5, n), np.zeros(n)]).astype(np.float32)
    bias = (bias_scale * np.random.default_rng(seed).standard_normal((2, n))).astype(np.float32)
    if mult:
        bias = np.abs(1 + bias).astype(np.float32)
    scale = np.array([noise_scale, noise_scale], np.float32)
    bases = rng.stream_base(np, keys, 4, rng.Stream.NOISE).reshape(-1)
    counts, disp = kn.route_counts(bases, 0, tokens, tokens, mu, scale, bias, k, gname, mult,
                                   True, filtered=filtered, min_task=512)
    return counts[:, 0], disp, (keys, mu, bias, scale)


def _generic_counts(keys, mu, bias, scale, n, k, gname, mult, tokens):
    eps = rng.standard_normal(np, keys, 4, rng.Stream.NOISE,
                              np.arange(tokens, dtype=np.uint64), n, np.float32)
    z = mu[:, None, None, :] + scale[:, None, None, None] * eps
    s = gate(np, gname, z)
    sel = s * bias[:, None, None, :] if mult else s + bias[:, None, None, :]
    idx = select_topk(np, sel, k)
    return np.stack([np.bincount(i.ravel(), minlength=n) for i in idx[:, 0]])


@settings(max_examples=12)
@given(n=st.integers(17, 70), k=st.integers(1, 6), gname=st.sampled_from(["sigmoid",
                                                                          "sqrtsoftplus"]),
       mult=st.booleans(), bias_scale=st.sampled_from([0.0, 0.05, 0.5, 3.0]),
       noise_scale=st.sampled_from([0.3, 1.0, 4.0]), seed=st.integers(0, 99))
def test_thresholded_selection_equals_full_scoring(n, k, gname, mult, bias_scale, noise_scale,
                                                   seed):
    """The tau/threshold prefilter never changes a selection (large biases included)."""
    fast, d_fast, ctx = _one_step(n, k, gname, mult, bias_scale, noise_scale, 1024, seed, True)
    full, d_full, _ = _one_step(n, k, gname, mult, bias_scale, noise_scale, 1024, seed, False)
    np.testing.assert_array_equal(fast, full)
    np.testing.assert_array_equal(d_fast, d_full)
    ref = _generic_counts(*ctx, n, k, gname, mult, 1024)
    np.testing.assert_array_equal(fast, ref)


def test_inclusion_frequencies_match_the_load_map():
    """Chi-square of the kernel's counts against the exact load map and covariance."""
    from routesim.theory import expected_load

    n, k, tokens = 32, 4, 16384
    keys = rng.point_keys(5, [0], 1)
    mu = np.linspace(1.0, -1.0, n).astype(np.float32)[None]
    bias = (0.2 * np.sin(np.arange(n))).astype(np.float32)[None]
    bases = rng.stream_base(np, keys, 0, rng.Stream.NOISE).reshape(-1)
    counts, _ = kn.route_counts(bases, 0, tokens, 1024, mu, np.ones(1, np.float32), bias, k,
                                "sigmoid", False, False)
    c = counts.sum(axis=1)[0].astype(float)
    p = expected_load.load_map(mu.astype(float), bias.astype(float), topk=k)[0]
    cov = expected_load.selection_covariance(mu.astype(float), bias.astype(float), topk=k)[0]
    dev = (c - tokens * p) / math.sqrt(tokens)
    stat = float(dev @ np.linalg.pinv(cov, rcond=1e-10) @ dev)
    from scipy import stats

    assert stats.chi2.sf(stat, n - 1) > 1e-3, stat


@given(x=st.lists(st.floats(width=32, allow_nan=False), min_size=2, max_size=40))
@settings(max_examples=30)
def test_order_key_orders_like_floats(x):
    """Integer keys of float32 values keep their order; ties go to the lower position."""
    xs = np.asarray(x + [-np.inf, 0.0, -0.0], dtype=np.float32)
    keys = np.array([_key(v, i) for i, v in enumerate(xs)])
    assert len(set(keys.tolist())) == len(keys)
    for i in range(len(xs)):
        for j in range(len(xs)):
            if xs[i] > xs[j] or (xs[i] == xs[j] and i < j):
                assert keys[i] > keys[j]


def _key(v, i):
    from numba import njit

    f = _key.__dict__.setdefault("f", njit(lambda v, i: nm.order_key(v, i)))
    return f(np.float32(v), i)


def test_float32_functions_are_accurate():
    """log, exp, log1p, sin/cos agree with float64 NumPy to a few float32 ulps."""
    from numba import njit

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[0, i] = nm.logf(x[i])
            out[1, i] = nm.expf(x[i] * np.float32(60.0) - np.float32(30.0))
            out[2, i] = nm.log1pf(x[i])
            s, c = nm.sincosf(x[i] * np.float32(2 * np.pi))
            out[3, i] = s
            out[4, i] = c

    x = np.random.default_rng(0).random(20000).astype(np.float32) + np.float32(1e-7)
    out = np.empty((5, x.size), np.float32)
    apply(x, out)
    xd = x.astype(np.float64)
    rel = lambda got, want: np.max(np.abs(got / want - 1))  # noqa: E731
    assert rel(out[0], np.log(xd)) < 3e-7
    assert rel(out[1], np.exp(x * np.float32(60.0) - np.float32(30.0)).astype(float)) < 3e-7
    assert rel(out[2], np.log1p(xd)) < 3e-7
    angle = (x * np.float32(2 * np.pi)).astype(np.float64)
    assert np.max(np.abs(out[3] - np.sin(angle))) < 2e-7
    assert np.max(np.abs(out[4] - np.cos(angle))) < 2e-7


@given(q=st.integers(1, 5), seqs=st.integers(1, 6), L=st.integers(1, 700),
       threads=st.integers(1, 4), min_task=st.integers(1, 3000))
@settings(max_examples=40)
def test_task_plan_covers_every_token_once(q, seqs, L, threads, min_task):
    tq, ta, tb, ts, nsub = kn._plan(q, 7 * L, seqs * L, L, threads, min_task)
    seen = np.zeros((q, seqs * L), int)
    for qq, a, b, s in zip(tq, ta, tb, ts):
        assert 0 <= s < nsub and a < b
        seen[qq, a - 7 * L:b - 7 * L] += 1
        if nsub > 1:  # a sub-chunk never crosses a sequence
            assert (a // L) == ((b - 1) // L)
    assert np.all(seen == 1)


def test_counts_do_not_depend_on_threads_or_task_size():
    keys = rng.point_keys(2, [0, 1, 2], 1)
    n = 40
    mu = np.tile(np.linspace(1, -1, n, dtype=np.float32), (3, 1))
    bias = np.zeros((3, n), np.float32)
    bases = rng.stream_base(np, keys, 1, rng.Stream.NOISE).reshape(-1)
    runs = [kn.route_counts(bases, 512, 4 * 512, 512, mu, np.ones(3, np.float32), bias, 5,
                            "sigmoid", False, True, threads=t, min_task=m)
            for t, m in [(1, 4096), (2, 600), (3, 100)]]
    for counts, disp in runs[1:]:
        np.testing.assert_array_equal(counts, runs[0][0])
        np.testing.assert_array_equal(disp, runs[0][1])
    assert np.all(runs[0][0].sum(-1) == 512 * 5)


def test_kernel_choice_and_refusals(monkeypatch):
    base = {"router": {"num_experts": 8, "topk": 2}}
    cfg = config_from_dict(base)
    assert choose_kernel(cfg.points(), np) == "numba"
    assert choose_kernel(cfg.replace(**{"run.kernel": "generic"}).points(), np) == "generic"
    dropping = cfg.replace(**{"router.capacity_factor": 1.0})
    assert "capacity_factor" in unsupported_reason(dropping.points())
    assert choose_kernel(dropping.points(), np) == "generic"
    with pytest.raises(ConfigError, match=r"run.kernel = 'numba'.*capacity_factor"):
        choose_kernel(dropping.replace(**{"run.kernel": "numba"}).points(), np)
    with pytest.raises(ConfigError, match=r"run.kernel = 'cuda'.*cupy"):
        choose_kernel(cfg.replace(**{"run.kernel": "cuda"}).points(), np)
    import array_api_strict

    assert choose_kernel(cfg.points(), array_api_strict) == "generic"
    import routesim.engines.kernels as K

    monkeypatch.setattr(K, "numba_available", lambda: (False, "Numba is not installed"))
    assert choose_kernel(cfg.points(), np) == "generic"
    with pytest.raises(ConfigError, match="Numba is not installed"):
        choose_kernel(cfg.replace(**{"run.kernel": "numba"}).points(), np)
    with pytest.raises(ConfigError, match="run.kernel"):
        config_from_dict({"run": {"kernel": "fortran"}})


@pytest.mark.parametrize("gname", ["sigmoid", "softmax", "sqrtsoftplus"])
def test_tied_scores_follow_the_index_rule_in_the_kernel(gname):
    """Equal scores everywhere (no noise): selection and displacement by lower index.

    With ``b_5 > 0`` the pick is {5, 0, 1} and the unbiased top-3 is {0, 1, 2}
    by the tie rule, so expert 5 is displaced in every token.
    """
    n, k, tokens = 20, 3, 1024
    keys = rng.point_keys(1, [0], 1)
    bases = rng.stream_base(np, keys, 0, rng.Stream.NOISE).reshape(-1)
    mu = np.zeros((1, n), np.float32)
    bias = np.zeros((1, n), np.float32)
    bias[0, 5] = 0.1
    counts, disp = kn.route_counts(bases, 0, tokens, 256, mu, np.zeros(1, np.float32), bias,
                                   k, gname, False, True)
    want = np.zeros(n, int)
    want[[0, 1, 5]] = tokens
    np.testing.assert_array_equal(counts[0].sum(axis=0), want)
    assert disp.tolist() == [tokens]


# ----------------------------------------------------------------------------
# kernel eligibility: a setting the compiled kernels do not implement is refused
# or routed by the generic path, never silently routed as something else
# ----------------------------------------------------------------------------
INELIGIBLE = {
    "logistic_noise": {"traffic__noise": "logistic"},
    "gumbel_noise": {"traffic__noise": "gumbel"},
    "capacity": {"router__capacity_factor": 1.0},
    "groups": {"router__num_groups": 4, "router__group_topk": 1},
    "quantile": {"controller__type": "quantile", "controller__bias_update_rate": None},
    "features": {"traffic__kind": "features", "traffic__feature_dim": 4,
                 "traffic__skew": None, "traffic__zipf_exponent": None},
}


def _eligibility_cfg(kernel, over):
    """``_cfg`` with fields set, or removed where the value is None (refused as unused)."""
    data = {"run": {"steps": 5, "replicas": 2, "seed": 11, "kernel": kernel},
            "batch": {"num_sequences": 2, "seq_length": 640, "micro_batch_size": 1},
            "router": {"num_experts": 24, "topk": 3},
            "traffic": {"skew": "zipf", "zipf_exponent": 0.8},
            "controller": {"type": "sign", "bias_update_rate": 0.02, "window": "micro_batch"}}
    for key, value in over.items():
        section, name = key.split("__")
        if value is None:
            data[section].pop(name)
        else:
            data[section][name] = value
    return config_from_dict(data)


@pytest.mark.parametrize("case", list(INELIGIBLE))
@pytest.mark.parametrize("kernel", ["auto", "numba"])
def test_ineligible_settings_are_refused_or_routed_as_numpy(case, kernel):
    generic = simulate(_eligibility_cfg("generic", INELIGIBLE[case]), progress=False)
    try:
        cfg = _eligibility_cfg(kernel, INELIGIBLE[case])
        ds = simulate(cfg, progress=False)
    except ConfigError as err:
        assert kernel == "numba" and "run.kernel" in str(err)
        return
    np.testing.assert_array_equal(ds["expert_load"].values, generic["expert_load"].values)
    np.testing.assert_array_equal(ds["bias"].values, generic["bias"].values)


def test_logistic_noise_is_not_normal_noise():
    """The eligibility cases above differ from what the kernel would route (else they test
    nothing): logistic noise changes the loads of the same seed."""
    normal = simulate(_eligibility_cfg("generic", {}), progress=False)["expert_load"].values
    logistic = simulate(_eligibility_cfg("generic", INELIGIBLE["logistic_noise"]),
                        progress=False)
    assert not np.array_equal(normal, logistic["expert_load"].values)


@pytest.mark.parametrize("gname,gcode", [("sigmoid", 0), ("sqrtsoftplus", 2)])
@pytest.mark.parametrize("mult", [False, True])
def test_threshold_margin_keeps_every_skipped_expert_at_or_below_tau(gname, gcode, mult):
    """An expert whose logit sits at or just below its threshold (the float32 values within
    48 ulps) must score at most tau in float32, as the kernel scores it; else the prefilter
    would skip an expert that belongs to the top-K. Without the safety margin of
    ``z_threshold`` about 1 % of these boundary logits score above tau."""
    rng_np = np.random.default_rng(gcode + 10 * mult)
    n = 64
    for _ in range(20):
        bias = (rng_np.uniform(0.5, 2.0, n) if mult else rng_np.normal(0, 0.3, n))
        bias = bias.astype(np.float32)
        tau = float(rng_np.uniform(0.3, 0.95) if gcode == 0 else rng_np.uniform(0.3, 2.5))
        zt = np.zeros(n, dtype=np.float32)
        kn.expert_thresholds(tau, tau, False, n, bias, gcode, mult, zt)
        for e in np.nonzero(np.isfinite(zt))[0]:
            z = zt[e] - np.float32(0) * np.arange(48, dtype=np.float32)  # 48 float32 steps
            for j in range(1, 48):
                z[j] = np.nextafter(z[j - 1], np.float32(-np.inf))
            s = np.array([nm.gate1(v, gcode) for v in z], dtype=np.float32)
            # the same score through NumPy's float32 gate: the array path's numbers
            s_np = gate(np, gname, z)
            assert np.max(np.abs(s - s_np)) <= 2 * np.finfo(np.float32).eps
            v = s * bias[e] if mult else s + bias[e]
            assert np.all(v <= np.float32(tau)), (e, zt[e], tau)
