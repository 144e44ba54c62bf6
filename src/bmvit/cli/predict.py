"""``bmvit predict``: detect and track actors and their actions in videos.

    bmvit predict --weights runs/demo/model.safetensors --source street.mp4 --out runs/predict --render

Per video: ``<id>.csv`` (AVA detections), ``<id>.json`` (boxes with scores and track ids),
``<id>_tracks.csv`` (one row per box with its track id), ``<id>_timeline.csv`` and ``<id>_timeline.png``
(each actor's actions as time intervals) and, with ``--render``, ``<id>_annotated.mp4``
(docs/tracking.md).

``--source`` is a video file, an AVA-style frame folder (``<id>/<id>_%06d.jpg``) or a folder of video
files. On a GPU (``--device cuda``, or ``auto`` where CUDA is available) the model runs under bf16
autocast (``--amp``) on batches of 16 key frames, and a background thread decodes the next frames
while the GPU works. Exit status: 0 when every video was predicted (warnings, e.g. a truncated file, are printed),
1 when a video could not be predicted at all, 2 for unusable arguments or weights.
"""

from __future__ import annotations

import argparse

AMP_CHOICES = ("auto", "bf16", "off")  # bmvit.engine.AMP_SETTINGS, without importing torch for --help


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None,
                        help="bmvit model file, model name (`bmvit weights list`) or http(s) URL of one "
                             "(default: the shipped tiny synthetic-trained checkpoint, if installed)")
    parser.add_argument("--source", required=True, help="video file, frame folder, or folder of video files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--fps", type=float, default=1.0, help="key frames per second (default 1, as AVA)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="keep tokens with p(actor) > threshold (default: the checkpoint's)")
    parser.add_argument("--max-det", type=int, default=0,
                        help="keep at most this many boxes per key frame, the most confident (default 0 = all)")
    parser.add_argument("--nms-iou", type=float, default=0.0,
                        help="class-agnostic NMS of the boxes at this IoU (default 0 = none, as the method)")
    parser.add_argument("--render", action="store_true", help="also write an annotated H.264 video per input")
    parser.add_argument("--device", default="auto",
                        help="auto | cpu | cuda | cuda:N (default auto: CUDA when available)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                        help="mixed precision of the forward pass: auto = bf16 autocast on a CUDA device that "
                             "supports it, float32 on a CPU; bf16; off = float32 (default auto)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="key-frame clips per forward pass (default 0 = by device: 16 on CUDA, 4 on a CPU)")
    parser.add_argument("--max-rows", type=int, default=50,
                        help="AVA CSV rows per key frame, highest scores first (default 50, the official cap; 0 = all)")
    parser.add_argument("--time-offset", type=float, default=0.0,
                        help="seconds added to video time in the CSV (AVA's cut videos: 900; default 0)")
    parser.add_argument("--frames-fps", type=float, default=30.0, help="frame rate of frame folders (default 30)")
    tracking = parser.add_argument_group("tracking and timeline (docs/tracking.md)")
    tracking.add_argument("--track-min-iou", type=float, default=0.1,
                          help="a box joins a track only if it overlaps the track's predicted box at least this "
                               "much (default 0.1)")
    tracking.add_argument("--track-max-missed", type=int, default=2,
                          help="key frames a track survives without a box before its id is retired (default 2)")
    tracking.add_argument("--track-appearance", type=float, default=0.0, metavar="W",
                          help="weight of the appearance term (cosine of the model's token features) in the "
                               "association cost, in [0, 1) (default 0 = boxes only)")
    tracking.add_argument("--track-no-motion", action="store_true",
                          help="predict a track's box where it was last seen instead of moving it by its velocity")
    tracking.add_argument("--timeline-high", type=float, default=0.5,
                          help="an action's segment opens where its score reaches this (default 0.5)")
    tracking.add_argument("--timeline-low", type=float, default=0.3,
                          help="an open segment closes where the score falls below this (default 0.3)")
    tracking.add_argument("--timeline-gap", type=float, default=1.0, metavar="SECONDS",
                          help="merge segments of one track and action at most this far apart (default 1.0 s)")
    tracking.add_argument("--timeline-min-length", type=float, default=1.0, metavar="SECONDS",
                          help="drop segments shorter than this (default 1.0 s)")
    tracking.add_argument("--no-timeline-png", action="store_true", help="do not draw <id>_timeline.png")
    live = parser.add_argument_group("live sources: --source -, a camera (/dev/video0, 0) or an rtsp/rtmp/http(s)/udp "
                                     "address (docs/tracking.md#live-sources)")
    live.add_argument("--stream-json", action="store_true",
                      help="print each key frame's detections as a JSON line on standard output as it is predicted")
    live.add_argument("--read-timeout", type=float, default=10.0, metavar="SECONDS",
                      help="a live stream that sends nothing for this long counts as stopped (default 10 s)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0 = torch's choice; 1 is often faster on a busy machine)")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from bmvit.checkpoint import load
    from bmvit.inference.predictor import SHIPPED_WEIGHTS, Predictor, write_predictions
    from bmvit.inference.timeline import TimelineOptions
    from bmvit.inference.tracking import TrackerOptions

    def error(message: str, code: int) -> int:
        print(f"bmvit predict: error: {message}", file=sys.stderr)
        return code

    weights = args.weights
    if weights is None:
        if not SHIPPED_WEIGHTS.is_file():
            return error(f"--weights is required (no shipped checkpoint at {SHIPPED_WEIGHTS})", 2)
        weights = SHIPPED_WEIGHTS
        print(f"using the shipped checkpoint {weights} (trained on synthetic figures: it will not find real people)",
              file=sys.stderr)
    if not args.fps > 0:
        return error(f"--fps must be > 0, got {args.fps}", 2)
    if args.max_det < 0 or args.max_rows < 0 or args.threads < 0 or args.batch_size < 0:
        return error(f"--max-det, --max-rows, --threads and --batch-size must be >= 0, got {args.max_det}, "
                     f"{args.max_rows}, {args.threads} and {args.batch_size}", 2)
    try:
        tracker = TrackerOptions(min_iou=args.track_min_iou, max_missed=args.track_max_missed,
                                 appearance_weight=args.track_appearance, motion=not args.track_no_motion)
        timeline = TimelineOptions(high=args.timeline_high, low=args.timeline_low, max_gap_s=args.timeline_gap,
                                   min_length_s=args.timeline_min_length)
    except ValueError as err:
        return error(str(err), 2)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from bmvit.inference.live import is_live_source

    live = is_live_source(args.source)
    if live and args.render:
        return error("--render needs a video file; a live source is not rendered", 2)
    if args.stream_json and not live:
        return error("--stream-json is for live sources (--source -, a camera or a stream address)", 2)
    try:
        videos = [] if live else list_sources(Path(args.source))
        model = load(weights, device=args.device)
        predictor = Predictor(model, device=args.device, threshold=args.threshold, max_detections=args.max_det or None,
                              batch_size=args.batch_size or None, nms_iou=args.nms_iou,
                              on_warning=lambda msg: tqdm.write(f"warning: {msg}", file=sys.stderr),
                              frames_fps=args.frames_fps, amp=args.amp, embeddings=tracker.appearance_weight > 0)
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as err:
        return error(str(err), 2)
    if live:
        return _predict_live(args, predictor, tracker, timeline, error)
    failed = []
    for video in videos:
        try:
            written = write_predictions(predictor, video, args.out, render=args.render, fps=args.fps,
                                        max_rows_per_keyframe=args.max_rows or None, time_offset=args.time_offset,
                                        progress=True, tracker=tracker, timeline=timeline,
                                        timeline_png=not args.no_timeline_png)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            failed.append(video)
            print(f"bmvit predict: error: {err}", file=sys.stderr)
            continue
        for label, path in written.items():
            print(f"  {label:<16} {path}")
    if failed:
        return error(f"{len(failed)} of {len(videos)} videos could not be predicted: "
                     + ", ".join(str(v) for v in failed), 1)
    return 0


def _predict_live(args: argparse.Namespace, predictor, tracker, timeline, error) -> int:
    """A live source: files written as key frames arrive; Ctrl-C closes them (exit 130)."""
    import sys

    from bmvit.inference.live import LiveSource, LiveSourceError, write_live_predictions

    source = LiveSource(args.source, read_timeout_s=args.read_timeout)
    try:
        outputs, summary = write_live_predictions(
            predictor, source, args.out, fps=args.fps, tracker=tracker, timeline=timeline,
            timeline_png=not args.no_timeline_png, max_rows_per_keyframe=args.max_rows or None,
            stream_json=sys.stdout if args.stream_json else None)
    except LiveSourceError as err:
        return error(str(err), 1)
    except KeyboardInterrupt:
        print(f"bmvit predict: interrupted; the files under {args.out} are complete up to the last key frame",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        print(f"bmvit predict: standard output was closed; stopped, the files under {args.out} are complete",
              file=sys.stderr)
        return 1
    where = f"{summary['keyframes']} key frame(s), up to {summary['stopped_at_s']:.2f} s"
    if summary["keyframes"] == 0:
        return error(f"{args.source}: no key frame could be predicted ({summary['stopped']}, "
                     f"{summary['frames_read']} frame(s) read)", 1)
    if summary["stopped"] != "end of stream":
        print(f"bmvit predict: warning: {args.source}: {summary['stopped']}; {where} written", file=sys.stderr)
    for label, path in vars(outputs).items():
        if path is not None:
            print(f"  {label:<16} {path}", file=sys.stderr if args.stream_json else sys.stdout)
    return 0


def list_sources(source) -> list:
    """The videos under ``--source``: the file itself, a frame folder, or the video files of a folder."""
    from bmvit.inference.predictor import VIDEO_EXTENSIONS

    if not source.exists():
        raise FileNotFoundError(f"--source {source} does not exist")
    if source.is_file():
        return [source]
    videos = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
    if videos:
        stems = [p.stem for p in videos]
        clashes = sorted({s for s in stems if stems.count(s) > 1})
        if clashes:
            raise ValueError(f"--source {source}: videos {clashes} share a name with different extensions; their "
                             "outputs would overwrite each other")
        return videos
    if any(p.suffix.lower() in (".jpg", ".jpeg", ".png") for p in source.iterdir()):
        return [source]
    raise ValueError(f"--source {source} holds no video file ({', '.join(VIDEO_EXTENSIONS)}) and no frame images")
