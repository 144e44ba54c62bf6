"""Annotated frames and videos: boxes, top actions with scores, one stable colour per tracked actor.

Drawing uses Pillow (installed with matplotlib). Colours stay with an actor across key frames by a
greedy IoU tracker between consecutive key frames (the SORT idea without a motion model: BMViT
predicts at most a few people per key frame, seconds apart). A rendered video has exactly the
source's frames, size and frame rate; each frame shows the detections of the nearest key frame.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from bmvit.box_ops import box_iou
from bmvit.inference.results import Detections

# Distinct, saturated colours (RGB) that read on bright and dark footage; a track id picks one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)


def colour_for(track_id: int) -> tuple[int, int, int]:
    """The palette colour of a track id."""
    return PALETTE[track_id % len(PALETTE)]


class IoUTracker:
    """Greedy IoU association of boxes between consecutive key frames.

    Each ``update`` matches the new boxes to the previous key frame's, highest IoU first, and a
    pair with IoU >= ``min_iou`` keeps its id; unmatched boxes get new ids (never reused).
    """

    def __init__(self, min_iou: float = 0.3) -> None:
        self.min_iou = min_iou
        self._boxes = torch.zeros(0, 4)
        self._ids: list[int] = []
        self._next_id = 0

    def update(self, boxes_xyxy: Tensor) -> list[int]:
        """Ids for ``boxes_xyxy [K, 4]`` (any consistent coordinates, e.g. normalised xyxy)."""
        boxes_xyxy = boxes_xyxy.detach().float().cpu().reshape(-1, 4)
        ids: list[int | None] = [None] * len(boxes_xyxy)
        if len(boxes_xyxy) and len(self._boxes):
            iou = box_iou(boxes_xyxy, self._boxes)
            pairs = sorted(((float(iou[i, j]), i, j) for i in range(iou.shape[0]) for j in range(iou.shape[1])),
                           key=lambda p: -p[0])
            used_new, used_old = set(), set()
            for value, i, j in pairs:
                if value < self.min_iou:
                    break
                if i not in used_new and j not in used_old:
                    ids[i] = self._ids[j]
                    used_new.add(i)
                    used_old.add(j)
        for i, track_id in enumerate(ids):
            if track_id is None:
                ids[i] = self._next_id
                self._next_id += 1
        self._boxes, self._ids = boxes_xyxy, [int(i) for i in ids]
        return list(self._ids)


def track_ids(detections: Sequence[Detections], min_iou: float = 0.3) -> list[list[int]]:
    """Track ids for the boxes of each key frame, in order."""
    tracker = IoUTracker(min_iou)
    return [tracker.update(det.boxes_xyxy_norm) for det in detections]


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def draw_detections(frame: np.ndarray, detections: Detections, top_k: int = 2,
                    track_ids: Sequence[int] | None = None) -> np.ndarray:
    """An annotated copy of ``frame`` (``uint8 [H, W, 3]`` RGB) with each box of ``detections`` (pixels
    of this frame) and a label: the track id and the ``top_k`` actions with scores."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if len(detections) == 0:
        return np.asarray(image).copy()
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    line = max(1, round(min(h, w) / 160))
    font = _font(max(9, min(22, round(min(h, w) / 22))))
    ids = list(track_ids) if track_ids is not None else list(range(len(detections)))
    actions = detections.top_actions(top_k)
    for box, track_id, top in zip(detections.boxes_xyxy.tolist(), ids, actions):
        colour = colour_for(track_id)
        x1, y1, x2, y2 = box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        lines = [f"#{track_id} {top[0][0]} {top[0][1]:.2f}" if top else f"#{track_id}"]
        lines += [f"{name} {score:.2f}" for name, score in top[1:]]
        _label(draw, "\n".join(lines), (x1, y1), colour, font, (w, h))
    return np.asarray(image).copy()


def _label(draw, text: str, anchor: tuple[float, float], colour: tuple[int, int, int], font,
           size: tuple[int, int]) -> None:
    """Text on a filled box above ``anchor`` (inside the frame; below the box's top when no room)."""
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font, spacing=1)
    tw, th = right - left + 4, bottom - top + 4
    x = min(max(0.0, anchor[0]), max(0.0, size[0] - tw))
    y = anchor[1] - th if anchor[1] - th >= 0 else min(anchor[1], max(0.0, size[1] - th))
    draw.rectangle((x, y, x + tw, y + th), fill=colour)
    ink = (0, 0, 0) if sum(colour) > 382 else (255, 255, 255)
    draw.multiline_text((x + 2 - left, y + 2 - top), text, fill=ink, font=font, spacing=1)


def nearest_keyframe(frame_indices: np.ndarray, keyframe_indices: np.ndarray, max_distance: float) -> np.ndarray:
    """For each frame index, the position of the nearest key frame (ties: the earlier), or -1 when
    the nearest is more than ``max_distance`` frames away."""
    frame_indices = np.asarray(frame_indices, dtype=np.int64)
    keys = np.asarray(keyframe_indices, dtype=np.int64)
    if len(keys) == 0:
        return np.full(frame_indices.shape, -1, dtype=np.int64)
    right = np.clip(np.searchsorted(keys, frame_indices, side="left"), 0, len(keys) - 1)
    left = np.clip(right - 1, 0, len(keys) - 1)
    pick = np.where(np.abs(frame_indices - keys[left]) <= np.abs(keys[right] - frame_indices), left, right)
    return np.where(np.abs(keys[pick] - frame_indices) <= max_distance, pick, -1)


def render_video(video_path: str | os.PathLike, detections: Sequence[Detections], out_path: str | os.PathLike,
                 keyframe_fps: float = 1.0, top_k: int = 2, on_frame: Callable[[int], object] | None = None) -> int:
    """Write ``video_path`` with the detections drawn as H.264 (libx264) MP4 at ``out_path``.

    Every decoded source frame becomes one output frame of the same size at the source's average
    frame rate; a frame shows the detections of the nearest key frame within half a key-frame
    interval. The file is written to a temporary name and renamed when complete. ``yuv420p`` (the
    format every player reads) needs even sizes; an odd-sized video is written as ``yuv444p``.

    Returns:
        The number of frames written.
    """
    import av

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    dets = sorted(detections, key=lambda d: d.frame_index)
    ids = track_ids(dets)
    keys = np.array([d.frame_index for d in dets], dtype=np.int64)
    written = 0
    try:
        with av.open(os.fspath(video_path)) as source, av.open(os.fspath(tmp), mode="w", format="mp4") as sink:
            src = source.streams.video[0]
            src.thread_type = "AUTO"
            rate = Fraction(src.average_rate or src.guessed_rate or 30).limit_denominator(1_000_000)
            out = _open_encoder(sink, rate, src.codec_context.width, src.codec_context.height)
            half = 0.5 * float(rate) / keyframe_fps
            time_base = src.time_base
            start = float(src.start_time * time_base) if src.start_time is not None else 0.0
            for frame in source.decode(src):
                index = (int(np.floor((float(frame.pts * time_base) - start) * float(rate) + 0.5))
                         if frame.pts is not None else written)
                k = int(nearest_keyframe(np.array([index]), keys, half)[0])
                rgb = frame.to_ndarray(format="rgb24")
                if k >= 0:
                    rgb = draw_detections(rgb, dets[k], top_k=top_k, track_ids=ids[k])
                video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                video_frame.pts = written
                sink.mux(out.encode(video_frame))
                written += 1
                if on_frame is not None:
                    on_frame(1)
            sink.mux(out.encode(None))
        if written == 0:
            raise ValueError(f"render: no frame could be decoded from {video_path}")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return written


def _open_encoder(sink, rate: Fraction, width: int, height: int):
    stream = sink.add_stream("libx264", rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    stream.time_base = 1 / rate
    stream.options = {"crf": "23", "preset": "veryfast"}
    return stream


__all__ = ["IoUTracker", "PALETTE", "colour_for", "draw_detections", "nearest_keyframe", "render_video", "track_ids"]
