"""Joint (clip, target) transforms: boxes move with the pixels.

Adapted from DETR (Carion et al., facebookresearch/detr, ``datasets/transforms.py``): each transform
is a callable ``(clip, target) -> (clip, target)`` and geometric ones update the boxes. Changes: clips
instead of images (one random draw per clip, applied to every frame), boxes kept normalised ``xyxy``
to the current clip instead of pixels, letterboxing and a short-side resize with a crop, each with a
recorded, invertible mapping, zoom-out with padding, label-column swaps on flips, torch-only ops (no
torchvision).

Clip layouts: in ``uint8 [T, H, W, 3]`` (numpy or torch, as the sources return it); inside
``[T, 3, H, W]`` (uint8 until ``Resize``, then float32 in [0, 1]); out of ``ToModelInput``
``float32 [3, T, H, W]`` normalised with mean/std.

Target keys: ``boxes_xyxy`` ``[P, 4]`` float32 normalised to the current clip, and the per-person
``labels [P, C]`` and ``person_ids [P]``, which are dropped together with their box. ``ToModelInput``
replaces ``boxes_xyxy`` by ``boxes`` (normalised ``cxcywh``, the model's format). ``Resize`` in
letterbox mode adds ``letterbox`` (a ``Letterbox`` record that maps boxes back to the original frame); in
short-side mode the same key holds a ``ShortSideCrop`` record, which has the same ``boxes_to_input`` /
``boxes_to_original`` methods (the key keeps its name so that every reader of it undoes either geometry).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bmvit.box_ops import box_xyxy_to_cxcywh

Target = dict
Transform = Callable[[Tensor, Target], tuple[Tensor, Target]]

RESIZE_MODES = ("square", "letterbox", "short_side")
"""``Resize`` modes, i.e. the values of ``data.resize``."""

PERSON_KEYS = ("boxes_xyxy", "labels", "person_ids")
"""Target entries with one row per person: a dropped person loses its row in each."""


def _size(clip: Tensor) -> tuple[int, int]:
    return int(clip.shape[-2]), int(clip.shape[-1])


def _as_float(clip: Tensor) -> Tensor:
    return clip.float().div_(255.0) if clip.dtype == torch.uint8 else clip


def _fill_like(clip: Tensor, fill: float) -> float | int:
    return round(fill * 255) if clip.dtype == torch.uint8 else fill


def keep_people(target: Target, keep: Tensor) -> Target:
    """Keep the people where ``keep`` ([P] bool) is True, in every per-person entry."""
    out = dict(target)
    for k in PERSON_KEYS:
        if k in out:
            out[k] = out[k][keep]
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip, target: Target) -> tuple[Tensor, Target]:
        for t in self.transforms:
            clip, target = t(clip, target)
        return clip, target

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ToTensorClip:
    """``uint8 [T, H, W, 3]`` (numpy or torch) -> ``uint8 [T, 3, H, W]`` tensor; target arrays -> tensors."""

    def __call__(self, clip, target: Target) -> tuple[Tensor, Target]:
        clip = torch.as_tensor(np.ascontiguousarray(clip) if isinstance(clip, np.ndarray) else clip)
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"ToTensorClip: expected a clip [T, H, W, 3], got shape {tuple(clip.shape)}")
        target = dict(target)
        if "boxes_xyxy" in target:
            target["boxes_xyxy"] = torch.as_tensor(np.asarray(target["boxes_xyxy"]), dtype=torch.float32).reshape(-1, 4)
        if "labels" in target:
            target["labels"] = torch.as_tensor(np.asarray(target["labels"]), dtype=torch.float32)
        if "person_ids" in target:
            target["person_ids"] = torch.as_tensor(np.asarray(target["person_ids"]), dtype=torch.int64)
        return clip.permute(0, 3, 1, 2), target


def crop_or_pad(clip: Tensor, x0: int, y0: int, width: int, height: int, fill: float = 0.0) -> Tensor:
    """The window ``[x0, x0 + width) x [y0, y0 + height)`` of ``[..., H, W]`` frames, padded with ``fill``
    (in [0, 1] units) where it leaves the frame."""
    h, w = _size(clip)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + width, w), min(y0 + height, h)
    if x0 >= 0 and y0 >= 0 and x0 + width <= w and y0 + height <= h:
        return clip[..., y0 : y0 + height, x0 : x0 + width]
    out = clip.new_full((*clip.shape[:-2], height, width), _fill_like(clip, fill))
    if sx1 > sx0 and sy1 > sy0:
        out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = clip[..., sy0:sy1, sx0:sx1]
    return out


def window_boxes(boxes_xyxy: Tensor, size: tuple[int, int], x0: int, y0: int, width: int, height: int) -> Tensor:
    """Normalised boxes of a ``size`` = (H, W) frame, re-expressed in the window, NOT clipped: [P, 4]."""
    h, w = size
    scale = boxes_xyxy.new_tensor([w, h, w, h])
    offset = boxes_xyxy.new_tensor([x0, y0, x0, y0])
    return (boxes_xyxy * scale - offset) / boxes_xyxy.new_tensor([width, height, width, height])


class RandomZoom:
    """Scale jitter: view a random window of ``s`` times the frame's size, ``s`` uniform in ``scale``.

    ``s < 1`` crops (zoom in), ``s > 1`` pads with ``fill`` (zoom out); the aspect ratio is kept and
    the window's position is uniform. Boxes are clipped to the window; a person whose visible box
    keeps no more than ``min_visible`` of its area (0: it vanished) is dropped with its labels.
    """

    def __init__(
        self, scale: tuple[float, float] = (0.8, 1.0), *, fill: float = 0.0, min_visible: float = 0.0, p: float = 1.0
    ) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"RandomZoom: scale must be 0 < low <= high, got {scale}")
        self.scale, self.fill, self.min_visible, self.p = scale, fill, min_visible, p

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        if random.random() >= self.p:
            return clip, target
        s = random.uniform(*self.scale)
        h, w = _size(clip)
        ch, cw = max(1, round(s * h)), max(1, round(s * w))
        y0 = random.randint(min(0, h - ch), max(0, h - ch))
        x0 = random.randint(min(0, w - cw), max(0, w - cw))
        return zoom(clip, target, x0, y0, cw, ch, fill=self.fill, min_visible=self.min_visible)

    def __repr__(self) -> str:
        return f"RandomZoom(scale={self.scale}, fill={self.fill}, min_visible={self.min_visible}, p={self.p})"


def zoom(
    clip: Tensor,
    target: Target,
    x0: int,
    y0: int,
    width: int,
    height: int,
    *,
    fill: float = 0.0,
    min_visible: float = 0.0,
) -> tuple[Tensor, Target]:
    """Crop/pad ``clip`` to the window (pixels of the current frame) and move, clip and drop boxes."""
    size = _size(clip)
    out = crop_or_pad(clip, x0, y0, width, height, fill)
    if "boxes_xyxy" not in target:
        return out, target
    boxes = target["boxes_xyxy"]
    moved = window_boxes(boxes, size, x0, y0, width, height)
    clipped = moved.clamp(0.0, 1.0)
    area_before = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    wh = (clipped[:, 2:] - clipped[:, :2]).clamp(min=0)
    area_after = wh[:, 0] * wh[:, 1]
    keep = (wh > 0).all(dim=1) & (area_after > min_visible * area_before)
    target = keep_people({**target, "boxes_xyxy": clipped}, keep)
    return out, target


class HorizontalFlip:
    """Mirror the clip with probability ``p``: ``x -> 1 - x`` for boxes.

    ``swap_columns``: pairs of label columns that trade places under a mirror (e.g. "move left" and
    "move right"); AVA's classes have none.
    """

    def __init__(self, p: float = 0.5, swap_columns: Sequence[tuple[int, int]] = ()) -> None:
        self.p = p
        self.swap_columns = [tuple(pair) for pair in swap_columns]

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        if random.random() >= self.p:
            return clip, target
        return hflip(clip, target, self.swap_columns)

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p}, swap_columns={self.swap_columns})"


def hflip(clip: Tensor, target: Target, swap_columns: Sequence[tuple[int, int]] = ()) -> tuple[Tensor, Target]:
    """Mirror ``[..., H, W]`` frames and their boxes; swap the paired label columns."""
    target = dict(target)
    if "boxes_xyxy" in target:
        b = target["boxes_xyxy"]
        target["boxes_xyxy"] = torch.stack((1 - b[:, 2], b[:, 1], 1 - b[:, 0], b[:, 3]), dim=1)
    if swap_columns and "labels" in target:
        labels = target["labels"].clone()
        for a, c in swap_columns:
            labels[:, [a, c]] = labels[:, [c, a]]
        target["labels"] = labels
    return clip.flip(-1), target


@dataclass(frozen=True)
class Letterbox:
    """How a frame was letterboxed into the model input: scaled by ``scale`` to ``content_size``, then
    placed at (``pad_top``, ``pad_left``) of an ``input_size`` canvas. Sizes are (H, W) in pixels."""

    orig_size: tuple[int, int]
    input_size: tuple[int, int]
    content_size: tuple[int, int]
    pad_top: int
    pad_left: int

    def boxes_to_input(self, boxes_xyxy):
        """Normalised boxes of the original frame -> normalised boxes of the model input ([..., 4])."""
        (ih, iw), (chh, cw) = self.input_size, self.content_size
        return _affine_xyxy(boxes_xyxy, cw / iw, chh / ih, self.pad_left / iw, self.pad_top / ih)

    def boxes_to_original(self, boxes_xyxy, clip: bool = True):
        """Normalised boxes of the model input -> normalised boxes of the original frame ([..., 4]).

        The inverse of ``boxes_to_input``; ``clip`` clamps to [0, 1] (a box reaching into the padding
        is cut at the frame's edge).
        """
        (ih, iw), (chh, cw) = self.input_size, self.content_size
        out = _affine_xyxy(boxes_xyxy, iw / cw, ih / chh, -self.pad_left / cw, -self.pad_top / chh)
        if clip:
            out = out.clamp(0.0, 1.0) if isinstance(out, Tensor) else np.clip(out, 0.0, 1.0)
        return out


def _affine_xyxy(boxes, sx: float, sy: float, tx: float, ty: float):
    """``x -> x * sx + tx``, ``y -> y * sy + ty`` on ``[..., 4]`` xyxy boxes (torch or numpy)."""
    if isinstance(boxes, Tensor):
        scale = boxes.new_tensor([sx, sy, sx, sy])
        shift = boxes.new_tensor([tx, ty, tx, ty])
    else:
        boxes = np.asarray(boxes, dtype=np.float64)
        scale, shift = np.array([sx, sy, sx, sy]), np.array([tx, ty, tx, ty])
    return boxes * scale + shift


@dataclass(frozen=True)
class ShortSideCrop:
    """How a frame was resized and cropped into the model input (``Resize`` with ``mode="short_side"``).

    The frame was scaled, aspect kept, to ``resized_size`` (it covers ``input_size``: for a square input
    its short side equals the input's side), then the ``input_size`` window at (``crop_top``,
    ``crop_left``) of it was kept. Sizes are (H, W) in pixels; offsets are pixels of the resized frame.
    A sibling of ``Letterbox`` with the same two box methods, so code that undoes one undoes the other.
    """

    orig_size: tuple[int, int]
    input_size: tuple[int, int]
    resized_size: tuple[int, int]
    crop_top: int
    crop_left: int

    def boxes_to_input(self, boxes_xyxy):
        """Normalised boxes of the original frame -> normalised boxes of the model input ([..., 4]), NOT
        clipped: a box reaching out of the crop gets coordinates outside [0, 1]."""
        (ih, iw), (rh, rw) = self.input_size, self.resized_size
        return _affine_xyxy(boxes_xyxy, rw / iw, rh / ih, -self.crop_left / iw, -self.crop_top / ih)

    def boxes_to_original(self, boxes_xyxy, clip: bool = True):
        """Normalised boxes of the model input -> normalised boxes of the original frame ([..., 4]).

        The inverse of ``boxes_to_input``; ``clip`` clamps to [0, 1]. The result always lies within the
        crop's window of the original frame (a model's boxes are within its input): the parts of the
        frame that were cropped away get no detection.
        """
        (ih, iw), (rh, rw) = self.input_size, self.resized_size
        out = _affine_xyxy(boxes_xyxy, iw / rw, ih / rh, self.crop_left / rw, self.crop_top / rh)
        if clip:
            out = out.clamp(0.0, 1.0) if isinstance(out, Tensor) else np.clip(out, 0.0, 1.0)
        return out


def short_side_geometry(
    orig_size: tuple[int, int],
    input_size: tuple[int, int],
    offset: tuple[int, int] | None = None,
) -> ShortSideCrop:
    """The short-side resize of an (H, W) frame for an (H, W) input, and the crop of its long side.

    Scale: the smallest that covers the input, ``max(ih / h, iw / w)`` (for a square input: short side
    = input side). Rounding: each resized side is ``round(side * scale)`` (Python's round, as
    ``letterbox_geometry``), never below the input's side, so the side that set the scale is exactly
    the input's. Crop: ``offset`` = (top, left) in pixels of the resized frame, or None for the centre,
    ``(resized - input) // 2`` on each axis (floor: an odd excess leaves the extra pixel on the
    bottom/right, as the letterbox's padding does). E.g. 60x80 -> 40x40: scale 2/3, resized 40x53
    (53.33 rounded), centre crop left = 13 // 2 = 6, top = 0.
    """
    (h, w), (ih, iw) = orig_size, input_size
    scale = max(ih / h, iw / w)
    rh, rw = max(ih, round(h * scale)), max(iw, round(w * scale))
    if offset is None:
        top, left = (rh - ih) // 2, (rw - iw) // 2
    else:
        top, left = (int(v) for v in offset)
        if not (0 <= top <= rh - ih and 0 <= left <= rw - iw):
            raise ValueError(f"short_side_geometry: crop offset {offset} leaves the resized {rh}x{rw} frame")
    return ShortSideCrop(orig_size=(h, w), input_size=(ih, iw), resized_size=(rh, rw), crop_top=top, crop_left=left)


def input_geometry(
    mode: str, orig_size: tuple[int, int], input_size: tuple[int, int]
) -> Letterbox | ShortSideCrop | None:
    """The evaluation-time record of ``Resize(mode=...)`` for an (H, W) frame: None for ``square`` (boxes
    need no mapping), the letterbox, or the short-side resize with its centre crop. What a caller that
    has no target record (a predictor) uses to map the model's boxes back with ``boxes_to_original``."""
    if mode == "square":
        return None
    if mode == "letterbox":
        return letterbox_geometry(orig_size, input_size)
    if mode == "short_side":
        return short_side_geometry(orig_size, input_size)
    raise ValueError(f"input_geometry: mode must be one of {' | '.join(RESIZE_MODES)}, got {mode!r}")


def letterbox_geometry(orig_size: tuple[int, int], input_size: tuple[int, int]) -> Letterbox:
    """The letterbox of an (H, W) frame in an (H, W) input: the largest scale that fits, centred."""
    (h, w), (ih, iw) = orig_size, input_size
    scale = min(ih / h, iw / w)
    ch, cw = min(ih, max(1, round(h * scale))), min(iw, max(1, round(w * scale)))
    return Letterbox(
        orig_size=(h, w), input_size=(ih, iw), content_size=(ch, cw), pad_top=(ih - ch) // 2, pad_left=(iw - cw) // 2
    )


def resize_frames(clip: Tensor, size: tuple[int, int], dtype: str = "float") -> Tensor:
    """Bilinear resize of ``[T, 3, H, W]`` frames to ``size`` (H, W), antialiased when shrinking.

    ``dtype="float"``: float32 in [0, 1]. ``dtype="uint8"``: a uint8 clip is resized as uint8 (torch's
    uint8 kernel, within one grey level of the float result and over ten times faster on a CPU core, so
    the loader workers never hold a float copy of a full-resolution clip).
    """
    if dtype not in ("float", "uint8"):
        raise ValueError(f"resize_frames: dtype must be 'float' or 'uint8', got {dtype!r}")
    if dtype == "float" or clip.dtype != torch.uint8:
        clip = _as_float(clip)
    if _size(clip) == tuple(size):
        return clip
    shrink = size[0] < clip.shape[-2] or size[1] < clip.shape[-1]
    if clip.dtype == torch.uint8 and clip.device.type != "cpu":
        return resize_uint8_in_float(clip, size, shrink)
    out = F.interpolate(clip, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrink)
    return out if out.dtype == torch.uint8 else out.clamp_(0, 1)


def resize_uint8_in_float(clip: Tensor, size: tuple[int, int], antialias: bool) -> Tensor:
    """A uint8 ``[..., H, W]`` clip resized bilinearly in float32 and rounded back to uint8.

    What ``resize_frames`` does with uint8 frames off the CPU (frames decoded on the GPU): torch's uint8
    resize kernel exists for CPUs only. Within one grey level of that kernel's result.
    """
    out = F.interpolate(clip.float(), size=tuple(size), mode="bilinear", align_corners=False, antialias=antialias)
    return out.round_().clamp_(0, 255).to(torch.uint8)


class Resize:
    """Bring frames to the model's input size.

    ``mode="square"`` (default) stretches the whole frame to ``size``: normalised boxes are unchanged.
    ``mode="letterbox"`` keeps the aspect ratio, centres the frame and pads with ``fill``; boxes move
    into the content area and ``target["letterbox"]`` records the mapping (``Letterbox``) so predictions
    can be mapped back with ``boxes_to_original``. Output: float32 [0, 1], or uint8 with ``dtype="uint8"``.

    ``mode="short_side"`` keeps the aspect ratio and fills the input: the frame is resized so that it
    covers ``size`` (a square input: short side = ``size``; rounding in ``short_side_geometry``) and the
    long side is cropped, at a uniformly random offset (Python's ``random``, one draw per clip, seeded as
    the other augmentations) when ``random_crop``, else in the centre. Boxes (normalised ``xyxy``) move
    with the crop and are clipped to it; a person whose box leaves the crop entirely (or keeps no area)
    is dropped with its labels and id: it is not in view. ``target["letterbox"]`` holds the
    ``ShortSideCrop`` record, whose ``boxes_to_original`` maps detections back to the original frame's
    normalised coordinates. In evaluation (``random_crop=False``, the centre crop) the same holds: the
    scored detections are mapped back through the record and compared with the original annotations,
    so a ground-truth person outside the centre crop cannot be detected and counts as missed. On a
    16:9 frame at a square input the crop keeps the central 9/16 of the width: that is this geometry's
    cost. ``random_crop`` only matters in this mode.
    """

    def __init__(
        self,
        size: int | tuple[int, int],
        mode: str = "square",
        fill: float = 0.0,
        dtype: str = "float",
        random_crop: bool = False,
    ) -> None:
        if mode not in RESIZE_MODES:
            raise ValueError(f"Resize: mode must be one of {' | '.join(repr(m) for m in RESIZE_MODES)}, got {mode!r}")
        if dtype not in ("float", "uint8"):
            raise ValueError(f"Resize: dtype must be 'float' or 'uint8', got {dtype!r}")
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        self.mode, self.fill, self.dtype, self.random_crop = mode, fill, dtype, random_crop

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        if self.mode == "square":
            return resize_frames(clip, self.size, self.dtype), target
        if self.mode == "short_side":
            return self._short_side(clip, target)
        box = letterbox_geometry(_size(clip), self.size)
        content = resize_frames(clip, box.content_size, self.dtype)
        ih, iw = self.size
        out = content.new_full((*content.shape[:-2], ih, iw), _fill_like(content, self.fill))
        ch, cw = box.content_size
        out[..., box.pad_top : box.pad_top + ch, box.pad_left : box.pad_left + cw] = content
        target = dict(target, letterbox=box)
        if "boxes_xyxy" in target:
            target["boxes_xyxy"] = box.boxes_to_input(target["boxes_xyxy"])
        return out, target

    def _short_side(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        centre = short_side_geometry(_size(clip), self.size)
        (rh, rw), (ih, iw) = centre.resized_size, self.size
        geometry = centre
        if self.random_crop:
            # Drawn even when one axis has no slack (randint(0, 0)), so the number of draws per clip does
            # not depend on the frame's size and later augmentations see the same stream for any video.
            offset = (random.randint(0, rh - ih), random.randint(0, rw - iw))
            geometry = short_side_geometry(_size(clip), self.size, offset)
        resized = resize_frames(clip, geometry.resized_size, self.dtype)
        top, left = geometry.crop_top, geometry.crop_left
        # A copy, not a view: the view would keep the whole resized clip alive downstream.
        out = resized[..., top : top + ih, left : left + iw].contiguous()
        target = dict(target, letterbox=geometry)
        if "boxes_xyxy" in target:
            moved = geometry.boxes_to_input(target["boxes_xyxy"])
            clipped = moved.clamp(0.0, 1.0)
            keep = ((clipped[:, 2:] - clipped[:, :2]) > 0).all(dim=1)
            target = keep_people({**target, "boxes_xyxy": clipped}, keep)
        return out, target

    def __repr__(self) -> str:
        crop = f", random_crop={self.random_crop}" if self.mode == "short_side" else ""
        return f"Resize(size={self.size}, mode={self.mode!r}, dtype={self.dtype!r}{crop})"


_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


class ColorJitter:
    """Random brightness, contrast, saturation and hue, one draw per clip (all frames alike).

    Factors are uniform in ``[1 - x, 1 + x]``; hue rotates chroma by up to ``hue * 360`` degrees (in YIQ
    space). Expects float [0, 1] frames (after ``Resize``); applied with probability ``p``.

    ``defer=True`` draws the same numbers but only records them as ``target["colour"]`` =
    ``(brightness, contrast, saturation, hue)`` (absent when not applied), leaving the uint8 clip as it
    is: ``normalize_clips`` applies them on the training device, where the arithmetic is cheap.
    """

    def __init__(
        self,
        brightness: float = 0.2,
        contrast: float = 0.2,
        saturation: float = 0.2,
        hue: float = 0.0,
        p: float = 0.8,
        defer: bool = False,
    ) -> None:
        self.brightness, self.contrast, self.saturation, self.hue, self.p = brightness, contrast, saturation, hue, p
        self.defer = defer

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        if random.random() >= self.p:
            return clip, target
        b = random.uniform(1 - self.brightness, 1 + self.brightness)
        c = random.uniform(1 - self.contrast, 1 + self.contrast)
        s = random.uniform(1 - self.saturation, 1 + self.saturation)
        h = random.uniform(-self.hue, self.hue)
        if self.defer:
            return clip, dict(target, colour=(b, c, s, h))
        return adjust_colour(_as_float(clip), b, c, s, h), target

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, hue={self.hue}, p={self.p}, defer={self.defer})"
        )


def adjust_colour(
    clip: Tensor, brightness: float = 1.0, contrast: float = 1.0, saturation: float = 1.0, hue: float = 0.0
) -> Tensor:
    """Colour adjustments of float [0, 1] frames ``[..., 3, H, W]``, in this order, clamped once at the end.

    Brightness scales; contrast blends with the clip's mean grey (one mean over the whole clip so the
    frames stay consistent); saturation blends each pixel with its grey (torchvision's definitions,
    without torchvision's clamping between steps); hue rotates chroma in YIQ space. All four are
    affine in RGB, so they are applied as one 3x3 map plus an offset: one pass over the clip.
    """
    eye = torch.eye(3, dtype=torch.float64)
    gray_w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    colour = saturation * eye + (1 - saturation) * torch.ones(3, 1, dtype=torch.float64) * gray_w
    if hue != 0.0:
        theta = 2 * math.pi * hue
        c, s = math.cos(theta), math.sin(theta)
        rot = torch.tensor([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)
        yiq = _YIQ.double()
        colour = torch.linalg.inv(yiq) @ rot @ yiq @ colour
    matrix = colour * (contrast * brightness)
    offset = 0.0
    if contrast != 1.0:
        channel_means = clip.mean(dim=[d for d in range(clip.ndim) if d != clip.ndim - 3]).double()
        grey = float(gray_w @ channel_means) * brightness
        offset = (1 - contrast) * grey  # a grey maps to itself under saturation and hue
    shape = clip.shape
    flat = clip.reshape(-1, 3, shape[-2] * shape[-1])
    out = torch.matmul(matrix.to(clip.dtype), flat)
    if offset:
        out.add_(offset)
    return out.clamp_(0.0, 1.0).reshape(shape)


class ToModelInput:
    """Normalise with ``mean``/``std`` and lay out for the model.

    Clip: ``[T, 3, H, W]`` -> ``float32 [3, T, H, W]``, ``(x - mean) / std`` with x in [0, 1].
    Target: ``boxes_xyxy`` -> ``boxes`` normalised ``cxcywh`` float32 (clamped to [0, 1]).
    """

    def __init__(
        self, mean: Sequence[float] = (0.45, 0.45, 0.45), std: Sequence[float] = (0.225, 0.225, 0.225)
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"ToModelInput: expected 3 means and 3 positive stds, got mean={mean}, std={std}")
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        clip = _as_float(clip)
        mean = clip.new_tensor(self.mean).view(3, 1, 1)
        std = clip.new_tensor(self.std).view(3, 1, 1)
        clip = ((clip - mean) / std).permute(1, 0, 2, 3).contiguous()
        target = dict(target)
        if "boxes_xyxy" in target:
            target["boxes"] = box_xyxy_to_cxcywh(target.pop("boxes_xyxy").clamp(0.0, 1.0)).float()
        return clip, target

    def __repr__(self) -> str:
        return f"ToModelInput(mean={self.mean}, std={self.std})"


class ToModelLayout:
    """The uint8 hand-off: ``uint8 [T, 3, H, W]`` -> ``uint8 [3, T, H, W]``, boxes as ``ToModelInput`` makes them.

    Loader workers end here; ``normalize_clips`` does the rest on the device that runs the model, so a
    worker ships a quarter of the bytes of a float clip and never does float arithmetic per pixel.
    """

    def __call__(self, clip: Tensor, target: Target) -> tuple[Tensor, Target]:
        if clip.dtype != torch.uint8:
            raise ValueError(f"ToModelLayout: expected a uint8 clip (Resize with dtype='uint8'), got {clip.dtype}")
        target = dict(target)
        if "boxes_xyxy" in target:
            target["boxes"] = box_xyxy_to_cxcywh(target.pop("boxes_xyxy").clamp(0.0, 1.0)).float()
        return clip.permute(1, 0, 2, 3).contiguous(), target

    def __repr__(self) -> str:
        return "ToModelLayout()"


def normalize_clips(
    clips: Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    colours: Sequence[tuple[float, float, float, float] | None] | None = None,
) -> Tensor:
    """Model input from uint8 clips, on whatever device ``clips`` is: ``[B, 3, T, H, W]`` -> float32, same shape.

    ``x / 255``, then each clip's deferred colour jitter (``colours[b]`` = ``(brightness, contrast,
    saturation, hue)`` from ``ColorJitter(defer=True)``, or None), clamped to [0, 1], then
    ``(x - mean) / std``: the float pipeline's arithmetic after its resize, in the same order.
    A float clip is taken as already normalised and returned unchanged.
    """
    if clips.dtype != torch.uint8:
        return clips
    x = clips.float().div_(255.0)
    for b, colour in enumerate(colours or ()):
        if colour is not None:
            # adjust_colour wants the channel axis third from the end: [T, 3, H, W].
            x[b] = adjust_colour(x[b].transpose(0, 1), *colour).transpose(0, 1)
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1, 1)
    return x.sub_(mean_t).div_(std_t)


def create_transforms(
    train: bool,
    input_size: int | tuple[int, int] = 256,
    *,
    mean: Sequence[float] = (0.45, 0.45, 0.45),
    std: Sequence[float] = (0.225, 0.225, 0.225),
    resize: str = "square",
    hflip: float = 0.5,
    scale_jitter: Sequence[float] = (1.0, 1.0),
    color_jitter: float = 0.0,
    flip_swap_columns: Sequence[tuple[int, int]] = (),
    output: str = "float",
) -> Compose:
    """The standard pipeline; bracketed steps only when ``train`` and switched on.

    ``output="float"``: ``ToTensorClip``, [``RandomZoom``, ``HorizontalFlip``], ``Resize``,
    [``ColorJitter``], ``ToModelInput``: a normalised ``float32 [3, T, H, W]`` clip.

    ``output="uint8"`` (what training and evaluation loaders use): ``ToTensorClip``, [``RandomZoom``],
    ``Resize`` in uint8, [``HorizontalFlip``] on the small clip, [``ColorJitter`` deferred], ``ToModelLayout``:
    a ``uint8 [3, T, H, W]`` clip; ``normalize_clips`` on the model's device finishes it. The random draws
    are the same in both, so both give the same clip to within the uint8 rounding of the resize.

    Args:
        hflip: probability of a horizontal flip (0: none).
        scale_jitter: (low, high) zoom range of ``RandomZoom`` ((1, 1): none; < 1 crops, > 1 pads).
        color_jitter: strength of brightness, contrast and saturation jitter (0: none).
        flip_swap_columns: label columns that trade places under a flip (see ``HorizontalFlip``).

    Padding (letterbox, zoom-out) is filled with ``mean``'s grey so it normalises to about zero.

    ``resize="short_side"``: the crop of the long side is random when ``train``, central otherwise (see
    ``Resize``). Its draw comes in ``Resize``, so in both outputs the flip then follows the resize (the
    float pipeline too, for this mode only): the draws keep one order and a flip never changes which
    part of the frame the crop keeps, so both outputs give the same geometry for a seed.
    """
    if output not in ("float", "uint8"):
        raise ValueError(f"create_transforms: output must be 'float' or 'uint8', got {output!r}")
    fill = float(sum(mean) / 3)
    low, high = (float(x) for x in scale_jitter)
    zoom = [RandomZoom((low, high), fill=fill)] if train and (low, high) != (1.0, 1.0) else []
    flip = [HorizontalFlip(hflip, flip_swap_columns)] if train and hflip > 0 else []
    defer = output == "uint8"
    jitter = [ColorJitter(color_jitter, color_jitter, color_jitter, 0.0, defer=defer)] if train and color_jitter > 0 else []
    random_crop = train and resize == "short_side"
    if output == "float" and resize == "short_side":
        # The random crop draws in Resize: the flip after it, as in the uint8 pipeline (same draw order).
        resize_step = Resize(input_size, resize, fill=fill, random_crop=random_crop)
        steps = [ToTensorClip(), *zoom, resize_step, *flip, *jitter, ToModelInput(mean, std)]
    elif output == "float":
        steps = [ToTensorClip(), *zoom, *flip, Resize(input_size, resize, fill=fill), *jitter, ToModelInput(mean, std)]
    else:
        # The flip moves after the resize: a bilinear resize commutes with a mirror, and mirroring the
        # small clip is cheaper. No step draws a random number in between, so the draws keep their order
        # (short_side's crop draws in the resize, before the flip in both pipelines).
        resize_step = Resize(input_size, resize, fill=fill, dtype="uint8", random_crop=random_crop)
        steps = [ToTensorClip(), *zoom, resize_step, *flip, *jitter, ToModelLayout()]
    return Compose(steps)


def min_decode_size(input_size: int | tuple[int, int], scale_jitter: Sequence[float] = (1.0, 1.0)) -> tuple[int, int]:
    """The smallest (H, W) a source may decode frames at without losing detail the transforms keep.

    A zoom-in by ``s < 1`` crops a window of ``s`` times the frame and scales it up to the input, so
    the frame must be ``1 / s`` times the input on each side for the crop to hold input-size detail.
    The aspect ratio is the source's own: a source only ever shrinks both sides by one factor.

    Every ``data.resize`` mode is covered by the same size: ``square`` needs each side at least the
    input's; ``short_side`` needs the frame to cover the input (its scale is ``max(ih / h, iw / w)``),
    which is the same condition, so a source that keeps both sides at least this size never makes the
    short side upscale; ``letterbox`` needs less (its content fits inside the input).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    low = min(1.0, float(scale_jitter[0]))
    return math.ceil(h / low), math.ceil(w / low)


__all__ = [
    "PERSON_KEYS",
    "ColorJitter",
    "Compose",
    "HorizontalFlip",
    "Letterbox",
    "RESIZE_MODES",
    "RandomZoom",
    "Resize",
    "ShortSideCrop",
    "ToModelInput",
    "ToModelLayout",
    "ToTensorClip",
    "adjust_colour",
    "create_transforms",
    "crop_or_pad",
    "hflip",
    "input_geometry",
    "keep_people",
    "letterbox_geometry",
    "min_decode_size",
    "normalize_clips",
    "resize_frames",
    "resize_uint8_in_float",
    "short_side_geometry",
    "window_boxes",
    "zoom",
]
