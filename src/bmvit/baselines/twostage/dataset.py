"""The dataset glue of the two-stage baseline: key frames served with the person boxes to classify.

``PersonBoxDataset`` turns a ``KeyFrameDataset`` (AVA or UCF101-24 / JHMDB-21) into the two-stage one:
training uses the annotated actors' boxes, jittered, plus the training file's detector boxes if one is
given (labelled from the file; unlabelled ones are negatives); evaluation uses the detector boxes only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bmvit.baselines.twostage.person_boxes import FramePersonBoxes
from bmvit.box_ops import box_cxcywh_to_xyxy


class PersonBoxDataset(Dataset):
    """A ``KeyFrameDataset`` whose items also carry the person boxes a two-stage model classifies.

    Args:
        base: the key frames, clips and transform (e.g. an ``AVADataset``).
        person_boxes: detector boxes per key frame (``read_person_boxes``); required for evaluation,
            optional for training (then the annotated actors' boxes only).
        train: ``True``: the annotated actors (labelled) and the detector boxes (labelled from the
            file: with the trained classes among their action ids they are positives, else negatives),
            each box jittered by ``jitter``. ``False``: the detector boxes only, with their scores.
        jitter: in training, each coordinate moves by ``U(-jitter, jitter)`` times the box's width
            (x) or height (y), in the model input's frame (after flips and zooms).

    An item is ``(clip, target)`` as ``base`` gives it, with the person boxes passed through the same
    transform, plus ``proposals_xyxy [K, 4]`` float32 normalised ``x1, y1, x2, y2`` of the model
    input, ``proposal_labels [K, C]`` multi-hot (zeros at evaluation) and, at evaluation,
    ``proposal_scores [K]`` (the detector's). ``boxes``/``labels`` hold the same K rows (unjittered,
    cxcywh). A detector box of a key frame missing from ``base`` is never used; a key frame without
    detector boxes has ``K = 0`` at evaluation.
    """

    def __init__(self, base: Dataset, person_boxes: Mapping[tuple[str, int], FramePersonBoxes] | None, *,
                 train: bool, jitter: float = 0.05) -> None:
        if not train and person_boxes is None:
            raise ValueError("PersonBoxDataset: evaluation needs the detector's person boxes (person_boxes=None)")
        if not 0.0 <= jitter < 0.5:
            raise ValueError(f"PersonBoxDataset: jitter must be in [0, 0.5), got {jitter}")
        self.base, self.person_boxes, self.train, self.jitter = base, person_boxes or {}, train, jitter
        self.class_ids = list(base.class_ids)
        self._column = {c: i for i, c in enumerate(self.class_ids)}

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str):
        # keyframes, keyframe_keys, class_names, label_map, ...: those of the wrapped dataset.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def rows(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The person rows of key frame ``index`` before any transform: boxes ``[K, 4]`` (original
        frame), labels ``[K, C]`` and scores ``[K]`` (1.0 for annotated actors)."""
        k = self.base.keyframes[index]
        num_classes = len(self.class_ids)
        boxes, labels, scores = [], [], []
        if self.train:
            actors = np.asarray(k.labels).sum(axis=1) > 0
            boxes.append(np.asarray(k.boxes_xyxy, dtype=np.float32)[actors].reshape(-1, 4))
            labels.append(np.asarray(k.labels, dtype=np.float32)[actors].reshape(-1, num_classes))
            scores.append(np.ones(int(actors.sum()), dtype=np.float32))
        detected = self.person_boxes.get((k.video_id, int(k.timestamp)))
        if detected is not None and len(detected):
            multi_hot = np.zeros((len(detected), num_classes), dtype=np.float32)
            if self.train:
                for row, actions in enumerate(detected.action_ids):
                    cols = [self._column[a] for a in actions if a in self._column]
                    multi_hot[row, cols] = 1.0
            boxes.append(detected.boxes_xyxy.astype(np.float32))
            labels.append(multi_hot)
            scores.append(detected.scores.astype(np.float32))
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros((0, num_classes), np.float32), np.zeros(0, np.float32)
        return np.concatenate(boxes), np.concatenate(labels), np.concatenate(scores)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        k = self.base.keyframes[index]
        clip = self.base.read_clip(index)
        boxes, labels, scores = self.rows(index)
        target = {
            "boxes_xyxy": boxes,
            "labels": labels,
            "person_ids": np.arange(len(boxes), dtype=np.int64),  # row numbers: which rows a transform kept
            "video_id": k.video_id,
            "timestamp": int(k.timestamp),
            "orig_size": (int(clip.shape[1]), int(clip.shape[2])),
        }
        clip, target = self.base.transform(clip, target)
        proposals = box_cxcywh_to_xyxy(target["boxes"]).clamp(0.0, 1.0)
        if self.train and self.jitter > 0 and len(proposals):
            proposals = jitter_boxes_xyxy(proposals, self.jitter)
        target["proposals_xyxy"] = proposals.float()
        target["proposal_labels"] = target["labels"]
        if not self.train:
            target["proposal_scores"] = torch.as_tensor(scores)[target["person_ids"]]
        return clip, target


def jitter_boxes_xyxy(boxes_xyxy: Tensor, jitter: float, generator: torch.Generator | None = None) -> Tensor:
    """Move each coordinate of normalised ``[K, 4]`` boxes by ``U(-jitter, jitter)`` of the box's width
    (x) or height (y), clamp to [0, 1]; a box that would lose its area keeps its old coordinates."""
    wh = (boxes_xyxy[:, 2:] - boxes_xyxy[:, :2]).repeat(1, 2)
    delta = (torch.rand(boxes_xyxy.shape, generator=generator, dtype=boxes_xyxy.dtype) * 2 - 1) * jitter * wh
    moved = (boxes_xyxy + delta).clamp(0.0, 1.0)
    ok = (moved[:, 2] > moved[:, 0]) & (moved[:, 3] > moved[:, 1])
    return torch.where(ok[:, None], moved, boxes_xyxy)


def person_boxes_path(root: str | os.PathLike, relative: str) -> Path:
    """``relative`` under ``root`` (an absolute path stays), with an error naming both if it is missing."""
    path = Path(relative) if os.path.isabs(relative) else Path(root) / relative
    if not path.is_file():
        raise FileNotFoundError(f"person-box file {path} does not exist (data.root={root}); for the synthetic "
                                "dataset, make it with `bmvit synth --out ROOT --person-boxes --person-boxes-only`")
    return path


__all__ = ["PersonBoxDataset", "jitter_boxes_xyxy", "person_boxes_path"]
