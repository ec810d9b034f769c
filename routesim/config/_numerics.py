"""Load-time refusal of settings whose numbers cannot be computed in float.

These are the numerical faults that can be decided from the config alone
(:mod:`routesim.faults` catches the rest while the run goes):

- a bias step that ``run.bias_dtype`` cannot represent at the initial bias
  (``1.0 + 1e-8 == 1.0`` in float32), or a rate that overflows it;
- a ``tanh_scale`` below the smallest normal number of the bias dtype
  (``err / tanh_scale`` would give 0/0);
- a capacity ``(T * K / N) * C`` that overflows a float;
- popularity logits that can exceed float32: the bound used is
  ``max |mu| + 25 * noise_scale + drift``, where 25 bounds ``|noise|`` (24-bit
  uniforms cap logistic and Gumbel draws at 17.3, normals are cut at 5.77;
  sequence correlation adds at most a factor sqrt(2)) and ``drift`` is
  ``5.77 * drift_std * (steps - 1)`` for a random walk or
  ``drift_amplitude`` for a sinusoid.

Also memory sizes (``run.max_memory``) are parsed here.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from ..controllers.registry import get_law
from ..exceptions import ConfigError

__all__ = ["check_numerics", "parse_bytes", "format_bytes", "MAX_POINTS"]

#: Points a sweep may define: each is built and checked when the config is read.
MAX_POINTS = 100_000
#: Bound on |noise| of one logit draw (see the module docstring).
NOISE_BOUND = 25.0
#: Normal draws are cut at this many standard deviations (routesim.rng).
NORMAL_TAIL = 5.77
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "p": 10**15,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40, "pi": 2**50}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgtp]i?)?b?\s*$", re.I)


def parse_bytes(path: str, value: int | str) -> int:
    """Bytes given as an integer or a string such as ``"8GB"`` or ``"512 MiB"``.

    Examples
    --------
    >>> parse_bytes("run.max_memory", "8GB"), parse_bytes("run.max_memory", "1.5KiB")
    (8000000000, 1536)
    """
    if isinstance(value, int):
        size = value
    else:
        m = _SIZE.match(value)
        if m is None:
            raise ConfigError(f"{path} = {value!r}: must be bytes, as an integer or a string "
                              "such as '8GB' or '512MiB'")
        size = int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])
    if size <= 0:
        raise ConfigError(f"{path} = {value!r}: must be more than 0 bytes")
    return size


def format_bytes(size: float) -> str:
    """A size in bytes as a short string with a decimal unit.

    Examples
    --------
    >>> format_bytes(123), format_bytes(8.5e9), format_bytes(3e20)
    ('123 B', '8.5 GB', '3e+08 TB')
    """
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{int(size)} B"


def _check_bias_step(cfg: Any) -> None:
    c, r = cfg.controller, cfg.router
    if ("bias_update_rate" not in get_law(c.type).uses or c.bias_update_rate == 0
            or isinstance(c.bias_update_rate, str)):  # an expression: checked once resolved
        return
    dtype = np.dtype(cfg.run.bias_dtype)
    b0 = 1.0 if r.bias_mode == "multiplicative" else 0.0
    with np.errstate(over="ignore"):
        rate = dtype.type(c.bias_update_rate)
    if not np.isfinite(rate):
        raise ConfigError(f"controller.bias_update_rate = {c.bias_update_rate!r}: overflows "
                          f"run.bias_dtype = {dtype.name!r} (largest "
                          f"{float(np.finfo(dtype).max):.3g})")
    if dtype.type(b0) + rate == dtype.type(b0):
        least = float(np.spacing(dtype.type(b0))) / 2
        raise ConfigError(f"controller.bias_update_rate = {c.bias_update_rate!r}: a step this "
                          f"small does not change a {r.bias_mode} bias of {b0} in "
                          f"{dtype.name} (run.bias_dtype); use a rate above {least:.3g} or "
                          "run.bias_dtype = 'float64'")
    if c.type == "momentum_tanh":
        tiny = float(np.finfo(dtype).tiny)
        if c.tanh_scale < tiny:
            raise ConfigError(f"controller.tanh_scale = {c.tanh_scale!r}: below the smallest "
                              f"normal {dtype.name} ({tiny:.3g}, run.bias_dtype), where "
                              "error / tanh_scale gives 0/0")


def _check_capacity(cfg: Any) -> None:
    r, b = cfg.router, cfg.batch
    if r.dropless:
        return
    tokens_mb = b.sequences_per_micro_batch * b.seq_length
    if not math.isfinite((tokens_mb * r.topk / r.num_experts) * r.capacity_factor):
        raise ConfigError(f"router.capacity_factor = {r.capacity_factor!r}: the capacity "
                          f"(T * K / N) * C overflows a float; omit it (or use inf) for "
                          "dropless routing")


def _logit_bound(cfg: Any) -> tuple[float, str]:
    """Largest possible |logit| of popularity or feature traffic and the field to blame."""
    t, n = cfg.traffic, cfg.router.num_experts
    if t.kind == "frozen" and t.frozen_source == "separation":
        return NORMAL_TAIL * t.separation, "traffic.separation"
    if t.kind == "features":
        d = t.feature_dim
        x = NORMAL_TAIL * (1.0 + t.topic_spread) / math.sqrt(d)
        return d * x * NORMAL_TAIL * t.router_init_scale, "traffic.topic_spread"
    mu = {"uniform": 0.0, "linear": t.linear_spread,
          "zipf": t.zipf_exponent * math.log(n)}.get(t.skew, 0.0)
    drift, name = 0.0, "traffic.noise_scale"
    if t.drift == "random_walk":
        drift = NORMAL_TAIL * t.drift_std * max(cfg.run.steps - 1, 0)
        name = "traffic.drift_std" if drift > NOISE_BOUND * t.noise_scale else name
    elif t.drift == "sinusoid":
        drift = t.drift_amplitude
        name = "traffic.drift_amplitude" if drift > NOISE_BOUND * t.noise_scale else name
    return mu + NOISE_BOUND * t.noise_scale + drift, name


def check_numerics(cfg: Any) -> None:
    """Refuse a point config whose numbers cannot be computed (see the module docstring).

    Parameters
    ----------
    cfg : Config
        One point (sweep applied).

    Raises
    ------
    ConfigError
        Naming the field to blame, its value and the bound it breaks.

    Examples
    --------
    Normal noise of scale 1e38 can give logits up to ``25 * 1e38``, past
    float32's 3.4e38, so such a config is refused when it is built:

    >>> from routesim import Config
    >>> check_numerics(Config())  # the defaults compute
    >>> Config().replace(**{"traffic.noise_scale": 1e38})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    routesim.exceptions.ConfigError: traffic.noise_scale = 1e+38: logits could reach 2.5e+39, ...
    """
    _check_bias_step(cfg)
    _check_capacity(cfg)
    if cfg.traffic.kind in ("popularity", "features") or (
            cfg.traffic.kind == "frozen" and cfg.traffic.frozen_source != "trace"):
        bound, name = _logit_bound(cfg)
        if not bound < _FLOAT32_MAX:
            value = getattr(cfg.traffic, name.split(".")[1])
            raise ConfigError(f"{name} = {value!r}: logits could reach {bound:.3g}, beyond "
                              f"float32 ({_FLOAT32_MAX:.3g}); the largest |logit| is bounded "
                              "by max|mu| + 25 * noise_scale + drift")
