"""The two-stage baseline's plug into training and evaluation (a ``bmvit.build.DetectorFamily``).

What differs from BMViT: the criterion is a plain BCE over each given box's classes, the scores are
the class probabilities of the given boxes, each item carries the person boxes to classify (from the
``twostage`` config section's files), and the forward takes those boxes beside the clips.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from bmvit.baselines.twostage.criterion import TwoStageCriterion, TwoStagePostProcess
from bmvit.baselines.twostage.dataset import PersonBoxDataset, person_boxes_path
from bmvit.baselines.twostage.person_boxes import read_person_boxes
from bmvit.build import DetectorFamily
from bmvit.config import Config, EvalConfig


def _criterion(config: Config, num_classes: int) -> nn.Module:
    return TwoStageCriterion(num_classes, weight_action=config.loss.weight_action)


def _postprocess(cfg: EvalConfig) -> nn.Module:
    return TwoStagePostProcess()


def _dataset(base: Dataset, config: Config, split: str, train: bool) -> Dataset:
    """``base`` with the person boxes of ``split``: ``twostage.train_boxes`` (optional: without it,
    the annotated actors only) or ``twostage.val_boxes`` (required: evaluation classifies its boxes)."""
    boxes_cfg = config.twostage
    boxes_cfg.validate()
    relative = boxes_cfg.train_boxes if split == "train" else boxes_cfg.val_boxes
    if not relative and split != "train":
        raise FileNotFoundError("a two-stage model classifies detector boxes: set twostage.val_boxes to a "
                                "person-box CSV (AVA: PySlowFast's ava_detection_val_boxes_and_labels.csv)")
    boxes = read_person_boxes(person_boxes_path(config.data.root, relative), boxes_cfg.box_threshold) \
        if relative else None
    return PersonBoxDataset(base, boxes, train=train, jitter=boxes_cfg.box_jitter if train else 0.0)


def _inputs(clips: Tensor, targets: list[dict[str, Any]]) -> tuple:
    # A clip that could not be read (its target has no proposals) gets no boxes to classify.
    empty = clips.new_zeros(0, 4)
    return clips, [t["proposals_xyxy"].to(clips.device, non_blocking=True) if "proposals_xyxy" in t else empty
                   for t in targets]


TWO_STAGE = DetectorFamily(name="twostage", criterion=_criterion, postprocess=_postprocess, dataset=_dataset,
                           inputs=_inputs)
"""The family of ``TwoStageMViT``."""

__all__ = ["TWO_STAGE"]
