"""Box conversions and overlap measures, for torch tensors and (IoU only) numpy arrays.

Formats are named in every function: ``cxcywh`` (centre x, centre y, width, height) and ``xyxy``
(top-left x, top-left y, bottom-right x, bottom-right y). Coordinates are usually normalised to
[0, 1] of the key frame, but nothing here depends on the scale. Every IoU here is the
continuous-coordinate one (width ``x2 - x1``, no ``+ 1`` pixel convention), except
``act_pixel_iou_numpy``, ACT's pixel IoU for scoring UCF101-24 / JHMDB-21 as ACT does.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes_cxcywh: Tensor) -> Tensor:
    """[..., 4] cxcywh -> [..., 4] xyxy."""
    cx, cy, w, h = boxes_cxcywh.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(boxes_xyxy: Tensor) -> Tensor:
    """[..., 4] xyxy -> [..., 4] cxcywh."""
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def grid_cell_centres(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """Centres of the cells of an ``height x width`` partition of the unit frame: ``[H*W, 2]`` as
    normalised ``(cx, cy)``, row-major (cell ``(r, c)`` at index ``r * W + c``, like flattened tokens)."""
    cy = (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height
    cx = (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    return torch.stack((cx, cy), dim=-1).reshape(height * width, 2)


def grid_cell_index(points_xy: Tensor, height: int, width: int) -> Tensor:
    """Row-major index (``r * W + c``, as ``grid_cell_centres``) of the cell of an ``height x width``
    partition of the unit frame that holds each normalised ``(x, y)`` point: ``[..., 2]`` -> ``[...]`` int64.
    Points on the frame's right or bottom edge fall in the last column or row."""
    cols = (points_xy[..., 0] * width).long().clamp(0, width - 1)
    rows = (points_xy[..., 1] * height).long().clamp(0, height - 1)
    return rows * width + cols


def box_area(boxes_xyxy: Tensor) -> Tensor:
    """[..., 4] xyxy -> [...] area (negative extents count as zero)."""
    return (boxes_xyxy[..., 2] - boxes_xyxy[..., 0]).clamp(min=0) * (boxes_xyxy[..., 3] - boxes_xyxy[..., 1]).clamp(min=0)


def _inter_union(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> tuple[Tensor, Tensor]:
    area1 = box_area(boxes1_xyxy)
    area2 = box_area(boxes2_xyxy)
    top_left = torch.max(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    bottom_right = torch.min(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[:, None] + area2[None, :] - inter
    return inter, union


def box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """Pairwise IoU. [N, 4] xyxy, [M, 4] xyxy -> [N, M]; 0 where the union is empty."""
    inter, union = _inter_union(boxes1_xyxy, boxes2_xyxy)
    return torch.where(union > 0, inter / union.clamp(min=torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def generalized_box_iou(boxes1_xyxy: Tensor, boxes2_xyxy: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al., 2019). [N, 4] xyxy, [M, 4] xyxy -> [N, M] in [-1, 1].

    Boxes must be well formed (x2 >= x1, y2 >= y1); a malformed box raises, because GIoU of an
    inverted box is meaningless and would silently corrupt a loss or a matching cost. Degenerate
    (zero-area) boxes are allowed: their IoU term is 0 and the enclosing-box term stays finite.
    """
    if boxes1_xyxy.numel() and not bool((boxes1_xyxy[:, 2:] >= boxes1_xyxy[:, :2]).all()):
        raise ValueError("generalized_box_iou: boxes1 has boxes with x2 < x1 or y2 < y1")
    if boxes2_xyxy.numel() and not bool((boxes2_xyxy[:, 2:] >= boxes2_xyxy[:, :2]).all()):
        raise ValueError("generalized_box_iou: boxes2 has boxes with x2 < x1 or y2 < y1")
    inter, union = _inter_union(boxes1_xyxy, boxes2_xyxy)
    eps = torch.finfo(union.dtype).eps
    iou = inter / union.clamp(min=eps)
    top_left = torch.min(boxes1_xyxy[:, None, :2], boxes2_xyxy[None, :, :2])
    bottom_right = torch.max(boxes1_xyxy[:, None, 2:], boxes2_xyxy[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    enclosing = wh[..., 0] * wh[..., 1]
    return iou - (enclosing - union) / enclosing.clamp(min=eps)


def matched_box_iou_numpy(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """IoU of boxes paired by numpy broadcasting: ``[..., 4]`` xyxy and ``[..., 4]`` xyxy -> ``[...]``.

    Row-wise for two ``[N, 4]`` arrays (``[N]``); ``[N, 4]`` against one box ``[4]`` gives ``[N]``;
    ``[N, 1, 4]`` against ``[N, M, 4]`` gives each row its own ``M`` candidates (``[N, M]``).
    Continuous coordinates: ``intersection / (area1 + area2 - intersection)``. Areas are not clamped
    (boxes are expected well formed, x2 >= x1 and y2 >= y1), and two empty boxes give NaN (0 / 0),
    as ACT's ``iou2d`` does: its evaluators rank NaN above any IoU in ``argmax`` and never count it
    as a hit, so the NaN is kept rather than turned into 0.
    """
    width = np.maximum(0.0, np.minimum(boxes1_xyxy[..., 2], boxes2_xyxy[..., 2])
                       - np.maximum(boxes1_xyxy[..., 0], boxes2_xyxy[..., 0]))
    height = np.maximum(0.0, np.minimum(boxes1_xyxy[..., 3], boxes2_xyxy[..., 3])
                        - np.maximum(boxes1_xyxy[..., 1], boxes2_xyxy[..., 1]))
    intersection = width * height
    area1 = (boxes1_xyxy[..., 2] - boxes1_xyxy[..., 0]) * (boxes1_xyxy[..., 3] - boxes1_xyxy[..., 1])
    area2 = (boxes2_xyxy[..., 2] - boxes2_xyxy[..., 0]) * (boxes2_xyxy[..., 3] - boxes2_xyxy[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area1 + area2 - intersection)


def box_iou_numpy(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """Pairwise IoU of numpy boxes, the counterpart of ``box_iou``: ``[N, 4]`` xyxy, ``[M, 4]`` xyxy -> ``[N, M]``.

    Same arithmetic as ``matched_box_iou_numpy`` (continuous coordinates, NaN for two empty boxes).
    """
    return matched_box_iou_numpy(np.asarray(boxes1_xyxy)[:, None, :], np.asarray(boxes2_xyxy)[None, :, :])


def act_pixel_iou_numpy(boxes1_xyxy: np.ndarray, boxes2_xyxy: np.ndarray) -> np.ndarray:
    """ACT's IoU of pixel boxes (``ACT_utils.py``: ``iou2d``, and per frame in ``iou3d``), paired by numpy
    broadcasting like ``matched_box_iou_numpy``: ``[..., 4]`` xyxy and ``[..., 4]`` xyxy -> ``[...]``.

    Boxes are x1, y1, x2, y2 in pixels with inclusive corners, so a box spans ``x2 - x1 + 1`` pixels:
    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)`` and the intersection runs from ``max(x1)`` to ``min(x2 + 1)``.
    The expressions are ACT's, grouped as ACT groups them, and each box's own terms are computed in its own
    dtype before the two meet: ACT holds detections in float32 and ground truth in float64, and a float32
    ``x2 + 1`` or area rounds differently from a float64 one, which decides IoUs that sit on a threshold.
    Nothing is clipped and areas are not clamped; two boxes with a zero union give NaN (0 / 0), as in ACT.
    Only meaningful in pixels: on normalised boxes the ``+ 1`` swamps the box sizes.
    """
    area1 = (boxes1_xyxy[..., 2] - boxes1_xyxy[..., 0] + 1) * (boxes1_xyxy[..., 3] - boxes1_xyxy[..., 1] + 1)
    area2 = (boxes2_xyxy[..., 2] - boxes2_xyxy[..., 0] + 1) * (boxes2_xyxy[..., 3] - boxes2_xyxy[..., 1] + 1)
    x_lo = np.maximum(boxes1_xyxy[..., 0], boxes2_xyxy[..., 0])
    y_lo = np.maximum(boxes1_xyxy[..., 1], boxes2_xyxy[..., 1])
    x_hi = np.minimum(boxes1_xyxy[..., 2] + 1, boxes2_xyxy[..., 2] + 1)
    y_hi = np.minimum(boxes1_xyxy[..., 3] + 1, boxes2_xyxy[..., 3] + 1)
    # The Python int 0 keeps the array's dtype (a float32 pair stays float32, as in ACT's tube linking).
    intersection = np.maximum(0, x_hi - x_lo) * np.maximum(0, y_hi - y_lo)
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area1 + area2 - intersection)
