"""The CuPy path: the engine on the GPU (generic array code and the CUDA kernel).

GPU tests are marked ``gpu`` and skip, with the reason, where CuPy or a GPU is
missing. The shared array code they run is covered on the CPU by the NumPy
and array-api-strict tests (tests/test_engine.py); the CUDA kernel's host
glue is checked here on the CPU against a NumPy stand-in for the launch.
"""

import numpy as np
import pytest

from routesim import config_from_dict, rng
from routesim import simulate
from routesim._backend import cupy_available, to_numpy
from routesim.gates import gate
from routesim.routing import select_topk

GPU_OK, GPU_REASON = cupy_available()


def _cfg(backend, kernel, **over):
    data = {
        "run": {"steps": 4, "replicas": 2, "seed": 5, "backend": backend, "kernel": kernel},
        "batch": {"num_sequences": 4, "seq_length": 96, "micro_batch_size": 2,
                  "computation_batch_sizes": [2]},
        "router": {"num_experts": 20, "topk": 4},
        "traffic": {"skew": "linear", "linear_spread": 1.0},
        "controller": {"type": "sign", "bias_update_rate": 0.02},
    }
    for key, value in over.items():
        section, name = key.split("__")
        data.setdefault(section, {})[name] = value
    return config_from_dict(data)


VARIANTS = {
    "sigmoid": {},
    "softmax": {"router__score_function": "softmax"},
    "sqrtsoftplus": {"router__score_function": "sqrtsoftplus"},
    "multiplicative": {"router__bias_mode": "multiplicative"},
    "correlated": {"traffic__seq_correlation": 0.3},
    "odd_experts": {"router__num_experts": 19},
}


def test_cuda_module_imports_without_a_gpu():
    from routesim.engines.kernels import cuda as _kernel_cuda

    assert "route_tokens" in _kernel_cuda.CUDA_SOURCE


def _host_launch(n, k, gate_code, mult, disp):
    """A NumPy stand-in for the compiled CUDA function (same arguments, same outputs)."""
    gname = {0: "sigmoid", 1: "softmax", 2: "sqrtsoftplus"}[gate_code]

    def launch(grid, block, args, shared_mem=0):
        bases, mu, bias, scale, sr, sq, a, use_rho, t0, n_tok, L, nseq, smax, counts, d = args
        h = (n + 1) // 2
        assert mu.shape[-1] == 2 * h and bias.shape == mu.shape and grid[1] == mu.shape[0]
        assert grid[0] * block[0] >= n_tok and shared_mem == int(smax) * n * 4
        rows = np.arange(int(t0), int(t0) + int(n_tok), dtype=np.uint64)
        for q in range(mu.shape[0]):
            idx = rows[:, None] * np.uint64(h) + np.arange(h, dtype=np.uint64)
            hsh = rng.hash_counter(np, bases[q], idx)
            u1 = ((hsh >> np.uint64(40)).astype(np.float32) + np.float32(0.5)) \
                * np.float32(2.0 ** -24)
            u2 = (((hsh >> np.uint64(8)) & np.uint64(0xFFFFFF)).astype(np.float32)
                  + np.float32(0.5)) * np.float32(2.0 ** -24)
            rad = np.sqrt(np.float32(-2.0) * np.log(u1))
            ang = np.float32(2 * np.pi) * u2
            eps = np.concatenate([rad * np.cos(ang), rad * np.sin(ang)], axis=-1)[:, :n]
            if use_rho:
                seq = (rows // np.uint64(L) - np.uint64(int(t0) // int(L))).astype(np.int64)
                eps = sr[q] * a[q][seq][:, :n] + sq[q] * eps
            z = mu[q, :n] + scale[q] * eps
            s = gate(np, gname, z)
            v = s * bias[q, :n] if mult else s + bias[q, :n]
            sel = select_topk(np, v, k)
            seq = (rows // np.uint64(L)).astype(np.int64) - int(t0) // int(L)
            np.add.at(counts[q], (np.repeat(seq, k), sel.ravel()), 1)
            if disp:
                plain = select_topk(np, s, k)
                d[q] += int((~np.any(sel[:, :, None] == plain[:, None, :], axis=-1)).sum())

    return launch


@pytest.mark.parametrize("variant", ["sigmoid", "softmax", "correlated", "multiplicative"])
def test_cuda_host_glue_matches_the_generic_engine(variant, monkeypatch):
    """make_cuda_router's padding, arguments and reshapes, with a host launch."""
    from routesim.engines.kernels import cuda as _kernel_cuda
    from routesim.engines import kernels as _kernels

    monkeypatch.setattr(_kernel_cuda, "_compiled", _host_launch)
    cfg = _cfg("numpy", "generic", **VARIANTS[variant])
    ref = simulate(cfg, progress=False)
    monkeypatch.setattr(_kernels, "choose_kernel", lambda points, xp: "cuda")
    got = simulate(cfg, progress=False)
    np.testing.assert_array_equal(got["expert_load"].values, ref["expert_load"].values)
    np.testing.assert_allclose(got["displacement"].values, ref["displacement"].values,
                               atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_REASON)
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("kernel", ["cuda", "generic"])
def test_cupy_engine_equals_numpy_engine(kernel, variant):
    """Same draws on the GPU: the same loads as the NumPy engine."""
    ref = simulate(_cfg("numpy", "generic", **VARIANTS[variant]), progress=False)
    got = simulate(_cfg("cupy", kernel, **VARIANTS[variant]), progress=False)
    np.testing.assert_array_equal(got["expert_load"].values, ref["expert_load"].values)
    np.testing.assert_allclose(got["displacement"].values, ref["displacement"].values,
                               atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_REASON)
def test_cuda_kernel_large_step_agrees_with_numba():
    """One large step (T = 65536, N = 256): CUDA and the CPU kernel count the same."""
    cfg = _cfg("cupy", "cuda", batch__num_sequences=16, batch__seq_length=4096,
               batch__micro_batch_size=16, router__num_experts=256, router__topk=8,
               run__steps=1, run__replicas=1)
    got = simulate(cfg, progress=False)["expert_load"].values
    ref = simulate(cfg.replace(**{"run.backend": "numpy", "run.kernel": "auto"}),
                   progress=False)["expert_load"].values
    assert int(np.abs(got - ref).sum()) <= 4  # float32 near-ties only (of 524288)
    assert to_numpy(got).sum() == 65536 * 8


def _new_router_cfg(backend, name):
    base = {"run": {"steps": 3, "replicas": 2, "seed": 3, "backend": backend,
                    "kernel": "generic"},
            "batch": {"num_sequences": 8, "seq_length": 32, "micro_batch_size": 2},
            "router": {"num_experts": 16, "topk": 2},
            "traffic": {"skew": "zipf", "zipf_exponent": 1.0},
            "controller": {"type": "none"}}
    extra = {
        "hash": {"router": {"router_type": "hash", "hash_vocab_size": 500}},
        "threshold": {"router": {"router_type": "expert_threshold"}},
        "shuffled_ec": {"router": {"router_type": "expert_choice", "expert_choice_block": 16,
                                   "expert_choice_shuffle": True}},
        "layers_placement": {"model": {"num_layers": 3, "layer_correlation": 0.5},
                             "controller": {"type": "sign", "bias_update_rate": 0.01},
                             "placement": {"ep_size": 4, "optimise": "greedy",
                                           "replicate_hottest": 4}},
        "zero_budget": {"router": {"zero_experts": 4},
                        "controller": {"type": "zero_budget", "bias_update_rate": 0.05,
                                       "params": {"ffn_budget": 1.0}}},
    }[name]
    for section, values in extra.items():
        base[section] = {**base.get(section, {}), **values}
    return config_from_dict(base)


NEW_ROUTERS = ["hash", "threshold", "shuffled_ec", "layers_placement", "zero_budget"]


@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_new_routers_on_array_api_strict_equal_numpy(name):
    """The new routing paths are array-API code: array-api-strict gives the NumPy loads."""
    pytest.importorskip("array_api_strict")
    ref = simulate(_new_router_cfg("numpy", name), progress=False)
    got = simulate(_new_router_cfg("array_api_strict", name), progress=False)
    np.testing.assert_array_equal(got["expert_load"].values, ref["expert_load"].values)


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=GPU_REASON)
@pytest.mark.parametrize("name", NEW_ROUTERS)
def test_new_routers_on_cupy_equal_numpy(name):
    """Hash, Expert Threshold, shuffled Expert Choice, layers with placement, zero experts."""
    ref = simulate(_new_router_cfg("numpy", name), progress=False)
    got = simulate(_new_router_cfg("cupy", name), progress=False)
    np.testing.assert_array_equal(got["expert_load"].values, ref["expert_load"].values)
    for var in ("rank_straggler", "rank_straggler_planned", "ffn_per_token"):
        if var in ref:
            np.testing.assert_allclose(got[var].values, ref[var].values, rtol=1e-12)
