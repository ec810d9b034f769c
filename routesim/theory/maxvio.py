"""Expected MaxVio of the loads of a batch, a computation batch or a long window.

Over ``T`` tokens routed with selection probabilities ``p`` (each token picks
exactly ``K`` distinct experts), the loads ``c`` have mean ``T p`` and
covariance ``T deff Sigma``, with ``Sigma`` the covariance of one token's
selection indicators (:func:`~routesim.theory.expected_load.selection_covariance`,
rows summing to zero) and ``deff`` the design effect of within-sequence
correlation. The mean load is exactly ``T K / N`` (dropless routing), so

    MaxVio = max_i (N / (T K)) c_i - 1 = max_i Y_i,
    Y ~ N(N p / K - 1, (N / K)^2 deff Sigma / T)     (central limit).

:func:`expected_maxvio` integrates that maximum (Gaussian Monte Carlo with
the full covariance and a reported standard error, or one-dimensional
quadrature for independent coordinates, corrected for the zero-sum
constraint, which is exact for exchangeable experts). With balanced
expected loads it decays as ``1/sqrt(T)``; a persistent imbalance leaves the
plateau ``max_i N p_i / K - 1`` (Loss-Free's Fig. 5: MaxVio over growing
computation batches keeps falling under Loss-Free, levels off under an
auxiliary loss that leaves an imbalance).

Domain of validity: every expected count ``T p_i`` well above 1 (Gaussian
counts; for small counts the maximum is Poisson-like and the prediction
errs high or low by a few percent), dropless routing.

Design effect: the tokens of a sequence share a logit component with weight
``sqrt(rho)`` (``traffic.seq_correlation``); given that component the tokens
are independent, so a sequence of ``L`` tokens has load covariance
``L Sigma + L (L - 1) C`` with ``C = Cov_a(p(a))``, the covariance of the
conditional selection probabilities over the shared component ``a``.
:func:`design_effect` estimates ``C`` by averaging the exact load map over
draws of ``a``.

Shape legend: P points (any leading axes), E experts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

from ..exceptions import ConfigError

__all__ = [
    "load_error_covariance",
    "expected_maxvio",
    "expected_max_gaussian",
    "sequence_covariance",
    "design_effect",
]


def _check_p(p: Any, topk: int | None = None, name: str = "p_PE") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim < 1 or p.shape[-1] < 2:
        raise ConfigError(f"{name}: shape {p.shape}: needs an expert axis of length >= 2")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or np.any(p > 1):
        raise ConfigError(f"{name}: probabilities must lie in [0, 1]")
    if topk is not None:
        n = p.shape[-1]
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or not 1 <= topk < n:
            raise ConfigError(f"topk = {topk!r}: must be an integer in [1, N) = [1, {n})")
    return p


def _positive(value: Any, name: str) -> np.ndarray:
    v = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ConfigError(f"{name} = {value!r}: must be finite and > 0")
    return v


def load_error_covariance(cov_PEE: Any, *, tokens: Any, topk: int, deff: Any = 1.0) -> np.ndarray:
    """Covariance of the relative load error ``(c - mean c) / mean c`` over ``tokens``.

    ``(N / K)^2 deff Sigma / T``; ``deff`` may be a scalar, per point, or per
    expert (scaling rows and columns by ``sqrt(deff)``).

    Parameters
    ----------
    cov_PEE : array (..., E, E)
        Per-token selection covariance ``Sigma``.
    tokens : int or array
        ``T``, tokens per window (per point when an array).
    topk : int
        ``K``.
    deff : float or array
        Design effect: a scalar, per point ``(...)`` or per expert ``(..., E)``.

    Returns
    -------
    ndarray (..., E, E)

    Examples
    --------
    >>> import numpy as np
    >>> s = 0.25 * (4 * np.eye(4) - 1) / 3
    >>> np.allclose(load_error_covariance(s, tokens=100, topk=2), 4 * s / 100)
    True
    """
    cov = np.asarray(cov_PEE, dtype=np.float64)
    n = cov.shape[-1]
    t = _positive(tokens, "tokens")
    d = np.sqrt(_positive(deff, "deff"))
    if d.ndim >= 1 and d.shape[-1] == n and d.ndim == cov.ndim - 1:
        cov = cov * d[..., :, None] * d[..., None, :]
    else:
        cov = cov * np.asarray(d * d)[..., None, None]
    return cov * (n / topk) ** 2 / np.asarray(t)[..., None, None]


def expected_max_gaussian(mean_PE: Any, cov_PEE: Any, *, method: str = "mc",
                          samples: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``E[max_i Y_i]`` for ``Y ~ N(mean, cov)``, with a standard error.

    Parameters
    ----------
    mean_PE : array (..., E)
    cov_PEE : array (..., E, E), symmetric positive semi-definite
    method : {"mc", "quad"}
        ``mc``: Gaussian Monte Carlo with the full covariance (antithetic
        pairs; standard error from the sample). ``quad``: one-dimensional
        integral of ``1 - prod_i Phi`` treating the coordinates as
        independent with variances ``diag(cov) * N / (N - 1)``: exact for
        exchangeable coordinates with correlation ``-1/(N-1)`` (a zero-sum
        vector), an approximation otherwise; standard error 0.
    samples, seed : int
        Monte Carlo draws per leading index and the seed of
        ``numpy.random.default_rng``.

    Returns
    -------
    mean_P, stderr_P : ndarray (...)

    Examples
    --------
    >>> import numpy as np
    >>> n = 8
    >>> cov = (np.eye(n) - 1.0 / n)  # zero-sum, exchangeable
    >>> q, _ = expected_max_gaussian(np.zeros(n), cov, method="quad")
    >>> m, se = expected_max_gaussian(np.zeros(n), cov, samples=40000)
    >>> bool(abs(q - m) < 4 * se)
    True
    """
    mean = np.asarray(mean_PE, dtype=np.float64)
    cov = np.asarray(cov_PEE, dtype=np.float64)
    n = mean.shape[-1]
    lead = np.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
    mean = np.broadcast_to(mean, lead + (n,)).reshape(-1, n)
    cov = np.broadcast_to(cov, lead + (n, n)).reshape(-1, n, n)
    if method == "quad":
        sd = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0.0, None) * n / (n - 1))
        return _max_independent(mean, sd).reshape(lead), np.zeros(lead)
    if method != "mc":
        raise ConfigError(f"method = {method!r}: must be 'mc' or 'quad'")
    lam, vec = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    root = vec * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]
    rng = np.random.default_rng(seed)
    half = max(1, samples // 2)
    z = rng.standard_normal((mean.shape[0], half, n))
    dev = z @ np.swapaxes(root, -1, -2)
    m1 = np.max(mean[:, None, :] + dev, axis=-1)
    m2 = np.max(mean[:, None, :] - dev, axis=-1)
    pair = 0.5 * (m1 + m2)
    est = pair.mean(axis=-1)
    se = pair.std(axis=-1, ddof=1) / np.sqrt(half) if half > 1 else np.full(est.shape, np.inf)
    return est.reshape(lead), se.reshape(lead)


def _max_independent(mu_PE: np.ndarray, sd_PE: np.ndarray, panels: int = 96) -> np.ndarray:
    """``E[max]`` of independent normals: ``lo + int_lo^hi (1 - F(y)) dy`` per row.

    Composite Gauss-Legendre on ``[max(mu - 9 sd), max(mu + 9 sd)]``
    (``F(lo)`` and ``1 - F(hi)`` are below 1e-18); vectorised over rows.
    """
    lo = np.max(mu_PE - 9.0 * sd_PE, axis=-1)
    hi = np.max(mu_PE + 9.0 * sd_PE, axis=-1)
    xg, wg = np.polynomial.legendre.leggauss(8)
    frac = np.linspace(0.0, 1.0, panels + 1)
    half = 0.5 * (frac[1:] - frac[:-1])
    r = ((frac[:-1] + half)[:, None] + half[:, None] * xg).ravel()
    wr = (half[:, None] * wg).ravel()
    span = hi - lo
    y = lo[:, None] + span[:, None] * r  # (P, Q)
    safe = np.where(sd_PE > 0, sd_PE, 1.0)[:, None, :]
    z = np.where(sd_PE[:, None, :] > 0, (y[..., None] - mu_PE[:, None, :]) / safe,
                 np.where(y[..., None] >= mu_PE[:, None, :], np.inf, -np.inf))
    cdf = np.exp(np.sum(special.log_ndtr(z), axis=-1))
    return lo + span * np.sum(wr * (1.0 - cdf), axis=-1)


def expected_maxvio(p_PE: Any, cov_PEE: Any, *, tokens: Any, topk: int, deff: Any = 1.0,
                    method: str = "mc", samples: int = 20000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Expected MaxVio of the loads of ``tokens`` tokens, with its standard error.

    Parameters
    ----------
    p_PE : array (..., E)
        Selection probabilities (sum ``K``), e.g. from
        :func:`~routesim.theory.expected_load.load_map`.
    cov_PEE : array (..., E, E)
        Per-token selection covariance (rows summing to zero).
    tokens : float > 0 or array
        Tokens counted: a batch, a computation batch of any size, or a long
        window (steps times tokens per step).
    topk : int
    deff : float >= 1 or array (..., E)
        Design effect of within-sequence correlation (:func:`design_effect`).
    method, samples, seed
        See :func:`expected_max_gaussian`.

    Returns
    -------
    maxvio_P, stderr_P : ndarray (...)

    Examples
    --------
    >>> import numpy as np
    >>> n, k = 16, 2
    >>> p = np.full(n, k / n)
    >>> s = (k / n) * (1 - k / n) * (n * np.eye(n) - 1) / (n - 1)
    >>> a, _ = expected_maxvio(p, s, tokens=4096, topk=k, method="quad")
    >>> b, _ = expected_maxvio(p, s, tokens=4 * 4096, topk=k, method="quad")
    >>> round(float(a / b), 6)  # balanced: 1/sqrt(tokens)
    2.0
    """
    p = _check_p(p_PE, topk)
    n = p.shape[-1]
    err = load_error_covariance(cov_PEE, tokens=tokens, topk=topk, deff=deff)
    mean = p * (n / topk) - 1.0
    return expected_max_gaussian(mean, err, method=method, samples=samples, seed=seed)


def sequence_covariance(mu_PE: Any, bias_PE: Any = None, *, topk: int, seq_correlation: float,
                        noise_scale: float = 1.0, draws: int = 256, seed: int = 0,
                        **router: Any) -> np.ndarray:
    """``C = Cov_a(p(a))``: covariance of two tokens of one sequence.

    The shared component ``a`` (normal noise only) shifts the logits by
    ``noise_scale sqrt(rho) a``; given ``a`` the tokens are independent with
    noise scale ``noise_scale sqrt(1 - rho)``. ``draws`` antithetic draws of
    ``a`` through the exact load map (Monte Carlo error about
    ``1/sqrt(draws)`` of ``C``).

    Parameters
    ----------
    mu_PE : array (..., E)
        Popularity logits.
    bias_PE : array (..., E), optional
        Expert biases (zero when omitted).
    topk : int
        ``K``.
    seq_correlation : float in [0, 1]
        ``rho``, the share of the logit noise variance shared by a sequence.
    noise_scale : float
        Standard deviation of the logit noise.
    draws : int
        Antithetic draws of the shared component.
    seed : int
        Seed of those draws.
    **router
        Further router settings of the load map.

    Returns
    -------
    cov_PEE : ndarray (..., E, E)

    Examples
    --------
    >>> import numpy as np
    >>> c = sequence_covariance(np.zeros(4), topk=1, seq_correlation=0.3, draws=64)
    >>> bool(np.all(np.diag(c) > 0)), bool(abs(c.sum()) < 1e-6)
    (True, True)
    """
    from .expected_load import load_map

    rho = float(seq_correlation)
    if not 0.0 <= rho < 1.0:
        raise ConfigError(f"seq_correlation = {seq_correlation!r}: must be in [0, 1)")
    if router.get("noise", "normal") != "normal":
        raise ConfigError("noise: the design effect is implemented for normal noise only")
    mu = np.asarray(mu_PE, dtype=np.float64)
    n = mu.shape[-1]
    if rho == 0.0:
        return np.zeros(mu.shape + (n,))
    rng = np.random.default_rng(seed)
    half = max(1, draws // 2)
    a = rng.standard_normal((half, n))
    a = np.concatenate([a, -a])
    shifted = mu[..., None, :] + noise_scale * np.sqrt(rho) * a
    bias = None if bias_PE is None else np.asarray(bias_PE, dtype=np.float64)[..., None, :]
    p = load_map(shifted, bias, topk=topk, noise_scale=noise_scale * np.sqrt(1.0 - rho),
                 **router)
    dev = p - p.mean(axis=-2, keepdims=True)
    return np.einsum("...de,...df->...ef", dev, dev) / (p.shape[-2] - 1)


def design_effect(cov_PEE: Any, seq_cov_PEE: Any, seq_length: int) -> np.ndarray:
    """Per-expert design effect ``1 + (L - 1) C_ii / Sigma_ii`` (>= 1).

    Multiplies the counting variance of expert ``i``'s load when the tokens
    come in sequences of ``L`` that share a logit component. (The full
    per-token covariance of a sequence is ``Sigma + (L - 1) C``; pass it to
    :func:`expected_maxvio` to keep the cross terms.)

    Parameters
    ----------
    cov_PEE : array (..., E, E)
        Per-token selection covariance ``Sigma``.
    seq_cov_PEE : array (..., E, E)
        Covariance ``C`` of two tokens of one sequence
        (:func:`sequence_covariance`).
    seq_length : int
        ``L``, tokens per sequence.

    Returns
    -------
    ndarray (..., E)

    Examples
    --------
    >>> import numpy as np
    >>> design_effect(np.eye(2) * 0.25, np.eye(2) * 0.01, 11)
    array([1.4, 1.4])
    """
    cov = np.asarray(cov_PEE, dtype=np.float64)
    seq = np.asarray(seq_cov_PEE, dtype=np.float64)
    if isinstance(seq_length, bool) or not isinstance(seq_length, (int, np.integer)) or \
            seq_length < 1:
        raise ConfigError(f"seq_length = {seq_length!r}: must be an integer >= 1")
    var = np.diagonal(cov, axis1=-2, axis2=-1)
    extra = np.diagonal(seq, axis1=-2, axis2=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 + (seq_length - 1) * np.where(var > 0, extra / var, 0.0)
