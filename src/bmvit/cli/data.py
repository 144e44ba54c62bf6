"""``bmvit data prepare-ava ...`` and ``bmvit data check ROOT``: build and verify a dataset root.

The subcommands live in their own modules (``data_prepare``, ``data_check``); this one only
groups them under ``bmvit data`` and hands the parsed arguments to the chosen one.
"""

from __future__ import annotations

import argparse
import importlib

# subcommand -> (module under bmvit.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare-ava": ("data_prepare", "cut, resample to 30 fps and resize downloaded AVA videos into a dataset root"),
    "check": ("data_check", "verify a dataset root (frames, fps, boxes, label map) before training on it"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    sub.required = True
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(f"bmvit.cli.{module_name}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_data_module=module)


def run(args: argparse.Namespace) -> int:
    return int(args._data_module.run(args) or 0)
