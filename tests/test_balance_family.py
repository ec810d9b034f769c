"""Su's balance-loss recipe phi(P + sg[F - P]): every objective's gradient against central
finite differences of the surrogate with the stop-gradient term frozen (float64), dphi/dF
against finite differences of phi, the recipe's claims (quadratic = Switch up to N, entropy =
Switch to first order near balance), a user objective through the registry."""

import zlib

import numpy as np
import pytest
from scipy.special import expit, logsumexp, softmax

from routesim import penalty_registry
from routesim.learning import balance_family, penalties

from _numerics import fd_grad, rel_err

RTOL = 1e-4
BUILTINS = ("switch", "quadratic", "entropy", "l1", "logsumexp")


def reference_rho(z, gate, normalise):
    """P's per-token scores, independently of the package."""
    if gate == "softmax":
        return softmax(z, axis=-1)
    s = expit(z)
    return s / s.sum(-1, keepdims=True) if normalise else s


def reference_phi(name, F, Q, tau):
    """The objectives written out again with numpy/scipy."""
    if name == "switch":
        return 0.5 * np.sum(F * F / Q, -1)
    if name == "quadratic":
        return 0.5 * np.sum((F - Q) ** 2, -1)
    if name == "entropy":
        return np.sum(F * np.log(F / Q), -1)
    if name == "l1":
        return np.sum(np.abs(F - Q), -1)
    if name == "logsumexp":
        return tau * logsumexp((F / Q - 1) / tau, axis=-1)
    raise KeyError(name)


def draw(rng, t, e, groups):
    z = rng.normal(size=(t, e))
    f = rng.dirichlet(np.ones(e), size=groups)    # no F_i equals Q_i: l1 is smooth there
    return z, f


def surrogate(name, z, z0, f, gate, normalise, groups, q, tau):
    """mean_g phi(P_g(z) + sg[F_g - P_g(z0)]), sg frozen at z0 (linear: sum_i sg[w_i] P_i)."""
    t, e = z.shape
    p = reference_rho(z, gate, normalise).reshape(groups, t // groups, e).mean(1)
    p0 = reference_rho(z0, gate, normalise).reshape(groups, t // groups, e).mean(1)
    spec = penalty_registry.get_objective(name)
    if spec.linear:
        return float(np.mean(np.sum(spec.dphi(np, f, q, tau) * p, -1)))
    return float(np.mean(reference_phi(name, p + (f - p0), q, tau)))


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("gate,normalise", [("softmax", True), ("sigmoid", True),
                                            ("sigmoid", False)])
@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("uniform", [True, False])
def test_gradient_matches_finite_differences_of_the_surrogate(name, gate, normalise, groups,
                                                              uniform):
    seed = zlib.crc32(repr((name, gate, normalise, groups, uniform)).encode())
    rng = np.random.default_rng(seed)
    t, e, tau = 12, 5, 0.3
    z, f = draw(rng, t, e, groups)
    q = np.full(e, 1 / e) if uniform else rng.dirichlet(2 * np.ones(e))
    value, grad = balance_family.family_loss(np, name, z, f, gate, groups, q, normalise, tau)
    fd = fd_grad(lambda zz: surrogate(name, zz, z, f, gate, normalise, groups, q, tau), z)
    assert rel_err(grad, fd) < RTOL
    # the forward value: phi(F) (linear: the dot product at the current P)
    assert np.isclose(value, surrogate(name, z, z, f, gate, normalise, groups, q, tau),
                      rtol=1e-12)
    if not penalty_registry.get_objective(name).linear:
        assert np.isclose(value, np.mean(reference_phi(name, f, q, tau)), rtol=1e-12)


@pytest.mark.parametrize("name", BUILTINS)
def test_dphi_matches_finite_differences_of_phi(name):
    rng = np.random.default_rng(1)
    e = 6
    f = rng.dirichlet(np.ones(e))
    q = rng.dirichlet(3 * np.ones(e))
    spec = penalty_registry.get_objective(name)
    fd = fd_grad(lambda ff: float(spec.phi(np, ff, q, 0.2)), f)
    assert rel_err(spec.dphi(np, f, q, 0.2), fd) < RTOL
    assert np.isclose(spec.phi(np, f, q, 0.2), reference_phi(name, f, q, 0.2), rtol=1e-12)


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("normalization", ["megatron", "mixtral"])
def test_switch_objective_is_the_switch_loss(gate, groups, normalization):
    # penalties.balance_loss is the dot-product form written independently
    rng = np.random.default_rng(2)
    t, e, k = 8, 5, 2
    z = rng.normal(size=(t, e))
    m = penalties.topk_map(np, rng.normal(size=(t, e)), k)
    q = balance_family.uniform_target(np, e)
    v, g = balance_family.family_loss_from_map(np, "switch", z, m, gate, k, groups, q,
                                               normalization=normalization)
    v0, g0 = penalties.balance_loss(np, z, m, gate, k, groups, normalization)
    assert np.isclose(v, v0, rtol=1e-12) and np.allclose(g, g0, rtol=1e-12, atol=0)


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_quadratic_ste_gradient_is_the_switch_gradient_over_n(gate):
    # Su: grad of 1/2 ||P + sg[F - P] - Q||^2 = sum_i (F_i - 1/N) grad P_i = grad(sum F_i P_i),
    # because sum_i P_i = 1: the Switch loss N sum_i F_i P_i has N times this gradient.
    rng = np.random.default_rng(3)
    t, e = 16, 8
    z, f = draw(rng, t, e, 1)
    q = balance_family.uniform_target(np, e)
    _, g_quad = balance_family.family_loss(np, "quadratic", z, f, gate, 1, q)
    _, g_switch = balance_family.family_loss(np, "switch", z, f, gate, 1, q)
    assert rel_err(g_switch, e * g_quad) < 1e-12


def test_quadratic_differs_from_switch_with_unnormalised_scores():
    # with E[rho] in place of P, sum_i P_i is not 1: the difference is -(1/N) grad sum_i E[rho_i]
    rng = np.random.default_rng(4)
    t, e = 16, 8
    z, f = draw(rng, t, e, 1)
    q = balance_family.uniform_target(np, e)
    _, g_quad = balance_family.family_loss(np, "quadratic", z, f, "sigmoid", 1, q, False)
    _, g_switch = balance_family.family_loss(np, "switch", z, f, "sigmoid", 1, q, False)
    s = expit(z)
    extra = -(1 / e) * s * (1 - s) / t                # -(1/N) d/dz mean_t sum_i s_ti
    assert rel_err(g_quad, g_switch / e + extra) < 1e-12
    assert rel_err(g_quad, g_switch / e) > 0.1


def entropy_vs_switch(eps, gate="softmax"):
    """Relative gap between the entropy (KL) gradient and the Switch gradient at F = Q + eps d."""
    rng = np.random.default_rng(5)
    t, e = 16, 8
    z = rng.normal(size=(t, e))
    d = rng.normal(size=e)
    d -= d.mean()
    q = balance_family.uniform_target(np, e)
    f = (q + eps * d / np.abs(d).max() / e)[None]
    _, g_ent = balance_family.family_loss(np, "entropy", z, f, gate, 1, q)
    _, g_switch = balance_family.family_loss(np, "switch", z, f, gate, 1, q)
    return rel_err(g_ent, g_switch)


@pytest.mark.parametrize("gate", ["softmax", "sigmoid"])
def test_entropy_matches_switch_to_first_order_near_balance(gate):
    # log(F_i / Q_i) = N d_i - (N d_i)^2 / 2 + ...: the gap relative to the Switch gradient
    # (factor 1) falls linearly with the distance from balance (order 1 measured)
    gaps = [entropy_vs_switch(eps, gate) for eps in (1e-1, 1e-2, 1e-3)]
    slopes = np.diff(np.log10(gaps))
    assert np.allclose(slopes, -1.0, atol=0.05), (gaps, slopes)
    assert gaps[-1] < 1e-3


def test_logsumexp_tends_to_maxvio():
    f = np.array([0.4, 0.3, 0.2, 0.1])
    q = np.full(4, 0.25)
    spec = penalty_registry.get_objective("logsumexp")
    assert np.isclose(spec.phi(np, f, q, 1e-3), 0.6, atol=1e-2)   # max F/Q - 1 = MaxVio
    assert np.allclose(spec.dphi(np, f, q, 1e-3), [4, 0, 0, 0], atol=1e-6)


def test_user_objective_plugs_in_and_is_checked_the_same_way():
    def phi(xp, F, Q, tau):   # sum_i F_i^3 / Q_i^2: punishes overload more steeply
        return xp.sum(F ** 3 / Q ** 2, axis=-1)

    def dphi(xp, F, Q, tau):
        return 3 * F ** 2 / Q ** 2

    rng = np.random.default_rng(6)
    z, f = draw(rng, 8, 4, 2)
    q = rng.dirichlet(np.ones(4))
    with penalty_registry.registered_temporarily("cubic", phi, dphi) as spec:
        assert "cubic" in penalty_registry.registered()
        _, grad = balance_family.family_loss(np, "cubic", z, f, "sigmoid", 2, q)

        def s(zz):
            p = reference_rho(zz, "sigmoid", True).reshape(2, 4, 4).mean(1)
            p0 = reference_rho(z, "sigmoid", True).reshape(2, 4, 4).mean(1)
            return float(np.mean(phi(np, p + f - p0, q, 1.0)))

        assert rel_err(grad, fd_grad(s, z)) < RTOL
        assert not spec.builtin
    assert "cubic" not in penalty_registry.registered()


def test_registry_refuses_bad_names_and_builtin_replacement():
    with pytest.raises(ValueError, match="Python identifier"):
        penalty_registry.register("not a name", lambda *a: 0, lambda *a: 0)
    with pytest.raises(ValueError, match="already registered"):
        penalty_registry.register("entropy", lambda *a: 0, lambda *a: 0, replace=True)
    with pytest.raises(ValueError, match="not registered"):
        penalty_registry.get_objective("nope")


def test_array_api_strict_agrees_with_numpy():
    xps = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(7)
    z, f = draw(rng, 8, 5, 2)
    q = rng.dirichlet(np.ones(5))
    for name in BUILTINS:
        for normalise in (True, False):
            v0, g0 = balance_family.family_loss(np, name, z, f, "sigmoid", 2, q, normalise, 0.5)
            v1, g1 = balance_family.family_loss(xps, name, xps.asarray(z), xps.asarray(f),
                                                "sigmoid", 2, xps.asarray(q), normalise, 0.5)
            assert np.allclose(v0, np.asarray(v1)) and np.allclose(g0, np.asarray(g1))


def test_penalty_module_registers_a_users_objective(tmp_path):
    from routesim import ConfigError, config_from_dict

    path = tmp_path / "my_objective.py"
    path.write_text(
        "from routesim import penalty_registry\n"
        "penalty_registry.register('from_module', lambda xp, F, Q, t: xp.sum(F * F, axis=-1),\n"
        "                          lambda xp, F, Q, t: 2 * F, replace=True)\n")
    base = {"traffic": {"kind": "features"}, "router": {"num_experts": 4, "topk": 1}}
    try:
        cfg = config_from_dict({**base, "penalty": {"learn": True, "type": "switch",
                                                    "loss": "from_module",
                                                    "module": str(path)}})
        assert cfg.penalty.loss == "from_module"
    finally:
        if "from_module" in penalty_registry.registered():
            penalty_registry.unregister("from_module")
    with pytest.raises(ConfigError, match="penalty.module"):
        config_from_dict({**base, "penalty": {"learn": True, "type": "switch",
                                              "module": str(tmp_path / "missing.py")}})
