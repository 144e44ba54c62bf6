"""Video-mAP for UCF101-24 and JHMDB-21: per-frame detections linked into tubes, tubes matched to ground-truth
tubes by spatio-temporal IoU, AP per class at IoU 0.2 and 0.5 (the thresholds those benchmarks report).

Adapted from ACT (Kalogeiton et al., ICCV 2017; github.com/vkalogeiton/caffe, branch act-detector,
``ACT.py::videoAP``, ``ACT_utils.py::iou3dt, nms3dt, pr_to_ap``, ``ACT_build.py::BuildTubes``), read in its copy
in MOC-Detector (github.com/MCG-NJU/MOC-Detector, ``src/ACT.py``, ``src/ACT_utils/``), whose linking parameters
are the defaults below. Changes: linking is ACT's ``BuildTubes`` with tubelets of length K = 1, i.e. per-frame
detections as a single-stage detector such as BMViT produces them; boxes are normalised, so the pixel ``+1``
in areas is dropped; ties in score keep input order (stable sorts); a frame inside the temporal overlap of two
tubes that one of them lacks counts as spatial IoU 0 (ACT assumes gap-free tubes); a class without ground-truth
tubes is None and left out of the mean.

Linking (per video and class), frame by frame:

1. the frame's detections are re-scored by linear soft-NMS at ``nms_iou`` (a box overlapping a higher-scored
   kept box by more than ``nms_iou`` gets its score times (1 - IoU) and suppresses nothing), and the
   ``top_k`` best are kept;
2. current tubes, by descending mean score, each take the highest-scored remaining detection whose IoU with
   the tube's last box is >= ``link_iou``; a tube that finds none is finished (no gaps);
3. detections left start new tubes.

A tube's score is the mean of its detections' (re-scored) scores; tubes scoring below ``min_score`` or shorter
than ``min_length`` frames are dropped, and tube NMS at ``tube_nms_iou`` (spatio-temporal IoU) runs per video
and class. Spatio-temporal IoU = temporal IoU x mean per-frame IoU over the temporal overlap.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bmvit.box_ops import matched_box_iou_numpy
from bmvit.data.ava import BoxRows
from bmvit.evaluation.frame_map import ClassAP, FrameMapResult, _class_ids
from bmvit.evaluation.ucf_jhmdb import act_average_precision

VIDEO_MAP_THRESHOLDS = (0.2, 0.5)


@dataclass(frozen=True)
class Tube:
    """A tube of one class in one video.

    Attributes:
        video_id: the video.
        label: class id.
        frames: [T] int64 frame numbers, strictly increasing.
        boxes_xyxy: [T, 4] float64 normalised boxes, one per frame.
        score: the tube's score (1.0 for ground truth).
    """

    video_id: str
    label: int
    frames: np.ndarray
    boxes_xyxy: np.ndarray
    score: float = 1.0

    def __len__(self) -> int:
        return int(self.frames.size)


@dataclass(frozen=True)
class LinkingConfig:
    """Tube-building parameters (MOC-Detector's ``BuildTubes`` and ``videoAP`` values)."""

    nms_iou: float = 0.6
    top_k: int = 10
    link_iou: float = 0.5
    min_score: float = 0.005
    min_length: int = 15
    tube_nms_iou: float = 0.3


# ---------------------------------------------------------------------------------------------------------
# tubes from rows


def groundtruth_tubes(rows: BoxRows) -> list[Tube]:
    """Ground-truth tubes from per-frame annotation rows (``timestamps`` = frame numbers).

    A tube is the rows sharing (video, class, person id in ``extra``); rows without a person id (NaN) form one
    tube per (video, class), as in JHMDB-21.

    Raises:
        ValueError: a tube with two boxes on one frame (naming file and line).
    """
    person = np.where(np.isnan(rows.extra), -1.0, rows.extra)
    groups: dict[tuple[str, int, float], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(rows.video_ids.tolist(), rows.action_ids.tolist(), person.tolist())):
        groups[key].append(i)
    tubes = []
    for (video, label, _), idx in sorted(groups.items(), key=lambda kv: kv[0]):
        idx = np.array(idx)
        idx = idx[np.argsort(rows.timestamps[idx], kind="stable")]
        frames = rows.timestamps[idx]
        repeated = np.flatnonzero(frames[1:] == frames[:-1])
        if repeated.size:
            r = int(idx[repeated[0] + 1])
            raise ValueError(f"{rows.path}:{int(rows.lines[r])}: a second box on frame {int(frames[repeated[0]])} "
                             f"for the tube of class {label} in {video} (person id {rows.extra[r]:g})")
        tubes.append(Tube(video, int(label), frames.astype(np.int64), rows.boxes_xyxy[idx].astype(np.float64)))
    return tubes


def link_tubes(detections: BoxRows, config: LinkingConfig = LinkingConfig()) -> list[Tube]:
    """Link per-frame detections (``timestamps`` = frame numbers, score in ``extra``) into scored tubes."""
    per_video_class: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(detections.video_ids.tolist(), detections.action_ids.tolist())):
        per_video_class[key].append(i)
    tubes: list[Tube] = []
    for (video, label), idx in sorted(per_video_class.items()):
        idx = np.array(idx)
        linked = _link_one(detections.timestamps[idx], detections.boxes_xyxy[idx], detections.extra[idx], config)
        linked = [Tube(video, int(label), f, b, s) for f, b, s in linked]
        tubes += [linked[i] for i in tube_nms(linked, config.tube_nms_iou)]
    return tubes


def _soft_nms(boxes: np.ndarray, scores: np.ndarray, overlap: float, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear soft-NMS of one frame and class (MOC's ``nms_tubelets`` with K = 1), then the ``top_k`` best.

    Returns the kept boxes [k, 4] and re-scored scores [k], best first.
    """
    order = np.argsort(-scores, kind="stable")
    weight = np.ones_like(scores)
    while order.size:
        i, rest = order[0], order[1:]
        ious = matched_box_iou_numpy(boxes[rest], boxes[i])
        suppressed = ious > overlap
        weight[rest[suppressed]] = 1.0 - ious[suppressed]
        order = rest[~suppressed]
    rescored = scores * weight
    keep = np.argsort(-rescored, kind="stable")[:top_k]
    return boxes[keep], rescored[keep]


def _link_one(
    frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray, config: LinkingConfig
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """ACT's BuildTubes (K = 1) for one video and class -> [(frames [T], boxes [T, 4], score)]."""
    by_frame: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(frames.tolist()):
        by_frame[f].append(i)
    current: list[list[tuple[int, np.ndarray, float]]] = []
    finished: list[list[tuple[int, np.ndarray, float]]] = []
    for frame in range(int(frames.min()), int(frames.max()) + 1):
        idx = by_frame.get(frame, [])
        cand_boxes, cand_scores = _soft_nms(boxes[idx], scores[idx], config.nms_iou, config.top_k)
        current.sort(key=lambda t: -float(np.mean([s for _, _, s in t])))
        still = []
        for tube in current:
            ious = matched_box_iou_numpy(cand_boxes, tube[-1][1]) if cand_scores.size else np.zeros(0)
            valid = np.flatnonzero(ious >= config.link_iou)
            if valid.size == 0:
                finished.append(tube)
                continue
            j = valid[np.argmax(cand_scores[valid])]
            tube.append((frame, cand_boxes[j], float(cand_scores[j])))
            cand_boxes, cand_scores = np.delete(cand_boxes, j, axis=0), np.delete(cand_scores, j)
            still.append(tube)
        current = still + [[(frame, b, float(s))] for b, s in zip(cand_boxes, cand_scores)]
    out = []
    for tube in finished + current:
        score = float(np.mean([s for _, _, s in tube]))
        if score < config.min_score or len(tube) < config.min_length:
            continue
        out.append((np.array([f for f, _, _ in tube], dtype=np.int64), np.stack([b for _, b, _ in tube]), score))
    return out


def tube_nms(tubes: Sequence[Tube], overlap: float) -> list[int]:
    """Indices of the tubes kept by NMS on spatio-temporal IoU (ACT's ``nms3dt``), best score first."""
    remaining = list(np.argsort([t.score for t in tubes], kind="stable"))
    kept = []
    while remaining:
        i = remaining.pop()
        kept.append(int(i))
        remaining = [j for j in remaining if spatiotemporal_iou(tubes[j], tubes[i]) <= overlap]
    return kept


# ---------------------------------------------------------------------------------------------------------
# IoU and AP


def spatiotemporal_iou(a: Tube, b: Tube) -> float:
    """Temporal IoU x mean per-frame IoU over the temporal overlap (ACT's ``iou3dt``); 0 without overlap.

    Frames are counted inclusively: tubes over frames 1-10 and 6-15 have temporal IoU 5 / 15.
    """
    t_min, t_max = max(a.frames[0], b.frames[0]), min(a.frames[-1], b.frames[-1])
    if t_max < t_min:
        return 0.0
    temporal = (t_max - t_min + 1) / (max(a.frames[-1], b.frames[-1]) - min(a.frames[0], b.frames[0]) + 1)
    span = np.arange(t_min, t_max + 1)
    ious = np.zeros(span.size)
    ia, ib = np.searchsorted(a.frames, span), np.searchsorted(b.frames, span)
    both = (a.frames[np.minimum(ia, a.frames.size - 1)] == span) & (b.frames[np.minimum(ib, b.frames.size - 1)] == span)
    ious[both] = matched_box_iou_numpy(a.boxes_xyxy[ia[both]], b.boxes_xyxy[ib[both]])
    return float(np.mean(ious) * temporal)


def evaluate_video_map(
    gt_tubes: Iterable[Tube],
    det_tubes: Iterable[Tube],
    label_map: Mapping[int, str],
    iou_thresholds: Sequence[float] = VIDEO_MAP_THRESHOLDS,
) -> dict[float, FrameMapResult]:
    """Video-AP per class and its mean at each threshold (ACT's ``videoAP``).

    Per class, detected tubes are ranked by descending score; each is compared with the remaining
    ground-truth tubes of its video and class, takes the one of highest spatio-temporal IoU if it reaches the
    threshold (that tube is then removed) and is otherwise a false positive.

    Returns:
        ``{threshold: FrameMapResult}`` with ``protocol="act-video@<threshold>"``; per-class AP None where a
        class has no ground-truth tube.
    """
    class_ids = _class_ids(label_map)
    gt_tubes, det_tubes = list(gt_tubes), list(det_tubes)
    for t in gt_tubes + det_tubes:
        if t.label not in label_map:
            raise ValueError(
                f"tube of class {t.label} in {t.video_id}: not in the label map ({class_ids.size} classes)"
            )
    results = {}
    for threshold in iou_thresholds:
        per_class = []
        for c in class_ids.tolist():
            gts = [t for t in gt_tubes if t.label == c]
            ap = None
            if gts:
                dets = sorted((t for t in det_tubes if t.label == c), key=lambda t: -t.score)
                ap = act_average_precision(_match_tubes(gts, dets, threshold), len(gts))
            per_class.append(ClassAP(id=c, name=str(label_map[c]), ap=ap))
        values = [p.ap for p in per_class if p.ap is not None]
        if not values:
            raise ValueError("no ground-truth tube of any label-map class")
        results[threshold] = FrameMapResult(
            mAP=float(np.mean(values)),
            per_class=per_class,
            protocol=f"act-video@{threshold:g}",
            num_detections_used=len(det_tubes),
            num_groundtruth=len(gt_tubes),
        )
    return results


def _match_tubes(gts: list[Tube], ranked: list[Tube], threshold: float) -> np.ndarray:
    remaining: dict[str, list[Tube]] = defaultdict(list)
    for t in gts:
        remaining[t.video_id].append(t)
    tp = np.zeros(len(ranked), dtype=bool)
    for i, det in enumerate(ranked):
        pool = remaining.get(det.video_id)
        if not pool:
            continue
        ious = [spatiotemporal_iou(g, det) for g in pool]
        best = int(np.argmax(ious))
        if ious[best] >= threshold:
            tp[i] = True
            del pool[best]
    return tp


__all__ = [
    "VIDEO_MAP_THRESHOLDS",
    "LinkingConfig",
    "Tube",
    "evaluate_video_map",
    "groundtruth_tubes",
    "link_tubes",
    "spatiotemporal_iou",
    "tube_nms",
]
