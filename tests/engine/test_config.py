from pathlib import Path

import pytest

from bmvit.config import Config, ConfigError, config_from_dict, describe_config, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert isinstance(config, Config)


def test_overrides_are_typed():
    config = load_config(None, ["train.epochs=3", "optim.lr=1e-3", "data.mean=[0.5, 0.5, 0.5]", "model.name=x"])
    assert config.train.epochs == 3 and config.optim.lr == pytest.approx(1e-3)
    assert config.data.mean == [0.5, 0.5, 0.5] and config.model.name == "x"
    assert load_config(None, ["optim.lr=2"]).optim.lr == 2.0  # an int where a float belongs is fine


@pytest.mark.parametrize(
    "override, message",
    [
        (["train.epoch=3"], "unknown config key 'train.epoch'"),
        (["trian.epochs=3"], "unknown config key 'trian'"),
        (["train.epochs=three"], "'train.epochs' expects int"),
        (["train.epochs=2.5"], "'train.epochs' expects int"),
        (["train.tensorboard=7"], "'train.tensorboard' expects bool"),
        (["train=3"], "is a section"),
        (["epochs"], "not of the form key=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, override)


def test_yaml_typo_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'train.epocs'"):
        load_config(path)


def test_round_trip_through_dict():
    config = load_config(CONFIGS / "synthetic_tiny.yaml", ["train.epochs=7"])
    assert config_from_dict(config.to_dict()) == config


def test_describe_lists_every_field_with_help():
    text = describe_config(Config())
    assert "  lr: 0.0001  # peak learning rate" in text
    assert text.count("#") >= 50


def test_only_true_and_false_are_booleans(tmp_path):
    # YAML 1.1 reads off/on/yes/no as booleans; `train.amp: off` must stay the string "off".
    config = load_config(None, ["train.amp=off", "train.tensorboard=false", "train.device=on"])
    assert config.train.amp == "off" and config.train.tensorboard is False and config.train.device == "on"
    path = tmp_path / "amp.yaml"
    path.write_text("train:\n  amp: off\n  tensorboard: True\n")
    config = load_config(path)
    assert config.train.amp == "off" and config.train.tensorboard is True
    with pytest.raises(ConfigError, match="'train.tensorboard' expects bool"):
        load_config(None, ["train.tensorboard=no"])


def test_model_and_matcher_fields_reach_the_components():
    from bmvit.build import create_criterion, create_model_from_config

    config = load_config(CONFIGS / "synthetic_tiny.yaml", ["model.input_size=[8, 64, 64]", "model.box_local_range=1.5"])
    model = create_model_from_config(config.model, num_classes=9)
    assert model.config.box_reference == "token_local" and model.config.box_local_range == 1.5
    assert model.heads.local_range == 1.5
    criterion = create_criterion(config.matcher, config.loss, 9)
    assert criterion.matcher.cost_center == 1.0
    default = create_model_from_config(load_config(None, ["model.input_size=[8, 64, 64]"]).model, num_classes=9)
    assert default.config.box_reference == "token_center"  # '' keeps the preset's own
