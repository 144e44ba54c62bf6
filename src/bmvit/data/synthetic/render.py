"""Drawing a scene: a stick figure as capsules, soft-edged compositing, and whole video frames.

Every body part is a capsule (a thick line segment, a disc when both ends coincide); distractors and
the occluder are rectangles or ellipses. Each shape is composited with a one-pixel soft edge, and
only inside its own bounding box, so a frame costs a few small numpy operations per part.

Geometry: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)``; boxes are ``x1, y1, x2, y2`` in
pixels. Image x is stage x minus the camera pan ``VideoSpec.shift_at(frame_index)``.
"""

from __future__ import annotations

import math

import numpy as np

from bmvit.data.synthetic.scene import (
    FOREARM,
    FPS,
    HEAD_R,
    NECK,
    SHIN,
    SWING,
    THIGH,
    TORSO,
    UPPER_ARM,
    Distractor,
    FigureStyle,
    Pose,
    VideoSpec,
)

# A capsule from (x0, y0) to (x1, y1) of radius r and colour rgb; amp > 0 adds stripes of that contrast
# every `period` pixels along it.
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
    """Both arms' capsules (upper arm in the shirt colour, forearm in skin), from shoulders just below ``neck_y``."""
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
    """``a`` clipped to [0, 1], in place; returns ``a``."""
    # not np.clip: its Python-level dispatch costs more than the maths on these small arrays
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
# Frames


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
    """Composite distractor ``d`` at ``t`` seconds into ``canvas`` (image coordinates: stage minus ``shift``)."""
    cx, cy = d.center_at(t, spec.width, spec.height)
    draw_rect(canvas, cx - shift, cy, d.half_w, d.half_h, np.array(d.rgb), ellipse=d.shape == "ellipse",
              stripes=d.stripes)
