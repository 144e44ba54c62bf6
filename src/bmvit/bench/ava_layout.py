"""A synthetic AVA-layout root for the loader benchmarks (``bmvit bench --only loader --data ROOT``).

``write_ava_layout`` is what ``scripts/make_ava_layout.py`` wraps. The frames are painted to compress
like camera footage, since the loader's speed depends on how hard its JPEGs and H.264 are to decode.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_ava_layout(root: str | os.PathLike, *, num_videos: int = 2, num_frames: int = 400,
                     size: tuple[int, int] = (1280, 720), quality: int = 90, seed: int = 0,
                     frames: bool = True, videos: bool = False) -> dict[str, Any]:
    """Write an AVA-layout root for loader benchmarks: ``frames/<vid>/<vid>_%06d.jpg`` (30 fps, JPEG at
    ``quality``), optionally ``videos/<vid>.mp4`` (H.264 of the same frames), the train annotation CSV
    with one key frame per second (AVA seconds 902 .. 900 + seconds - 2, two people each), the label
    map and a PySlowFast frame list.

    ``size`` is (width, height). Frames are a smooth background with moving rectangles and ellipses
    plus pixel noise (sigma ~3), which JPEG-compresses like camera footage (~0.5-1 bit/pixel at
    quality 90); flat colours would decode unrealistically fast.

    Returns:
        ``{"root", "videos" (ids), "num_frames", "size" ([width, height]), "keyframes"}``.
    """
    from PIL import Image, ImageDraw

    width, height = size
    seconds = num_frames // 30
    if seconds < 4:
        raise ValueError(f"write_ava_layout: need at least 120 frames (4 s) for a key frame, got {num_frames}")
    out = Path(root)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    (out / "frame_lists").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    noise_bank = [rng.normal(0, 3, (height, width, 3)).astype(np.int16) for _ in range(5)]
    rows, ids = [], [f"bench{v:03d}" for v in range(num_videos)]
    for v, vid in enumerate(ids):
        phase = rng.uniform(0, 6.28, 3)
        background = np.stack([96 + 60 * np.sin(xx / (97 + 13 * c) + yy / (131 - 11 * c) + phase[c])
                               for c in range(3)], -1)
        shapes = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.04, 0.2) * height,
                   rng.uniform(-4, 4), rng.uniform(-3, 3), tuple(int(c) for c in rng.integers(0, 256, 3)),
                   bool(rng.integers(2))) for _ in range(8)]
        folder = out / "frames" / vid
        if frames:
            folder.mkdir(parents=True, exist_ok=True)
        encoder = _H264Writer(out / "videos" / f"{vid}.mp4", width, height) if videos else None
        for k in range(num_frames):
            img = Image.fromarray(background.astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for x, y, r, dx, dy, colour, ellipse in shapes:
                cx, cy = (x + dx * k) % width, (y + dy * k) % height
                (draw.ellipse if ellipse else draw.rectangle)((cx - r, cy - r * 1.6, cx + r, cy + r * 1.6), fill=colour)
            pixels = np.clip(np.asarray(img, dtype=np.int16) + noise_bank[k % len(noise_bank)], 0, 255)
            frame = pixels.astype(np.uint8)
            if frames:
                Image.fromarray(frame).save(folder / f"{vid}_{k + 1:06d}.jpg", quality=quality)
            if encoder is not None:
                encoder.write(frame)
        if encoder is not None:
            encoder.close()
        for second in range(902, 900 + seconds - 1):
            for person in range(2):
                x1 = 0.1 + 0.4 * person
                rows.append((vid, f"{second:04d}", f"{x1:.3f}", "0.200", f"{x1 + 0.3:.3f}", "0.900", 1 + person,
                             person))
    with open(out / "annotations" / "ava_train_v2.2.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    (out / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(
        'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 2\n}\n')
    if frames:
        with open(out / "frame_lists" / "train.csv", "w") as f:
            f.write("original_vido_id video_id frame_id path labels\n")
            for v, vid in enumerate(ids):
                f.writelines(f'{vid} {v} {k} {vid}/{vid}_{k + 1:06d}.jpg ""\n' for k in range(num_frames))
    return {"root": str(out), "videos": ids, "num_frames": num_frames, "size": [width, height],
            "keyframes": len(rows) // 2}


class _H264Writer:
    """H.264 (yuv420p, CRF 23, a key frame every 2 s like many web videos) for ``write_ava_layout``."""

    def __init__(self, path: Path, width: int, height: int) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=30, options={
            "crf": "23", "preset": "veryfast", "x264-params": "keyint=60:min-keyint=60:scenecut=0:threads=1"})
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.count
        self.count += 1
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


__all__ = ["write_ava_layout"]
