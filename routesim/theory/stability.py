"""Linear stability of the proportional, EMA-filtered and momentum bias laws.

Near the equilibrium ``b*`` (:func:`~routesim.theory.expected_load.equilibrium`)
the relative load error ``e = (mean(c) - c) / mean(c)`` of a window with many
tokens responds to a bias offset ``x = b - b*`` through the loop matrix

    A = (N / K) J,    e = -A x + n,

with ``J = dp/db`` at ``b*`` (symmetric, positive semi-definite, ``A 1 = 0``)
and ``n`` the counting noise. Every law of :mod:`routesim.controllers` that is
linear near balance then decouples along the eigenvectors of ``A``; each mode
with loop gain ``lambda`` (an eigenvalue of ``A``) follows

    x_{t+1} = x_t + u e_t                                   (proportional)
    m_{t+1} = beta m_t + (1 - beta) F_t,  x_{t+1} = x_t - u (m_{t+1} - 1/N)   (ema)
    v_{t+1} = beta v_t + (1 - beta) e_t / kappa,  x_{t+1} = x_t + u v_{t+1}  (momentum_tanh)

(``F = c / sum c``, so ``F - 1/N = -e / N``). All three have the per-mode
characteristic polynomial ``z^2 - (1 + beta - g) z + beta`` with effective
gain ``g = u lambda`` (proportional, ``beta = 0``: one pole ``1 - g``),
``g = u (1 - beta) lambda / N`` (ema) and ``g = u (1 - beta) lambda / kappa``
(momentum_tanh). By the Jury test the loop is stable iff
``0 < g < 2 (1 + beta)`` for every non-zero mode, hence the critical rate

    u_c = 2 (1 + beta) / ((1 - beta) lambda_max)   (times N or kappa).

Domain of validity: windows with enough tokens that the loads follow the
expected-load map (counting noise only adds a stationary fluctuation, see
:func:`steady_error_covariance`), no bias clamp active, warm-up over, bias
offsets small enough for the linearisation (``momentum_tanh`` also needs
``|e| < kappa``, below its soft clamp). Far from balance the loop is
nonlinear: :func:`deterministic_trajectory` iterates the exact laws on the
exact map instead. Above ``u_c`` the linear theory only says the mode grows;
the nonlinear loop then saturates into a bounded oscillation.

Shape legend: P points (any leading axes), E experts, S steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import linalg

from .. import metrics
from ..exceptions import ConfigError, UnstableLoopError

__all__ = [
    "LINEAR_LAWS",
    "loop_gains",
    "effective_gain",
    "closed_loop_poles",
    "critical_rate",
    "spectral_radius",
    "settling_steps",
    "stable_region",
    "steady_error_covariance",
    "deterministic_trajectory",
]

#: Laws with a linear regime near balance.
LINEAR_LAWS = ("proportional", "ema", "momentum_tanh")


def _check_law(law: str, momentum: float, tanh_scale: float) -> None:
    if law not in LINEAR_LAWS:
        raise ConfigError(f"law = {law!r}: must be one of {', '.join(LINEAR_LAWS)} (the sign "
                          "laws are relays: see routesim.theory.limit_cycle)")
    if not 0.0 <= momentum < 1.0:
        raise ConfigError(f"momentum = {momentum!r}: must be in [0, 1)")
    if not (np.isfinite(tanh_scale) and tanh_scale > 0):
        raise ConfigError(f"tanh_scale = {tanh_scale!r}: must be finite and > 0")


def loop_gains(jac_PEE: Any, topk: int) -> np.ndarray:
    """Eigenvalues of ``A = (N/K) J``, ascending (the first is the common-shift 0).

    Parameters
    ----------
    jac_PEE : array (..., E, E)
        ``dp/db`` at the equilibrium (additive bias: symmetric).
    topk : int
        ``K``.

    Returns
    -------
    lam_PE : ndarray (..., E)

    Examples
    --------
    >>> import numpy as np
    >>> J = 0.1 * (np.eye(4) - 0.25)
    >>> np.round(loop_gains(J, 2), 6)
    array([0. , 0.2, 0.2, 0.2])
    """
    jac = np.asarray(jac_PEE, dtype=np.float64)
    if jac.ndim < 2 or jac.shape[-1] != jac.shape[-2] or not np.all(np.isfinite(jac)):
        raise ConfigError(f"jac_PEE: shape {jac.shape}: must be finite and square (..., E, E)")
    n = jac.shape[-1]
    if not 1 <= topk < n:
        raise ConfigError(f"topk = {topk!r}: must be an integer in [1, N) = [1, {n})")
    sym = np.allclose(jac, np.swapaxes(jac, -1, -2), rtol=1e-6, atol=1e-9 * np.abs(jac).max())
    lam = (np.linalg.eigvalsh(0.5 * (jac + np.swapaxes(jac, -1, -2))) if sym
           else np.sort(np.real(np.linalg.eigvals(jac)), axis=-1))
    return np.clip(lam * (n / topk), 0.0, None)


def effective_gain(law: str, rate: Any, lam: Any, *, num_experts: int, momentum: float = 0.0,
                   tanh_scale: float = 0.1) -> np.ndarray:
    """Per-mode gain ``g`` of a law (see the module notes).

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    rate : float or array
        ``u``, ``controller.bias_update_rate``.
    lam : float or array
        Loop gains ``lambda`` (eigenvalues of ``A``); broadcasts against ``rate``.
    num_experts : int
        ``N`` (the ema law's gain is divided by it).
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws (0 for proportional).
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.

    Returns
    -------
    ndarray
        ``g``, shape ``broadcast(rate, lam)``.

    Examples
    --------
    >>> float(effective_gain("proportional", 0.5, 2.0, num_experts=8))
    1.0
    >>> float(effective_gain("ema", 0.5, 2.0, num_experts=8, momentum=0.5))
    0.0625
    """
    _check_law(law, momentum, tanh_scale)
    g = np.asarray(rate, dtype=np.float64) * np.asarray(lam, dtype=np.float64)
    if law == "proportional":
        return g
    if law == "ema":
        return g * (1.0 - momentum) / num_experts
    return g * (1.0 - momentum) / tanh_scale


def closed_loop_poles(law: str, rate: Any, lam: Any, *, num_experts: int,
                      momentum: float = 0.0, tanh_scale: float = 0.1) -> np.ndarray:
    """Poles of each mode, shape ``broadcast(rate, lam) + (2,)`` (complex).

    The proportional law has the single pole ``1 - u lambda`` (returned
    twice, so every law has the same shape). The poles are the roots of
    ``z^2 - (1 + beta - g) z + beta``, i.e. the eigenvalues of the per-mode
    companion matrix; a test checks them against python-control when it is
    installed.

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    rate : float or array
        ``u``.
    lam : float or array
        Loop gains ``lambda``; broadcasts against ``rate``.
    num_experts : int
        ``N`` (the ema law's gain is divided by it).
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws (0 for proportional).
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.

    Returns
    -------
    complex ndarray (..., 2)

    Examples
    --------
    >>> closed_loop_poles("proportional", 0.25, 2.0, num_experts=4)
    array([0.5+0.j, 0.5+0.j])
    """
    g = effective_gain(law, rate, lam, num_experts=num_experts, momentum=momentum,
                       tanh_scale=tanh_scale)
    beta = 0.0 if law == "proportional" else momentum
    if law == "proportional":
        z = (1.0 - g).astype(complex)
        return np.stack([z, z], axis=-1)
    tr = 1.0 + beta - g
    disc = np.sqrt((tr * tr - 4.0 * beta).astype(complex))
    return np.stack([(tr + disc) / 2.0, (tr - disc) / 2.0], axis=-1)


def critical_rate(law: str, lam_max: Any, *, num_experts: int, momentum: float = 0.0,
                  tanh_scale: float = 0.1) -> np.ndarray:
    """The rate ``u_c`` at which the fastest mode reaches the stability boundary.

    ``u_c = 2 / lambda_max`` for the proportional law; ``2 (1 + beta) /
    ((1 - beta) lambda_max)`` times ``N`` (ema) or ``kappa`` (momentum_tanh).

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    lam_max : float or array
        The largest loop gain (the fastest mode).
    num_experts : int
        ``N`` (the ema law's gain is divided by it).
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws (0 for proportional).
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.

    Returns
    -------
    ndarray
        ``u_c``, the shape of ``lam_max``.

    Examples
    --------
    >>> float(critical_rate("proportional", 4.0, num_experts=8))
    0.5
    """
    unit = effective_gain(law, 1.0, lam_max, num_experts=num_experts, momentum=momentum,
                          tanh_scale=tanh_scale)
    beta = 0.0 if law == "proportional" else momentum
    with np.errstate(divide="ignore"):
        return 2.0 * (1.0 + beta) / unit


def spectral_radius(law: str, rate: Any, lam_PE: Any, *, num_experts: int,
                    momentum: float = 0.0, tanh_scale: float = 0.1) -> np.ndarray:
    """Largest pole modulus over the non-zero modes ``lam_PE`` (..., E) at each rate.

    ``rate`` broadcasts against the leading axes of ``lam_PE``.

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    rate : float or array
        ``u``.
    lam_PE : array (..., E)
        The non-zero loop gains of each point.
    num_experts : int
        ``N`` (the ema law's gain is divided by it).
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws (0 for proportional).
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.

    Returns
    -------
    ndarray (...)
        ``max |z|`` over modes and poles; >= 1 means unstable.

    Examples
    --------
    >>> float(spectral_radius("proportional", 0.25, [0.0, 2.0, 6.0], num_experts=3))
    0.5
    """
    lam = np.asarray(lam_PE, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)[..., None]
    poles = closed_loop_poles(law, rate, lam, num_experts=num_experts, momentum=momentum,
                              tanh_scale=tanh_scale)
    mod = np.max(np.abs(poles), axis=-1)
    live = lam > 1e-9 * np.max(lam, axis=-1, keepdims=True)
    return np.max(np.where(live, mod, 0.0), axis=-1)


def settling_steps(law: str, rate: Any, lam_PE: Any, *, num_experts: int,
                   momentum: float = 0.0, tanh_scale: float = 0.1,
                   reduction: float = 0.1) -> np.ndarray:
    """Windows until the slowest mode has shrunk by ``reduction`` (inf if unstable).

    ``log(reduction) / log(rho)`` with ``rho`` the spectral radius; a
    second-order mode with complex poles decays with the same envelope.

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    rate : float or array
        ``u``.
    lam_PE : array (..., E)
        The non-zero loop gains of each point.
    num_experts : int
        ``N`` (the ema law's gain is divided by it).
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws (0 for proportional).
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.
    reduction : float in (0, 1)
        Factor the slowest mode must shrink by.

    Returns
    -------
    ndarray (...)
        Windows (not rounded); ``inf`` for an unstable loop.

    Examples
    --------
    >>> float(settling_steps("proportional", 0.25, [0.0, 2.0], num_experts=2))
    3.321928094887362
    """
    if not 0.0 < reduction < 1.0:
        raise ConfigError(f"reduction = {reduction!r}: must be in (0, 1)")
    rho = spectral_radius(law, rate, lam_PE, num_experts=num_experts, momentum=momentum,
                          tanh_scale=tanh_scale)
    with np.errstate(divide="ignore"):
        return np.where(rho < 1.0, np.log(reduction) / np.log(np.maximum(rho, 1e-300)), np.inf)


def stable_region(law: str, rates: Any, momenta: Any, lam_max: float, *, num_experts: int,
                  tanh_scale: float = 0.1) -> np.ndarray:
    """Stability on a (rate, momentum) grid: bool array ``(len(rates), len(momenta))``.

    Parameters
    ----------
    law : {"ema", "momentum_tanh", "proportional"}
        The bias law.
    rates, momenta : sequence of float
        The grid's rates ``u`` and momenta ``beta``.
    lam_max : float
        The largest loop gain.
    num_experts : int
        ``N``.
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.

    Returns
    -------
    bool ndarray (len(rates), len(momenta))

    Examples
    --------
    >>> stable_region("ema", [10.0, 100.0], [0.0, 0.9], 2.0, num_experts=16).tolist()
    [[True, True], [False, True]]
    """
    rates = np.asarray(rates, dtype=np.float64)[:, None]
    out = np.empty((rates.shape[0], len(momenta)), dtype=bool)
    for j, beta in enumerate(momenta):  # a handful of filter settings
        uc = critical_rate(law, lam_max, num_experts=num_experts, momentum=float(beta),
                           tanh_scale=tanh_scale)
        out[:, j] = (rates[:, 0] > 0) & (rates[:, 0] < uc)
    return out


def _state_matrices(law: str, rate: float, a_EE: np.ndarray, num_experts: int, momentum: float,
                    tanh_scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``z' = M z + B n``, ``e = C z + n`` for the state ``z`` (offset [, memory])."""
    n = a_EE.shape[-1]
    eye = np.eye(n)
    if law == "proportional":
        return eye - rate * a_EE, rate * eye, -a_EE
    beta = momentum
    # memory gain per unit error: ema's memory is F - 1/N = -e/N, momentum's e/kappa
    k = -(1.0 - beta) / num_experts if law == "ema" else (1.0 - beta) / tanh_scale
    u = -rate if law == "ema" else rate
    # mem' = beta mem + k e = beta mem - k A x + k n;  x' = x + u mem'
    m_top = np.hstack([eye - u * k * a_EE, u * beta * eye])
    m_bot = np.hstack([-k * a_EE, beta * eye])
    return (np.vstack([m_top, m_bot]), np.vstack([u * k * eye, k * eye]),
            np.hstack([-a_EE, np.zeros((n, n))]))


def steady_error_covariance(law: str, rate: float, a_EE: Any, noise_cov_EE: Any, *,
                            momentum: float = 0.0, tanh_scale: float = 0.1,
                            with_bias: bool = False) -> Any:
    """Stationary covariance of the relative load error ``e`` under counting noise.

    Solves the discrete Lyapunov equation of the closed loop driven by the
    window's relative counting noise ``n`` (covariance ``noise_cov_EE``,
    e.g. ``(N/K)^2 deff Sigma / T`` from
    :func:`~routesim.theory.maxvio.load_error_covariance`); ``n_t`` is
    independent of the bias that routed window ``t``, so
    ``Cov(e) = C Cov(z) C^T + Cov(n)``. For the proportional law each mode is
    inflated by ``2 / (2 - u lambda)``.

    With ``with_bias`` it also returns the stationary covariance of the
    bias offset ``x = b - b*`` (the noise floor of the bias), as a pair
    ``(cov_e, cov_x)``.

    Parameters
    ----------
    law : {"proportional", "ema", "momentum_tanh"}
        The bias law (see the module notes).
    rate : float
        ``u``.
    a_EE : array (E, E)
        The loop matrix ``A = (N/K) J`` at the equilibrium.
    noise_cov_EE : array (E, E)
        Covariance of a window's relative counting noise.
    momentum : float in [0, 1)
        ``beta`` of the ema and momentum_tanh laws.
    tanh_scale : float > 0
        ``kappa`` of the momentum_tanh law.
    with_bias : bool
        Also return the stationary covariance of the bias offset.

    Returns
    -------
    cov_e : ndarray (E, E)
        Stationary covariance of ``e``.
    cov_x : ndarray (E, E)
        That of ``x = b - b*``, only with ``with_bias``.

    Raises
    ------
    ConfigError
        If ``law``, ``momentum`` or ``tanh_scale`` is invalid.
    UnstableLoopError
        If the loop is unstable (no stationary state).

    Examples
    --------
    >>> import numpy as np
    >>> a = 2.0 * (np.eye(4) - 0.25)
    >>> noise = 1e-4 * (np.eye(4) - 0.25)
    >>> cov = steady_error_covariance("proportional", 0.5, a, noise)
    >>> np.allclose(cov, noise * 2.0 / (2.0 - 0.5 * 2.0))
    True
    """
    a = np.asarray(a_EE, dtype=np.float64)
    s = np.asarray(noise_cov_EE, dtype=np.float64)
    n = a.shape[-1]
    _check_law(law, momentum, tanh_scale)
    m, b, c = _state_matrices(law, rate, a, n, momentum, tanh_scale)
    proj = np.eye(n) - 1.0 / n
    q = b @ (proj @ s @ proj) @ b.T
    big = m.shape[0]
    pz = np.kron(np.eye(big // n), proj)
    mz = pz @ m @ pz
    radius = float(np.max(np.abs(np.linalg.eigvals(mz))))
    if radius >= 1.0:
        raise UnstableLoopError(f"rate = {rate!r}: the loop is unstable (spectral radius "
                                f"{radius:.4g} >= 1), no stationary state")
    cov_z = linalg.solve_discrete_lyapunov(mz, q)
    cov_e = c @ cov_z @ c.T + proj @ s @ proj
    return (cov_e, cov_z[:n, :n]) if with_bias else cov_e


def deterministic_trajectory(mu_E: Any, *, law: str, steps: int, topk: int,
                             rate: float | None = None,
                             score_function: str = "sigmoid", noise: str = "normal",
                             noise_scale: float = 1.0, bias_mode: str = "additive",
                             momentum: float = 0.9, tanh_scale: float = 0.1,
                             rates: Any = None, nodes: int = 48, linear_at: Any = None,
                             linear_tol: float = 1e-3) -> dict[str, np.ndarray]:
    """Noise-free loop: the exact laws of :mod:`routesim.controllers` on the exact map.

    The loads of a window are their expectations ``T p(b)`` (the limit of
    many tokens per window); the law sees them one window late, as in the
    engine. Give exactly one of ``rate`` (one rate) or ``rates`` (P,)
    (several rates at once, vectorised). Any registered law
    (:func:`routesim.controllers.registered`) except ``none`` and those that
    read the dual estimate (``quantile``).

    Parameters
    ----------
    mu_E : array (E,)
        Popularity logits of the experts.
    law : str
        A registered law (not ``none`` or ``quantile``).
    steps : int
        Windows to iterate.
    topk : int
        ``K``.
    rate : float, optional
        ``u`` of a single trajectory (give this or ``rates``).
    rates : array (P,), optional
        Several rates, iterated together.
    score_function, noise, noise_scale, bias_mode : str, str, float, str
        The router and its logit noise, as in ``router`` and ``traffic``.
    momentum, tanh_scale : float
        The law's ``beta`` and ``kappa`` where it reads them.
    nodes : int
        Quadrature nodes of the expected-load map.
    linear_at : (array (E,), array (E, E)), optional
        ``(b*, J)``: linearise near balance (see below).
    linear_tol : float
        Relative distance from balance under which the linearisation is used.

    Returns
    -------
    dict with ``bias_SPE`` (bias routing each window), ``p_SPE`` (expected
    selection probabilities) and ``maxvio_SP`` (MaxVio of the expected loads).
    A rate whose orbit has closed (period 1 or 2, to 1e-9) is continued by
    repetition without evaluating the map again. With ``linear_at = (b*, J)``
    a rate whose loads are within ``linear_tol`` (relative) of balance uses
    ``p = K/N + J (b - b*)`` instead of the map (second-order error, about
    ``linear_tol^2``): much cheaper once the transient is over.

    Examples
    --------
    >>> import numpy as np
    >>> out = deterministic_trajectory(np.array([0.5, 0.0, -0.5]), law="proportional",
    ...                                rate=0.05, steps=40, topk=1, nodes=32)
    >>> bool(out["maxvio_SP"][0, 0] > 0.3 and out["maxvio_SP"][-1, 0] < 1e-3)
    True
    """
    from .. import controllers
    from .expected_load import load_map

    if (rate is None) == (rates is None):
        raise ConfigError("deterministic_trajectory: give exactly one of rate= (a float) or "
                          "rates= (an array of rates)")
    mu = np.asarray(mu_E, dtype=np.float64)
    rate_P = np.atleast_1d(np.asarray(rate if rates is None else rates, dtype=np.float64))
    p_cnt, n = rate_P.size, mu.shape[-1]
    if law not in controllers.registered():
        raise ConfigError(f"law = {law!r}: not a registered controller; registered: "
                          + ", ".join(controllers.registered()))
    if law == "none" or controllers.get_law(law).needs_dual_estimate:
        raise ConfigError(f"law = {law!r}: not a feedback law on loads")
    init = 1.0 if bias_mode == "multiplicative" else 0.0
    bias = np.full((p_cnt, 1, n), init)
    memory = np.zeros((p_cnt, 1, n))
    params = controllers.ControllerParams.from_columns(
        (law,) * p_cnt, {"bias_update_rate": rate_P, "momentum": momentum,
                         "tanh_scale": tanh_scale})
    out_b, out_p = np.empty((steps, p_cnt, n)), np.empty((steps, p_cnt, n))
    out_m = np.empty((steps, p_cnt, n))
    active = np.ones(p_cnt, dtype=bool)
    p = np.empty((p_cnt, n))
    near = np.zeros(p_cnt, dtype=bool)
    for t in range(steps):  # the loop over steps; all rates at once
        if linear_at is not None and near.any():
            bs, jac = (np.asarray(v, dtype=np.float64) for v in linear_at)
            lin = near & active
            p[lin] = topk / n + (bias[lin, 0] - bs) @ jac.T
        rows = np.nonzero(active & ~near)[0]
        if rows.size:
            p[rows] = load_map(np.broadcast_to(mu, (rows.size, n)), bias[rows, 0], topk=topk,
                               score_function=score_function, noise=noise,
                               noise_scale=noise_scale, bias_mode=bias_mode, nodes=nodes)
        # rows on a cycle of period 1 or 2 repeat it from here on
        p = np.where(active[:, None], p, out_p[t - 2] if t >= 2 else p)
        out_b[t], out_p[t], out_m[t] = bias[:, 0], p, memory[:, 0]
        if linear_at is not None:
            near = np.max(np.abs(p * n / topk - 1.0), axis=-1) < linear_tol
        bias, memory = controllers.update_bias(np, params, bias, memory, p[:, None, :] * 1e6,
                                               None, t)
        bias = np.where(active[:, None, None], bias, out_b[t - 1][:, None, :])
        memory = np.where(active[:, None, None], memory, out_m[t - 1][:, None, :])
        if t >= 3:
            tol = 1e-9 * (1.0 + np.max(np.abs(out_b[t]), axis=-1))
            same = ((np.max(np.abs(out_b[t] - out_b[t - 2]), axis=-1) <= tol)
                    & (np.max(np.abs(out_b[t - 1] - out_b[t - 3]), axis=-1) <= tol)
                    & (np.max(np.abs(out_m[t] - out_m[t - 2]), axis=-1) <= tol))
            active &= ~same
    return {"bias_SPE": out_b, "p_SPE": out_p, "maxvio_SP": metrics.maxvio(out_p)}
