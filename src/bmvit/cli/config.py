"""``bmvit config show [--config F] [key=value ...]``: the resolved config, each field explained.

``show`` is a subcommand like ``bmvit data check``: its options and overrides come after it, in any
order. The older order ``bmvit config --config F show [key=value ...]`` still parses.
"""

from __future__ import annotations

import argparse

SHOW_HELP = "print the resolved configuration: the defaults, then --config, then key=value, each field explained"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Accepted before ``show`` too (the older order); not listed, so that the help shows one grammar.
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    sub.required = True
    show = sub.add_parser("show", help=SHOW_HELP, description=SHOW_HELP)
    # SUPPRESS: when not given after ``show``, a --config given before it is kept.
    show.add_argument("--config", action="append", default=argparse.SUPPRESS,
                      help="YAML file of overrides (see configs/); repeat it to layer files")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.config import ConfigError, describe_config, load_config

    try:
        paths = args.config if isinstance(args.config, list) else [args.config] if args.config else []
        config = load_config(paths, args.overrides)
    except ConfigError as err:
        print(f"bmvit config: error: {err}", file=sys.stderr)
        return 2
    print(describe_config(config))
    return 0
