"""What a synthetic scene is and how it moves: the action classes, the stick-figure body model and the
specification of one video. Nothing in this module draws pixels or makes random choices.

A ``Track`` is one figure: its appearance (``FigureStyle``), its personal motion rates (``Motion``)
and consecutive ``Segment``s, one action each. ``Track.pose_at(t)`` gives the ``Pose`` that alone
decides the figure's image at time ``t``; ``Track.labels_at(t)`` gives its ground-truth labels. Since
the image depends on the pose and not on where the figure is heading, walking left/right, walk/run
and wave/raised hand can look identical in one frame (see ``docs/synthetic.md``). ``VideoSpec``
bundles the tracks with the background, camera pan, distractors, occluder and noise;
``render.render_frame`` turns it into pixels and ``generate.create_video_spec`` draws one at random.

Units: stage pixels (the background before the camera pan), radians, and seconds from the first frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

FPS = 30
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
KINDS = ("idle", "walk", "run", "depth", "jump", "spin")
ARMS = ("swing", "raised", "wave")


# ----------------------------------------------------------------------------------------------
# Figures


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
        """The class names this segment carries, in ``CLASSES`` vocabulary; empty for an unlabelled idle."""
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
        """The segment running at ``t`` seconds; past the end, the last one."""
        for seg in self.segments:
            if t < seg.end:
                return seg
        return self.segments[-1]

    def labels_at(self, t: float) -> tuple[str, ...]:
        """The ground-truth class names at ``t`` seconds (empty while unlabelled)."""
        return self.segment_at(t).labels

    def pose_at(self, t: float) -> Pose:
        """The figure's ``Pose`` at ``t`` seconds, which is all its image depends on."""
        seg = self.segment_at(t)
        body, lift, crouch, arms_up = evolve(seg, self.motion, t - seg.start)
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


def evolve(seg: Segment, motion: Motion, dt: float) -> tuple[BodyState, float, float, float]:
    """Advance ``seg`` by ``dt`` seconds from its start.

    Returns the ``BodyState`` then (what the next segment starts from), plus the jump's transient
    lift (px), crouch (0..1) and arms_up (0..1), which do not carry over.
    """
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
    """(lift px, crouch, arms_up) ``dt`` seconds into a jump segment: only whole jumps fit in it."""
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
# The whole video


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
        """The object's centre (stage px) at ``t`` seconds, reflected off the edges of a ``width x height`` stage."""
        return (_bounce(self.x0 + self.vx * t, self.half_w, width - self.half_w),
                _bounce(self.y0 + self.vy * t, self.half_h, height - self.half_h))


def _bounce(p: float, lo: float, hi: float) -> float:
    """``p`` folded into ``[lo, hi]`` as if reflected at each end (``lo`` when the range is empty)."""
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
