"""``bmvit train --config F [--config G ...] [key=value ...] [--resume]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", help="YAML file of overrides (see configs/); repeat it to "
                                                          "layer files, e.g. a recipe then one of its ablations")
    parser.add_argument("--resume", action="store_true", help="continue from <train.out_dir>/last.safetensors")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=3")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.config import ConfigError, load_config
    from bmvit.distributed import DistributedSetupError
    from bmvit.engine import BadDataError, NonFiniteLossError
    from bmvit.trainer import fit

    try:
        config = load_config(args.config, args.overrides)
        final = fit(config, resume=args.resume)
    except (ConfigError, FileNotFoundError, NonFiniteLossError, BadDataError, DistributedSetupError, ValueError) as err:
        print(f"bmvit train: error: {err}", file=sys.stderr)
        return 2
    if final.get("mAP") is not None:
        print(f"mAP: {final['mAP']:.4f}")
    return 0
