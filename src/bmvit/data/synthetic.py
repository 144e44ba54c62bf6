"""A synthetic dataset in AVA v2.2's real file formats, whose actions need time to tell apart.

It stands in for AVA in tests, benchmarks and the demo (AVA cannot be downloaded on our machines).
Each video shows 2-4 articulated stick figures (head, torso, arms, legs with animated joint angles)
on a textured, slowly panning background, with noise, distractor objects and occlusion. Some
figures are actors whose actions change every few seconds; the others are idle bystanders who carry
no label. A figure's image depends only on its pose (position, size, gait phase, facing, arm and
jump state), never on where it is going, so pairs such as walking left/right, walk/run and
wave/raised hand can be pixel-identical at a key frame (see ``docs/synthetic.md``).

Geometry: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``; boxes are ``x1, y1, x2, y2`` in pixels
inside this module and normalised to [0, 1] in the CSVs (AVA convention). Video time 0.0 is AVA
second 900; key frames are every second from 902 to ``900 + seconds - 2``.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

GENERATOR_VERSION = "1"
FPS = 30
AVA_FIRST_SECOND = 900
# Label ids are 1-based positions in this tuple.
CLASSES: tuple[str, ...] = (
    "walk", "run", "move_left", "move_right", "move_towards", "move_away", "jump", "wave", "spin")
# A horizontal flip is NOT label-preserving here: these classes swap (unlike AVA's).
FLIP_SWAP_PAIRS: tuple[tuple[str, str], ...] = (("move_left", "move_right"),)
CLASS_DESCRIPTIONS: dict[str, str] = {
    "walk": "gait at 0.55-0.75 cycles/s (0.31-0.42 body heights/s), sideways or towards/away",
    "run": "the same gait cycle at 1.4-1.8 cycles/s (0.78-1.0 body heights/s), sideways only",
    "move_left": "translating to the left of the scene (walking or running)",
    "move_right": "translating to the right of the scene (walking or running)",
    "move_towards": "walking towards the camera: grows 16-24% per second, feet move down",
    "move_away": "walking away from the camera: shrinks 16-24% per second, feet move up",
    "jump": "jumping in place every 0.6-0.9 s, 25-35% of the height: crouch, arms up, land",
    "wave": "one arm raised, forearm swinging +-0.7 rad at 1.5-2.2 Hz (a still raised arm: no label)",
    "spin": "turning on the spot once per 0.9-1.3 s: face/hair, chest patch and shirt shade alternate",
}

# Body proportions in units of the standing height; the gait swings the legs by +-SWING radians.
THIGH, SHIN, TORSO, NECK, HEAD_R = 0.245, 0.225, 0.33, 0.09, 0.08
UPPER_ARM, FOREARM = 0.16, 0.15
SWING = 0.3
STRIDE_PER_CYCLE = 4 * (THIGH + SHIN) * math.sin(SWING)  # body heights travelled per gait cycle, feet planted
HEIGHT_RANGE = (0.2, 0.6)  # of the frame height
KINDS = ("idle", "walk", "run", "depth", "jump", "spin")
ARMS = ("swing", "raised", "wave")


@dataclass(frozen=True)
class FigureStyle:
    """Appearance of one figure: RGB colours in 0..255 and shape factors."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shirt: tuple[float, float, float]
    trousers: tuple[float, float, float]
    patch: tuple[float, float, float]
    build: float  # limb/torso width factor
    stripe_amp: float  # clothing stripe contrast
    stripe_period: float  # stripe period in body heights
    ground_ratio: float  # foot_y = horizon + ground_ratio * height (perspective)


@dataclass(frozen=True)
class Motion:
    """Per-figure motion rates; walk and run use the same gait cycle at different rates."""

    walk_rate: float  # gait cycles per second
    run_rate: float
    depth_rate: float  # d ln(height) / dt when walking towards/away
    spin_period: float  # seconds per turn
    jump_period: float  # seconds per jump
    jump_height: float  # in body heights
    wave_rate: float  # forearm oscillations per second


@dataclass(frozen=True)
class BodyState:
    """What carries over from one segment to the next: stage x (px), standing height (px), pose."""

    x: float
    height: float
    phase: float  # gait phase (rad)
    stride: float  # gait amplitude, 0 (feet together) .. 1 (full stride)
    facing: float  # rad; 0 faces the camera, pi faces away


@dataclass(frozen=True)
class Segment:
    """One action of a figure over ``[start, end)`` seconds, starting from ``state0``.

    kind: ``idle`` (stand), ``walk``/``run`` (direction -1 left, +1 right), ``depth`` (+1 towards,
    -1 away), ``jump``, ``spin`` (direction = turning sense). arm: ``swing`` (moves with the gait),
    ``raised`` (still, forearm at ``arm_phase``) or ``wave`` (oscillating from ``arm_phase``).
    """

    kind: str
    start: float
    end: float
    state0: BodyState
    direction: int = 0
    arm: str = "swing"
    arm_side: int = 1
    arm_phase: float = 0.0
    delay: float = 0.0  # jump: seconds standing before the first take-off

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.arm not in ARMS or not self.start < self.end:
            raise ValueError(f"Segment needs kind in {KINDS}, arm in {ARMS} and start < end, got kind={self.kind!r}, "
                             f"arm={self.arm!r}, start={self.start}, end={self.end}")

    @property
    def labels(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.kind in ("walk", "run"):
            names += [self.kind, "move_left" if self.direction < 0 else "move_right"]
        elif self.kind == "depth":
            names += ["walk", "move_towards" if self.direction > 0 else "move_away"]
        elif self.kind in ("jump", "spin"):
            names.append(self.kind)
        if self.arm == "wave":
            names.append("wave")
        return tuple(names)


@dataclass(frozen=True)
class Pose:
    """Everything the image of a figure depends on (stage coordinates, pixels)."""

    x: float
    foot_y: float
    height: float
    lift: float
    crouch: float
    phase: float
    stride: float
    facing: float
    arms_up: float
    arm: str  # "swing" or "raised": a wave is a raised arm whose forearm_phase moves
    arm_side: int
    forearm_phase: float


@dataclass(frozen=True)
class Track:
    """A figure over the whole video: appearance, motion rates and consecutive segments."""

    person_id: int
    style: FigureStyle
    motion: Motion
    horizon: float  # px
    segments: tuple[Segment, ...]

    def segment_at(self, t: float) -> Segment:
        for seg in self.segments:
            if t < seg.end:
                return seg
        return self.segments[-1]

    def labels_at(self, t: float) -> tuple[str, ...]:
        return self.segment_at(t).labels

    def pose_at(self, t: float) -> Pose:
        seg = self.segment_at(t)
        body, lift, crouch, arms_up = _evolve(seg, self.motion, t - seg.start)
        if seg.arm == "wave":
            forearm = seg.arm_phase + 2 * math.pi * self.motion.wave_rate * (t - seg.start)
        else:
            forearm = seg.arm_phase
        return Pose(
            x=body.x, foot_y=self.horizon + self.style.ground_ratio * body.height, height=body.height,
            lift=lift, crouch=crouch, phase=body.phase, stride=body.stride, facing=body.facing,
            arms_up=arms_up, arm="swing" if seg.arm == "swing" else "raised", arm_side=seg.arm_side,
            forearm_phase=forearm,
        )


def _evolve(seg: Segment, motion: Motion, dt: float) -> tuple[BodyState, float, float, float]:
    """Body state ``dt`` seconds into ``seg``, plus (lift px, crouch 0..1, arms_up 0..1)."""
    s = seg.state0
    x, h, phase, stride, facing = s.x, s.height, s.phase, s.stride, s.facing
    lift = crouch = arms_up = 0.0
    if seg.kind in ("walk", "run", "depth"):
        rate = motion.run_rate if seg.kind == "run" else motion.walk_rate
        phase += 2 * math.pi * rate * dt
        stride = 1.0 - (1.0 - stride) * max(0.0, 1.0 - dt / 0.3)  # ease into a full stride
        if seg.kind == "depth":
            h *= math.exp(seg.direction * motion.depth_rate * dt)
        else:
            x += seg.direction * STRIDE_PER_CYCLE * rate * h * dt
    elif seg.kind == "spin":
        facing += seg.direction * 2 * math.pi * dt / motion.spin_period
    elif seg.kind == "jump":
        lift, crouch, arms_up = _jump_profile(seg, motion, dt, h)
    elif seg.kind == "idle":
        x += 0.012 * h * math.sin(2 * math.pi * 0.25 * dt)  # a barely visible sway
    return BodyState(x, h, phase, stride, facing), lift, crouch, arms_up


def _jump_profile(seg: Segment, motion: Motion, dt: float, h: float) -> tuple[float, float, float]:
    period = motion.jump_period
    num_jumps = math.floor((seg.end - seg.start - seg.delay) / period)
    k = (dt - seg.delay) / period
    if k < 0 or k >= num_jumps:
        return 0.0, 0.0, 0.0
    u = k - math.floor(k)
    if u < 0.2:  # crouch before take-off
        return 0.0, math.sin(math.pi * u / 0.2), 0.0
    if u < 0.75:  # airborne: parabola
        v = (u - 0.2) / 0.55
        return 4 * v * (1 - v) * motion.jump_height * h, 0.0, math.sin(math.pi * v)
    return 0.0, 0.8 * math.sin(math.pi * (u - 0.75) / 0.25), 0.0  # landing


# ----------------------------------------------------------------------------------------------
# Drawing: every part is a capsule (thick segment, a disc when both ends coincide) or a rectangle,
# composited with a soft edge inside its own bounding box only.

Part = tuple[float, float, float, float, float, np.ndarray, float, float]  # x0, y0, x1, y1, r, rgb, amp, period


def _unit(angle: float) -> tuple[float, float]:
    """Direction of a limb at ``angle`` rad from straight down, positive towards +x (image y down)."""
    return math.sin(angle), math.cos(angle)


def figure_parts(style: FigureStyle, pose: Pose, shift: float = 0.0) -> list[Part]:
    """The figure's capsules in back-to-front order, image pixel coordinates (stage x minus ``shift``)."""
    h, w = pose.height, style.build
    fc, fs = math.cos(pose.facing), math.sin(pose.facing)
    x = pose.x - shift
    swing = SWING * pose.stride * math.sin(pose.phase)
    legs = []
    for out, leg_swing, leg_phase in ((-1, swing, pose.phase), (1, -swing, pose.phase + math.pi)):
        bend = 0.25 * pose.stride * max(0.0, math.cos(leg_phase)) + 0.75 * pose.crouch
        knee_dir = fs + (1 - abs(fs)) * out  # knees forward in profile, outward from the front
        legs.append((out, leg_swing + bend * knee_dir, leg_swing - bend * knee_dir))
    drop = max(THIGH * math.cos(a) + SHIN * math.cos(b) for _, a, b in legs) * h
    hip_y = pose.foot_y - pose.lift - drop
    neck_y = hip_y - TORSO * h
    parts: list[Part] = []
    shirt, trousers, skin = (np.array(c, np.float32) for c in (style.shirt, style.trousers, style.skin))
    amp, period = style.stripe_amp, style.stripe_period * h
    for out, a_thigh, a_shin in legs:
        hx = x + out * 0.045 * h * w * (0.3 + 0.7 * abs(fc))
        kx, ky = hx + THIGH * h * _unit(a_thigh)[0], hip_y + THIGH * h * _unit(a_thigh)[1]
        fx, fy = kx + SHIN * h * _unit(a_shin)[0], ky + SHIN * h * _unit(a_shin)[1]
        parts += [(hx, hip_y, kx, ky, 0.036 * h * w, trousers, 0.0, 1.0),
                  (kx, ky, fx, fy, 0.032 * h * w, trousers, 0.0, 1.0)]
    torso_r = 0.07 * h * w * (0.6 + 0.4 * abs(fc))
    back_shade = 0.75 + 0.25 * fc  # the shirt's back is darker: a turning figure flickers
    parts.append((x, hip_y - 0.02 * h, x, neck_y + 0.04 * h, torso_r, shirt * back_shade, amp, period))
    if fc > 0.1:  # chest patch only on the front
        half = 0.045 * h * w * fc
        cx = x + 0.03 * h * fs
        patch = np.array(style.patch, np.float32)
        parts.append((cx - half, neck_y + 0.1 * h, cx + half, neck_y + 0.1 * h, 0.022 * h, patch, 0.0, 1.0))
    parts += _arm_parts(pose, x, neck_y, fc, fs, shirt, skin, w)
    head_x, head_y = x, neck_y - NECK * h
    parts.append((head_x, head_y, head_x, head_y, HEAD_R * h, np.array(style.hair, np.float32), 0.0, 1.0))
    face_r = 0.8 * HEAD_R * h * min(1.0, max(0.0, (fc + 0.2) / 0.6))
    if face_r > 0.5:  # skin shows when the figure faces the camera, hair from behind
        fx = head_x + 0.3 * HEAD_R * h * fs
        parts.append((fx, head_y + 0.15 * HEAD_R * h, fx, head_y + 0.15 * HEAD_R * h, face_r, skin, 0.0, 1.0))
    return parts


def _arm_parts(pose: Pose, x: float, neck_y: float, fc: float, fs: float, shirt: np.ndarray,
               skin: np.ndarray, w: float) -> list[Part]:
    h = pose.height
    parts: list[Part] = []
    for out in (-1, 1):
        if pose.arm == "raised" and out == pose.arm_side:
            upper = out * 2.45
            fore = out * (math.pi - 0.2 + 0.7 * math.sin(pose.forearm_phase))
        else:
            upper = -out * SWING * 1.6 * pose.stride * math.sin(pose.phase) + 0.08 * out
            fore = upper + 0.3 * fs
            upper += pose.arms_up * (out * 2.6 - upper)
            fore += pose.arms_up * (out * 2.8 - fore)
        sx, sy = x + out * 0.085 * h * w * (0.35 + 0.65 * abs(fc)), neck_y + 0.03 * h
        ex, ey = sx + UPPER_ARM * h * _unit(upper)[0], sy + UPPER_ARM * h * _unit(upper)[1]
        hx, hy = ex + FOREARM * h * _unit(fore)[0], ey + FOREARM * h * _unit(fore)[1]
        parts += [(sx, sy, ex, ey, 0.034 * h * w, shirt, 0.0, 1.0), (ex, ey, hx, hy, 0.03 * h * w, skin, 0.0, 1.0)]
    return parts


def parts_box(parts: list[Part]) -> tuple[float, float, float, float]:
    """Tight ``x1, y1, x2, y2`` (pixels, unclipped) around capsules."""
    x1 = min(min(p[0], p[2]) - p[4] for p in parts)
    y1 = min(min(p[1], p[3]) - p[4] for p in parts)
    x2 = max(max(p[0], p[2]) + p[4] for p in parts)
    y2 = max(max(p[1], p[3]) + p[4] for p in parts)
    return x1, y1, x2, y2


def _clamp01(a: np.ndarray) -> np.ndarray:
    # in place; np.clip's Python-level dispatch costs more than the maths on these small arrays
    np.maximum(a, 0.0, out=a)
    return np.minimum(a, 1.0, out=a)


def draw_parts(canvas: np.ndarray, parts: list[Part], shade: bool = True) -> None:
    """Composite capsules into ``canvas`` [H, W, C] float32 in place (soft 1-pixel edges)."""
    height, width = canvas.shape[:2]
    for x0, y0, x1, y1, r, rgb, amp, period in parts:
        i0, i1 = max(0, int(min(y0, y1) - r - 1)), min(height, int(max(y0, y1) + r + 2))
        j0, j1 = max(0, int(min(x0, x1) - r - 1)), min(width, int(max(x0, x1) + r + 2))
        if i0 >= i1 or j0 >= j1:
            continue
        ys = np.arange(i0, i1, dtype=np.float32)[:, None] + (0.5 - y0)
        xs = np.arange(j0, j1, dtype=np.float32)[None, :] + (0.5 - x0)
        dx, dy = x1 - x0, y1 - y0
        length2 = dx * dx + dy * dy
        t = _clamp01((xs * dx + ys * dy) / length2) if length2 > 1e-6 else np.zeros((1, 1), np.float32)
        ex, ey = xs - t * dx, ys - t * dy
        dist2 = ex * ex + ey * ey
        # soft edge from the squared distance: ((r + .5)^2 - d^2) / (2r + 1) ~= r + .5 - d near the rim
        alpha = _clamp01(((r + 0.5) ** 2 - dist2) * (1.0 / (2 * r + 1)))
        region = canvas[i0:i1, j0:j1]
        if not shade:
            np.maximum(region, alpha[..., None], out=region)
            continue
        tone = 1.0 - 0.35 * np.minimum(dist2 * (1.0 / max(r * r, 1e-6)), 1.0)  # round limbs
        if amp > 0:
            tone = tone * (1.0 + amp * np.sin(t * (2 * math.pi * math.sqrt(length2) / period)))
        region += alpha[..., None] * (tone[..., None] * rgb - region)


def draw_rect(canvas: np.ndarray, cx: float, cy: float, half_w: float, half_h: float, rgb: np.ndarray,
              ellipse: bool = False, stripes: float = 0.0) -> None:
    """Composite an axis-aligned rectangle or ellipse (centre and half sizes in pixels) in place."""
    height, width = canvas.shape[:2]
    i0, i1 = max(0, int(cy - half_h - 1)), min(height, int(cy + half_h + 2))
    j0, j1 = max(0, int(cx - half_w - 1)), min(width, int(cx + half_w + 2))
    if i0 >= i1 or j0 >= j1:
        return
    dy = np.arange(i0, i1, dtype=np.float32)[:, None] + (0.5 - cy)
    dx = np.arange(j0, j1, dtype=np.float32)[None, :] + (0.5 - cx)
    if ellipse:
        rho = np.sqrt((dx / half_w) ** 2 + (dy / half_h) ** 2)
        alpha = _clamp01((1.0 - rho) * min(half_w, half_h) + 0.5)
    else:
        alpha = _clamp01(np.minimum(half_w + 0.5 - np.abs(dx), half_h + 0.5 - np.abs(dy)))
    region = canvas[i0:i1, j0:j1]
    colour = rgb.astype(np.float32)
    if stripes:  # horizontal bands
        colour = (1.0 + stripes * np.sign(np.sin(dy * (2 * math.pi / 6.0))))[..., None] * colour
    region += alpha[..., None] * (colour - region)


# ----------------------------------------------------------------------------------------------
# Scenes


@dataclass(frozen=True)
class Distractor:
    """A moving non-person object; it bounces inside the stage. ``front`` draws it over people."""

    shape: str  # "ellipse" | "rect" | "bar"
    x0: float
    y0: float
    vx: float
    vy: float
    half_w: float
    half_h: float
    rgb: tuple[float, float, float]
    stripes: float
    front: bool

    def center_at(self, t: float, width: int, height: int) -> tuple[float, float]:
        return (_bounce(self.x0 + self.vx * t, self.half_w, width - self.half_w),
                _bounce(self.y0 + self.vy * t, self.half_h, height - self.half_h))


def _bounce(p: float, lo: float, hi: float) -> float:
    span = hi - lo
    if span <= 0:
        return lo
    m = (p - lo) % (2 * span)
    return lo + (m if m < span else 2 * span - m)


@dataclass(frozen=True)
class VideoSpec:
    """Everything needed to render one video; ``render_frame(spec, k)`` is a pure function of it."""

    width: int
    height: int
    num_frames: int
    horizon: float
    background: np.ndarray  # [H, W + 2 * pan_amp + 1, 3] float32
    pan_amp: int  # px
    pan_period: float  # s
    pan_phase: float
    tracks: tuple[Track, ...]  # actors first; person_id = index
    num_actors: int
    distractors: tuple[Distractor, ...]
    occluder: tuple[float, float, float, tuple[float, float, float]] | None  # stage cx, half_w, top_y, rgb
    noise_bank: np.ndarray  # [K, H + 16, W + 16, 3] float32, already scaled by sigma
    noise_choice: np.ndarray  # [num_frames, 3] int: bank index, dy, dx
    seconds: int = 0

    def shift_at(self, frame_index: int) -> int:
        """Camera pan in whole pixels (stage x = image x + shift)."""
        t = frame_index / FPS
        return int(round(self.pan_amp * math.sin(2 * math.pi * t / self.pan_period + self.pan_phase)))


def render_frame(spec: VideoSpec, frame_index: int) -> np.ndarray:
    """Frame ``frame_index`` (time ``frame_index / FPS`` s) as uint8 RGB ``[H, W, 3]``."""
    if not 0 <= frame_index < spec.num_frames:
        raise IndexError(f"frame_index must be in [0, {spec.num_frames}), got {frame_index}")
    t = frame_index / FPS
    shift = spec.shift_at(frame_index)
    off = shift + spec.pan_amp
    canvas = spec.background[:, off:off + spec.width].copy()
    for d in spec.distractors:
        if not d.front:
            _draw_distractor(canvas, d, t, shift, spec)
    for track, pose in sorted(((tr, tr.pose_at(t)) for tr in spec.tracks), key=lambda tp: tp[1].height):
        draw_parts(canvas, figure_parts(track.style, pose, shift))
    for d in spec.distractors:
        if d.front:
            _draw_distractor(canvas, d, t, shift, spec)
    if spec.occluder is not None:
        cx, half_w, top, rgb = spec.occluder
        draw_rect(canvas, cx - shift, (top + spec.height) / 2, half_w, (spec.height - top) / 2 + 1, np.array(rgb),
                  stripes=0.08)
    k, dy, dx = spec.noise_choice[frame_index]
    canvas += spec.noise_bank[k, dy:dy + spec.height, dx:dx + spec.width]
    np.maximum(canvas, 0.0, out=canvas)
    np.minimum(canvas, 255.0, out=canvas)
    return canvas.astype(np.uint8)


def _draw_distractor(canvas: np.ndarray, d: Distractor, t: float, shift: int, spec: VideoSpec) -> None:
    cx, cy = d.center_at(t, spec.width, spec.height)
    draw_rect(canvas, cx - shift, cy, d.half_w, d.half_h, np.array(d.rgb), ellipse=d.shape == "ellipse",
              stripes=d.stripes)


def _random_colour(rng: np.random.Generator, lo: float = 40.0, hi: float = 235.0) -> tuple[float, float, float]:
    return tuple(float(v) for v in rng.uniform(lo, hi, size=3))  # type: ignore[return-value]


def _make_background(rng: np.random.Generator, width: int, height: int, horizon: float) -> np.ndarray:
    """A wall (blocks, windows, smooth noise) above the horizon and a banded ground below it."""
    from scipy.ndimage import zoom

    ys = np.arange(height, dtype=np.float32)[:, None, None]
    wall, ground = np.array(_random_colour(rng, 60, 200)), np.array(_random_colour(rng, 50, 190))
    img = np.where(ys < horizon, wall, ground).astype(np.float32) * np.ones((1, width, 1), np.float32)
    for _ in range(int(rng.integers(4, 9))):  # buildings / panels / windows
        x0, w = rng.uniform(0, width), rng.uniform(0.04, 0.2) * width
        y0 = rng.uniform(0, horizon * 0.8)
        y1 = min(horizon, y0 + rng.uniform(0.1, 0.5) * height)
        img[int(y0):int(y1), int(x0):int(x0 + w)] = _random_colour(rng, 40, 220)
    bands = np.sin(18.0 * np.log1p(np.maximum(ys - horizon, 0.0) / 8.0))  # ground tiles, denser far away
    img += np.where(ys >= horizon, 10.0 * np.sign(bands), 0.0).astype(np.float32)
    for cell, strength in ((24, 22.0), (6, 10.0)):  # smooth mottling, mostly in brightness
        grid = rng.normal(0.0, strength, size=(height // cell + 2, width // cell + 2, 1)).astype(np.float32)
        grid = grid + rng.normal(0.0, 0.3 * strength, size=grid.shape[:2] + (3,)).astype(np.float32)
        img += zoom(grid, (cell, cell, 1), order=1)[:height, :width]
    return np.clip(img, 0.0, 255.0)


def _random_style(rng: np.random.Generator, ratio_max: float) -> FigureStyle:
    skins = ((241, 194, 160), (224, 172, 125), (198, 134, 90), (141, 85, 56), (92, 58, 38))
    hairs = ((30, 25, 20), (80, 50, 30), (150, 110, 60), (200, 180, 120), (90, 90, 95))
    shirt = _random_colour(rng)
    return FigureStyle(
        skin=tuple(float(v) for v in skins[int(rng.integers(len(skins)))]),  # type: ignore[arg-type]
        hair=tuple(float(v) for v in hairs[int(rng.integers(len(hairs)))]),  # type: ignore[arg-type]
        shirt=shirt, trousers=_random_colour(rng, 20, 160),
        patch=tuple(float(255 - v) for v in shirt),  # type: ignore[arg-type]
        build=float(rng.uniform(0.8, 1.25)), stripe_amp=float(rng.choice([0.0, rng.uniform(0.1, 0.3)])),
        stripe_period=float(rng.uniform(0.04, 0.1)), ground_ratio=float(rng.uniform(0.85, ratio_max)),
    )


def _random_motion(rng: np.random.Generator) -> Motion:
    return Motion(
        walk_rate=float(rng.uniform(0.55, 0.75)), run_rate=float(rng.uniform(1.4, 1.8)),
        depth_rate=float(rng.uniform(0.16, 0.24)), spin_period=float(rng.uniform(0.9, 1.3)),
        jump_period=float(rng.uniform(0.6, 0.9)), jump_height=float(rng.uniform(0.25, 0.35)),
        wave_rate=float(rng.uniform(1.5, 2.2)),
    )


@dataclass(frozen=True)
class _Stage:
    width: int
    height: int
    margin: float  # px kept free at the sides (covers the pan)

    def x_bounds(self, h: float) -> tuple[float, float]:
        return 0.3 * h + self.margin, self.width - 0.3 * h - self.margin

    def h_bounds(self) -> tuple[float, float]:
        return HEIGHT_RANGE[0] * self.height, HEIGHT_RANGE[1] * self.height


def _max_duration(kind: str, direction: int, state: BodyState, motion: Motion, stage: _Stage) -> float:
    """How long ``kind`` can go on from ``state`` before the figure leaves the stage or its size range."""
    h_lo, h_hi = stage.h_bounds()
    if kind in ("walk", "run"):
        lo, hi = stage.x_bounds(state.height)
        rate = motion.run_rate if kind == "run" else motion.walk_rate
        room = (state.x - lo) if direction < 0 else (hi - state.x)
        return max(0.0, room) / (STRIDE_PER_CYCLE * rate * state.height)
    if kind == "depth":
        limit = h_hi if direction > 0 else h_lo
        span = direction * math.log(limit / state.height) / motion.depth_rate
        if direction > 0:  # a growing figure must still fit between the sides
            lo, hi = stage.x_bounds(state.height * math.exp(motion.depth_rate * span))
            while span > 0 and not lo <= state.x <= hi:
                span -= 0.5
                lo, hi = stage.x_bounds(state.height * math.exp(motion.depth_rate * span))
        return max(0.0, span)
    return math.inf


# (kind, weight) for an actor's next segment; run and depth are drawn often because they often do
# not fit on the stage (or in the size range) for 2 s and fall back to another kind.
# "stand" is idle with a wave; "idle" actors carry no label while idle.
_ACTOR_KINDS = (("walk", 0.16), ("run", 0.24), ("depth", 0.3), ("jump", 0.11), ("spin", 0.1), ("stand", 0.06),
                ("idle", 0.03))


def _plan_actor(rng: np.random.Generator, motion: Motion, state: BodyState, stage: _Stage,
                seconds: float) -> tuple[Segment, ...]:
    """Consecutive segments; boundaries fall on half seconds so key frames are >= 0.5 s from a change."""
    segments: list[Segment] = []
    t = 0.0
    names = [k for k, _ in _ACTOR_KINDS]
    weights = np.array([w for _, w in _ACTOR_KINDS])
    while t < seconds:
        duration = float(rng.integers(2, 6)) + (0.5 if t == 0 else 0.0)
        while True:
            kind = names[int(rng.choice(len(names), p=weights / weights.sum()))]
            direction = int(rng.choice([-1, 1]))
            fit = _max_duration(kind if kind != "stand" else "idle", direction, state, motion, stage)
            if kind in ("walk", "run", "depth") and fit < duration:
                direction = -direction
                fit = _max_duration(kind, direction, state, motion, stage)
            if fit >= duration:
                break
            head = 0.5 if t == 0 else 0.0
            usable = math.floor(fit - head) + head  # shorten, keeping boundaries on half seconds
            if usable >= 2.0:
                duration = usable
                break
        seg = _make_segment(rng, kind, direction, t, t + duration, state, motion)
        segments.append(seg)
        state = _evolve(seg, motion, duration)[0]
        t += duration
    return tuple(segments)


def _make_segment(rng: np.random.Generator, kind: str, direction: int, start: float, end: float,
                  state: BodyState, motion: Motion) -> Segment:
    arm = "swing"
    if kind == "stand" or (kind in ("walk", "depth") and rng.random() < 0.3):
        arm = "wave"
    elif kind in ("walk", "run", "depth", "spin", "idle") and rng.random() < 0.12:
        arm = "raised"  # a still raised hand: looks like a wave in one frame, carries no label
    return Segment(
        kind="idle" if kind == "stand" else kind, start=start, end=end, state0=state, direction=direction,
        arm=arm, arm_side=int(rng.choice([-1, 1])), arm_phase=float(rng.uniform(0, 2 * math.pi)),
        delay=float(rng.uniform(0, motion.jump_period)),
    )


def create_video_spec(rng: np.random.Generator, size: tuple[int, int] = (320, 240), seconds: int = 30) -> VideoSpec:
    """Draw a random scene: 2-4 figures (1-3 actors), 1-3 distractors, maybe a foreground pillar."""
    width, height = size
    pan_amp = int(round(rng.uniform(0.01, 0.04) * width))
    horizon = float(rng.uniform(0.3, 0.4) * height)
    stage = _Stage(width, height, margin=pan_amp + 2.0)
    num_people = int(rng.integers(2, 5))
    num_actors = int(rng.integers(1, min(3, num_people) + 1))
    ratio_max = min(1.05, (0.985 * height - horizon) / (HEIGHT_RANGE[1] * height))
    tracks, placed = [], []
    for pid in range(num_people):
        style, motion = _random_style(rng, ratio_max), _random_motion(rng)
        h_lo, h_hi = stage.h_bounds()
        h = float(math.exp(rng.uniform(math.log(h_lo), math.log(h_hi))))
        lo, hi = stage.x_bounds(h)
        x = float(rng.uniform(lo, hi))
        for _ in range(10):  # spread people out at the start
            if all(abs(x - px) > 0.2 * (h + ph) for px, ph in placed):
                break
            x = float(rng.uniform(lo, hi))
        placed.append((x, h))
        state = BodyState(x, h, phase=float(rng.uniform(0, 2 * math.pi)), stride=float(rng.uniform(0.0, 1.0)),
                          facing=float(rng.uniform(0, 2 * math.pi)))
        if pid < num_actors:
            segments = _plan_actor(rng, motion, state, stage, seconds)
        else:
            arm = "raised" if rng.random() < 0.25 else "swing"
            segments = (Segment("idle", 0.0, float(seconds), state, arm=arm, arm_side=int(rng.choice([-1, 1])),
                                arm_phase=float(rng.uniform(0, 2 * math.pi))),)
        tracks.append(Track(pid, style, motion, horizon, segments))
    return VideoSpec(
        width=width, height=height, num_frames=seconds * FPS, horizon=horizon,
        background=_make_background(rng, width + 2 * pan_amp + 1, height, horizon),
        pan_amp=pan_amp, pan_period=float(rng.uniform(15, 40)), pan_phase=float(rng.uniform(0, 2 * math.pi)),
        tracks=tuple(tracks), num_actors=num_actors, distractors=_random_distractors(rng, width, height),
        occluder=_random_occluder(rng, width, height), noise_bank=_noise_bank(rng, width, height),
        noise_choice=np.stack([rng.integers(0, 4, seconds * FPS), rng.integers(0, 17, seconds * FPS),
                               rng.integers(0, 17, seconds * FPS)], axis=1),
        seconds=seconds,
    )


def _random_distractors(rng: np.random.Generator, width: int, height: int) -> tuple[Distractor, ...]:
    out = []
    for _ in range(int(rng.integers(1, 4))):
        shape = str(rng.choice(["ellipse", "rect", "bar"]))
        if shape == "bar":  # person-sized upright bar: not a person
            half_w, half_h = rng.uniform(0.02, 0.045) * height, rng.uniform(0.1, 0.25) * height
        else:
            half_w, half_h = rng.uniform(0.03, 0.12, size=2) * height
        speed = 0.0 if rng.random() < 0.2 else rng.uniform(0.05, 0.35) * width
        angle = rng.uniform(0, 2 * math.pi)
        out.append(Distractor(
            shape=shape, x0=float(rng.uniform(0, width)), y0=float(rng.uniform(0, height)),
            vx=float(speed * math.cos(angle)), vy=float(0.4 * speed * math.sin(angle)),
            half_w=float(half_w), half_h=float(half_h), rgb=_random_colour(rng),
            stripes=float(rng.choice([0.0, 0.2])), front=bool(rng.random() < 0.3),
        ))
    return tuple(out)


def _random_occluder(rng: np.random.Generator, width: int,
                     height: int) -> tuple[float, float, float, tuple[float, float, float]] | None:
    """A static pillar in front of everything (stage cx, half width, top y, colour), in 60% of videos."""
    if rng.random() >= 0.6:
        return None
    return (float(rng.uniform(0.15, 0.85) * width), float(rng.uniform(0.015, 0.04) * width),
            float(rng.uniform(0.0, 0.5) * height), _random_colour(rng, 30, 200))


def _noise_bank(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    sigma = rng.uniform(2.0, 7.0)
    return (rng.standard_normal((4, height + 16, width + 16, 3), dtype=np.float32) * sigma).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Annotations


@dataclass(frozen=True)
class KeyframeBox:
    """One labelled actor at a key frame: box normalised ``x1, y1, x2, y2`` (clipped), labels, visibility."""

    timestamp: int
    person_id: int
    box_xyxy: tuple[float, float, float, float]
    labels: tuple[str, ...]
    visible: float  # fraction of the figure's in-frame pixels not hidden by nearer things


def keyframe_seconds(seconds: int) -> range:
    """AVA seconds with a key frame: 902 .. 900 + seconds - 2 (inclusive)."""
    return range(AVA_FIRST_SECOND + 2, AVA_FIRST_SECOND + seconds - 1)


def keyframe_boxes(spec: VideoSpec) -> list[KeyframeBox]:
    """Labelled actors at every key frame (idle actors and bystanders are not listed)."""
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
            if not labels:
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
    canvas = np.zeros((spec.height, spec.width, 1), np.float32)
    draw_parts(canvas, parts, shade=False)
    return canvas[..., 0] > 0.5


def _front_mask(spec: VideoSpec, t: float, shift: int) -> np.ndarray:
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


# ----------------------------------------------------------------------------------------------
# Writing the dataset

SPLITS = ("train", "val")
EXCLUDE_BELOW_VISIBLE = 0.25  # a val key frame is excluded when an actor shows less than this


@dataclass
class SyntheticSummary:
    """What ``write_synthetic_dataset`` wrote, with the statistics a user checks first."""

    root: Path
    seed: int
    size: tuple[int, int]
    seconds: int
    videos: dict[str, list[str]]  # split -> video ids
    keyframes: dict[str, int]  # split -> key frames (excluded ones included)
    rows: dict[str, int]  # split -> CSV rows
    actors: dict[str, int]  # split -> (key frame, actor) pairs
    people: dict[str, int]  # split -> (key frame, person) pairs, bystanders and idle actors included
    class_counts: dict[str, dict[str, int]]  # split -> class name -> actors with that label
    excluded: list[tuple[str, int]]
    seconds_taken: float = 0.0

    def describe(self) -> str:
        lines = [f"synthetic AVA-format dataset v{GENERATOR_VERSION} (seed {self.seed}) in {self.root}",
                 f"  {self.size[0]}x{self.size[1]} px, {FPS} fps, {self.seconds} s per video"]
        for split in SPLITS:
            k = self.keyframes[split]
            lines.append(f"  {split}: {len(self.videos[split])} videos, {k} key frames, {self.rows[split]} rows, "
                         f"{self.actors[split] / max(1, k):.2f} actors and {self.people[split] / max(1, k):.2f} people "
                         "per key frame")
        lines.append(f"  val key frames excluded (an actor < {EXCLUDE_BELOW_VISIBLE:.0%} visible): "
                     f"{len(self.excluded)}")
        lines.append("  class frequencies (actors with the label, train / val):")
        for name in CLASSES:
            lines.append(f"    {CLASSES.index(name) + 1:2d} {name:13s} {self.class_counts['train'].get(name, 0):5d} / "
                         f"{self.class_counts['val'].get(name, 0):5d}")
        lines.append(f"  took {self.seconds_taken:.1f} s")
        return "\n".join(lines)


@dataclass(frozen=True)
class _VideoJob:
    root: str
    split: str
    index: int
    seed: int
    size: tuple[int, int]
    seconds: int
    frames: bool

    @property
    def video_id(self) -> str:
        return f"syn_{self.split}_{self.index:03d}"


def create_split_video_spec(seed: int, split: str, index: int, size: tuple[int, int] = (320, 240),
                            seconds: int = 30) -> VideoSpec:
    """The scene of video ``index`` of ``split`` in the dataset written with ``seed``.

    Each (split, video) has its own seed stream, so val never shares draws with train and a video
    does not change when the number of videos does.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, SPLITS.index(split), index]))
    return create_video_spec(rng, size, seconds)


def _run_job(job: _VideoJob) -> tuple[list[KeyframeBox], int]:
    spec = create_split_video_spec(job.seed, job.split, job.index, job.size, job.seconds)
    path = Path(job.root) / "videos" / f"{job.video_id}.mp4"
    encode_video(spec, path)
    if job.frames:
        extract_frames(path, Path(job.root) / "frames" / job.video_id, job.video_id)
    boxes = keyframe_boxes(spec)
    return boxes, len(spec.tracks)


def encode_video(spec: VideoSpec, path: Path) -> None:
    """Render every frame and write H.264 (libx264, yuv420p, one I-frame per second) at 30 fps."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        # One encoder thread, fixed GOP: identical bytes for a seed on any machine and quick seeking.
        stream = container.add_stream("libx264", rate=FPS, options={
            "crf": "23", "preset": "ultrafast", "x264-params": "keyint=30:min-keyint=30:scenecut=0:threads=1"})
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        for k in range(spec.num_frames):
            frame = av.VideoFrame.from_ndarray(render_frame(spec, k), format="rgb24")
            frame.pts = k
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def extract_frames(video_path: Path, out_dir: Path, video_id: str) -> int:
    """Decode ``video_path`` to ``out_dir/<video_id>_%06d.jpg`` (000001 = time 0), as AVA's ffmpeg step."""
    import av
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with av.open(str(video_path)) as container:
        for frame in container.decode(video=0):
            count += 1
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(out_dir / f"{video_id}_{count:06d}.jpg", quality=90)
    return count


def write_label_map(path: Path) -> None:
    """The official multi-line ``item { name: "..." id: N }`` layout, ids 1-based in ``CLASSES`` order."""
    path.write_text("".join(f'item {{\n  name: "{name}"\n  id: {i}\n}}\n' for i, name in enumerate(CLASSES, 1)))


def write_synthetic_dataset(out_dir: str | os.PathLike, seed: int, num_videos: int = 24, num_val_videos: int = 8,
                            seconds: int = 30, size: tuple[int, int] = (320, 240), frames: bool = False,
                            workers: int | None = None) -> SyntheticSummary:
    """Write the synthetic dataset in AVA v2.2's layout under ``out_dir`` and return what was written.

    Args:
        out_dir: dataset root (created; files of the same names are overwritten, other files left alone).
        seed: everything is drawn from numpy Generators seeded from this; same seed, same files.
        num_videos / num_val_videos: train / val videos (val uses its own seed stream: held out).
        seconds: video length, >= 4 (key frames at AVA seconds 902 .. 900 + seconds - 2).
        size: (width, height) in pixels, both even (yuv420p).
        frames: also decode every video to ``frames/<vid>/<vid>_%06d.jpg``.
        workers: processes rendering videos in parallel (default: up to 2, one video each).
    """
    width, height = size
    if seconds < 4:
        raise ValueError(f"seconds must be >= 4 to have a key frame (902 .. 900 + seconds - 2), got {seconds}")
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise ValueError(f"size must be even and at least 64x64 (H.264 yuv420p), got {width}x{height}")
    if num_videos < 1 or num_val_videos < 1:
        raise ValueError(f"need at least one train and one val video, got {num_videos} and {num_val_videos}")
    start = time.perf_counter()
    root = Path(out_dir)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "frame_lists").mkdir(parents=True, exist_ok=True)
    jobs = [_VideoJob(str(root), split, i, seed, (width, height), seconds, frames)
            for split, n in (("train", num_videos), ("val", num_val_videos)) for i in range(n)]
    results = _run_jobs(jobs, workers)
    summary = SyntheticSummary(root=root, seed=seed, size=(width, height), seconds=seconds,
                               videos={s: [j.video_id for j in jobs if j.split == s] for s in SPLITS},
                               keyframes={}, rows={}, actors={}, people={}, class_counts={}, excluded=[])
    for split in SPLITS:
        _write_split(root, split, [(j, r) for j, r in zip(jobs, results) if j.split == split], seconds, summary)
    write_label_map(root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    with open(root / "annotations" / "ava_val_excluded_timestamps_v2.2.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows((vid, f"{ts:04d}") for vid, ts in summary.excluded)
    summary.seconds_taken = time.perf_counter() - start
    (root / "README.txt").write_text(_readme(summary, num_videos, num_val_videos, frames))
    return summary


def _run_jobs(jobs: list[_VideoJob], workers: int | None) -> list[tuple[list[KeyframeBox], int]]:
    workers = min(len(jobs), workers if workers is not None else min(2, os.cpu_count() or 1))
    if workers <= 1:
        return [_run_job(job) for job in jobs]
    # Processes: rendering is many small numpy calls and PyAV encodes holding the GIL, so threads
    # give no speed-up. fork (Linux) needs no `__main__` guard in the caller; the children use only
    # numpy and PyAV, never a thread pool inherited from the parent.
    method = "fork" if "fork" in get_all_start_methods() and sys.platform.startswith("linux") else "spawn"
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context(method)) as pool:
        return list(pool.map(_run_job, jobs))


def _write_split(root: Path, split: str, done: list[tuple[_VideoJob, tuple[list[KeyframeBox], int]]],
                 seconds: int, summary: SyntheticSummary) -> None:
    rows, counts, num_actors = [], Counter(), 0
    for job, (boxes, _num_people) in done:
        excluded = {b.timestamp for b in boxes if split == "val" and b.visible < EXCLUDE_BELOW_VISIBLE}
        summary.excluded += [(job.video_id, ts) for ts in sorted(excluded)]
        num_actors += len(boxes)
        for b in boxes:
            counts.update(b.labels)
            x1, y1, x2, y2 = b.box_xyxy
            for name in sorted(b.labels, key=CLASSES.index):
                rows.append((job.video_id, f"{b.timestamp:04d}", f"{x1:.3f}", f"{y1:.3f}", f"{x2:.3f}", f"{y2:.3f}",
                             CLASSES.index(name) + 1, b.person_id))
    with open(root / "annotations" / f"ava_{split}_v2.2.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    with open(root / "frame_lists" / f"{split}.csv", "w") as f:
        f.write("original_vido_id video_id frame_id path labels\n")
        for idx, (job, _) in enumerate(done):
            vid = job.video_id
            f.writelines(f'{vid} {idx} {k} {vid}/{vid}_{k + 1:06d}.jpg ""\n' for k in range(seconds * FPS))
    num_keyframes = len(done) * len(keyframe_seconds(seconds))
    summary.keyframes[split], summary.rows[split], summary.actors[split] = num_keyframes, len(rows), num_actors
    summary.people[split] = sum(n for _, (_, n) in done) * len(keyframe_seconds(seconds))
    summary.class_counts[split] = dict(counts)


def _readme(summary: SyntheticSummary, num_videos: int, num_val_videos: int, frames: bool) -> str:
    classes = "\n".join(f"  {i:2d} {name:13s} {CLASS_DESCRIPTIONS[name]}" for i, name in enumerate(CLASSES, 1))
    return f"""Synthetic AVA-format dataset written by bmvit (generator version {GENERATOR_VERSION}).
Re-create it with: bmvit synth --out DIR --seed {summary.seed} --videos {num_videos} --val-videos {num_val_videos} \
--seconds {summary.seconds} --size {summary.size[0]}x{summary.size[1]}{' --frames' if frames else ''}

Rendered stick figures on a panning textured background. Actors carry one or more labels per key
frame; idle bystanders (and actors standing idle) carry none and are not in the CSVs. A figure's
image depends only on its pose, not on where it is going: several classes cannot be told apart
from one frame. A horizontal flip swaps move_left and move_right.

Classes (ids in annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt):
{classes}

Layout (AVA v2.2 / PySlowFast): videos/<vid>.mp4 (H.264, {FPS} fps, time 0 = AVA second {AVA_FIRST_SECOND}),
frames/<vid>/<vid>_%06d.jpg (with --frames; 000001 = time 0), annotations/ava_{{train,val}}_v2.2.csv
(video_id,timestamp,x1,y1,x2,y2,action_id,person_id), annotations/ava_val_excluded_timestamps_v2.2.csv,
frame_lists/{{train,val}}.csv. Key frames every second from 0902 to {AVA_FIRST_SECOND + summary.seconds - 2:04d}.

{summary.describe()}
"""


def plot_keyframes(root: str | os.PathLike, out_png: str | os.PathLike, n: int = 6, split: str = "val",
                   columns: int = 3) -> list[tuple[str, int]]:
    """Draw ``n`` key frames of ``split`` (spread over its videos) with their ground-truth boxes and labels.

    Reads only the files on disk (the CSV, the label map, the mp4s), so the figure shows what a
    reader of the dataset gets. Returns the ``(video_id, timestamp)`` pairs drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    names = {i: name for i, name in enumerate(CLASSES, 1)}
    people: dict[tuple[str, int], dict[int, tuple[list[float], list[str]]]] = {}
    with open(root / "annotations" / f"ava_{split}_v2.2.csv", newline="") as f:
        for vid, ts, x1, y1, x2, y2, action, pid in csv.reader(f):
            box = [float(x1), float(y1), float(x2), float(y2)]
            people.setdefault((vid, int(ts)), {}).setdefault(int(pid), (box, []))[1].append(names[int(action)])
    keys = sorted(people)
    if not keys:
        raise ValueError(f"{root / 'annotations' / f'ava_{split}_v2.2.csv'}: no annotated key frames to draw")
    chosen = [keys[int(i)] for i in np.linspace(0, len(keys) - 1, min(n, len(keys)))]
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    for ax, (vid, ts) in zip(axes.flat, chosen):
        image = _decode_frame(root / "videos" / f"{vid}.mp4", (ts - AVA_FIRST_SECOND) * FPS)
        height, width = image.shape[:2]
        ax.imshow(image)
        by_x = sorted(people[(vid, ts)].items(), key=lambda item: item[1][0][0])
        for rank, (pid, (box, labels)) in enumerate(by_x):
            x1, y1, x2, y2 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
            colour = palette(pid % 10)
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
            above = rank % 2 == 0  # alternate above/below from left to right so neighbours' labels do not overlap
            ax.text(x1, y1 - 2 if above else y2 + 2, f"{pid}: " + ", ".join(labels), color="white", fontsize=7,
                    va="bottom" if above else "top", bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "linewidth": 0})
        ax.set_title(f"{vid} @ {ts:04d}", fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return chosen


def _decode_frame(path: Path, index: int) -> np.ndarray:
    """Frame ``index`` (0-based) of a video as uint8 RGB [H, W, 3], decoding from the start."""
    import av

    with av.open(str(path)) as container:
        for k, frame in enumerate(container.decode(video=0)):
            if k == index:
                return frame.to_ndarray(format="rgb24")
    raise ValueError(f"{path}: has no frame {index}")
