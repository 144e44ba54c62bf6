"""Annotated frames and videos: boxes labelled with the actor's track id and actions, one stable colour
per track.

Drawing uses Pillow (installed with matplotlib). Track ids come from ``bmvit.inference.tracking``
(the detections' own ``track_ids``, or a tracker run here when they have none). A rendered video has
exactly the source's frames, size and frame rate; each frame shows the detections of the nearest key
frame, each box with its track's current actions: those of its timeline segments that cover the key
frame when segments are given, else its top actions.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from bmvit.inference.results import Detections
from bmvit.inference.timeline import ActionSegment
from bmvit.inference.tracking import track_detections

# Distinct, saturated colours (RGB) that read on bright and dark footage; a track id picks one.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)


def colour_for(track_id: int) -> tuple[int, int, int]:
    """The palette colour of a track id."""
    return PALETTE[track_id % len(PALETTE)]


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def draw_detections(frame: np.ndarray, detections: Detections, top_k: int = 2,
                    track_ids: Sequence[int] | None = None,
                    actions: Sequence[Sequence[tuple[str, float]]] | None = None) -> np.ndarray:
    """An annotated copy of ``frame`` (``uint8 [H, W, 3]`` RGB) with each box of ``detections`` (pixels
    of this frame) and a label: the track id (``track_ids``, else the detections' own, else the box's
    rank) and the box's actions with scores: ``actions`` (one ``(name, score)`` list per box) when
    given, else its ``top_k`` best."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
    if len(detections) == 0:
        return np.asarray(image).copy()
    draw = ImageDraw.Draw(image)
    h, w = frame.shape[:2]
    line = max(1, round(min(h, w) / 160))
    font = _font(max(9, min(22, round(min(h, w) / 22))))
    if track_ids is None:
        track_ids = detections.track_ids.tolist() if detections.track_ids is not None else range(len(detections))
    ids = list(track_ids)
    actions = detections.top_actions(top_k) if actions is None else actions
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


def current_actions(detections: Detections, segments: Sequence[ActionSegment]) -> list[list[tuple[str, float]]]:
    """For each box of a tracked key frame, the actions of its track's segments that cover the key
    frame's time, as ``(name, score at this key frame)``, highest score first."""
    column = {name: c for c, name in enumerate(detections.class_names)}
    scores = detections.action_scores.detach().float().cpu()
    t = detections.timestamp
    out = []
    for i, track_id in enumerate(detections.track_ids.tolist()):
        names = {s.action for s in segments if s.track_id == track_id and s.start_s <= t <= s.end_s}
        out.append(sorted(((n, float(scores[i, column[n]])) for n in names), key=lambda p: -p[1]))
    return out


def render_video(video_path: str | os.PathLike, detections: Sequence[Detections], out_path: str | os.PathLike,
                 keyframe_fps: float = 1.0, top_k: int = 2, on_frame: Callable[[int], object] | None = None,
                 segments: Sequence[ActionSegment] | None = None) -> int:
    """Write ``video_path`` with the detections drawn as H.264 (libx264) MP4 at ``out_path``.

    Every decoded source frame becomes one output frame of the same size at the source's average
    frame rate; a frame shows the detections of the nearest key frame within half a key-frame
    interval. Each box is labelled with its track id (the detections' ``track_ids``; untracked
    detections are tracked here with the default ``TrackerOptions``) and its current actions: with
    ``segments`` (``timeline.build_timeline``) the actions whose segment covers the key frame, else
    the ``top_k`` best. The file is written to a temporary name and renamed when complete. ``yuv420p``
    (the format every player reads) needs even sizes; an odd-sized video is written as ``yuv444p``.

    Returns:
        The number of frames written.
    """
    import av

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    dets = sorted(detections, key=lambda d: d.frame_index)
    if any(d.track_ids is None for d in dets):
        dets = track_detections(dets)
    labels = [current_actions(d, segments) if segments is not None else None for d in dets]
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
                    rgb = draw_detections(rgb, dets[k], top_k=top_k, actions=labels[k])
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


__all__ = ["PALETTE", "colour_for", "current_actions", "draw_detections", "nearest_keyframe", "render_video"]
