from pathlib import Path

import pytest

from bmvit.config import Config, ConfigError, config_from_dict, describe_config, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


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


def test_every_shipped_config_passes_validation():
    for path in sorted(CONFIGS.glob("*.yaml")):
        load_config(path).validate()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.num_classes=-2", "model.num_classes must be >= 1"),
        ("model.input_size=[8, 128]", r"model.input_size must be \[T, H, W\]"),
        ("model.token_selection=middle", "model.token_selection must be"),
        ("matcher.cost_bbox=-1", "matcher.cost_bbox must be >= 0"),
        ("loss.action_loss=ce", "loss.action_loss must be bce or focal"),
        ("optim.layer_decay=0", r"optim.layer_decay must be in \(0, 1\]"),
        ("twostage.box_jitter=0.7", r"twostage.box_jitter must be in \[0, 0.5\)"),
        ("data.act.split_index=2", "data.act.split_index must be 1..1 for ucf101_24"),
    ],
)
def test_validate_names_the_key_of_every_section(override, message):
    config = load_config(None, [override] + (["data.format=ucf101_24"] if "split_index" in override else []))
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_optional_fields_take_null_and_an_empty_override_means_null():
    config = load_config(None, ["model.init_weights=", "model.input_size=null", "model.drop_path_rate=0.1"])
    assert config.model.init_weights is None and config.model.input_size is None
    assert config.model.drop_path_rate == pytest.approx(0.1)
    assert load_config(None, ["model.drop_path_rate=1e-1"]).model.drop_path_rate == pytest.approx(0.1)
    assert load_config(None, ["model.num_classes=0"]).model.num_classes is None  # 0 meant "the data's"
    with pytest.raises(ConfigError, match="'train.epochs' expects int"):
        load_config(None, ["train.epochs=null"])


def test_moved_keys_still_work_with_a_warning_naming_the_new_key(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("data:\n  train_csv: a.csv\n  split_index: 2\n  person_boxes_val: boxes.csv\n")
    with pytest.warns(FutureWarning) as caught:
        config = load_config(path, ["data.person_box_threshold=0.5"])
    assert sorted(str(w.message).split(": ", 1)[1] for w in caught) == sorted(
        f"config key {old!r} is now {new!r}; the old name will stop working in the next release"
        for old, new in [("data.train_csv", "data.ava.train_csv"), ("data.split_index", "data.act.split_index"),
                         ("data.person_boxes_val", "twostage.val_boxes"),
                         ("data.person_box_threshold", "twostage.box_threshold")])
    assert config.data.ava.train_csv == "a.csv" and config.data.act.split_index == 2
    assert config.twostage.val_boxes == "boxes.csv" and config.twostage.box_threshold == 0.5
    with pytest.raises(ConfigError, match="both 'data.train_csv' and its new name 'data.ava.train_csv'"):
        load_config(None, ["data.train_csv=a.csv", "data.ava.train_csv=b.csv"])


def test_removed_keys_are_dropped_only_at_the_value_they_always_had():
    with pytest.warns(FutureWarning, match="'optim.betas' is gone"):
        load_config(None, ["optim.betas=[0.9, 0.999]"])
    with pytest.raises(ConfigError, match="'data.first_second' is gone .* cannot be 900"):
        load_config(None, ["data.first_second=900"])


def test_a_stored_config_of_the_old_layout_reads_without_warnings(recwarn):
    old = Config().to_dict()
    del old["twostage"]
    old["data"].update(old["data"].pop("ava"))
    old["data"].update(old["data"].pop("act"))
    old["data"].update(first_second=902, last_second=1798, person_boxes_train="", person_box_jitter=0.05)
    old["model"].update(num_classes=0, input_size=[], drop_path_rate=-1.0, init_weights="", box_local_range=0.0)
    old["optim"]["betas"] = [0.9, 0.999]
    config = config_from_dict(old)
    assert config.to_dict() == Config().to_dict()
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]


def test_describe_shows_nested_sections_with_their_help():
    text = describe_config(Config())
    assert "  ava:  # AVA's files" in text
    assert "    train_csv: annotations/ava_train_v2.2.csv  # training annotations" in text
    assert "  init_weights: null  #" in text


def test_config_files_layer_in_order_and_the_cli_takes_several(tmp_path, capsys):
    from bmvit.cli import main as cli_main

    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text("train:\n  epochs: 3\n  batch_size: 4\nmodel:\n  backbone_overrides: {depths: [1, 1, 1, 1]}\n")
    second.write_text("train:\n  epochs: 5\nmodel:\n  backbone_overrides: {embed_dim: 24}\n")
    config = load_config([first, second], ["train.batch_size=2"])
    assert (config.train.epochs, config.train.batch_size) == (5, 2)
    assert config.model.backbone_overrides == {"embed_dim": 24}  # a mapping field is replaced whole
    with pytest.raises(ConfigError, match="config file .*missing.yaml does not exist"):
        load_config([first, tmp_path / "missing.yaml"])
    assert cli_main(["config", "show", "--config", str(first), "--config", str(second)]) == 0
    shown = capsys.readouterr().out
    assert "  epochs: 5  #" in shown and "  batch_size: 4  #" in shown

