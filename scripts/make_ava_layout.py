"""Write a small AVA-layout root for loader benchmarks (``bmvit bench --only loader --data ROOT``).

Frames ``frames/<vid>/<vid>_%06d.jpg`` at 30 fps (JPEG quality 90, a smooth background with moving
shapes and pixel noise, which compresses like camera footage), optionally ``videos/<vid>.mp4`` (H.264 of
the same frames), the train annotation CSV with a key frame per second, the label map and a frame list.
A wrapper of ``bmvit.bench.ava_layout.write_ava_layout``; not part of the package.

    python scripts/make_ava_layout.py /tmp/ava720 --size 1280x720 [--videos 2] [--frames 400] [--with-video]
"""

from __future__ import annotations

import argparse
import time

from bmvit.bench.ava_layout import write_ava_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="the root to write (created)")
    parser.add_argument("--size", default="1280x720", help="frame size WxH (default 1280x720)")
    parser.add_argument("--videos", type=int, default=2, help="number of videos (default 2)")
    parser.add_argument("--frames", type=int, default=400, help="frames per video, >= 120 (default 400)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    parser.add_argument("--with-video", action="store_true", help="also write videos/<vid>.mp4 (H.264)")
    parser.add_argument("--no-frames", action="store_true", help="write no frame folders (videos only)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    start = time.perf_counter()
    info = write_ava_layout(args.root, num_videos=args.videos, num_frames=args.frames, size=(width, height),
                            quality=args.quality, seed=args.seed, frames=not args.no_frames,
                            videos=args.with_video)
    print(f"{info['root']}: {len(info['videos'])} videos x {info['num_frames']} frames at {width}x{height}, "
          f"{info['keyframes']} key frames ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
