"""``bmvit data prepare-ava --videos RAW_DIR --annotations ANN_DIR --out ROOT [--short-side 256] [--workers N]
[--format frames|video] [--video-list FILE] [--link-annotations] [--jpeg-quality Q]``.

Cuts seconds 900-1800 of each downloaded AVA video to 27001 frames at 30 fps, resized, as JPEG frame
folders (PySlowFast's layout) or short-GOP H.264 files, plus frame lists and the annotations; see
``docs/ava_preparation.md``. Re-running skips the videos already done. Exit status 0 when every video
is done, 1 when some failed or are missing, 2 for bad arguments.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--videos", required=True, metavar="RAW_DIR", help="folder of the downloaded AVA videos")
    parser.add_argument("--annotations", required=True, metavar="ANN_DIR",
                        help="folder of the AVA v2.2 annotation files (unzipped ava_v2.2.zip)")
    parser.add_argument("--out", required=True, metavar="ROOT", help="dataset root to write (created)")
    parser.add_argument("--short-side", type=int, default=256, metavar="PX",
                        help="pixels of the shorter side after resizing, aspect kept (default 256; 0 keeps the size)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="videos prepared in parallel, one process each (default min(4, cores))")
    parser.add_argument("--format", choices=("frames", "video"), default="frames",
                        help="frames: ROOT/frames/<vid>/<vid>_%%06d.jpg (default); video: ROOT/videos/<vid>.mp4")
    parser.add_argument("--video-list", default=None, metavar="FILE",
                        help="only the videos named in FILE, one file name a line (default: "
                             "ANN_DIR/ava_file_names_trainval_v2.1.txt if present, else every video in RAW_DIR)")
    parser.add_argument("--link-annotations", action="store_true",
                        help="symlink the annotation files into ROOT/annotations instead of copying them")
    parser.add_argument("--jpeg-quality", type=int, default=90, metavar="Q",
                        help="JPEG quality of the frames (default 90)")


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from bmvit.data.prepare_ava import PrepareSettings, prepare_ava

    settings = PrepareSettings(format=args.format, short_side=args.short_side, jpeg_quality=args.jpeg_quality)
    try:
        summary = prepare_ava(args.videos, args.annotations, args.out, settings=settings, workers=args.workers,
                              video_list=args.video_list, link_annotations=args.link_annotations,
                              log=lambda line: tqdm.write(line, file=sys.stderr))
    except (FileNotFoundError, ValueError) as err:
        print(f"bmvit data prepare-ava: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bmvit data prepare-ava: interrupted; finished videos are kept, re-run to do the rest",
              file=sys.stderr)
        return 130
    except OSError as err:  # the output root cannot be created, the annotations cannot be copied, ...
        where = f" ({err.filename})" if err.filename else ""
        print(f"bmvit data prepare-ava: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0 if summary.ok else 1
