"""The ``bmvit`` command line: one subcommand per module of this package.

Each subcommand module defines ``add_arguments(parser)`` and ``run(args) -> int``; heavy imports
happen inside ``run`` so that ``bmvit --help`` stays fast.

One grammar for every subcommand: ``bmvit COMMAND [SUBCOMMAND] [options] [key=value ...]``, the options
after the (sub)command's name, and the ``key=value`` overrides of the commands that take them
anywhere among those options.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> (module under bmvit.cli, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "the main job on the embedded synthetic dataset: synth, train, eval, predict"),
    "flops": ("flops", "count GMACs and parameters of a model"),
    "train": ("train", "train and evaluate a detector from a config"),
    "eval": ("eval", "evaluate a trained model file on a dataset's val split (frame-mAP)"),
    "config": ("config", "show the resolved configuration with each field's meaning"),
    "ava-eval": ("ava_eval", "frame-mAP of a detections CSV, exactly as the official AVA evaluator"),
    "synth": ("synth", "write the synthetic AVA-format dataset"),
    "data": ("data", "prepare AVA from downloaded videos, or check a dataset root before training"),
    "bench": ("bench", "time bmvit on this machine, as ratios to references measured in the same run"),
    "predict": ("predict", "detect actors and actions in videos: AVA CSV, JSON, annotated video"),
    "explain": ("explain", "the paper's Fig. 3 for one key frame: p(actor) map, token boxes, attention"),
    "export": ("export", "export the whole detector to ONNX, TorchScript or torch.export"),
    "weights": ("weights", "list the known pretrained weights and models, download them into the cache by name"),
}


def add_subcommands(parser: argparse.ArgumentParser, commands: dict[str, tuple[str, str]], dest: str,
                    metavar: str) -> None:
    """One required subcommand per entry of ``commands`` (name -> (module under bmvit.cli, help)); the chosen
    module is stored as ``args._module`` (a group such as ``bmvit data`` stores its own in ``_module`` too)."""
    sub = parser.add_subparsers(dest=dest, metavar=metavar)
    sub.required = True
    for name, (module_name, help_text) in commands.items():
        module = importlib.import_module(f"bmvit.cli.{module_name}")
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(_module=module)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bmvit", description="Single-stage spatio-temporal action detection (BMViT).")
    add_subcommands(parser, COMMANDS, "command", "COMMAND")
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` that also takes ``key=value`` overrides after a subcommand's options.

    argparse fills a ``nargs="*"`` positional from its first run of positional arguments only, so
    ``bmvit train a=1 --resume b=2`` would leave ``b=2`` unrecognised; such leftovers are appended, in
    order, to ``args.overrides`` of the commands that have one. Anything else left over is an error.
    """
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in a and not a.startswith("-") for a in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    return int(args._module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
