"""``bmvit synth --out DIR --seed N [--videos K] [--val-videos K] [--seconds S] [--size WxH] [--frames]
[--non-actors] [--person-boxes [DIR]] [--person-boxes-only]``.

Writes the synthetic AVA-format dataset (see ``docs/synthetic.md``) and prints what it wrote and how
long it took; ``--figure PNG`` also draws a few val key frames with their ground truth.
"""

from __future__ import annotations

import argparse


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 320x240, got {text!r}") from None
    return width, height


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="dataset root to write (created)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same dataset (default 0)")
    parser.add_argument("--videos", type=int, default=24, help="train videos (default 24)")
    parser.add_argument("--val-videos", type=int, default=8, help="held-out val videos (default 8)")
    parser.add_argument("--seconds", type=int, default=30, help="seconds per video, >= 4 (default 30)")
    parser.add_argument("--size", type=_size, default=(320, 240), help="WIDTHxHEIGHT, even (default 320x240)")
    parser.add_argument("--frames", action="store_true", help="also extract frames/<vid>/<vid>_%%06d.jpg")
    parser.add_argument("--non-actors", action="store_true",
                        help="also write the visible people who are not acting (bystanders, idle actors) at every "
                             "key frame, as rows with an empty action id (for loss.nonactor_boxes)")
    parser.add_argument("--workers", type=int, default=None, help="processes rendering videos in parallel (default 2)")
    parser.add_argument("--figure", default=None, metavar="PNG", help="also draw val key frames with ground truth")
    parser.add_argument("--person-boxes", nargs="?", const="", default=None, metavar="DIR",
                        help="also write a synthetic person detector's boxes, person_boxes_{train,val}.csv in "
                             "PySlowFast's format (for the two-stage baseline), to DIR (default OUT/annotations)")
    parser.add_argument("--person-boxes-only", action="store_true",
                        help="the dataset at --out exists: only write the person-box files")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.data.synthetic import plot_keyframes, write_synthetic_dataset

    if args.person_boxes_only:
        return _person_boxes(args)
    try:
        summary = write_synthetic_dataset(args.out, args.seed, num_videos=args.videos, num_val_videos=args.val_videos,
                                          seconds=args.seconds, size=args.size, frames=args.frames,
                                          workers=args.workers, non_actors=args.non_actors)
    except ValueError as err:
        print(f"bmvit synth: {err}", file=sys.stderr)
        return 2
    print(summary.describe())
    if args.figure:
        shown = plot_keyframes(args.out, args.figure)
        print(f"wrote {args.figure} ({len(shown)} val key frames)")
    return _person_boxes(args) if args.person_boxes is not None else 0


def _person_boxes(args: argparse.Namespace) -> int:
    import sys

    from bmvit.baselines.twostage.person_boxes import write_synthetic_person_boxes

    try:
        summary = write_synthetic_person_boxes(args.out, args.seed, out_dir=args.person_boxes or None)
    except (ValueError, OSError) as err:
        print(f"bmvit synth: {err}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0
