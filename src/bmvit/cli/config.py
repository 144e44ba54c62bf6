"""``bmvit config show [--config F] [key=value ...]``: the resolved config, each field explained."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"], help="show: print the resolved configuration")
    parser.add_argument("--config", help="YAML file of overrides")
    parser.add_argument("overrides", nargs="*", metavar="key=value")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.config import ConfigError, describe_config, load_config

    try:
        config = load_config(args.config, args.overrides)
    except ConfigError as err:
        print(f"bmvit config: error: {err}", file=sys.stderr)
        return 2
    print(describe_config(config))
    return 0
