"""One grammar for every subcommand: options after the (sub)command's name, overrides among them."""

from pathlib import Path

import pytest

from bmvit.cli import build_parser, main, parse_args

CONFIG = str(Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml")


def _show(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def test_config_show_takes_its_options_after_show(capsys):
    out = _show(capsys, ["config", "show", "--config", CONFIG, "train.epochs=2"])
    assert "  epochs: 2  #" in out and "init_weights: mvit_tiny_8x128.synthetic_seed1" in out


def test_config_show_overrides_before_and_after_the_config(capsys):
    out = _show(capsys, ["config", "show", "train.epochs=2", "--config", CONFIG, "train.batch_size=3"])
    assert "  epochs: 2  #" in out and "  batch_size: 3  #" in out and "init_weights: mvit_tiny_8x128" in out


def test_config_show_the_older_order_still_works(capsys):
    new = _show(capsys, ["config", "show", "--config", CONFIG, "train.epochs=2"])
    old = _show(capsys, ["config", "--config", CONFIG, "show", "train.epochs=2"])
    assert old == new


def test_config_show_without_a_config_shows_the_defaults(capsys):
    assert "init_weights: null" in _show(capsys, ["config", "show"])


def test_config_needs_its_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["config"])
    assert exit_.value.code == 2


@pytest.mark.parametrize("argv, overrides", [
    (["train", "a.b=1", "--config", "x.yaml", "c.d=2"], ["a.b=1", "c.d=2"]),
    (["train", "--config", "x.yaml", "a.b=1", "--resume", "c.d=2"], ["a.b=1", "c.d=2"]),
    (["eval", "--weights", "w", "a.b=1", "--device", "cpu", "c.d=2"], ["a.b=1", "c.d=2"]),
    (["demo", "a.b=1", "--seed", "1", "c.d=2"], ["a.b=1", "c.d=2"]),
])
def test_overrides_may_follow_options(argv, overrides):
    assert parse_args(build_parser(), argv).overrides == overrides


@pytest.mark.parametrize("argv", [
    ["train", "--config", "x.yaml", "--no-such-flag"],
    ["flops", "--model", "mvit_tiny", "a.b=1"],  # flops takes no overrides
    ["data", "check", "root", "a.b=1"],
    ["train", "a.b=1", "--resume", "stray"],  # not key=value
])
def test_leftovers_are_still_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(build_parser(), argv)
    assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err
