"""Ground truth at AVA key frames: each labelled actor's box, labels and how much of it is visible.

Video time 0.0 is AVA second 900 (``AVA_FIRST_SECOND``); key frames fall on every whole second from
902 to ``900 + seconds - 2``, mirroring AVA's 0902..1798 in clips cut from 900 s to 1800 s. A
box is the tight box around the figure's capsules (``render.parts_box``), clipped to the frame and
normalised to [0, 1] (AVA convention). Idle actors and bystanders carry no label and are not listed,
unless asked for (``keyframe_boxes(spec, non_actors=True)``): then they come with empty ``labels``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bmvit.data.synthetic.render import Part, draw_parts, draw_rect, figure_parts, parts_box
from bmvit.data.synthetic.scene import FPS, VideoSpec

AVA_FIRST_SECOND = 900


@dataclass(frozen=True)
class KeyframeBox:
    """One person at a key frame: box normalised ``x1, y1, x2, y2`` (clipped), labels, visibility.

    ``labels`` is empty for a person who is not acting (a bystander or an idle actor), who is listed only
    by ``keyframe_boxes(spec, non_actors=True)``.
    """

    timestamp: int
    person_id: int
    box_xyxy: tuple[float, float, float, float]
    labels: tuple[str, ...]
    visible: float  # fraction of the figure's in-frame pixels not hidden by nearer things


def keyframe_seconds(seconds: int) -> range:
    """AVA seconds with a key frame: 902 .. 900 + seconds - 2 (inclusive)."""
    return range(AVA_FIRST_SECOND + 2, AVA_FIRST_SECOND + seconds - 1)


def keyframe_boxes(spec: VideoSpec, non_actors: bool = False) -> list[KeyframeBox]:
    """Labelled actors at every key frame; with ``non_actors``, the people not acting too.

    Returns one ``KeyframeBox`` per (key frame, listed person), key frames in time order and people in
    track order within one. A person's ``visible`` counts its pixels hidden neither by front
    distractors, the occluder, nor taller (hence nearer) figures. Without ``non_actors`` (the
    default), idle actors and bystanders are not listed; with it they are, every one of them with
    empty ``labels`` and its visibility (the writer decides which are visible enough to write).
    """
    out = []
    for second in keyframe_seconds(spec.seconds):
        frame_index = (second - AVA_FIRST_SECOND) * FPS
        t = frame_index / FPS
        shift = spec.shift_at(frame_index)
        poses = [tr.pose_at(t) for tr in spec.tracks]
        masks = [_mask(figure_parts(tr.style, p, shift), spec) for tr, p in zip(spec.tracks, poses)]
        front = _front_mask(spec, t, shift)
        for tr, pose, mask in zip(spec.tracks, poses, masks):
            labels = tr.labels_at(t)
            if not labels and not non_actors:
                continue
            nearer = [m for other, m in zip(poses, masks) if other.height > pose.height]
            covered = np.logical_or.reduce([front, *nearer])
            visible = float((mask & ~covered).sum()) / max(1, int(mask.sum()))
            x1, y1, x2, y2 = parts_box(figure_parts(tr.style, pose, shift))
            box = (min(max(x1 / spec.width, 0.0), 1.0), min(max(y1 / spec.height, 0.0), 1.0),
                   min(max(x2 / spec.width, 0.0), 1.0), min(max(y2 / spec.height, 0.0), 1.0))
            out.append(KeyframeBox(second, tr.person_id, box, labels, visible))
    return out


def _mask(parts: list[Part], spec: VideoSpec) -> np.ndarray:
    """Boolean [H, W]: the pixels the capsules cover by more than half."""
    canvas = np.zeros((spec.height, spec.width, 1), np.float32)
    draw_parts(canvas, parts, shade=False)
    return canvas[..., 0] > 0.5


def _front_mask(spec: VideoSpec, t: float, shift: int) -> np.ndarray:
    """Boolean [H, W]: the pixels hidden at ``t`` seconds by everything drawn in front of every figure."""
    canvas = np.zeros((spec.height, spec.width, 3), np.float32)
    white = np.full(3, 1.0, np.float32)
    for d in spec.distractors:
        if d.front:
            cx, cy = d.center_at(t, spec.width, spec.height)
            draw_rect(canvas, cx - shift, cy, d.half_w, d.half_h, white, ellipse=d.shape == "ellipse")
    if spec.occluder is not None:
        cx, half_w, top, _ = spec.occluder
        draw_rect(canvas, cx - shift, (top + spec.height) / 2, half_w, (spec.height - top) / 2 + 1, white)
    return canvas[..., 0] > 0.5
