"""The sign controller as a relay loop: limit cycles, amplitudes and steady MaxVio.

The Loss-Free / Megatron law ``b += u sign(mean(c) - c)`` (and torchtitan's
centred variant) never converges: it is a relay in a discrete loop whose
plant, near the equilibrium ``b*``, maps a bias offset ``x = b - b*`` to the
relative load error ``e = -A x + n`` (``A = (N/K) J``, see
:mod:`.stability`). Two analyses:

**Noise-free loop, exact** (:func:`relay_cycle`). The bias moves on the
lattice ``b_0 + u Z^N`` (centred: ``u Z^N / N``), so the state is an integer
vector and the loop, being deterministic, must revisit a state: the solver
iterates it until it does and returns the exact period, transient and
waveforms. The plant is either the linearisation (:func:`linear_plant`) or
the exact expected-load map (:func:`map_plant`, the limit of many tokens per
window).

**Mean field with counting noise** (:func:`relay_stationary`). Expert ``i``
sees ``e_i = -lambda_i (x_i - m) + n_i`` with self-gain ``lambda_i = A_ii``
(the others enter through the weighted mean ``m``, which moves slowly) and
counting noise of standard deviation ``sigma_i``. Relative to ``m`` its bias
is a birth-death chain on ``a + u Z``: up with probability
``Phi(-lambda y / sigma)``, down otherwise, whose stationary law follows
from detailed balance. The offset ``a`` is uniform (the uncentred update
moves the mean by multiples of ``u / N``, which spreads the offsets). The
chain gives the bias amplitude (RMS over time), the load amplitude and, with
independent experts, the expected MaxVio_batch. As ``sigma -> 0`` it
becomes the period-2 cycle between the two lattice points around the
threshold (bias RMS ``u/2``, load RMS ``lambda u / sqrt 3`` averaged over
offsets); for ``lambda u << sigma`` the bias is a random walk held by a
linear restoring force and MaxVio approaches the counting-noise floor.

Discrete harmonic balance (:func:`harmonic_balance`) gives the classical
estimate for comparison: the integrator ``u / (z - 1)`` reaches phase
``-pi`` at ``omega = pi`` (period 2), and ``N(A) |G| = 1`` with the relay's
describing function ``N(A) = 4 / (pi A)`` gives the error amplitude
``2 lambda u / pi``. (python-control's describing-function solver is
continuous-time only, so it is not used here.)

Domain of validity: the linear plant needs ``lambda u`` small against the
curvature of ``p(b)`` (use :func:`map_plant` otherwise); the mean field
needs many experts (the mean ``m`` nearly constant) and Gaussian counts.

Shape legend: E experts, S steps (of one cycle), Y lattice points.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from scipy import special

from .._math import normal_cdf
from ..exceptions import ConfigError, SolverError

__all__ = [
    "linear_plant",
    "map_plant",
    "relay_cycle",
    "harmonic_balance",
    "map_response",
    "relay_stationary",
    "cycle_maxvio",
]


def linear_plant(a_EE: Any, bias_star_E: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Plant ``e(b) = -A (b - b*)`` (the linearised loop).

    Parameters
    ----------
    a_EE : array (E, E)
        The loop matrix ``A = (N/K) J`` at the equilibrium.
    bias_star_E : array (E,)
        The equilibrium bias ``b*``.

    Returns
    -------
    callable
        ``b (E,) -> e (E,)``, the relative load error at bias ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> linear_plant(np.eye(2) - 0.5, [0.1, -0.1])(np.zeros(2))
    array([ 0.1, -0.1])
    """
    a = np.asarray(a_EE, dtype=np.float64)
    bs = np.asarray(bias_star_E, dtype=np.float64)
    return lambda b: -a @ (b - bs)


def map_plant(mu_E: Any, *, topk: int, nodes: int = 48,
              **router: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Plant ``e(b) = 1 - (N/K) p(b)`` on the exact expected-load map.

    Parameters
    ----------
    mu_E : array (E,)
        Popularity logits of the experts.
    topk : int
        ``K``.
    nodes : int
        Quadrature nodes of :func:`~routesim.theory.expected_load.load_map`.
    **router
        Further router and noise settings of ``load_map`` (``score_function``, ...).

    Returns
    -------
    callable
        ``b (E,) -> e (E,)``, the expected relative load error at bias ``b``.

    Examples
    --------
    >>> import numpy as np
    >>> e = map_plant(np.array([0.3, 0.0, -0.3]), topk=1)(np.zeros(3))
    >>> bool(e[0] < 0 < e[2]), bool(abs(e.sum()) < 1e-4)
    (True, True)
    """
    from .expected_load import load_map

    mu = np.asarray(mu_E, dtype=np.float64)
    n = mu.shape[-1]

    def plant(b: np.ndarray) -> np.ndarray:
        return 1.0 - (n / topk) * load_map(mu, b, topk=topk, nodes=nodes, **router)

    return plant


def relay_cycle(plant: Callable[[np.ndarray], np.ndarray], rate: float, bias0_E: Any, *,
                centred: bool = False, max_steps: int = 20000) -> dict[str, Any]:
    """Iterate the noise-free sign loop until its state repeats.

    Parameters
    ----------
    plant : callable (E,) -> (E,)
        Relative load error ``(mean c - c) / mean c`` at bias ``b``.
    rate : float > 0
        ``u``.
    bias0_E : array (E,)
        Initial bias (0 in the engine).
    centred : bool
        torchtitan's centred update instead of Megatron's plain one.
    max_steps : int
        Cap on the iterations.

    Returns
    -------
    dict
        ``period`` and ``transient`` (steps), ``bias_SE`` and ``error_SE``
        over one period, ``bias_rms`` (RMS over experts and the period of the
        centred bias about its period mean), ``error_rms`` and ``maxvio``
        (mean over the period of ``max_i -e_i``).

    Raises
    ------
    ConfigError
        If ``rate`` is not finite and positive.
    SolverError
        If no state repeats within ``max_steps``.

    Examples
    --------
    >>> import numpy as np
    >>> a = 2.0 * (np.eye(2) - 0.5)
    >>> out = relay_cycle(linear_plant(a, [0.35, -0.35]), 0.1, np.zeros(2))
    >>> out["period"], round(out["bias_rms"], 6)
    (2, 0.05)
    """
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate = {rate!r}: must be finite and > 0")
    b0 = np.asarray(bias0_E, dtype=np.float64)
    n = b0.shape[-1]
    scale = n if centred else 1
    state = np.zeros(n, dtype=np.int64)  # bias = b0 + rate * state / scale
    seen: dict[bytes, int] = {}
    biases: list[np.ndarray] = []
    errors: list[np.ndarray] = []
    for t in range(max_steps):
        key = state.tobytes()
        if key in seen:
            t0 = seen[key]
            bias = np.array(biases[t0:])
            err = np.array(errors[t0:])
            centred_b = bias - bias.mean(axis=-1, keepdims=True)
            dev = centred_b - centred_b.mean(axis=0)
            return {"period": t - t0, "transient": t0, "bias_SE": bias, "error_SE": err,
                    "bias_rms": float(np.sqrt(np.mean(dev * dev))),
                    "error_rms": float(np.sqrt(np.mean(err * err))),
                    "maxvio": float(np.mean(np.max(-err, axis=-1)))}
        seen[key] = t
        b = b0 + rate * state / scale
        e = np.asarray(plant(b), dtype=np.float64)
        biases.append(b)
        errors.append(e)
        s = np.sign(e).astype(np.int64)
        state = state + (n * s - s.sum() if centred else s)
    raise SolverError(f"relay_cycle: the sign loop did not repeat a state within max_steps = "
                      f"{max_steps} steps (rate = {rate!r}, centred = {centred}); raise max_steps")


def harmonic_balance(lam: Any, rate: Any) -> dict[str, np.ndarray]:
    """Discrete harmonic balance of the relay around the integrator ``u / (z - 1)``.

    Returns period 2, error (load) amplitude ``2 lambda u / pi`` and bias
    amplitude ``2 u / pi`` of the fundamental.

    Parameters
    ----------
    lam : float or array
        Loop gain ``lambda`` of the mode.
    rate : float or array
        ``u``, the relay's step; broadcasts against ``lam``.

    Returns
    -------
    dict
        ``period``, ``error_amplitude`` and ``bias_amplitude``, each of shape
        ``broadcast(lam, rate)``.

    Examples
    --------
    >>> out = harmonic_balance(4.0, 0.01)
    >>> int(out["period"]), round(float(out["error_amplitude"]), 6)
    (2, 0.025465)
    """
    lam = np.asarray(lam, dtype=np.float64)
    rate = np.asarray(rate, dtype=np.float64)
    # |u / (e^{i pi} - 1)| = u / 2;  (4 / (pi A)) * lam * u / 2 = 1
    amp = 2.0 * lam * rate / np.pi
    return {"period": np.full(np.broadcast(lam, rate).shape, 2), "error_amplitude": amp,
            "bias_amplitude": 2.0 * rate / np.pi * np.ones_like(lam)}


def _chain(dev: np.ndarray, sig3: np.ndarray) -> np.ndarray:
    """Stationary law of the per-expert chain on its lattice, given the
    deterministic load deviation ``dev`` (E, A, Y) at each lattice point."""
    arg = dev / sig3
    log_up = special.log_ndtr(-arg)  # P(step up) at y
    log_down = special.log_ndtr(arg)
    # detailed balance: pi[j+1] / pi[j] = up[j] / down[j+1]
    step = log_up[..., :-1] - log_down[..., 1:]
    logpi = np.concatenate([np.zeros(step.shape[:-1] + (1,)), np.cumsum(step, axis=-1)], axis=-1)
    logpi = np.where(np.isfinite(logpi), logpi, -np.inf)
    logpi = logpi - np.max(logpi, axis=-1, keepdims=True)
    pi = np.exp(logpi)
    return pi / np.sum(pi, axis=-1, keepdims=True)


def map_response(mu_E: Any, bias_star_E: Any, *, topk: int, nodes: int = 48, knots: int = 33,
                 **router: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Exact one-expert response ``d_i(y) = (N/K) p_i(b* + y e_i) - 1``.

    The others stay at ``b*``. Evaluated with
    :func:`~routesim.theory.expected_load.own_probability` on ``knots``
    offsets spanning the requested range and interpolated by a cubic spline
    (the map is smooth).

    Parameters
    ----------
    mu_E : array (E,)
        Popularity logits of the experts.
    bias_star_E : array (E,)
        The bias ``b*`` the response is taken around.
    topk : int
        ``K``.
    nodes : int
        Quadrature nodes of the expected-load map.
    knots : int
        Spline knots over the offsets asked for.
    **router
        Further router and noise settings of the load map.

    Returns
    -------
    callable
        ``y (E, Y) -> d (E, Y)``: each expert's response to its own offsets.

    Examples
    --------
    Two equal experts, K = 1, sigmoid scores in (0, 1): at balance the
    response is 0 (symmetry), and a bias step of 5 beats any score
    difference, so the expert takes every token (``d = 1``) or none
    (``d = -1``); the quadrature is good to about 1e-5.

    >>> import numpy as np
    >>> d = map_response(np.zeros(2), np.zeros(2), topk=1)
    >>> (np.round(d(np.array([[0.0, 5.0], [0.0, -5.0]])), 4) + 0.0).tolist()
    [[0.0, 1.0], [0.0, -1.0]]
    """
    from scipy.interpolate import CubicSpline

    from .expected_load import own_probability

    mu = np.asarray(mu_E, dtype=np.float64)
    bs = np.asarray(bias_star_E, dtype=np.float64)
    n = mu.shape[-1]

    def response(y_EX: np.ndarray) -> np.ndarray:
        y = np.asarray(y_EX, dtype=np.float64)
        grid = np.linspace(np.min(y), np.max(y), knots) if np.ptp(y) > 0 else np.array(
            [np.min(y) - 1e-6, np.min(y) + 1e-6])
        eye = np.eye(n)
        bias = bs + grid[None, :, None] * eye[:, None, :]  # (E, X, E)
        idx = np.broadcast_to(np.arange(n)[:, None], bias.shape[:2])
        p = own_probability(np.broadcast_to(mu, bias.shape), bias, idx, topk=topk,
                            nodes=nodes, others_bias_E=bs, **router)
        dev = (n / topk) * p - 1.0
        out = np.empty_like(y)
        for i in range(n):  # one spline per expert (set-up, not a hot path)
            out[i] = CubicSpline(grid, dev[i])(y[i])
        return out

    return response


def relay_stationary(lam_E: Any, sigma_E: Any, rate: float, *, offsets: int = 16,
                     response: Callable[[np.ndarray], np.ndarray] | None = None,
                     cross_EE: Any = None, noise_correction: bool = True) -> dict[str, float]:
    """Mean-field steady state of the sign loop with counting noise.

    Parameters
    ----------
    lam_E : array (E,)
        Self-gains ``A_ii`` (relative load deviation per unit of bias).
    sigma_E : array (E,)
        Standard deviation of each expert's relative counting noise (0 for
        the noise-free limit).
    rate : float > 0
    offsets : int
        Lattice offsets averaged over (uniform on ``[0, 1)``).
    response : callable (E, X) -> (E, X), optional
        Load deviation of expert ``i`` at bias offset ``y``; default the
        linear ``lam_i y``; :func:`map_response` gives the exact one.
    cross_EE : array (E, E), optional
        The loop matrix ``A``: its off-diagonal part carries the other
        experts' bias oscillations into expert ``i``'s load, an extra
        fluctuation of variance ``sum_k A_ik^2 Var(x_k)`` (solved
        self-consistently, three passes). Default: ignored.
    noise_correction : bool
        Scale the noise by ``sqrt(N / (N - 1))`` in the maximum (the loads
        sum to a constant: exact for exchangeable Gaussian noise).

    Returns
    -------
    dict
        ``bias_rms`` (time RMS of an expert's bias about its mean),
        ``error_rms`` (RMS relative load error, noise included),
        ``maxvio`` (expected MaxVio_batch), ``drift_rms`` (RMS of the
        bias-induced part alone).

    Examples
    --------
    >>> out = relay_stationary([4.0] * 16, [0.0] * 16, 0.01)
    >>> round(out["bias_rms"], 6), round(out["error_rms"], 4)  # u/2, lam u/sqrt(3)
    (0.005, 0.0231)
    """
    lam = np.asarray(lam_E, dtype=np.float64)
    sigma = np.asarray(sigma_E, dtype=np.float64) * np.ones_like(lam)
    n = lam.size
    if not (np.isfinite(rate) and rate > 0):
        raise ConfigError(f"rate = {rate!r}: must be finite and > 0")
    if np.any(~np.isfinite(lam)) or np.any(lam <= 0):
        raise ConfigError("lam_E: self-gains must be finite and > 0")
    if np.any(~np.isfinite(sigma)) or np.any(sigma < 0):
        raise ConfigError("sigma_E: must be finite and >= 0")
    a = (np.arange(offsets) + 0.5) / offsets
    # lattice wide enough for the stationary spread (random walk with restoring force)
    spread = np.sqrt(np.max(sigma) * rate * np.sqrt(2 * np.pi) / (4 * np.min(lam)) + rate ** 2)
    width = int(min(2000, np.ceil(10.0 * spread / rate) + 4))
    j = np.arange(-width, width + 1)
    y = np.broadcast_to(rate * (a[:, None] + j[None, :]), (n, offsets, j.size))  # (E, A, Y)
    if response is None:
        dev = lam[:, None, None] * y
    else:
        dev = np.asarray(response(y.reshape(n, -1)), dtype=np.float64).reshape(y.shape)
    # noise-free experts: a vanishing noise keeps the chain's algebra finite
    floor = 1e-9 * lam * rate
    cross2 = None
    if cross_EE is not None:
        cross2 = np.asarray(cross_EE, dtype=np.float64) ** 2
        cross2[np.diag_indices(n)] = 0.0
    talk = np.zeros(n)
    for _ in range(3 if cross2 is not None else 1):
        s_chain = np.sqrt(sigma ** 2 + talk)
        pi = _chain(dev, np.maximum(s_chain, floor)[:, None, None])
        mean_y = np.sum(pi * y, axis=-1, keepdims=True)
        var_y = np.sum(pi * (y - mean_y) ** 2, axis=-1)  # (E, A)
        if cross2 is not None:
            talk = cross2 @ np.mean(var_y, axis=-1)
    drift2 = np.sum(pi * dev ** 2, axis=-1)
    sigma = s_chain
    # E[max_i (dev_i - noise_i)], experts independent, offset-averaged CDFs
    s_eff = sigma * (np.sqrt(n / (n - 1)) if noise_correction else 1.0)
    live = pi > 1e-300
    v_lo = float(np.min(np.where(live, dev, np.inf)) - 9 * np.max(s_eff) - 1e-12)
    v_hi = float(np.max(np.where(live, dev, -np.inf)) + 9 * np.max(s_eff) + 1e-12)
    grid = np.linspace(v_lo, v_hi, 1601)
    sd = np.maximum(s_eff, floor)[:, None, None]
    cdf = np.zeros((n, grid.size))
    # lattice points below 1e-17 of their chain's mode add nothing to the CDFs
    used = np.nonzero(np.any(pi > 1e-17 * np.max(pi, axis=-1, keepdims=True), axis=(0, 1)))[0]
    span = slice(used[0], used[-1] + 1)
    for o in range(offsets):  # offsets one at a time keeps memory at (E, Y, G)
        z = (grid - dev[:, o, span, None]) / sd
        cdf += np.einsum("ey,eyg->eg", pi[:, o, span], normal_cdf(np, z)) / offsets
    tail = 1.0 - np.exp(np.sum(np.log(np.clip(cdf, 1e-300, 1.0)), axis=0))
    return {"bias_rms": float(np.sqrt(np.mean(var_y))),
            "error_rms": float(np.sqrt(np.mean(drift2) + np.mean(sigma ** 2))),
            "maxvio": float(v_lo + np.trapezoid(tail, grid)),
            "drift_rms": float(np.sqrt(np.mean(drift2)))}


def cycle_maxvio(cycle: dict[str, Any], noise_cov_EE: Any, *, samples: int = 4000,
                 seed: int = 0) -> tuple[float, float]:
    """Expected MaxVio_batch over a noise-free cycle plus counting noise.

    Each phase ``t`` of the cycle has loads ``-e_t`` (relative); the window's
    counting noise (covariance ``noise_cov_EE``, relative) is added and the
    maximum averaged over phases (Gaussian Monte Carlo; returns the estimate
    and its standard error).

    Parameters
    ----------
    cycle : dict
        A cycle of :func:`relay_cycle` (its ``error_SE``, one row per phase).
    noise_cov_EE : array (E, E)
        Covariance of a window's relative counting noise.
    samples : int
        Monte Carlo draws per phase.
    seed : int
        Seed of those draws.

    Returns
    -------
    mean, stderr : float
        Expected MaxVio_batch and its Monte Carlo standard error.

    Examples
    --------
    >>> import numpy as np
    >>> cyc = {"error_SE": np.array([[0.1, -0.1], [-0.1, 0.1]])}
    >>> m, se = cycle_maxvio(cyc, 1e-12 * np.eye(2))
    >>> round(m, 6)
    0.1
    """
    from .maxvio import expected_max_gaussian

    err = np.asarray(cycle["error_SE"], dtype=np.float64)
    m, se = expected_max_gaussian(-err, np.asarray(noise_cov_EE, dtype=np.float64),
                                  samples=samples, seed=seed)
    return float(np.mean(m)), float(np.sqrt(np.sum(se ** 2)) / se.size)
