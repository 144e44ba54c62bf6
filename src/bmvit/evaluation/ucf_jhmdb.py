"""Frame-mAP for UCF101-24 and JHMDB-21, scored as ACT scores it (the code MOC, TubeR and most later work reuse).

Reference: ACT (Kalogeiton et al., "Action Tubelet Detector for Spatio-Temporal Action Localization", ICCV
2017; github.com/vkalogeiton/caffe, branch act-detector, ``act-detector-scripts/ACT.py::frameAP`` and
``ACT_utils.py::iou2d, area2d, overlap2d, pr_to_ap``), read together with its copy in MOC-Detector
(github.com/MCG-NJU/MOC-Detector, ``src/ACT.py``, ``src/ACT_utils/ACT_utils.py``, ``ACT_build.py``).

What ACT does, per class:

- ground truth: every box of every tube of the class in the split's videos, keyed by (video, frame), in
  **pixels as stored** in the annotation pickle, never clipped to the frame;
- detections: one float32 array for all classes, rows in the order ``load_frame_detections`` builds it
  (videos in the split's list order, frames ascending, then the per-frame order), boxes in pixels (the
  network's normalised output times the video's width and height); the class's rows are ranked by
  ``np.argsort(-score)``: numpy's default (quicksort, not stable) on the float32 scores, so the order of
  tied scores is whatever that sort makes of this particular array (here the scalar sort of the NumPy ACT
  ran under, whatever NumPy runs bmvit: ``tie_order``);
- each detection, best first, is compared with the ground-truth boxes of its frame that are still
  unmatched (a matched box is deleted), by ``iou2d`` with the ``+1`` pixel convention (``area = (x2 - x1 +
  1) * (y2 - y1 + 1)``); it is a true positive when the best of these IoUs is ``>= 0.5`` (first maximum on
  ties; a NaN IoU wins the argmax and is never a hit), and that box is deleted;
- precision and recall go into a float32 array that starts at (precision 1, recall 0); AP (``pr_to_ap``)
  is the trapezoidal area under that raw curve (not VOC's interpolated AP); mAP is the mean over classes.

Here, with bmvit's inputs: detection rows are normalised to the frame (the detections CSV); ACT's evaluation
needs them in pixels, so ``act_pixel_rows`` multiplies them by each video's (width, height) from the
annotations, and the matching holds them in float32 as ACT's array does. Ground truth comes straight from
the annotation tubes (``act_groundtruth_rows``), unclipped and in pixels. Matching is vectorised over frames
(greedy matching iterates over the rank of a detection within its (frame, class) group, which gives the same
result as ACT's loop). A class without ground truth is None and left out of the mean (ACT would divide by
zero). ``pixel_boxes=False`` keeps the earlier, approximate convention (normalised boxes, continuous IoU),
which is all ``evaluate_act_detections`` can do for a dataset without its annotations.

The protocol differs from AVA's (``frame_map.evaluate_ava``): every class is evaluated, there is no per-frame
cap, and a detection is matched to the best *remaining* ground-truth box of its frame and class instead of to
the best box overall.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bmvit.box_ops import act_pixel_iou_numpy, matched_box_iou_numpy
from bmvit.data.ava import BoxRows
from bmvit.evaluation.frame_map import ClassAP, FrameMapResult, _class_ids, _dense_class, _keyframe_codes
from bmvit.evaluation.tie_order import legacy_argsort

logger = logging.getLogger("bmvit.evaluation")


def evaluate_frame_ap(
    groundtruth: BoxRows,
    detections: BoxRows,
    label_map: Mapping[int, str],
    iou_threshold: float = 0.5,
    *,
    pixel_boxes: bool = True,
    video_order: Sequence[str] | None = None,
) -> FrameMapResult:
    """Frame-AP per class and its mean, ACT's ``frameAP`` (UCF101-24, JHMDB-21).

    Args:
        groundtruth: one row per annotated box: ``timestamps`` hold the frame number, ``action_ids`` the
            class (one label per box). Rows of one (frame, class) are tried in row order (ACT's tube order).
        detections: one row per (box, class) with its score in ``extra``, frames numbered as in
            ``groundtruth``.
        label_map: ``{class_id: name}``: every class is evaluated.
        iou_threshold: 0.5 by default; a detection is a hit when its IoU is ``>=`` it (ACT's test).
        pixel_boxes: True (ACT): boxes of both rows are x1, y1, x2, y2 in pixels of their video (see
            ``act_groundtruth_rows``, ``act_pixel_rows``) and IoU is ACT's ``+1`` pixel IoU, detections held
            in float32. False: boxes are normalised and IoU is the continuous one (not ACT's numbers).
        video_order: the split's videos in ACT's list order, which decides the order of the detections before
            ACT's (unstable) sort and so the ranking of tied scores. Videos not listed come after, by name;
            None: all by name.

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

    by_class, bounds = _act_ranking(detections, det_cls, num_classes, video_order)
    if pixel_boxes:
        # ACT's detections live in one float32 array; its ground truth is float64 (via ``tolist``).
        det_boxes, gt_boxes, iou = detections.boxes_xyxy.astype(np.float32), groundtruth.boxes_xyxy, act_pixel_iou_numpy
    else:
        det_boxes, gt_boxes, iou = detections.boxes_xyxy, groundtruth.boxes_xyxy, matched_box_iou_numpy
    tp = _match_remaining(gt_key * num_classes + gt_cls, gt_boxes, det_key * num_classes + det_cls, det_boxes,
                          by_class, iou_threshold, iou)

    num_gt = np.bincount(gt_cls, minlength=num_classes)
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
        num_detections_used=len(detections),
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


def video_ranks(video_ids: np.ndarray, video_order: Sequence[str] | None) -> np.ndarray:
    """[N] int64 rank of each row's video: its position in ``video_order``; videos not in it come after,
    ordered by name (None: every video by name)."""
    names, inverse = np.unique(np.asarray(video_ids).astype(str), return_inverse=True)
    position = {str(v): i for i, v in enumerate(() if video_order is None else video_order)}
    listed = np.array([str(n) in position for n in names], dtype=bool)
    rank = np.empty(names.size, dtype=np.int64)
    rank[listed] = [position[str(n)] for n in names[listed]]
    rank[~listed] = len(position) + np.arange(int((~listed).sum()))
    return rank[inverse.reshape(-1)]


def _act_ranking(
    detections: BoxRows, det_cls: np.ndarray, num_classes: int, video_order: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Detections ranked within each class as ACT ranks them.

    ACT's array holds the rows by (video in list order, frame), in their per-frame order; each class's slice
    is sorted by ``np.argsort(-score)`` on float32 scores with numpy's default kind. That sort is not stable,
    so tied scores come out in an order that depends on the whole array and on the sort's algorithm: to
    reproduce it, the same sort (``tie_order.legacy_argsort``, the scalar introsort ACT's NumPy ran) is
    made on an array with the same values in the same order.

    Returns:
        (by_class [N] detection indices grouped by class in class order, each group best first;
        bounds [num_classes + 1]: class c is ``by_class[bounds[c]:bounds[c + 1]]``).
    """
    n = len(detections)
    act_order = np.lexsort((np.arange(n), detections.timestamps, video_ranks(detections.video_ids, video_order)))
    grouped = act_order[np.argsort(det_cls[act_order], kind="stable")]
    bounds = np.searchsorted(det_cls[grouped], np.arange(num_classes + 1))
    score = detections.extra.astype(np.float32)
    by_class = grouped.copy()
    for c in range(num_classes):
        members = grouped[bounds[c]:bounds[c + 1]]
        by_class[bounds[c]:bounds[c + 1]] = members[legacy_argsort(-score[members])]
    return by_class, bounds


def _match_remaining(
    gt_group: np.ndarray, gt_boxes: np.ndarray, det_group: np.ndarray, det_boxes: np.ndarray, ranked: np.ndarray,
    iou_threshold: float, iou=act_pixel_iou_numpy,
) -> np.ndarray:
    """ACT's greedy matching: detections in ``ranked`` order; each takes its best remaining GT box of its
    group if IoU >= threshold (the box is then removed), else is a false positive.

    Args:
        gt_group, det_group: [M], [N] int64 (frame, class) group codes.
        gt_boxes, det_boxes: [M, 4], [N, 4] xyxy (pixels for ACT's IoU).
        ranked: [N] detection indices, best first within each class.
        iou: paired IoU of broadcast boxes, ``box_ops.act_pixel_iou_numpy`` or ``matched_box_iou_numpy``.

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
        # Each detection against its own group's candidates: [n, 1, 4] x [n, width, 4] -> [n, width]; the
        # remaining boxes keep their order, so argmax picks the box ACT's argmax over its shrunken list picks.
        overlap = iou(gt_boxes[gt_order[cand]], det_boxes[sel][:, None, :])
        overlap = np.where(inside & available[cand], overlap, -np.inf)
        best = np.argmax(overlap, axis=1)
        hit = overlap[np.arange(sel.size), best] >= iou_threshold
        tp[sel[hit]] = True
        available[cand[hit, best[hit]]] = False
    return tp


# ---------------------------------------------------------------------------------------------------------
# rows


def groundtruth_rows(dataset, path: str = "<dataset>") -> BoxRows:
    """The ground-truth boxes of a ``KeyFrameDataset`` as evaluation rows: one row per (box, action) of
    ``dataset.keyframes``, ``timestamps`` = key-frame ``timestamp`` (frame number on UCF101-24 / JHMDB-21),
    ``extra`` = person (tube) id, ``lines`` = 1-based key-frame index.

    Boxes are the key frames' normalised xyxy, which the dataset has clipped to the frame: not ACT's ground
    truth (``act_groundtruth_rows`` is); used only when the annotations are not at hand."""
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


def act_groundtruth_rows(
    annotations, videos: Sequence[str], label_map: Mapping[int, str] | None = None, path: str | None = None
) -> BoxRows:
    """ACT's ground truth as evaluation rows: every box of every tube of ``videos``, in pixels as stored.

    Args:
        annotations: ``bmvit.data.ucf_jhmdb.TubeAnnotations`` (tubes ``[n, 5]`` of frame, x1, y1, x2, y2
            pixels); label index ``i`` becomes action id ``i + 1``.
        videos: the split's videos; rows follow this order, then labels ascending, tubes in list order (the
            order ACT tries the boxes of a frame in).
        label_map: keep only these action ids (None: all).
        path: named in error messages (default: the annotations' path).

    Returns:
        ``BoxRows``: ``boxes_xyxy`` [M, 4] float64 pixel x1, y1, x2, y2, unclipped (a box may reach past the
        frame, as in ACT); ``timestamps`` the frame number (ACT's ``int(frame)``); ``extra`` the tube's
        index in its video, counted over all labels as ``tubes_to_keyframes`` numbers people; ``lines`` the
        1-based row number in this order (there is no text file).
    """
    keep = None if label_map is None else {int(c) for c in label_map}
    video_ids, frames, boxes, actions, tube_ids = [], [], [], [], []
    for video in videos:
        tube_id = 0
        by_label = annotations.gttubes.get(video, {})
        for label in sorted(by_label):
            for tube in by_label[label]:
                tube = np.asarray(tube, dtype=np.float64).reshape(-1, 5)
                if keep is None or label + 1 in keep:
                    video_ids += [video] * tube.shape[0]
                    frames.append(np.trunc(tube[:, 0]).astype(np.int64))
                    boxes.append(tube[:, 1:5])
                    actions.append(np.full(tube.shape[0], label + 1, dtype=np.int64))
                    tube_ids.append(np.full(tube.shape[0], tube_id, dtype=np.float64))
                tube_id += 1
    n = len(video_ids)
    return BoxRows(
        path=str(annotations.path if path is None else path),
        video_ids=np.array(video_ids, dtype=str) if n else np.zeros(0, dtype=str),
        timestamps=np.concatenate(frames) if n else np.zeros(0, dtype=np.int64),
        boxes_xyxy=np.concatenate(boxes) if n else np.zeros((0, 4)),
        action_ids=np.concatenate(actions) if n else np.zeros(0, dtype=np.int64),
        extra=np.concatenate(tube_ids) if n else np.zeros(0),
        lines=np.arange(1, n + 1, dtype=np.int64),
    )


def act_pixel_rows(rows: BoxRows, resolution: Mapping[str, tuple[int, int]]) -> BoxRows:
    """Normalised rows (detections) in ACT's pixel space: x times the video's width, y times its height.

    Args:
        rows: boxes normalised x1, y1, x2, y2.
        resolution: ``{video: (height, width)}`` (``TubeAnnotations.resolution``).

    Returns:
        The same rows with ``boxes_xyxy`` [N, 4] float64 pixels (the evaluators round them to float32, as
        ACT stores detections).

    Raises:
        ValueError: a video without a resolution, naming file and line.
    """
    names, inverse = np.unique(rows.video_ids.astype(str), return_inverse=True)
    scale = np.empty((names.size, 4), dtype=np.float64)
    for i, name in enumerate(names.tolist()):
        if name not in resolution:
            r = int(np.flatnonzero(inverse.reshape(-1) == i)[0])
            raise ValueError(f"{rows.path}:{int(rows.lines[r])}: video {name} is not in the annotations (no "
                             "resolution to turn its normalised boxes into pixels)")
        h, w = resolution[name]
        scale[i] = (w, h, w, h)
    return BoxRows(
        path=rows.path,
        video_ids=rows.video_ids,
        timestamps=rows.timestamps,
        boxes_xyxy=rows.boxes_xyxy * scale[inverse.reshape(-1)],
        action_ids=rows.action_ids,
        extra=rows.extra,
        lines=rows.lines,
        skipped=rows.skipped,
    )


def _split_videos(dataset) -> list[str]:
    """The dataset's videos in the split's list order (ACT's ``vlist``): ``dataset.videos`` (the
    ``KeyFrameDataset`` keeps the order ``ucf_jhmdb_dataset`` gives it), else the key frames' order."""
    refs = getattr(dataset, "videos", None)
    if isinstance(refs, Mapping):
        return [str(v) for v in refs]
    return list(dict.fromkeys(str(k.video_id) for k in dataset.keyframes))


def evaluate_act_detections(
    dataset, det_path: str | os.PathLike, label_map: dict[int, str], gt_path: str = "<ground truth>",
    annotations=None,
) -> dict[str, Any]:
    """UCF101-24 / JHMDB-21: frame-mAP@0.5 (ACT's protocol) of a detections CSV against the split's ground
    truth, as the result JSON of docs/design.md#contracts, plus ``video_mAP@0.2`` and ``video_mAP@0.5``
    (per-frame detections linked into tubes, ``bmvit.evaluation.video_map``). Detection rows carry the
    1-based frame number and normalised boxes.

    The ground truth is ACT's (unclipped pixel tubes) when the annotations are at hand: ``annotations``, else
    the dataset's ``act_annotations`` attribute, else the file ``gt_path`` (what the engine passes). Without
    them only the dataset's clipped, normalised key-frame boxes are left: then the scores use continuous IoU,
    are close to but not ACT's, a warning says so and ``box_space`` in the result is ``"normalised"``
    (``"act_pixels"`` otherwise).
    """
    from bmvit.data.ava import read_detections
    from bmvit.evaluation.video_map import evaluate_video_map, groundtruth_tubes, link_tubes

    if annotations is None:
        annotations = getattr(dataset, "act_annotations", None)
    if annotations is None and os.path.isfile(gt_path):
        from bmvit.data.ucf_jhmdb import read_act_annotations

        annotations = read_act_annotations(gt_path)
    videos = _split_videos(dataset)
    detections = read_detections(det_path, check_boxes=False)
    if annotations is not None:
        groundtruth = act_groundtruth_rows(annotations, videos, label_map, path=gt_path)
        detections = act_pixel_rows(detections, annotations.resolution)
        nframes, pixel_boxes, space = annotations.nframes, True, "act_pixels"
    else:
        logger.warning("%s: no ACT annotations at hand; scoring against the dataset's clipped, normalised boxes "
                       "with continuous IoU (close to, not exactly, ACT's numbers)", gt_path)
        groundtruth = groundtruth_rows(dataset, path=gt_path)
        nframes, pixel_boxes, space = None, False, "normalised"
    result = evaluate_frame_ap(groundtruth, detections, label_map, pixel_boxes=pixel_boxes,
                               video_order=videos).to_json()
    tubes = link_tubes(detections, pixel_boxes=pixel_boxes, nframes=nframes)
    video = evaluate_video_map(groundtruth_tubes(groundtruth), tubes, label_map, pixel_boxes=pixel_boxes,
                               video_order=videos)
    for threshold, res in video.items():
        result[f"video_mAP@{threshold:g}"] = float(res.mAP)
        result[f"video_per_class@{threshold:g}"] = res.to_json()["per_class"]
    result["box_space"] = space
    return result


__all__ = [
    "act_average_precision",
    "act_groundtruth_rows",
    "act_pixel_rows",
    "evaluate_act_detections",
    "evaluate_frame_ap",
    "groundtruth_rows",
    "video_ranks",
]
