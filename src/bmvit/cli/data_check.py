"""``bmvit data check ROOT [--source auto|frames|video] [--decode | --decode-sample N] [--json OUT] ...``.

Verifies an AVA-layout dataset root, or a root written by ``bmvit data import`` (it has a ``dataset.yaml``),
before training (``docs/data_check.md``, ``docs/custom_data.md``) and prints a report, one block per section
with OK / WARNING / ERROR lines and a summary. Exit status: 1 when there are errors,
0 with warnings only or none, 2 when ROOT is not a folder or an option is wrong.
"""

from __future__ import annotations

import argparse


def _expected_frames(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frame count or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"the frame count must be >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="ROOT", help="dataset root (annotations/, frames/ or videos/, frame_lists/)")
    parser.add_argument("--source", choices=("auto", "frames", "video"), default="auto",
                        help="media to check (default auto: frames/ and videos/, whichever exist)")
    parser.add_argument("--num-frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--stride", type=int, default=4, help="frames between clip frames at 30 fps (default 4)")
    parser.add_argument("--expected-frames", type=_expected_frames, default=27001, metavar="N|auto",
                        help="frames of a complete video at 30 fps (default 27001: AVA's 900..1800 s cut); "
                             "auto: the most common count among the videos")
    parser.add_argument("--no-sizes", action="store_true",
                        help="skip the stat of each needed frame file (empty files then go unnoticed; faster)")
    parser.add_argument("--decode", action="store_true",
                        help="decode every frame a clip needs (folders) or every frame (video files): slow")
    parser.add_argument("--decode-sample", type=int, default=None, metavar="N",
                        help="without --decode: frames (folders) or clips (files) decoded per video (default 2)")
    parser.add_argument("--train-csv", default="annotations/ava_train_v2.2.csv", help="relative to ROOT")
    parser.add_argument("--val-csv", default="annotations/ava_val_v2.2.csv", help="relative to ROOT")
    parser.add_argument("--label-map", default="annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt",
                        help="the evaluation label map, relative to ROOT")
    parser.add_argument("--exclusions", default="annotations/ava_val_excluded_timestamps_v2.2.csv",
                        help="excluded val timestamps, relative to ROOT ('' = none)")
    parser.add_argument("--max-listed", type=int, default=5, metavar="N",
                        help="problems named per video or file before a count (default 5)")
    parser.add_argument("--workers", type=int, default=4, help="threads listing folders and decoding (default 4)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the report as JSON here")


def _print(report, args: argparse.Namespace) -> int:
    import json

    print(report.to_text())
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)
        print(f"report written to {args.json}")
    return report.exit_code


def _check_custom(args: argparse.Namespace) -> int:
    """A root of ``bmvit data import`` (it has a dataset.yaml): its own checks; the AVA-only options
    (--source, --expected-frames, the CSV paths) do not apply."""
    from bmvit.data.custom.check import CustomCheckOptions, check_custom_root

    options = CustomCheckOptions(num_frames=args.num_frames, stride=args.stride, decode=args.decode,
                                 decode_sample=2 if args.decode_sample is None else args.decode_sample)
    return _print(check_custom_root(args.root, options), args)


def run(args: argparse.Namespace) -> int:
    import os
    import sys

    from bmvit.data.check import DEFAULT_DECODE_SAMPLE, AvaLayout, CheckOptions, check_dataset

    if not os.path.isdir(args.root):
        print(f"bmvit data check: error: {args.root} is not a directory", file=sys.stderr)
        return 2
    from bmvit.data.custom.root import is_custom_root

    if is_custom_root(args.root):
        return _check_custom(args)
    try:
        options = CheckOptions(
            num_frames=args.num_frames,
            stride=args.stride,
            expected_frames=args.expected_frames,
            source=args.source,
            sizes=not args.no_sizes,
            decode=args.decode,
            decode_sample=DEFAULT_DECODE_SAMPLE if args.decode_sample is None else args.decode_sample,
            max_listed=args.max_listed,
            workers=args.workers,
        )
    except ValueError as err:
        print(f"bmvit data check: error: {err}", file=sys.stderr)
        return 2
    layout = AvaLayout.from_root(args.root, train_csv=args.train_csv, val_csv=args.val_csv,
                                 label_map=args.label_map, exclusions=args.exclusions or None)
    return _print(check_dataset(args.root, options, layout), args)
