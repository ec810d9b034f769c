"""Configuration: defaults, TOML, sweeps, and the corpus of bad inputs."""

import json
import math
import re
from pathlib import Path

import pytest

from routesim import Config, ConfigError, config_from_dict, load_config
from routesim.config import SWEEPABLE

BAD = sorted((Path(__file__).parent / "bad_configs").glob("*.toml"))
EXAMPLES = sorted((Path(__file__).parent.parent / "examples").glob("*.toml"))


def _expected_field(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# field: ")
    return first[len("# field: "):]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_config_is_refused_naming_the_field(path):
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _expected_field(path) in str(err.value)


def test_bad_corpus_is_not_empty():
    assert len(BAD) >= 25


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_load(path):
    cfg = load_config(path)
    assert cfg.num_points == len(cfg.points())


def test_message_names_value_and_allowed():
    with pytest.raises(ConfigError, match=re.escape("router.topk = 9")) as err:
        config_from_dict({"router": {"num_experts": 8, "topk": 9}})
    assert "[1, 8)" in str(err.value)


def test_unknown_key_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'topk'"):
        config_from_dict({"router": {"TOPK": 2}})


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config("/nonexistent/x.toml")


def test_grid_and_zip_points():
    grid = config_from_dict({"sweep": {"controller.bias_update_rate": [1e-3, 1e-2],
                                       "controller.type": ["sign", "proportional", "ema"]}})
    assert grid.num_points == 6
    rates = [p.controller.bias_update_rate for p in grid.points()]
    assert rates == [1e-3] * 3 + [1e-2] * 3
    zipped = config_from_dict({"sweep": {"mode": "zip",
                                         "controller.bias_update_rate": [1e-3, 1e-2],
                                         "controller.type": ["sign", "ema"]}})
    assert [(p.controller.type, p.controller.bias_update_rate) for p in zipped.points()] == [
        ("sign", 1e-3), ("ema", 1e-2)]


def test_points_carry_no_sweep_and_static_fields_shared():
    cfg = config_from_dict({"router": {"num_experts": 16, "topk": 2},
                            "sweep": {"traffic.noise_scale": [0.5, 1.0]}})
    for p in cfg.points():
        assert p.router.num_experts == 16 and not p.sweep.parameters
    assert all(not k.startswith(("router.", "batch.", "run.")) for k in SWEEPABLE)


def test_infinite_capacity_reads_as_dropless():
    cfg = config_from_dict({"router": {"capacity_factor": "inf"}})
    assert math.isinf(cfg.router.capacity_factor) and cfg.router.dropless


def test_frozen():
    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.router.topk = 3  # type: ignore[misc]


def test_to_dict_round_trip():
    cfg = config_from_dict({"router": {"num_experts": 16, "topk": 2, "capacity_factor": 1.5},
                            "sweep": {"controller.bias_update_rate": [1e-3, 1e-2]}})
    again = config_from_dict(cfg.to_dict())
    assert again == cfg


def test_replace_rejects_unknown():
    with pytest.raises(ConfigError, match="router.topkk"):
        Config().replace(**{"router.topkk": 3})
    assert Config().replace(**{"run.seed": 5}).run.seed == 5


def test_sweep_axis_order_is_point_order_and_survives_json():
    rate_first = {"controller.bias_update_rate": [1e-3, 1e-2],
                  "controller.type": ["sign", "ema"]}
    type_first = dict(reversed(list(rate_first.items())))
    a = config_from_dict({"sweep": type_first})
    b = config_from_dict({"sweep": rate_first})
    # Same axes, other order: other points, so not equal.
    assert [p.controller.type for p in a.points()] == ["sign", "sign", "ema", "ema"]
    assert [p.controller.type for p in b.points()] == ["sign", "ema", "sign", "ema"]
    assert a != b and a.sweep != b.sweep
    again = config_from_dict(json.loads(a.to_json()))
    assert again == a
    assert again.points() == a.points() and again.point_labels() == a.point_labels()
