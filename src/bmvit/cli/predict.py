"""``bmvit predict``: detect actors and actions in videos; AVA CSV + JSON per video, optionally rendered.

    bmvit predict --weights runs/demo/model.safetensors --source street.mp4 --out runs/predict --render

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
                        help="bmvit model file (default: the shipped tiny synthetic-trained checkpoint, if installed)")
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
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default 0 = torch's choice; 1 is often faster on a busy machine)")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from bmvit.checkpoint import load
    from bmvit.inference.predictor import SHIPPED_WEIGHTS, Predictor, write_predictions

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
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        videos = list_sources(Path(args.source))
        model = load(weights, device=args.device)
        predictor = Predictor(model, device=args.device, threshold=args.threshold, max_detections=args.max_det or None,
                              batch_size=args.batch_size or None, nms_iou=args.nms_iou,
                              on_warning=lambda msg: tqdm.write(f"warning: {msg}", file=sys.stderr),
                              frames_fps=args.frames_fps, amp=args.amp)
    except (FileNotFoundError, ValueError, TypeError, RuntimeError) as err:
        return error(str(err), 2)
    failed = []
    for video in videos:
        try:
            written = write_predictions(predictor, video, args.out, render=args.render, fps=args.fps,
                                        max_rows_per_keyframe=args.max_rows or None, time_offset=args.time_offset,
                                        progress=True)
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
