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
def test_bad_config_is_refused_naming_the_field(path, monkeypatch):
    monkeypatch.chdir(path.parent)  # trace paths in the corpus are relative to it
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert _expected_field(path) in str(err.value)


def test_bad_corpus_is_not_empty():
    assert len(BAD) >= 80


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


# -- settings that would have no effect --------------------------------------
FEATURES = {"traffic": {"kind": "features"}}


@pytest.mark.parametrize("data,field", [
    ({"controller": {"type": "sign", "momentum": 0.5}}, "controller.momentum"),
    ({"controller": {"type": "ema", "tanh_scale": 0.5}}, "controller.tanh_scale"),
    ({"controller": {"type": "none", "bias_update_rate": 0.01}}, "controller.bias_update_rate"),
    ({"traffic": {"drift_std": 0.1}}, "traffic.drift_std"),
    ({"traffic": {"num_topics": 3}}, "traffic.num_topics"),
    ({"traffic": {"kind": "features", "skew": "linear"}}, "traffic.skew"),
    ({"router": {"expert_choice_block": 64}}, "router.expert_choice_block"),
    ({"router": {"token_drop_policy": "position"}}, "router.token_drop_policy"),
    ({**FEATURES, "penalty": {"learn": True, "alpha": 0.1}}, "penalty.alpha"),
    ({**FEATURES, "penalty": {"learning_rate": 0.1}}, "penalty.learning_rate"),
    ({"run": {"engine": "meanfield", "kernel": "generic"}}, "run.kernel"),
])
def test_ignored_setting_is_refused_from_python(data, field):
    with pytest.raises(ConfigError, match=re.escape(field) + ".*has no effect"):
        config_from_dict(data)


def test_defaults_are_never_ignored_settings():
    """Every section at its defaults, under every mode switch, is accepted."""
    modes = [{"controller": {"type": t}} for t in ("none", "sign", "ema", "momentum_tanh",
                                                   "quantile", "rms")]
    modes += [{"traffic": {"kind": "features"}}, {"traffic": {"skew": "zipf"}},
              {"traffic": {"drift": "regime", "regime_steps": [3]}},
              {"run": {"engine": "meanfield"}}, {"router": {"capacity_factor": 1.0}},
              {**FEATURES, "penalty": {"learn": True}}]
    for data in modes:
        config_from_dict(data)


def test_a_field_used_by_one_point_of_the_sweep_is_accepted():
    cfg = config_from_dict({"controller": {"momentum": 0.5},
                            "sweep": {"controller.type": ["sign", "ema"]}})
    assert [p.controller.momentum for p in cfg.points()] == [0.5, 0.5]
    with pytest.raises(ConfigError, match="controller.momentum = 0.5: has no effect at any "
                                          "point of the sweep"):
        config_from_dict({"controller": {"momentum": 0.5},
                          "sweep": {"controller.type": ["sign", "proportional"]}})


def test_a_swept_field_counts_as_set_even_at_its_default():
    with pytest.raises(ConfigError, match=re.escape("controller.momentum = [0.9]")):
        config_from_dict({"sweep": {"controller.momentum": [0.9]}})


def test_written_default_is_refused_in_a_file_but_a_stored_config_round_trips(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[controller]\ntype = 'sign'\nmomentum = 0.9\n")
    with pytest.raises(ConfigError, match="controller.momentum = 0.9: has no effect"):
        load_config(path)
    # to_dict lists every field; read back it must give the same config.
    cfg = config_from_dict({"controller": {"type": "ema", "momentum": 0.5},
                            "traffic": {"drift": "random_walk", "drift_std": 0.01}})
    assert config_from_dict(cfg.to_dict()) == cfg


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "c.toml"
    for text in ("", "# only a comment\n", "\n\n"):
        path.write_text(text)
        with pytest.raises(ConfigError, match="is empty"):
            load_config(path)


def test_kernel_that_cannot_run_is_refused_at_load():
    with pytest.raises(ConfigError, match="run.kernel = 'numba': cannot run "
                                          "router.capacity_factor"):
        config_from_dict({"run": {"kernel": "numba"}, "router": {"capacity_factor": 1.0}})
    with pytest.raises(ConfigError, match="run.kernel = 'numba': needs run.backend = 'numpy'"):
        config_from_dict({"run": {"kernel": "numba", "backend": "array_api_strict"}})


# -- controller registry ------------------------------------------------------
def test_controller_type_and_params_are_checked_against_the_registry():
    with pytest.raises(ConfigError, match=re.escape("controller.type = 3: must be a string")):
        config_from_dict({"controller": {"type": 3}})
    with pytest.raises(ConfigError, match="sweep.controller.params.2x.*controller.params.NAME"):
        config_from_dict({"sweep": {"controller.params.2x": [1.0]}})
    with pytest.raises(ConfigError, match=re.escape(
            "controller.params.gain = 1.0: has no effect, controller.type = 'sign' does not use "
            "it and no registered law does (its parameters: none)")):
        config_from_dict({"controller": {"params": {"gain": 1.0}}})
    with pytest.raises(ConfigError, match=re.escape("controller.params = 3: must be a table")):
        config_from_dict({"controller": {"params": 3}})


def test_relative_trace_path_is_read_against_the_config_file_folder(tmp_path, monkeypatch):
    """A relative traffic.trace in a TOML file names a file beside the config, from any cwd."""
    import numpy as np

    folder = tmp_path / "study"
    (folder / "traces").mkdir(parents=True)
    logits = np.zeros((2, 8, 4), dtype=np.float32)  # (steps, tokens, experts)
    np.savez(folder / "traces" / "t.npz", logits=logits)
    (folder / "c.toml").write_text(
        "[batch]\nnum_sequences = 1\nseq_length = 8\n"
        "[router]\nnum_experts = 4\ntopk = 2\n"
        "[traffic]\nkind = 'trace'\ntrace = 'traces/t.npz'\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "traces").mkdir()  # a same-named folder here must not be the one read
    monkeypatch.chdir(elsewhere)
    cfg = load_config(Path("..") / "study" / "c.toml")
    assert cfg.traffic.trace == str(folder / "traces" / "t.npz")
    # The stored config finds the same file from yet another working directory.
    monkeypatch.chdir(tmp_path)
    again = config_from_dict(json.loads(cfg.to_json()))
    assert again.traffic.trace == cfg.traffic.trace
