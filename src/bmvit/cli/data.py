"""``bmvit data prepare-ava ...``, ``bmvit data import ...`` and ``bmvit data check ROOT``: build and verify a
dataset root.

The subcommands live in their own modules (``data_prepare``, ``data_check``); this one only
groups them under ``bmvit data`` and hands the parsed arguments to the chosen one.
"""

from __future__ import annotations

import argparse

# subcommand -> (module under bmvit.cli, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare-ava": ("data_prepare", "cut, resample to 30 fps and resize downloaded AVA videos into a dataset root"),
    "import": ("data_import", "turn one's own labelled videos (CVAT XML, a CSV, AVA CSVs) into a dataset root"),
    "check": ("data_check", "verify a dataset root (frames, fps, boxes, label map) before training on it"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bmvit.cli import add_subcommands

    add_subcommands(parser, SUBCOMMANDS, "data_command", "SUBCOMMAND")


def run(args: argparse.Namespace) -> int:
    # argparse keeps the innermost default: ``_module`` is the chosen subcommand's module, not this one.
    return int(args._module.run(args) or 0)
