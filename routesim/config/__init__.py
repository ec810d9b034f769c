"""Configuration: frozen dataclasses, validated in one place, read from TOML.

A :class:`Config` has one section per component (``run``, ``batch``,
``traffic``, ``router``, ``controller``, ``penalty``, ``model``, ``placement``,
``sweep``). Option names
follow Megatron-LM's where one exists (``topk``, ``score_function``,
``bias_update_rate``, ``capacity_factor``, ``token_drop_policy``,
``num_groups``, ``group_topk``, ``topk_scaling_factor``).

Every invalid value raises :class:`routesim.ConfigError` when the dataclass is
built, before any work starts. The message names the field path
(``router.topk``), the value and what is allowed. Unknown keys in a TOML file
or a dict are refused: a typo is never silently ignored.

A sweep turns one config into several *points*: ``[sweep]`` maps dotted field
names to lists of values, combined as a grid (cartesian product) or zipped.
Only fields that the engine can vary along its ``point`` axis may be swept
(:data:`SWEEPABLE`); the shape-defining ones (experts, top-k, batch) are the
same for every point.

Modules: ``sections`` (run, batch, traffic), ``router``, ``controller``,
``penalty``, ``model`` (layers, placement), ``sweep`` (the points of a sweep,
:data:`SWEEPABLE`), ``core``
(the whole config, TOML reading) and ``_checks`` (the shared field checks).
"""

from .controller import ControllerConfig
from .core import _SECTIONS, Config, config_from_dict, load_config  # noqa: F401
from .model import ModelConfig, PlacementConfig
from .penalty import PenaltyConfig
from .router import RouterConfig
from .sections import BatchConfig, RunConfig, TrafficConfig
from .sweep import SWEEPABLE, SweepConfig

__all__ = [
    "RunConfig",
    "BatchConfig",
    "TrafficConfig",
    "RouterConfig",
    "ControllerConfig",
    "PenaltyConfig",
    "ModelConfig",
    "PlacementConfig",
    "SweepConfig",
    "Config",
    "SWEEPABLE",
    "load_config",
    "config_from_dict",
]
