"""The two-stage baseline BMViT is compared with: MViTv2-S classifying person boxes by RoIAlign.

Supplementary Sec. 2 / Fig. 2 compares BMViT with "the corresponding two-stage approach of the same
MViT", retrained with MViTv2's settings (27.05 mAP on AVA v2.2). That model is PySlowFast's MViT with
``DETECTION.ENABLE``; adapted from PySlowFast (facebookresearch/SlowFast,
slowfast/models/video_model_builder.py: ``MViT`` with ``ResNetRoIHead`` from
slowfast/models/head_helper.py); changes: our own RoIAlign (``roi_align`` beside this file) instead of
detectron2's, boxes given normalised to the model input (so no ``SPATIAL_SCALE_FACTOR`` to keep in
step with the backbone's stride), logits out (the sigmoid is in ``criterion.TwoStagePostProcess``),
and a whole-frame box per clip when no boxes are given.

    clip [B, 3, T, H, W] -> MViTv2 (Kinetics geometry, every pooling) -> tokens [B, T', H', W', C]
        -> mean over T'                                   (PySlowFast: AvgPool3d over the whole T')
        -> RoIAlign of each person box, 7x7, aligned      (ROI_XFORM_RESOLUTION 7, sampling_ratio 0)
        -> max-pool 7x7 -> dropout -> linear C -> num_classes logits per box

For MViTv2-S at 16x224 the map is 7x7 (stride 32): a person box covers a few cells, which is the
resolution argument BMViT makes against this design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bmvit.baselines.twostage.family import TWO_STAGE
from bmvit.baselines.twostage.roi_align import roi_align
from bmvit.models import (
    create_detector,
    detector_config_from_dict,
    detector_config_to_dict,
    register_detector_class,
    register_model,
)
from bmvit.models.backbones import create_backbone


@dataclass
class TwoStageConfig:
    """Architecture of a two-stage detector head on a video backbone (saved in checkpoints).

    Attributes:
        backbone: a name from ``bmvit.list_backbones()`` (``mvitv2_s``: Kinetics geometry, 16x224).
        backbone_overrides: fields of the backbone's config to change (``input_size``, ``drop_path_rate``...).
        num_classes: action classes C (80 on AVA).
        roi_resolution: RoIAlign output bins per side (PySlowFast ``DETECTION.ROI_XFORM_RESOLUTION`` = 7).
        sampling_ratio: RoIAlign samples per bin per axis; 0 = adaptive (PySlowFast/detectron2's 0).
        aligned: RoIAlign's half-pixel shift (PySlowFast ``DETECTION.ALIGNED`` = True).
        dropout: dropout before the linear classifier (PySlowFast ``MODEL.DROPOUT_RATE``, 0.5 in its AVA configs).
    """

    backbone: str = "mvitv2_s"
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 80
    roi_resolution: int = 7
    sampling_ratio: int = 0
    aligned: bool = True
    dropout: float = 0.5

    def __post_init__(self) -> None:
        checks = {"backbone": str, "backbone_overrides": dict, "num_classes": int, "roi_resolution": int,
                  "sampling_ratio": int, "aligned": bool, "dropout": (int, float)}
        for name, expected in checks.items():
            value = getattr(self, name)
            wrong_bool = isinstance(value, bool) and expected is not bool
            if not isinstance(value, expected) or wrong_bool:
                raise TypeError(f"TwoStageConfig.{name} must be {getattr(expected, '__name__', 'a number')}, "
                                f"got {type(value).__name__} {value!r}")
        if self.num_classes < 1 or self.roi_resolution < 1:
            raise ValueError(f"TwoStageConfig: num_classes and roi_resolution must be >= 1, got "
                             f"{self.num_classes} and {self.roi_resolution}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TwoStageConfig.dropout must be in [0, 1), got {self.dropout}")
        self.dropout = float(self.dropout)
        # JSON turns tuples into lists; normalise so that from_dict(to_dict(c)) == c.
        self.backbone_overrides = {str(k): _freeze(v) for k, v in self.backbone_overrides.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (tuples become lists), ready for ``json.dumps``."""
        return detector_config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TwoStageConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a config from another version or model)."""
        return detector_config_from_dict(cls, d)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, (list, tuple)) else value


@register_detector_class
class TwoStageMViT(nn.Module):
    """Classify given person boxes from a video backbone's last token map (RoIAlign head).

    Args:
        config: the architecture; ``model.config`` keeps it.
        backbone: an already built backbone instead of ``create_backbone(config.backbone, ...)``.

    ``family`` tells the engine to pass each clip's person boxes, and which loss and scoring to use.
    """

    family = TWO_STAGE
    config_class = TwoStageConfig

    def __init__(self, config: TwoStageConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone if backbone is not None else create_backbone(config.backbone,
                                                                              **config.backbone_overrides)
        embed_dim = getattr(self.backbone, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise TypeError(f"backbone {type(self.backbone).__name__} has no int attribute embed_dim")
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(embed_dim, config.num_classes)
        # PySlowFast's head init: a small normal for the classifier, zero bias.
        nn.init.normal_(self.projection.weight, std=0.01)
        nn.init.zeros_(self.projection.bias)

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of the clips the backbone was built for."""
        return tuple(self.backbone.input_size)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names (as in ``named_parameters()``) to exclude from weight decay."""
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def forward(self, clip: Tensor, boxes: Sequence[Tensor] | None = None) -> dict[str, Any]:
        """Action logits for each person box of each clip.

        Args:
            clip: ``[B, 3, T, H, W]`` float, normalised as the backbone expects.
            boxes: ``B`` tensors ``[K_i, 4]``: normalised ``x1, y1, x2, y2`` of the people in clip
                ``i``'s key frame, in the model input's frame (``K_i`` may be 0). ``None``: one
                whole-frame box per clip (what ``bmvit flops`` counts).

        Returns:
            ``pred_actions [K, C]`` logits with ``K = sum K_i`` (boxes of clip 0 first, in the given
            order), ``box_batch_index [K]`` int64 (the clip of each row), ``boxes_xyxy [K, 4]`` (the
            boxes given, concatenated) and ``boxes_per_clip`` (the list of ``K_i``).
        """
        if clip.ndim != 5 or clip.shape[1] != 3:
            raise ValueError(f"TwoStageMViT expects a clip [B, 3, T, H, W], got shape {tuple(clip.shape)}")
        batch = clip.shape[0]
        if boxes is None:
            boxes = [clip.new_tensor([[0.0, 0.0, 1.0, 1.0]]) for _ in range(batch)]
        boxes = [b.to(device=clip.device, dtype=torch.float32) for b in boxes]
        if len(boxes) != batch or any(b.ndim != 2 or b.shape[1] != 4 for b in boxes):
            shapes = [tuple(b.shape) for b in boxes]
            raise ValueError(f"TwoStageMViT expects {batch} box tensors [K_i, 4] (one per clip), got {shapes}")
        tokens = self.backbone(clip)  # [B, T', H', W', C]
        if tokens.ndim != 5 or tokens.shape[-1] != self.projection.in_features:
            raise RuntimeError(f"backbone {self.config.backbone!r} returned {tuple(tokens.shape)}; expected "
                               f"[B, T', H', W', {self.projection.in_features}]")
        fmap = tokens.mean(dim=1).permute(0, 3, 1, 2)  # [B, C, H', W']
        height, width = fmap.shape[-2:]
        # Normalised input-frame boxes -> feature-map pixels: the map covers the whole input.
        scale = torch.tensor([width, height, width, height], device=clip.device, dtype=torch.float32)
        pooled = roi_align(fmap, [b * scale for b in boxes], self.config.roi_resolution, 1.0,
                           self.config.sampling_ratio, self.config.aligned)  # [K, C, R, R]
        features = pooled.amax(dim=(2, 3))  # PySlowFast's MaxPool2d(resolution) after RoIAlign
        logits = self.projection(self.dropout(features))
        counts = [int(b.shape[0]) for b in boxes]
        batch_index = torch.cat([torch.full((k,), i, dtype=torch.int64, device=clip.device)
                                 for i, k in enumerate(counts)])
        return {"pred_actions": logits, "box_batch_index": batch_index, "boxes_xyxy": torch.cat(boxes),
                "boxes_per_clip": counts}


def _create_twostage(backbone_name: str, num_classes: int, backbone_weights: str | None,
                     weights_format: str | None, token_selection: str, /, **overrides: Any) -> TwoStageMViT:
    if token_selection != "temporal_mean":
        raise ValueError(f"two-stage models average the token map over time before RoIAlign (PySlowFast's "
                         f"ResNetRoIHead); token_selection must be 'temporal_mean', got {token_selection!r} "
                         "(set model.token_selection=temporal_mean)")
    return create_detector(TwoStageMViT, TwoStageConfig, backbone_name, num_classes, backbone_weights, weights_format,
                          overrides)


@register_model
def twostage_mvitv2_s(num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None,
                      token_selection: str = "temporal_mean", **overrides: Any) -> TwoStageMViT:
    """Two-stage MViTv2-S as PySlowFast builds it for AVA: Kinetics geometry (16x224, every pooling,
    768 x 8 x 7 x 7 tokens), RoIAlign 7x7 on the time-averaged map, max-pool, dropout 0.5, linear.

    ``backbone_weights``: e.g. PySlowFast's ``MViTv2_S_16x4_k400_f302660347.pyth``; ``overrides``:
    other ``TwoStageConfig`` fields.
    """
    return _create_twostage("mvitv2_s", num_classes, backbone_weights, weights_format, token_selection, **overrides)


@register_model
def twostage_mvit_tiny(num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None,
                       token_selection: str = "temporal_mean", **overrides: Any) -> TwoStageMViT:
    """The two-stage head on ``mvit_tiny`` (every pooling kept: 192 x 8 x 4 x 4 tokens at 16x128), for
    tests and CPU demos."""
    return _create_twostage("mvit_tiny", num_classes, backbone_weights, weights_format, token_selection, **overrides)


__all__ = ["TwoStageConfig", "TwoStageMViT", "twostage_mvit_tiny", "twostage_mvitv2_s"]
