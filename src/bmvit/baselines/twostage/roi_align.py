"""RoIAlign in plain PyTorch (torchvision is not a runtime dependency of bmvit).

Adapted from the RoIAlign of Mask R-CNN (He et al., ICCV 2017) as torchvision implements it
(pytorch/vision, torchvision/csrc/ops/cpu/roi_align_kernel.cpp, ``roi_align_forward_kernel_impl``
and ``bilinear_interpolate``); changes: written with tensor ops instead of per-sample loops, using
that bilinear interpolation is separable: for each box, the average of the ``gh x gw`` bilinear
samples of a bin equals ``Ay @ F @ Ax^T`` with ``Ay [out_h, H]`` and ``Ax [out_w, W]`` the summed
per-axis interpolation weights. The result is torchvision's up to float rounding, including its
edge rules:

- a box ``(x1, y1, x2, y2)`` is scaled by ``spatial_scale``; with ``aligned=True`` it is shifted by
  -0.5 so that pixel ``i`` covers ``[i, i + 1)`` and its centre is sampled at ``i + 0.5``; with
  ``aligned=False`` (legacy) no shift, and boxes are at least 1 pixel wide and high;
- each of the ``out_h x out_w`` bins averages ``gh x gw`` samples at the bin's sub-cell centres,
  ``gh = sampling_ratio`` or, when ``sampling_ratio <= 0``, ``ceil(box_h / out_h)`` (per box);
- a sample further than one pixel outside the map (``y < -1`` or ``y > H``, same for ``x``)
  counts as 0; one within that margin is clamped to the border pixels.

Gradients flow to the features, not to the boxes (as in torchvision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def boxes_to_rois(boxes: Tensor | Sequence[Tensor], batch_size: int | None = None) -> Tensor:
    """``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` from either that form or a list of ``[K_i, 4]``.

    Args:
        boxes: a ``[K, 5]`` tensor, or one ``[K_i, 4]`` tensor per image (``K_i`` may be 0).
        batch_size: the number of images; checked against the list length / batch indices when given.
    """
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"roi_align: boxes as a tensor must be [K, 5] (batch_index, x1, y1, x2, y2), "
                             f"got shape {tuple(boxes.shape)}")
        return boxes
    boxes = list(boxes)
    if batch_size is not None and len(boxes) != batch_size:
        raise ValueError(f"roi_align: got {len(boxes)} box lists for a batch of {batch_size} feature maps")
    for i, b in enumerate(boxes):
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"roi_align: boxes[{i}] must be [K_i, 4] (x1, y1, x2, y2), got shape {tuple(b.shape)}")
    if not boxes:
        return torch.zeros(0, 5)
    rows = [torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)]
    return torch.cat(rows, dim=0)


def roi_align(
    input: Tensor,
    boxes: Tensor | Sequence[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = True,
) -> Tensor:
    """Pool a fixed-size feature map out of each box, as ``torchvision.ops.roi_align`` does.

    Args:
        input: ``[B, C, H, W]`` feature maps.
        boxes: ``[K, 5]`` rows ``(batch_index, x1, y1, x2, y2)``, or a list of ``B`` tensors ``[K_i, 4]``
            ``(x1, y1, x2, y2)``; coordinates in input-image units, mapped to feature-map pixels by
            ``spatial_scale`` (1.0: already feature-map pixels).
        output_size: ``(out_h, out_w)`` bins per box (an int for square).
        spatial_scale: multiplies the box coordinates (e.g. 1/16 for a stride-16 map).
        sampling_ratio: samples per bin along each axis; ``<= 0`` = adaptive, ``ceil(box size / bins)``.
        aligned: shift boxes by -0.5 pixel (pixel-centre model; what detectron2 and PySlowFast use).

    Returns:
        ``[K, C, out_h, out_w]`` in ``input``'s dtype, rows in the order of ``boxes``.
    """
    if input.ndim != 4:
        raise ValueError(f"roi_align: input must be [B, C, H, W], got shape {tuple(input.shape)}")
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"roi_align: output_size must be positive, got {output_size}")
    rois = boxes_to_rois(boxes, input.shape[0]).to(input.device)
    batch, _, height, width = input.shape
    # Box geometry in float32 at least (torchvision computes it in the input's type), no gradient.
    geo_dtype = torch.promote_types(input.dtype, torch.float32)
    rois = rois.detach().to(geo_dtype)
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:3] * spatial_scale - offset  # [K, 2] (x, y)
    size = rois[:, 3:5] * spatial_scale - offset - start  # [K, 2] (w, h)
    if not aligned:
        size = size.clamp(min=1.0)
    on_meta = input.device.type == "meta"
    ax = _axis_weights(start[:, 0], size[:, 0], out_w, width, sampling_ratio, on_meta)  # [K, out_w, W]
    ay = _axis_weights(start[:, 1], size[:, 1], out_h, height, sampling_ratio, on_meta)  # [K, out_h, H]
    batch_index = rois[:, 0].long()
    if not on_meta and batch_index.numel() and (batch_index.min() < 0 or batch_index.max() >= batch):
        raise ValueError(f"roi_align: box batch indices must be in [0, {batch}), got {batch_index.unique().tolist()}")
    # K = 0 takes the same path, so an empty batch of boxes stays in the autograd graph.
    features = input.index_select(0, batch_index)  # [K, C, H, W]
    ay, ax = ay.to(input.dtype), ax.to(input.dtype)
    # [K, 1, out_h, H] @ [K, C, H, W] @ [K, 1, W, out_w] -> [K, C, out_h, out_w]
    return ay.unsqueeze(1) @ features @ ax.transpose(1, 2).unsqueeze(1)


def _axis_weights(
    start: Tensor, length: Tensor, bins: int, size: int, sampling_ratio: int, on_meta: bool
) -> Tensor:
    """Per-box interpolation weights along one axis: ``[K, bins, size]``.

    Row ``p`` holds, for each pixel, the weight it gets in bin ``p``: the bilinear weights of the
    bin's ``g`` samples, summed, divided by ``g`` (the average over the bin's samples along this
    axis). Samples beyond the one-pixel margin weigh nothing.
    """
    bin_size = length / bins  # [K]
    if sampling_ratio > 0:
        grid = torch.full_like(length, float(sampling_ratio))
        max_grid = sampling_ratio
    else:
        grid = torch.ceil(length / bins).clamp(min=0)
        # A data-dependent size cannot be read on the meta device (FLOP counting); there the boxes
        # are the default whole-frame boxes, whose grid is ceil(size / bins).
        max_grid = math.ceil(size / bins) if on_meta else int(grid.max().item()) if grid.numel() else 0
    max_grid = max(1, max_grid)
    bin_idx = torch.arange(bins, device=start.device, dtype=start.dtype)
    sample_idx = torch.arange(max_grid, device=start.device, dtype=start.dtype)
    g = grid[:, None, None]
    coord = (start[:, None, None] + bin_idx[None, :, None] * bin_size[:, None, None]
             + (sample_idx[None, None, :] + 0.5) * bin_size[:, None, None] / g.clamp(min=1))  # [K, bins, S]
    valid = (sample_idx[None, None, :] < g) & (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    at_edge = low >= size - 1
    low = torch.where(at_edge, torch.full_like(low, size - 1), low)
    high = torch.where(at_edge, low, low + 1)
    frac = torch.where(at_edge, torch.zeros_like(coord), coord - low.to(coord.dtype))
    scale = valid.to(coord.dtype) / g.clamp(min=1)
    weights = torch.cat([(1.0 - frac) * scale, frac * scale], dim=2)  # [K, bins, 2S]
    index = torch.cat([low, high], dim=2)
    out = torch.zeros(start.shape[0], bins, size, dtype=coord.dtype, device=coord.device)
    return out.scatter_add_(2, index, weights)


class RoIAlign(torch.nn.Module):
    """Module form of ``roi_align`` with fixed ``output_size``, ``spatial_scale``, ``sampling_ratio``, ``aligned``."""

    def __init__(
        self, output_size: int | tuple[int, int], spatial_scale: float = 1.0, sampling_ratio: int = -1,
        aligned: bool = True,
    ) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, input: Tensor, boxes: Tensor | Sequence[Tensor]) -> Tensor:
        """``input [B, C, H, W]``, ``boxes`` as in ``roi_align`` -> ``[K, C, out_h, out_w]``."""
        return roi_align(input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")


__all__ = ["RoIAlign", "boxes_to_rois", "roi_align"]
