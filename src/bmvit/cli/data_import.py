"""``bmvit data import --format cvat|csv|ava --annotations FILE_OR_DIR --videos DIR --out ROOT [options]``.

Turns one's own labelled videos into a dataset root that ``bmvit train data.format=custom data.root=ROOT``
trains on (``bmvit.data.custom``; docs/custom_data.md): the videos linked, the annotations at key frames,
the label map from the label names, a train/val split by video and ``dataset.yaml``. Prints a summary.
Exit status 0 when the root is written, 1 when the input cannot be imported (one line naming the file and
the row or track; nothing is left behind), 2 for bad options.
"""

from __future__ import annotations

import argparse


def _names(text: str) -> tuple[str, ...]:
    """``a,b,c``, or ``@FILE`` / an existing file: one name a line."""
    import os

    path = text[1:] if text.startswith("@") else text
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    else:
        names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected names separated by commas, or a file of them, got {text!r}")
    return tuple(names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=("cvat", "csv", "ava"),
                        help="cvat: CVAT for video 1.1 XML; csv: video,time_s,x1,y1,x2,y2,action,person_id "
                             "(docs/custom_data.md); ava: AVA CSVs of any timeline")
    parser.add_argument("--annotations", required=True, metavar="FILE_OR_DIR",
                        help="the export: one file, or a folder (CVAT: one XML per task)")
    parser.add_argument("--videos", required=True, metavar="DIR", help="folder of the annotated videos")
    parser.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write")
    parser.add_argument("--keyframe-fps", type=float, default=1.0, metavar="R",
                        help="cvat: key frames per second taken from the tracks (default 1, as AVA)")
    split = parser.add_mutually_exclusive_group()
    split.add_argument("--val-fraction", type=float, default=None, metavar="F",
                       help="fraction of the videos drawn for val (default 0.2; ava: the files' own train/val "
                            "split when they have one); 0: no val")
    split.add_argument("--val-videos", type=_names, default=None, metavar="NAME,NAME",
                       help="the val videos by name (file name or without extension)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val draw (default 0)")
    parser.add_argument("--actions", type=_names, default=None, metavar="NAME,NAME|FILE",
                        help="the actions to train, in class-id order (default: those the export declares, "
                             "else every name found); a label outside it is an error")
    parser.add_argument("--normalised", action="store_true",
                        help="csv: boxes are fractions of the frame (default: pixels)")
    parser.add_argument("--label-map", default=None, metavar="PBTXT",
                        help="ava: the label map naming the action ids (default: the .pbtxt beside the CSVs)")
    parser.add_argument("--time-offset", type=float, default=0.0, metavar="S",
                        help="ava: the timestamp of each video's first frame (default 0; AVA's own cut: 900)")
    parser.add_argument("--actions-from", choices=("auto", "attributes", "labels"), default="auto",
                        help="cvat: actions are checkbox attributes of the person label, or labels of their "
                             "own (default auto: attributes when the person label has checkbox attributes)")
    parser.add_argument("--person-label", default="person", metavar="NAME",
                        help="cvat: the label of people (default person)")
    parser.add_argument("--action-attribute", default=None, metavar="NAME",
                        help="cvat: a select/radio attribute of the person label whose value is an action")
    parser.add_argument("--copy-videos", action="store_true", help="copy the videos instead of linking them")
    parser.add_argument("--overwrite", action="store_true", help="replace ROOT if it exists")
    parser.add_argument("--name", default=None, help="the dataset's name (default: ROOT's folder name)")


def run(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from bmvit.data.custom.importer import ImportSettings, import_dataset
    from bmvit.data.custom.records import AnnotationError

    try:
        settings = ImportSettings(
            format=args.format, annotations=args.annotations, videos=args.videos, out=args.out,
            keyframe_fps=args.keyframe_fps, val_fraction=args.val_fraction, val_videos=args.val_videos,
            seed=args.seed, actions=args.actions, normalised=args.normalised, label_map=args.label_map,
            time_offset=args.time_offset, actions_from=args.actions_from, person_label=args.person_label,
            action_attribute=args.action_attribute, copy_videos=args.copy_videos, overwrite=args.overwrite,
            name=args.name, command=shlex.join(["bmvit", *sys.argv[1:]]),
        )
    except AnnotationError as err:
        print(f"bmvit data import: error: {err}", file=sys.stderr)
        return 2
    try:
        summary = import_dataset(settings)
    except AnnotationError as err:
        print(f"bmvit data import: error: {err}", file=sys.stderr)
        return 1
    print(summary.to_text())
    print(f"next: bmvit data check {summary.root}; bmvit train --config configs/custom.yaml data.root={summary.root}")
    return 0
