"""Frame-mAP for UCF101-24 and JHMDB-21, as ACT computes it (the code MOC, TubeR and most later work reuse).

Adapted from ACT (Kalogeiton et al., "Action Tubelet Detector for Spatio-Temporal Action Localization", ICCV
2017; github.com/vkalogeiton/caffe, branch act-detector, ``ACT.py::frameAP`` and ``ACT_utils.py::pr_to_ap``),
read in its copy in MOC-Detector (github.com/MCG-NJU/MOC-Detector, ``src/ACT.py``). Changes: vectorised over
frames (greedy matching iterates over the rank of a detection within its (frame, class) group, not over
detections); boxes are normalised, so ACT's pixel ``+1`` in widths and heights is dropped; tied scores keep
file order (ACT's order under ties depends on its own pickle layout, which a CSV cannot reproduce); a class
without ground truth is None and left out of the mean (ACT would divide by zero).

The protocol differs from AVA's (``frame_map.evaluate_ava``): every class is evaluated, there is no per-frame
cap, and a detection is matched to the best *remaining* ground-truth box of its frame and class (a matched box
is removed), instead of to the best box overall. AP is the trapezoidal area under the raw precision-recall
curve starting at (recall 0, precision 1), computed in float32 as ACT does.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from bmvit.box_ops import matched_box_iou_numpy
from bmvit.data.ava import BoxRows
from bmvit.evaluation.frame_map import ClassAP, FrameMapResult, _class_ids, _dense_class, _keyframe_codes


def evaluate_frame_ap(
    groundtruth: BoxRows, detections: BoxRows, label_map: Mapping[int, str], iou_threshold: float = 0.5
) -> FrameMapResult:
    """Frame-AP per class and its mean, ACT's protocol (UCF101-24, JHMDB-21).

    Args:
        groundtruth: one row per annotated box: ``timestamps`` hold the frame number, ``action_ids`` the
            class (one label per box).
        detections: one row per (box, class) with its score in ``extra``, frames numbered as in
            ``groundtruth``.
        label_map: ``{class_id: name}``: every class is evaluated.
        iou_threshold: 0.5 by default.

    Returns:
        ``FrameMapResult`` with ``protocol="act"``; per-class AP None where the class has no ground truth.

    Raises:
        ValueError: a row whose class is not in the label map (naming file and line), an empty label map.
    """
    class_ids = _class_ids(label_map)
    for rows in (groundtruth, detections):
        member, _ = _dense_class(rows.action_ids, class_ids)
        if not member.all():
            r = int(np.flatnonzero(~member)[0])
            raise ValueError(f"{rows.path}:{int(rows.lines[r])}: class {int(rows.action_ids[r])} is not in the label "
                             f"map ({class_ids.size} classes)")
    gt_key, det_key, _, _ = _keyframe_codes(groundtruth, detections, ())
    num_classes = class_ids.size
    gt_cls = np.searchsorted(class_ids, groundtruth.action_ids)
    det_cls = np.searchsorted(class_ids, detections.action_ids)
    score = detections.extra.astype(np.float64)

    # Rank of each detection in its class: descending score, file order among ties.
    by_class = np.lexsort((np.arange(score.size), -score, det_cls))
    tp = _match_remaining(gt_key * num_classes + gt_cls, groundtruth.boxes_xyxy,
                          det_key * num_classes + det_cls, detections.boxes_xyxy, by_class, iou_threshold)

    num_gt = np.bincount(gt_cls, minlength=num_classes)
    bounds = np.searchsorted(det_cls[by_class], np.arange(num_classes + 1))
    per_class = []
    for c in range(num_classes):
        ap = None
        if num_gt[c]:
            ap = act_average_precision(tp[by_class[bounds[c]:bounds[c + 1]]], int(num_gt[c]))
        per_class.append(ClassAP(id=int(class_ids[c]), name=str(label_map[int(class_ids[c])]), ap=ap))
    values = [c.ap for c in per_class if c.ap is not None]
    if not values:
        raise ValueError(f"{groundtruth.path}: no ground-truth box of any label-map class")
    return FrameMapResult(
        mAP=float(np.mean(values)),
        per_class=per_class,
        protocol="act",
        num_detections_used=int(score.size),
        num_groundtruth=int(num_gt.sum()),
    )


def act_average_precision(tp_ranked: np.ndarray, num_gt: int) -> float:
    """ACT's ``pr_to_ap``: trapezoids under the precision-recall curve, (recall 0, precision 1) first, float32.

    Args:
        tp_ranked: [N] bool, the class's detections from the highest score down.
        num_gt: ground-truth boxes (or tubes) of the class, > 0.
    """
    tp_count = np.cumsum(tp_ranked, dtype=np.int64)
    seen = np.arange(1, tp_ranked.size + 1)
    pr = np.empty((tp_ranked.size + 1, 2), dtype=np.float32)
    pr[0] = (1.0, 0.0)
    pr[1:, 0] = tp_count / seen  # float64 division stored in float32, as ACT's float(tp) / float(tp + fp)
    pr[1:, 1] = tp_count / num_gt
    recall_step = pr[1:, 1] - pr[:-1, 1]
    precision_sum = pr[1:, 0] + pr[:-1, 0]
    return float(np.sum(recall_step * precision_sum * np.float32(0.5)))


def _match_remaining(
    gt_group: np.ndarray, gt_boxes: np.ndarray, det_group: np.ndarray, det_boxes: np.ndarray, ranked: np.ndarray,
    iou_threshold: float,
) -> np.ndarray:
    """ACT's greedy matching: detections in ``ranked`` order; each takes its best remaining GT box of its
    group if IoU >= threshold (the box is then removed), else is a false positive.

    Args:
        gt_group, det_group: [M], [N] int64 (frame, class) group codes.
        gt_boxes, det_boxes: [M, 4], [N, 4] xyxy.
        ranked: [N] detection indices, best first within each class.

    Returns:
        [N] bool true-positive flags.
    """
    n = det_group.size
    tp = np.zeros(n, dtype=bool)
    if n == 0 or gt_group.size == 0:
        return tp
    gt_order = np.argsort(gt_group, kind="stable")
    groups, start, count = np.unique(gt_group[gt_order], return_index=True, return_counts=True)
    loc = np.clip(np.searchsorted(groups, det_group), 0, groups.size - 1)
    has_gt = groups[loc] == det_group
    # Rank of each detection within its group, following the ranked order (groups never span classes).
    dets = ranked[has_gt[ranked]]
    dets = dets[np.argsort(det_group[dets], kind="stable")]
    first = np.flatnonzero(np.r_[True, det_group[dets][1:] != det_group[dets][:-1]])
    rank_in_group = np.arange(dets.size) - np.repeat(first, np.diff(np.r_[first, dets.size]))
    available = np.ones(gt_group.size, dtype=bool)  # indexed in gt_order
    for r in range(int(rank_in_group.max(initial=-1)) + 1):
        sel = dets[rank_in_group == r]
        g = loc[sel]
        width = int(count[g].max())
        cand = start[g][:, None] + np.arange(width)
        inside = np.arange(width) < count[g][:, None]
        cand = np.where(inside, cand, 0)
        # Each detection against its own group's candidates: [n, 1, 4] x [n, width, 4] -> [n, width].
        iou = matched_box_iou_numpy(det_boxes[sel][:, None, :], gt_boxes[gt_order[cand]])
        iou = np.where(inside & available[cand], iou, -np.inf)
        best = np.argmax(iou, axis=1)
        hit = iou[np.arange(sel.size), best] >= iou_threshold
        tp[sel[hit]] = True
        available[cand[hit, best[hit]]] = False
    return tp


def groundtruth_rows(dataset, path: str = "<dataset>") -> BoxRows:
    """The ground-truth boxes of a ``KeyFrameDataset`` as evaluation rows: one row per (box, action) of
    ``dataset.keyframes``, ``timestamps`` = key-frame ``timestamp`` (frame number on UCF101-24 / JHMDB-21),
    ``extra`` = person (tube) id, ``lines`` = 1-based key-frame index."""
    video_ids, times, boxes, actions, persons, lines = [], [], [], [], [], []
    for index, k in enumerate(dataset.keyframes, start=1):
        for p, action_ids in enumerate(k.action_ids):
            for action in action_ids:
                video_ids.append(k.video_id)
                times.append(int(k.timestamp))
                boxes.append(np.asarray(k.boxes_xyxy[p], dtype=np.float64))
                actions.append(int(action))
                persons.append(float(k.person_ids[p]) if k.person_ids[p] >= 0 else np.nan)
                lines.append(index)
    return BoxRows(
        path=path,
        video_ids=np.array(video_ids, dtype=str),
        timestamps=np.array(times, dtype=np.int64),
        boxes_xyxy=np.array(boxes, dtype=np.float64).reshape(-1, 4),
        action_ids=np.array(actions, dtype=np.int64),
        extra=np.array(persons, dtype=np.float64),
        lines=np.array(lines, dtype=np.int64),
    )


def evaluate_act_detections(
    dataset, det_path: str | os.PathLike, label_map: dict[int, str], gt_path: str = "<ground truth>"
) -> dict[str, Any]:
    """UCF101-24 / JHMDB-21: frame-mAP@0.5 (ACT's protocol) of a detections CSV against the dataset's ground
    truth, as the result JSON of docs/design.md#contracts, plus ``video_mAP@0.2`` and ``video_mAP@0.5`` (per-frame detections
    linked into tubes, ``bmvit.evaluation.video_map``). Detection rows carry the 1-based frame number."""
    from bmvit.data.ava import read_detections
    from bmvit.evaluation.video_map import evaluate_video_map, groundtruth_tubes, link_tubes

    groundtruth = groundtruth_rows(dataset, path=gt_path)
    detections = read_detections(det_path, check_boxes=False)
    result = evaluate_frame_ap(groundtruth, detections, label_map).to_json()
    video = evaluate_video_map(groundtruth_tubes(groundtruth), link_tubes(detections), label_map)
    for threshold, res in video.items():
        result[f"video_mAP@{threshold:g}"] = float(res.mAP)
        result[f"video_per_class@{threshold:g}"] = res.to_json()["per_class"]
    return result


__all__ = ["act_average_precision", "evaluate_act_detections", "evaluate_frame_ap", "groundtruth_rows"]
