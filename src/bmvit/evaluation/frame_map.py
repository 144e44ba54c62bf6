"""Frame-level mAP of AVA detection CSVs, exactly as the official evaluator computes it, and fast.

Adapted from the ActivityNet AVA evaluator (github.com/activitynet/ActivityNet, ``Evaluation/
get_ava_performance.py`` and ``Evaluation/ava/{object_detection_evaluation,per_image_evaluation,metrics,
np_box_ops,np_box_list}.py``, the version used for the AVA v2.2 / ActivityNet 2019 challenge, itself taken
from the TensorFlow Object Detection API) and from PySlowFast's copy (facebookresearch/SlowFast,
``slowfast/utils/ava_eval_helper.py`` and ``slowfast/utils/ava_evaluation/``). Changes: re-implemented as
array operations over all key frames at once (one sort of all detections, IoU only inside (key frame,
class) groups, greedy matching without a loop); the numbers are the same to the last bit, including the
order-dependent results under tied scores (see ``evaluate_ava``). No code is shared with those projects.

Boxes are ``xyxy`` normalised to [0, 1] everywhere (the files' convention); the official code stores them
``yxyx``, which changes nothing in the arithmetic below because each sum and product is done in the same
association as there.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bmvit.data.ava import BoxRows, read_annotations, read_detections, read_exclusions, read_label_map
from bmvit.evaluation.tie_order import legacy_argsort

AVA_PROTOCOLS = ("activitynet", "slowfast")
IOU_THRESHOLD = 0.5
"""A detection is a true positive at IoU >= 0.5 (``PascalDetectionEvaluator``'s default)."""

AvaProtocol = Literal["activitynet", "slowfast"]


@dataclass(frozen=True)
class ClassAP:
    """Average precision of one class of the label map; ``ap`` is None when the class has no ground truth."""

    id: int
    name: str
    ap: float | None


@dataclass(frozen=True)
class FrameMapResult:
    """Result of a frame-mAP evaluation.

    Attributes:
        mAP: mean of the per-class APs over the classes that have ground truth.
        per_class: one entry per label-map class, in ascending id order.
        protocol: ``activitynet``, ``slowfast`` (AVA) or ``act`` (UCF101-24 / JHMDB-21 frame-AP).
        num_detections_used: detection rows that entered matching (after the label-map filter, excluded key
            frames, the per-key-frame cap and the removal of invalid boxes).
        num_groundtruth: ground-truth boxes counted (rows of label-map classes outside excluded key frames).
        num_detections_capped: rows left out by the per-key-frame cap (``activitynet`` only).
        num_detections_invalid: rows left out for an invalid box (x1 >= x2 or y1 >= y2).
    """

    mAP: float
    per_class: list[ClassAP]
    protocol: str
    num_detections_used: int
    num_groundtruth: int
    num_detections_capped: int = 0
    num_detections_invalid: int = 0

    def to_json(self) -> dict[str, Any]:
        """The result schema (docs/design.md#contracts): ``{"mAP", "protocol", "per_class": [{"id", "name", "ap"}]}`` (ap null: no GT)."""
        return {
            "mAP": float(self.mAP),
            "protocol": self.protocol,
            "per_class": [{"id": c.id, "name": c.name, "ap": c.ap} for c in self.per_class],
        }

    def ap_by_id(self) -> dict[int, float | None]:
        return {c.id: c.ap for c in self.per_class}


# ---------------------------------------------------------------------------------------------------------
# public entry points


def evaluate_ava(
    groundtruth: BoxRows,
    detections: BoxRows,
    label_map: Mapping[int, str],
    exclusions: Collection[tuple[str, int]] = frozenset(),
    protocol: AvaProtocol = "activitynet",
    top_k: int = 50,
) -> FrameMapResult:
    """Frame-mAP@0.5 of AVA detection rows, as the official evaluator (or PySlowFast's copy) computes it.

    ``protocol="activitynet"`` reproduces the official ActivityNet evaluator (AVA v2.2 challenge), with all
    its behaviours:

    - rows whose action is not in the label map are dropped while reading, on both sides, before anything
      else (so they never count towards the cap); key frames in ``exclusions`` are dropped on both sides;
    - at most ``top_k`` (50) detection rows per key frame are kept, the highest scoring ones, chosen by the
      official heap: a row replaces the lowest kept one only when its score is strictly higher, so under
      ties at the boundary the earlier rows stay; kept rows are then ordered by descending score, ties in
      the heap's order (reproduced exactly by replaying ``heapq`` on the rare key frames where it matters);
    - ground-truth rows are ordered the same way by their last column (the person id), which only decides
      which of two equally overlapping ground-truth boxes a detection picks;
    - detections with an invalid box (not x1 < x2 and y1 < y2) are dropped after the cap;
    - per key frame and class, in that order, each detection is compared with the ground-truth box of
      highest IoU only (first one on ties), IoU in float64: a true positive when IoU >= 0.5 and that box is
      not taken yet, otherwise a false positive (a taken box does not make it look at the second best);
      detections on key frames without ground truth of their class are false positives;
    - per class, all detections are concatenated in key-frame order (first appearance in the file) and
      sorted with ``np.argsort(scores)[::-1]`` (not stable: tied scores keep the official order because
      the same sort is made on the same array: ``tie_order.legacy_argsort``, NumPy 1.23's order, which
      the official evaluator runs under, on any NumPy); AP is the area under the precision envelope (VOC);
    - a class with ground truth but no detection scores 0; a class without ground truth is None and is
      left out of the mean (``np.nanmean``).

    ``protocol="slowfast"`` reproduces PySlowFast's copy: no cap, no score sort while reading (detections
    and ground truth keep their file order within a key frame), everything else identical.

    Args:
        groundtruth: rows from ``read_annotations`` (read with ``check_boxes=False`` to accept what the
            official reader accepts).
        detections: rows from ``read_detections``; ``extra`` is the score (NaN reads as 1.0, as a row
            without a score column does in the official reader).
        label_map: ``{action_id: name}``; the evaluated classes (ids >= 1).
        exclusions: excluded ``(video_id, timestamp)`` key frames.
        protocol: ``activitynet`` (default) or ``slowfast``.
        top_k: the per-key-frame cap of ``activitynet`` (0: no cap).

    Raises:
        ValueError: an unknown protocol, an empty label map or an id < 1, no ground-truth box of any
            label-map class, or a ground-truth box with x1 > x2 or y1 > y2 (the official evaluator stops on
            those with "Invalid box data"); the message names the file and line.
    """
    if protocol not in AVA_PROTOCOLS:
        raise ValueError(f"protocol must be one of {AVA_PROTOCOLS}, got {protocol!r}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: no cap), got {top_k}")
    class_ids = _class_ids(label_map)
    gt_key, det_key, gt_excluded, det_excluded = _keyframe_codes(groundtruth, detections, exclusions)
    official = protocol == "activitynet"

    gt = _select_groundtruth(groundtruth, gt_key, gt_excluded, class_ids, order_by_person=official)
    det = _select_detections(detections, det_key, det_excluded, class_ids, cap=top_k if official else 0,
                             sort_by_score=official)
    tp = _match_greedy(det, gt, len(class_ids))
    num_gt = np.bincount(gt.cls, minlength=len(class_ids))
    if not num_gt.any():
        raise ValueError(
            f"{groundtruth.path}: no ground-truth box of any label-map class outside the excluded key frames "
            f"({len(groundtruth)} rows read; label map ids {_ids_text(class_ids)}): is it the right label map?"
        )
    aps = _per_class_voc_ap(det.score, det.cls, tp, num_gt)
    return FrameMapResult(
        mAP=_official_mean(aps, class_ids),
        per_class=_per_class(aps, class_ids, label_map),
        protocol=protocol,
        num_detections_used=int(det.score.size),
        num_groundtruth=int(num_gt.sum()),
        num_detections_capped=det.num_capped,
        num_detections_invalid=det.num_invalid,
    )


def evaluate_ava_files(
    gt_path: str | os.PathLike,
    det_path: str | os.PathLike,
    labelmap_path: str | os.PathLike,
    exclusions_path: str | os.PathLike | None = None,
    protocol: AvaProtocol = "activitynet",
    top_k: int = 50,
) -> FrameMapResult:
    """``evaluate_ava`` on files in the official formats (errors name the file and line)."""
    label_map = read_label_map(labelmap_path)
    exclusions = read_exclusions(exclusions_path) if exclusions_path is not None else set()
    groundtruth = read_annotations(gt_path, check_boxes=False)
    detections = read_detections(det_path, check_boxes=False)
    return evaluate_ava(groundtruth, detections, label_map, exclusions, protocol=protocol, top_k=top_k)


# ---------------------------------------------------------------------------------------------------------
# keys, label map


def _class_ids(label_map: Mapping[int, str]) -> np.ndarray:
    if not label_map:
        raise ValueError("the label map has no classes")
    ids = np.array(sorted(int(i) for i in label_map), dtype=np.int64)
    if ids[0] < 1:
        raise ValueError(
            f"label-map ids must be >= 1 (the official evaluator requires 1-indexed classes), got {ids[0]}"
        )
    return ids


def _ids_text(ids: np.ndarray) -> str:
    return str(ids.tolist()) if ids.size <= 12 else f"{ids[0]}..{ids[-1]} ({ids.size} ids)"


def _keyframe_codes(
    gt: BoxRows, det: BoxRows, exclusions: Collection[tuple[str, int]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One int64 code per (video_id, timestamp), shared by both files, and the excluded-row masks.

    The official key is ``"%s,%04d" % (video_id, int(timestamp))``: one key per (video, integer second).
    """
    n_gt = len(gt)
    videos = np.concatenate([gt.video_ids.astype(str), det.video_ids.astype(str)])
    times = np.concatenate([gt.timestamps, det.timestamps]).astype(np.int64)
    if videos.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, bool), np.zeros(0, bool)
    names, video_code = np.unique(videos, return_inverse=True)
    video_code = video_code.reshape(-1).astype(np.int64)
    ex_pairs = []
    if exclusions:
        ex_video = np.array([str(v) for v, _ in exclusions])
        ex_time = np.array([int(t) for _, t in exclusions], dtype=np.int64)
        pos = np.clip(np.searchsorted(names, ex_video), 0, names.size - 1)
        known = names[pos] == ex_video
        ex_pairs = list(zip(pos[known].tolist(), ex_time[known].tolist()))
    t0, t1 = int(times.min()), int(times.max())
    span = t1 - t0 + 1
    if span * names.size < 2**62:
        codes = video_code * span + (times - t0)
        ex_codes = [v * span + (t - t0) for v, t in ex_pairs if t0 <= t <= t1]
    else:  # absurd timestamps: number the (video, time) pairs instead
        pairs, codes = np.unique(np.stack([video_code, times], axis=1), axis=0, return_inverse=True)
        codes = codes.reshape(-1).astype(np.int64)
        index = {pair: i for i, pair in enumerate(map(tuple, pairs.tolist()))}
        ex_codes = [index[p] for p in ex_pairs if p in index]
    excluded = np.isin(codes, np.array(ex_codes, dtype=np.int64))
    return codes[:n_gt], codes[n_gt:], excluded[:n_gt], excluded[n_gt:]


def _dense_class(action_ids: np.ndarray, class_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of rows whose action is in ``class_ids``, index into ``class_ids`` of each such row)."""
    pos = np.clip(np.searchsorted(class_ids, action_ids), 0, class_ids.size - 1)
    member = class_ids[pos] == action_ids
    return member, pos[member]


# ---------------------------------------------------------------------------------------------------------
# reading as the official read_csv does


@dataclass(frozen=True)
class _GroundTruth:
    """Ground-truth boxes sorted by (key frame, class, official order). key, cls: [M]; boxes_xyxy: [M, 4]."""

    key: np.ndarray
    cls: np.ndarray
    boxes_xyxy: np.ndarray


@dataclass(frozen=True)
class _Detections:
    """Detections in the official order: key frames by first appearance, then the order within a key frame.

    key, cls: [N] int64; boxes_xyxy: [N, 4] float64; score: [N] float64.
    """

    key: np.ndarray
    cls: np.ndarray
    boxes_xyxy: np.ndarray
    score: np.ndarray
    num_capped: int
    num_invalid: int


def _official_heap_rows(rows: list[tuple], capacity: int) -> list[tuple]:
    """The official reader's selection for one key frame: rows ``(score, action_id, y1, x1, y2, x2)`` in file
    order -> the kept rows, by descending score, ties in the order ``heapq`` left them.

    Used only where that order matters (tied scores of one class in one key frame, or a tie at the cap).
    """
    heap: list[tuple] = []
    for row in rows:
        if capacity < 1 or len(heap) < capacity:
            heapq.heappush(heap, row)
        elif row[0] > heap[0][0]:
            heapq.heapreplace(heap, row)
    return sorted(heap, key=lambda r: -r[0])


def _heap_replay(
    groups: np.ndarray, sources: np.ndarray, score: np.ndarray, cls_id: np.ndarray, boxes: np.ndarray, capacity: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay the official heap on the rows of a few key frames.

    Args:
        groups: [R] key-frame id of each row; sources: [R] file position (sets the push order).
        score, cls_id: [R]; boxes: [R, 4] xyxy.

    Returns:
        (group, position within the group, score, action id, boxes_xyxy) of the kept rows.
    """
    order = np.lexsort((sources, groups))
    groups, score, cls_id, boxes = groups[order], score[order], cls_id[order], boxes[order]
    # The official tuple is (score, action_id, y1, x1, y2, x2): ties compare the class, then y before x.
    tuples = list(zip(score.tolist(), cls_id.tolist(), boxes[:, 1].tolist(), boxes[:, 0].tolist(),
                      boxes[:, 3].tolist(), boxes[:, 2].tolist()))
    bounds = np.flatnonzero(np.diff(groups)) + 1
    starts = np.concatenate([[0], bounds]).tolist()
    ends = np.concatenate([bounds, [groups.size]]).tolist()
    out_group: list[int] = []
    out_pos: list[int] = []
    kept: list[tuple] = []
    for s, e in zip(starts, ends):
        rows = _official_heap_rows(tuples[s:e], capacity)
        out_group += [int(groups[s])] * len(rows)
        out_pos += range(len(rows))
        kept += rows
    arr = np.array(kept, dtype=np.float64).reshape(-1, 6)
    boxes_xyxy = arr[:, [3, 2, 5, 4]]
    return (np.array(out_group, dtype=np.int64), np.array(out_pos, dtype=np.int64), arr[:, 0],
            arr[:, 1].astype(np.int64), boxes_xyxy)


def _select_groundtruth(
    rows: BoxRows, key: np.ndarray, excluded: np.ndarray, class_ids: np.ndarray, *, order_by_person: bool
) -> _GroundTruth:
    """The label-map, non-excluded ground truth, sorted by (key frame, class, official order within it).

    The official reader keeps ground truth in its heap keyed on the last column (person id; 1.0 when a row
    has 7 columns) and sorts a key frame's rows by it, descending; PySlowFast keeps file order.
    """
    member, cls = _dense_class(rows.action_ids, class_ids)
    src = np.flatnonzero(member)
    keep = ~excluded[src]
    src, cls = src[keep], cls[keep]
    boxes = rows.boxes_xyxy[src]
    k = key[src]
    inverted = (boxes[:, 0] > boxes[:, 2]) | (boxes[:, 1] > boxes[:, 3])
    if inverted.any():
        r = int(src[np.flatnonzero(inverted)[0]])
        x1, y1, x2, y2 = (float(v) for v in rows.boxes_xyxy[r])
        raise ValueError(
            f"{rows.path}:{int(rows.lines[r])}: ground-truth box x1, y1, x2, y2 = ({x1:g}, {y1:g}, {x2:g}, {y2:g}) "
            "has x1 > x2 or y1 > y2 (the official evaluator stops on it: 'Invalid box data')"
        )
    if not order_by_person:
        order = np.lexsort((src, cls, k))
        return _GroundTruth(k[order], cls[order], boxes[order])

    person = rows.extra[src]
    person = np.where(np.isnan(person), 1.0, person)
    order = np.lexsort((src, -person, cls, k))
    same = (k[order][1:] == k[order][:-1]) & (cls[order][1:] == cls[order][:-1]) & (
        person[order][1:] == person[order][:-1])
    tied_keys = np.unique(k[order][1:][same])
    if tied_keys.size == 0:
        return _GroundTruth(k[order], cls[order], boxes[order])
    # Two rows of one class with the same person id in one key frame: their order is the heap's.
    replay = np.isin(k, tied_keys)
    g, pos, _, action, rb = _heap_replay(k[replay], src[replay], person[replay], class_ids[cls[replay]],
                                         boxes[replay], capacity=0)
    fast = np.flatnonzero(~replay)
    all_key = np.concatenate([k[fast], g])
    all_cls = np.concatenate([cls[fast], np.searchsorted(class_ids, action)])
    all_boxes = np.concatenate([boxes[fast], rb])
    # Fast rows are already in order within (key, class); replayed rows carry their heap position.
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    all_pos = np.concatenate([position[fast], pos])
    final = np.lexsort((all_pos, all_cls, all_key))
    return _GroundTruth(all_key[final], all_cls[final], all_boxes[final])


def _select_detections(
    rows: BoxRows, key: np.ndarray, excluded: np.ndarray, class_ids: np.ndarray, *, cap: int, sort_by_score: bool
) -> _Detections:
    """Detections of label-map classes in the official order, capped per key frame, invalid boxes removed."""
    member, cls = _dense_class(rows.action_ids, class_ids)
    src = np.flatnonzero(member)  # file order
    k = key[src]
    # Key frames are visited in the order of their first label-map row (the reader's dict order).
    uniq, first, inverse = np.unique(k, return_index=True, return_inverse=True)
    rank_of_uniq = np.empty(uniq.size, dtype=np.int64)
    rank_of_uniq[np.argsort(first)] = np.arange(uniq.size)
    frame = rank_of_uniq[inverse.reshape(-1)]
    key_of_frame = np.empty(uniq.size, dtype=np.int64)
    key_of_frame[rank_of_uniq] = uniq

    keep = ~excluded[src]
    src, cls, frame = src[keep], cls[keep], frame[keep]
    score = rows.extra[src]
    score = np.where(np.isnan(score), 1.0, score)
    boxes = rows.boxes_xyxy[src]
    num_capped = 0

    if not sort_by_score:
        order = np.argsort(frame, kind="stable")  # file order within a key frame
        frame, cls, boxes, score = frame[order], cls[order], boxes[order], score[order]
    else:
        frame, cls, boxes, score, num_capped = _cap_and_sort(src, frame, cls, boxes, score, cap, class_ids)

    valid = (boxes[:, 1] < boxes[:, 3]) & (boxes[:, 0] < boxes[:, 2])
    num_invalid = int(valid.size - np.count_nonzero(valid))
    if num_invalid:
        frame, cls, boxes, score = frame[valid], cls[valid], boxes[valid], score[valid]
    return _Detections(key_of_frame[frame], cls, boxes, score, num_capped, num_invalid)


def _cap_and_sort(
    src: np.ndarray, frame: np.ndarray, cls: np.ndarray, boxes: np.ndarray, score: np.ndarray, cap: int,
    class_ids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The official per-key-frame top-``cap`` by score, ordered by (key frame, descending score).

    Where tied scores make the official heap's internal order visible (two kept rows of one class with equal
    scores, or equal scores across the cap boundary), that key frame is replayed through ``heapq``.
    """
    n = src.size
    order = np.lexsort((src, -score, frame))
    f_sorted, s_sorted = frame[order], score[order]
    counts = np.bincount(f_sorted, minlength=int(frame.max(initial=-1)) + 1)
    starts = np.cumsum(counts) - counts
    pos = np.arange(n) - starts[f_sorted]
    kept = pos < cap if cap > 0 else np.ones(n, dtype=bool)

    ambiguous = [np.zeros(0, dtype=np.int64)]
    if cap > 0:
        over = np.flatnonzero(counts > cap)
        ambiguous.append(over[s_sorted[starts[over] + cap - 1] == s_sorted[starts[over] + cap]])
    r = order[kept]
    by_value = r[np.lexsort((score[r], cls[r], frame[r]))]
    fv, cv, sv = frame[by_value], cls[by_value], score[by_value]
    tied = (fv[1:] == fv[:-1]) & (cv[1:] == cv[:-1]) & (sv[1:] == sv[:-1])
    ambiguous.append(fv[1:][tied])
    ambiguous_frames = np.unique(np.concatenate(ambiguous))

    fast = order[kept & ~np.isin(f_sorted, ambiguous_frames)]
    fast_pos = pos[kept & ~np.isin(f_sorted, ambiguous_frames)]
    out = [frame[fast], fast_pos, score[fast], cls[fast], boxes[fast]]
    num_kept = fast.size
    if ambiguous_frames.size:
        replay = np.isin(frame, ambiguous_frames)
        g, p, s, action, b = _heap_replay(frame[replay], src[replay], score[replay], class_ids[cls[replay]],
                                          boxes[replay], capacity=cap)
        out = [np.concatenate([a, x]) for a, x in zip(out, (g, p, s, np.searchsorted(class_ids, action), b))]
        num_kept += g.size
    all_frame, all_pos, all_score, all_cls, all_boxes = out
    final = np.lexsort((all_pos, all_frame))
    return all_frame[final], all_cls[final], all_boxes[final], all_score[final], int(n - num_kept)


# ---------------------------------------------------------------------------------------------------------
# matching and AP


def _official_iou(det_xyxy: np.ndarray, gt_xyxy: np.ndarray) -> np.ndarray:
    """IoU of each detection with its candidate ground-truth boxes, in the official float64 arithmetic.

    Args:
        det_xyxy: [n, 4]; gt_xyxy: [n, m, 4].

    Returns:
        [n, m]: intersection / ((area_det + area_gt) - intersection); NaN where the union is 0.
    """
    d = det_xyxy[:, None, :]
    heights = np.maximum(0.0, np.minimum(d[..., 3], gt_xyxy[..., 3]) - np.maximum(d[..., 1], gt_xyxy[..., 1]))
    widths = np.maximum(0.0, np.minimum(d[..., 2], gt_xyxy[..., 2]) - np.maximum(d[..., 0], gt_xyxy[..., 0]))
    intersection = heights * widths
    area_det = (det_xyxy[:, 3] - det_xyxy[:, 1]) * (det_xyxy[:, 2] - det_xyxy[:, 0])
    area_gt = (gt_xyxy[..., 3] - gt_xyxy[..., 1]) * (gt_xyxy[..., 2] - gt_xyxy[..., 0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return intersection / (area_det[:, None] + area_gt - intersection)


def _match_greedy(det: _Detections, gt: _GroundTruth, num_classes: int) -> np.ndarray:
    """True-positive flag of each detection (in ``det``'s order), per (key frame, class) group.

    The official loop visits a group's detections in order; each looks only at its highest-IoU ground-truth
    box (``np.argmax``: first on ties, NaN wins) and is a true positive iff IoU >= 0.5 and no earlier
    detection took that box. Only true positives take boxes, so a detection is a true positive exactly when
    it is the first IoU >= 0.5 detection aiming at its box: no sequential loop is needed.
    """
    n = det.score.size
    tp = np.zeros(n, dtype=bool)
    if n == 0 or gt.key.size == 0:
        return tp
    gt_group = gt.key * num_classes + gt.cls  # sorted, since gt is sorted by (key, class)
    groups, start, count = np.unique(gt_group, return_index=True, return_counts=True)
    det_group = det.key * num_classes + det.cls
    loc = np.clip(np.searchsorted(groups, det_group), 0, groups.size - 1)
    has_gt = groups[loc] == det_group
    size = np.where(has_gt, count[loc], 0)
    target = np.full(n, -1, dtype=np.int64)
    for m in np.unique(size[has_gt]).tolist():  # a few distinct group sizes; each pass is vectorised
        sel = np.flatnonzero(size == m)
        candidates = start[loc[sel]][:, None] + np.arange(m)
        iou = _official_iou(det.boxes_xyxy[sel], gt.boxes_xyxy[candidates])
        best = np.argmax(iou, axis=1)
        hit = iou[np.arange(sel.size), best] >= IOU_THRESHOLD
        target[sel[hit]] = candidates[hit, best[hit]]
    aiming = np.flatnonzero(target >= 0)
    _, first = np.unique(target[aiming], return_index=True)
    tp[aiming[first]] = True
    return tp


def voc_average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """VOC AP as ``metrics.compute_precision_recall`` + ``compute_average_precision`` compute it.

    Args:
        scores: [N] float64 in the official concatenation order (it decides the order of tied scores,
            through ``np.argsort(scores)[::-1]``, which is not a stable sort; sorted here as NumPy 1.23 sorts,
            ``tie_order.legacy_argsort``).
        tp: [N] bool true-positive flags.
        num_gt: ground-truth boxes of the class (> 0).

    Returns:
        The area under the monotone precision envelope; 0.0 without detections.
    """
    if scores.size == 0:
        return 0.0
    order = legacy_argsort(scores)[::-1]
    tp_sorted = tp.astype(int)[order]
    cum_tp = np.cumsum(tp_sorted)
    cum_fp = np.cumsum(1 - tp_sorted)
    precision = cum_tp.astype(float) / (cum_tp + cum_fp)
    recall = cum_tp.astype(float) / num_gt
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    # The same array summed by the same np.sum: identical rounding.
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def _per_class_voc_ap(score: np.ndarray, cls: np.ndarray, tp: np.ndarray, num_gt: np.ndarray) -> np.ndarray:
    """[C] float64 AP per dense class index; NaN where the class has no ground truth."""
    num_classes = num_gt.size
    by_class = np.argsort(cls, kind="stable")  # keeps the official concatenation order within a class
    bounds = np.searchsorted(cls[by_class], np.arange(num_classes + 1))
    aps = np.full(num_classes, np.nan)
    for c in np.flatnonzero(num_gt).tolist():
        seg = by_class[bounds[c]:bounds[c + 1]]
        aps[c] = voc_average_precision(np.ascontiguousarray(score[seg]), tp[seg], int(num_gt[c]))
    return aps


def _official_mean(aps: np.ndarray, class_ids: np.ndarray) -> float:
    """``np.nanmean`` over an array indexed by class id - 1 up to the largest id, NaN elsewhere, as there."""
    full = np.full(int(class_ids[-1]), np.nan)
    full[class_ids - 1] = aps
    if np.isnan(full).all():
        return float("nan")
    return float(np.nanmean(full))


def _per_class(aps: np.ndarray, class_ids: np.ndarray, label_map: Mapping[int, str]) -> list[ClassAP]:
    return [
        ClassAP(id=int(i), name=str(label_map[int(i)]), ap=None if np.isnan(a) else float(a))
        for i, a in zip(class_ids.tolist(), aps.tolist())
    ]


__all__ = [
    "AVA_PROTOCOLS",
    "AvaProtocol",
    "IOU_THRESHOLD",
    "ClassAP",
    "FrameMapResult",
    "evaluate_ava",
    "evaluate_ava_files",
    "voc_average_precision",
]
