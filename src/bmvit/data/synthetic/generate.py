"""Random scenes: ``create_video_spec`` draws a whole ``VideoSpec`` from a numpy ``Generator``.

Everything random about a video is drawn here, in a fixed order, so the same generator state gives
the same scene and therefore the same pixels and labels. Actors get a plan of actions that each
last 2-5 s, start and end on half seconds (so no key frame is within 0.5 s of a change) and keep
the figure on the stage and within its size range; bystanders stand idle for the whole video.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bmvit.data.synthetic.scene import (
    FPS,
    STRIDE_PER_CYCLE,
    BodyState,
    Distractor,
    FigureStyle,
    Motion,
    Segment,
    Track,
    VideoSpec,
    evolve,
)

HEIGHT_RANGE = (0.2, 0.6)  # standing heights, as a fraction of the frame height

# (kind, weight) for an actor's next segment; run and depth are drawn often because they often do
# not fit on the stage (or in the size range) for 2 s and fall back to another kind.
# "stand" is idle with a wave; "idle" actors carry no label while idle.
_ACTOR_KINDS = (("walk", 0.16), ("run", 0.24), ("depth", 0.3), ("jump", 0.11), ("spin", 0.1), ("stand", 0.06),
                ("idle", 0.03))


def create_video_spec(rng: np.random.Generator, size: tuple[int, int] = (320, 240), seconds: int = 30) -> VideoSpec:
    """Draw a random scene: 2-4 figures (1-3 actors), 1-3 distractors, maybe a foreground pillar.

    Returns the ``VideoSpec`` of a ``seconds``-long video of ``size`` = (width, height) pixels; actors
    are the first ``num_actors`` tracks.
    """
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


@dataclass(frozen=True)
class _Stage:
    """Where a figure of a given height may stand without leaving the frame under the camera pan."""

    width: int
    height: int
    margin: float  # px kept free at the sides (covers the pan)

    def x_bounds(self, h: float) -> tuple[float, float]:
        """(lowest, highest) stage x for a figure ``h`` px tall."""
        return 0.3 * h + self.margin, self.width - 0.3 * h - self.margin

    def h_bounds(self) -> tuple[float, float]:
        """(smallest, largest) standing height in px."""
        return HEIGHT_RANGE[0] * self.height, HEIGHT_RANGE[1] * self.height


def _random_style(rng: np.random.Generator, ratio_max: float) -> FigureStyle:
    """A random appearance; ``ratio_max`` caps how low on the ground the figure may stand."""
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
    """Random per-figure rates, inside the ranges ``CLASS_DESCRIPTIONS`` promises."""
    return Motion(
        walk_rate=float(rng.uniform(0.55, 0.75)), run_rate=float(rng.uniform(1.4, 1.8)),
        depth_rate=float(rng.uniform(0.16, 0.24)), spin_period=float(rng.uniform(0.9, 1.3)),
        jump_period=float(rng.uniform(0.6, 0.9)), jump_height=float(rng.uniform(0.25, 0.35)),
        wave_rate=float(rng.uniform(1.5, 2.2)),
    )


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
        state = evolve(seg, motion, duration)[0]
        t += duration
    return tuple(segments)


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


def _make_segment(rng: np.random.Generator, kind: str, direction: int, start: float, end: float,
                  state: BodyState, motion: Motion) -> Segment:
    """A segment of ``kind`` (``stand`` becomes an idle wave) with a random arm, arm side, arm phase and jump delay."""
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


def _random_distractors(rng: np.random.Generator, width: int, height: int) -> tuple[Distractor, ...]:
    """1-3 objects (ellipses, rectangles, person-sized bars), a fifth of them still, some drawn in front."""
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
    """Four oversized Gaussian noise images of one random sigma; each frame adds a shifted crop of one."""
    sigma = rng.uniform(2.0, 7.0)
    return (rng.standard_normal((4, height + 16, width + 16, 3), dtype=np.float32) * sigma).astype(np.float32)


def _random_colour(rng: np.random.Generator, lo: float = 40.0, hi: float = 235.0) -> tuple[float, float, float]:
    """An RGB colour with every channel uniform in ``[lo, hi)``."""
    return tuple(float(v) for v in rng.uniform(lo, hi, size=3))  # type: ignore[return-value]
