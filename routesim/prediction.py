"""``routesim.predict(config)``: the theory's predictions for every point, as a Dataset.

The Dataset has the ``point`` axis of :func:`routesim.simulate`'s (same
``point`` index, ``label`` and swept-setting coordinates), so a prediction
and a simulation of one config line up point by point. The numbers come from
:func:`routesim.theory.predict_points` (pure NumPy, in ``routesim.theory``);
this module only builds the Dataset.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from ._version import __version__
from .config import Config
from .results import sweep_coords
from .theory.from_config import predict_points

__all__ = ["predict", "TheoryWarning"]


class TheoryWarning(UserWarning):
    """A config holds settings that the theory does not model.

    Examples
    --------
    >>> import warnings
    >>> from routesim import config_from_dict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2,
    ...                                    "capacity_factor": 1.25}})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = predict(cfg, samples=200)
    >>> caught[0].category.__name__, "router.capacity_factor" in str(caught[0].message)
    ('TheoryWarning', True)
    """


_ATTRS = {
    "load_map": "probability that a token selects each expert at the initial bias (rows sum "
                "to topk)",
    "equilibrium_bias": "bias b* at which every expert receives K/N of the selections",
    "rate": "the point's bias_update_rate (resolved)",
    "critical_rate": "u_c: rate at which the linearised loop loses stability",
    "rate_over_critical": "rate / u_c",
    "loop_gain_max": "lambda_max: largest eigenvalue of (N/K) dp/db at b*",
    "settling_steps": "steps until max|b - b*| stays within 10 % of its initial value "
                      "(noise-free loop on the exact map)",
    "settling_steps_linear": "the same from the spectral radius of the linear loop",
    "maxvio_zero_bias": "expected MaxVio_batch at the initial bias (no control)",
    "maxvio_steady": "expected steady MaxVio_batch",
    "relay_ratio": "sign laws: lambda u / sigma, the relay step against counting noise",
    "sign_cycle_period": "sign laws: period of the noise-free cycle from the initial bias",
    "sign_bias_amplitude": "sign laws: RMS of the bias about its mean (stochastic chain)",
    "sign_load_amplitude": "sign laws: RMS relative load error (stochastic chain)",
    "note": "why a prediction is missing or outside its tested domain",
}


def predict(config: Config, *, progress: bool | None = None, samples: int = 20000,
            seed: int = 0, warn: bool = True, settling: str = "loop") -> xr.Dataset:
    """What the theory predicts for every point of ``config``.

    Parameters
    ----------
    config : Config
        Popularity traffic with token-choice routing. Rates written in
        units of the critical rate (``"0.5 u_c"``) are resolved first.
    progress : bool or None
        Progress bar on stderr; None shows it on a terminal for 64 experts
        or more.
    samples, seed : int
        Monte Carlo draws of each expected maximum, and their seed.
    warn : bool
        Issue a :class:`TheoryWarning` naming the settings that the theory
        does not model (they are listed in ``attrs["not_modelled"]`` either
        way).
    settling : {"loop", "linear"}
        How ``settling_steps`` is computed: the noise-free loop on the exact
        map, or the spectral radius alone (faster for hundreds of experts;
        see :func:`routesim.theory.predict_points`).

    Returns
    -------
    xarray.Dataset
        Over ``point`` (and ``expert``): ``load_map``, ``equilibrium_bias``
        (point, expert); ``rate``, ``critical_rate``, ``rate_over_critical``,
        ``loop_gain_max``, ``settling_steps``, ``settling_steps_linear``,
        ``maxvio_zero_bias``, ``maxvio_steady`` (with ``_stderr``),
        ``relay_ratio``, ``sign_cycle_period``, ``sign_bias_amplitude``,
        ``sign_load_amplitude`` and ``note`` (point). NaN where a quantity
        does not apply (a critical rate for the sign law, a cycle for a
        linear law) or is not predicted (``note`` says why). Attributes: the
        resolved config (JSON), ``not_modelled`` (one line per setting the
        theory leaves out, "" if none), the package version.

    Raises
    ------
    ConfigError
        For traffic other than popularity, or Expert Choice.

    Examples
    --------
    >>> from routesim import config_from_dict, predict
    >>> cfg = config_from_dict({"router": {"num_experts": 8, "topk": 2},
    ...     "batch": {"num_sequences": 8, "seq_length": 256},
    ...     "traffic": {"skew": "zipf"}, "controller": {"type": "proportional"},
    ...     "sweep": {"controller.bias_update_rate": ["0.5 u_c", "2 u_c"]}})
    >>> ds = predict(cfg, samples=2000)
    >>> ds["label"].values.tolist()
    ['bias_update_rate=0.5 u_c', 'bias_update_rate=2 u_c']
    >>> ds["maxvio_steady"].notnull().values.tolist(), str(ds["note"].values[1])
    ([True, False], 'at or above the critical rate: no stationary state')
    """
    out = predict_points(config, progress=progress, samples=samples, seed=seed,
                         settling=settling)
    resolved = out["config"]
    point, pe = ("point",), ("point", "expert")
    data = {name: (point, out[name]) for name in (
        "rate", "critical_rate", "rate_over_critical", "loop_gain_max", "settling_steps",
        "settling_steps_linear", "maxvio_zero_bias", "maxvio_zero_bias_stderr",
        "maxvio_steady", "maxvio_steady_stderr", "relay_ratio", "sign_cycle_period",
        "sign_bias_amplitude", "sign_load_amplitude")}
    data["load_map"] = (pe, out["load_map_PE"])
    data["equilibrium_bias"] = (pe, out["equilibrium_bias_PE"])
    data["note"] = (point, np.asarray(out["note_P"], dtype=str))
    indices = list(range(resolved.num_points))
    coords = {"point": np.asarray(indices),
              "expert": np.arange(resolved.router.num_experts)}
    coords.update(sweep_coords(resolved, indices))
    lines = list(dict.fromkeys(x for row in out["not_modelled_P"] for x in row))
    ds = xr.Dataset(data, coords=coords, attrs={
        "title": "routesim theory prediction",
        "routesim_version": __version__,
        "config": resolved.to_json(),
        "not_modelled": "\n".join(lines),
        "tokens_per_step": int(resolved.batch.tokens_per_step),
        "num_experts": int(resolved.router.num_experts),
        "topk": int(resolved.router.topk),
    })
    for name, text in _ATTRS.items():
        ds[name].attrs["description"] = text
    if warn and lines:
        warnings.warn("routesim.predict: not modelled: " + "; ".join(lines), TheoryWarning,
                      stacklevel=2)
    return ds
