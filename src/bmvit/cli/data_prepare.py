"""``bmvit data prepare-ava --videos RAW_DIR --annotations ANN_DIR --out ROOT [--short-side 256] [--workers N]
[--format frames|video] [--video-list FILE] [--link-annotations] [--jpeg-quality Q]
[--download [--download-workers N] [--download-url BASE]]``.

Cuts seconds 900-1800 of each downloaded AVA video to 27001 frames at 30 fps, resized, as JPEG frame
folders (PySlowFast's layout) or short-GOP H.264 files, plus frame lists and the annotations; see
``docs/ava_preparation.md``. Re-running skips the videos already done. With ``--download`` the listed
videos are first fetched into RAW_DIR (resumable; ``bmvit.data.download``); a file that cannot be fetched
does not stop the others, and the preparation then runs on the videos that are there. Exit status 0 when
every video is downloaded (with ``--download``) and done, 1 when some failed or are missing, 2 for bad
arguments or a video list that cannot be read or fetched.
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
    from bmvit.data.download import OFFICIAL_BASE_URL  # standard library only: --help stays light

    parser.add_argument("--download", action="store_true",
                        help="first download the listed videos into RAW_DIR (the --video-list, else "
                             "ANN_DIR/ava_file_names_trainval_v2.1.txt, else the official list, saved into ANN_DIR); "
                             "resumes .part files, skips complete ones")
    parser.add_argument("--download-workers", type=int, default=4, metavar="N",
                        help="files downloaded at the same time (default 4)")
    parser.add_argument("--download-url", default=OFFICIAL_BASE_URL, metavar="BASE",
                        help=f"where the videos are: BASE/<file name> (default {OFFICIAL_BASE_URL}, "
                             "the CVDF bucket; a mirror with its layout also serves the list at "
                             "BASE/../annotations/)")


def run(args: argparse.Namespace) -> int:
    import sys

    from tqdm import tqdm

    from bmvit.data.prepare_ava import PrepareSettings, prepare_ava

    def log(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    settings = PrepareSettings(format=args.format, short_side=args.short_side, jpeg_quality=args.jpeg_quality)
    downloads_ok = True
    try:
        if args.download:
            downloads_ok = _download(args, log)
        summary = prepare_ava(args.videos, args.annotations, args.out, settings=settings, workers=args.workers,
                              video_list=args.video_list, link_annotations=args.link_annotations, log=log)
    except (FileNotFoundError, ValueError) as err:
        print(f"bmvit data prepare-ava: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bmvit data prepare-ava: interrupted; finished videos and downloads are kept (a .part download "
              "resumes), re-run to do the rest", file=sys.stderr)
        return 130
    except OSError as err:  # the output root cannot be created, the annotations cannot be copied, ...
        where = f" ({err.filename})" if err.filename else ""
        print(f"bmvit data prepare-ava: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0 if summary.ok and downloads_ok else 1


def _download(args: argparse.Namespace, log) -> bool:
    """Fetch the listed videos into ``--videos``; prints the summary and returns whether all are there.

    Files that fail are left out (the preparation reports them as missing) rather than stopping the run:
    one unreachable movie should not hold up the ~300 others.
    """
    from pathlib import Path

    from bmvit.data.download import check_base_url, download_videos, names_to_download

    if args.download_workers < 1:
        raise ValueError(f"--download-workers must be >= 1, got {args.download_workers}")
    check_base_url(args.download_url)
    if not Path(args.annotations).is_dir():  # checked before hours of downloading, not after
        raise FileNotFoundError(f"annotation folder not found: {args.annotations}")
    names, _ = names_to_download(args.video_list, args.annotations, base_url=args.download_url, log=log)
    summary = download_videos(names, args.videos, base_url=args.download_url, workers=args.download_workers,
                              log=log)
    print(summary.describe(), flush=True)
    return summary.ok
