"""Loss and scoring of the two-stage baseline (``bmvit.baselines.twostage.model.TwoStageMViT``).

The two-stage model classifies given person boxes, so there is nothing to match and no actor score:

- ``TwoStageCriterion``: binary cross-entropy of every box's action logits against its multi-hot
  labels (PySlowFast's AVA loss, ``MODEL.LOSS_FUNC: bce`` on sigmoid outputs). Normalised as the
  action term of ``bmvit.losses.SetCriterion``: summed over the C classes, divided by the number
  of boxes of the global batch, so both models train with the same optimiser settings (PySlowFast's
  mean over boxes *and* classes is C times smaller; with AdamW that changes only how gradient
  clipping and weight decay bite).
- ``TwoStagePostProcess``: ``score(box, class) = sigmoid(logit)``. PySlowFast writes the class
  probability alone; the detector's score only decided which boxes were classified (the threshold
  applied when reading the person-box file). Like ``bmvit.postprocess``, the only place the
  two-stage sigmoid lives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.losses import boxes_per_process


class TwoStageCriterion(nn.Module):
    """BCE over the classes of each person box.

    Args:
        num_classes: C, the width of ``pred_actions`` and of the targets' ``proposal_labels``.
        weight_action: weight of the loss.
    """

    def __init__(self, num_classes: int, weight_action: float = 1.0) -> None:
        super().__init__()
        if num_classes < 1 or weight_action < 0:
            raise ValueError(f"TwoStageCriterion: num_classes must be >= 1 and weight_action >= 0, "
                             f"got {num_classes} and {weight_action}")
        self.num_classes, self.weight_action = num_classes, weight_action

    def forward(self, outputs: dict[str, Any], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Args:
            outputs: ``pred_actions [K, C]`` logits for the boxes of all clips, clip 0's first.
            targets: one dict per clip with ``proposal_labels [K_i, C]`` multi-hot (``sum K_i = K``).

        Returns:
            ``loss_action`` (weighted) and ``loss`` (the same), scalar tensors.
        """
        logits = outputs["pred_actions"].float()
        for b, t in enumerate(targets):
            if "proposal_labels" not in t:
                raise KeyError(f"targets[{b}] has no 'proposal_labels' (a two-stage dataset's target); "
                               f"got keys {sorted(t)}")
        labels = torch.cat([t["proposal_labels"].to(logits.device, torch.float32).reshape(-1, self.num_classes)
                            for t in targets]) if targets else logits.new_zeros(0, self.num_classes)
        if logits.shape != labels.shape:
            raise ValueError(f"pred_actions is {tuple(logits.shape)} but the targets hold {tuple(labels.shape)} "
                             f"labels (one row per person box, C={self.num_classes})")
        num_boxes = boxes_per_process(labels.shape[0], logits.device)
        loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="sum") / num_boxes
        loss = self.weight_action * loss
        return {"loss_action": loss, "loss": loss}


class TwoStagePostProcess(nn.Module):
    """``TwoStageMViT`` outputs -> per-clip detections: the given boxes and their class probabilities."""

    @torch.no_grad()
    def forward(self, outputs: dict[str, Any]) -> list[dict[str, Tensor]]:
        """Args:
            outputs: ``pred_actions [K, C]`` logits, ``boxes_xyxy [K, 4]`` normalised boxes of the
                model input, ``boxes_per_clip`` (list of ``K_i``).

        Returns:
            One dict per clip: ``boxes_xyxy [K_i, 4]`` clamped to [0, 1], ``action_scores [K_i, C]`` =
            sigmoid(logits), float32.
        """
        missing = [k for k in ("pred_actions", "boxes_xyxy", "boxes_per_clip") if k not in outputs]
        if missing:
            raise KeyError(f"two-stage outputs lack {missing}; got keys {sorted(outputs)}")
        scores = outputs["pred_actions"].float().sigmoid()
        boxes = outputs["boxes_xyxy"].float().clamp(0.0, 1.0)
        counts = [int(k) for k in outputs["boxes_per_clip"]]
        return [{"boxes_xyxy": b, "action_scores": s}
                for b, s in zip(boxes.split(counts), scores.split(counts))]


__all__ = ["TwoStageCriterion", "TwoStagePostProcess"]
