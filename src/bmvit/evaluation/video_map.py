"""Video-mAP for UCF101-24 and JHMDB-21: per-frame detections linked into tubes, tubes matched to ground-truth
tubes by spatio-temporal IoU, AP per class at IoU 0.2 and 0.5 (the thresholds those benchmarks report), scored
as ACT scores it.

Reference: ACT (Kalogeiton et al., ICCV 2017; github.com/vkalogeiton/caffe, branch act-detector,
``act-detector-scripts/ACT.py::videoAP, BuildTubes``, ``ACT_utils.py::iou2d, iou3d, iou3dt, nms3dt,
nms_tubelets, pr_to_ap``), read with its copy in MOC-Detector (github.com/MCG-NJU/MOC-Detector, ``src/ACT.py``,
``src/ACT_utils/ACT_utils.py``, ``ACT_build.py``), whose linking parameters are the defaults below.

ACT's ``videoAP``, per class: each video's linked tubes go through tube NMS (``nms3dt`` at 0.3) and are
appended video after video in the split's list order; they are ranked by ``np.argsort(-score)`` (numpy's
default, unstable sort, on float32 scores); each, best first, is compared with the video's remaining
ground-truth tubes of the class (pixels, unclipped) and takes the one of highest ``iou3dt`` when that IoU is
``>= threshold`` (first maximum on ties; the tube is then removed), else is a false positive; AP is
``pr_to_ap`` (see ``bmvit.evaluation.ucf_jhmdb``).

``iou3dt`` (spatio-temporal IoU) = ``iou3d`` x temporal IoU, where ``iou3d`` is the mean over the frames
of the temporal overlap of the per-frame ``+1`` pixel IoU, and the temporal IoU counts frames inclusively:
tubes over frames 1-10 and 6-15 overlap on 5 of 15 frames. ACT keeps the frame numbers in the tube's own
array, so its arithmetic runs in the tubes' dtypes (float32 for linked tubes, the annotations' float64 for
ground truth); it is reproduced here in the same dtypes.

Linking is MOC's ``BuildTubes`` with tubelets of length K = 1, i.e. per-frame detections as a single-stage
detector such as BMViT produces them, per video and class, frame by frame, in float32 pixels as ACT's are:

1. the frame's detections are re-scored by ``nms_tubelets``: linear soft-NMS at ``nms_iou`` (a box
   overlapping a higher-scored kept box by more than ``nms_iou`` gets its score times (1 - IoU) and
   suppresses nothing), then the ``top_k`` best are kept;
2. current tubes, ordered by descending mean score (numpy's default argsort), each take the highest-scored
   remaining detection whose IoU with the tube's last box is ``>= link_iou``; the tubes that find none
   are finished (K = 1 allows no gap), and go to the finished list in reverse order, as ACT's do;
3. detections left start new tubes; at the video's last frame the tubes still open are finished too.

A tube's score is the float32 mean of its detections' (re-scored) scores; tubes scoring below ``min_score``
or shorter than ``min_length`` frames are dropped.

Differences from ACT: a frame inside the temporal overlap of two tubes that one of them lacks counts as
spatial IoU 0 (ACT assumes gap-free tubes and fails on others); a class without ground-truth tubes is None
and left out of the mean. ``pixel_boxes=False`` (normalised boxes, continuous IoU everywhere) is the
fallback for ground truth without its annotations, not ACT's numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bmvit.box_ops import act_pixel_iou_numpy, matched_box_iou_numpy
from bmvit.data.ava import BoxRows
from bmvit.evaluation.frame_map import ClassAP, FrameMapResult, _class_ids
from bmvit.evaluation.ucf_jhmdb import act_average_precision, video_ranks

VIDEO_MAP_THRESHOLDS = (0.2, 0.5)


@dataclass(frozen=True)
class Tube:
    """A tube of one class in one video.

    Attributes:
        video_id: the video.
        label: class id.
        frames: [T] int64 frame numbers, strictly increasing.
        boxes_xyxy: [T, 4] x1, y1, x2, y2 per frame: pixels for ACT's scoring (float64 for ground truth,
            float32 for linked detections, the dtypes ACT computes in), normalised with ``pixel_boxes=False``.
        score: the tube's score (1.0 for ground truth; a float32 value for linked tubes).
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


def _pair_iou(pixel_boxes: bool):
    return act_pixel_iou_numpy if pixel_boxes else matched_box_iou_numpy


# ---------------------------------------------------------------------------------------------------------
# tubes from rows


def groundtruth_tubes(rows: BoxRows) -> list[Tube]:
    """Ground-truth tubes from per-frame annotation rows (``timestamps`` = frame numbers).

    A tube is the rows sharing (video, class, person id in ``extra``); rows without a person id (NaN) form one
    tube per (video, class), as in JHMDB-21. Tubes of one video and class come in person-id order (for
    ``act_groundtruth_rows``: the annotations' tube order, in which ACT tries them); boxes are kept as given
    (float64).

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


def link_tubes(
    detections: BoxRows,
    config: LinkingConfig = LinkingConfig(),
    *,
    pixel_boxes: bool = True,
    nframes: Mapping[str, int] | None = None,
) -> list[Tube]:
    """Link per-frame detections (``timestamps`` = frame numbers, score in ``extra``) into scored tubes, then
    tube NMS per video and class.

    Args:
        detections: rows in pixels (``ucf_jhmdb.act_pixel_rows``), or normalised with ``pixel_boxes=False``;
            rows of one frame are taken in row order (ACT's per-frame order).
        config: the linking parameters.
        pixel_boxes: ACT's ``+1`` pixel IoU (True) or continuous IoU on normalised boxes.
        nframes: ``{video: number of frames}``: linking runs to the video's last frame as ACT's does, which
            decides the order in which the last tubes finish (and so ties downstream). None: to the last
            frame with a detection.

    Returns:
        Tubes sorted by (video, class), in tube-NMS order (best first) within each; boxes float32.
    """
    per_video_class: dict[tuple[str, int], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(detections.video_ids.tolist(), detections.action_ids.tolist())):
        per_video_class[key].append(i)
    # ACT's tubelets are float32 (x1, y1, x2, y2, score) rows.
    table = np.concatenate([detections.boxes_xyxy, detections.extra[:, None]], axis=1).astype(np.float32)
    tubes: list[Tube] = []
    for (video, label), idx in sorted(per_video_class.items()):
        idx = np.array(idx)
        frames = detections.timestamps[idx]
        last = int(frames.max())
        if nframes is not None and video in nframes:
            last = max(last, int(nframes[video]))
        linked = _link_one(frames, table[idx], last, config, pixel_boxes)
        linked = [Tube(video, int(label), f, b, s) for f, b, s in linked]
        tubes += [linked[i] for i in tube_nms(linked, config.tube_nms_iou, pixel_boxes=pixel_boxes)]
    return tubes


def _soft_nms(dets: np.ndarray, overlap: float, top_k: int, pixel_boxes: bool) -> np.ndarray:
    """MOC's ``nms_tubelets`` with K = 1 on one frame and class: ``[n, 5]`` float32 (x1, y1, x2, y2, score)
    -> the ``top_k`` best rows after linear soft-NMS, re-scored, best first.

    Its IoU groups the ``+1`` as ``min(x2) - max(x1) + 1`` (``iou2d`` has ``min(x2 + 1) - max(x1)``), and its
    orders are ``np.argsort(score)[::-1]`` (default kind, reversed): both kept, for ties and rounding.
    """
    if dets.shape[0] <= 1:  # nothing to suppress: ACT's loop leaves a single row as it is
        return dets[:top_k]
    plus = 1 if pixel_boxes else 0  # adding 0 leaves the continuous IoU
    x1, y1, x2, y2, scores = dets.T
    area = (x2 - x1 + plus) * (y2 - y1 + plus)
    order = np.argsort(scores)[::-1]
    weight = np.zeros_like(scores) + 1
    with np.errstate(divide="ignore", invalid="ignore"):
        while order.size > 0:
            i, rest = order[0], order[1:]
            w = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + plus)
            h = np.maximum(0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + plus)
            inter = w * h
            ious = inter / (area[rest] + area[i] - inter)
            suppressed = np.where(ious > overlap)[0]
            weight[rest[suppressed]] = 1 - ious[suppressed]
            order = rest[np.where(ious <= overlap)[0]]
    rescored = dets.copy()
    rescored[:, -1] = rescored[:, -1] * weight
    return rescored[np.argsort(rescored[:, -1])[::-1]][:top_k]


class _OpenTube:
    """A tube being linked: its (frame, float32 row) entries and ACT's ``tubescore``, the float32 mean of
    the rows' scores, recomputed only when a row is added (ACT recomputes it every frame; same value)."""

    __slots__ = ("entries", "scores", "score")

    def __init__(self, frame: int, row: np.ndarray) -> None:
        self.entries = [(frame, row)]
        self.scores = [row[-1]]
        self.score = np.mean(np.array(self.scores))

    def add(self, frame: int, row: np.ndarray) -> None:
        self.entries.append((frame, row))
        self.scores.append(row[-1])
        self.score = np.mean(np.array(self.scores))


def _link_one(
    frames: np.ndarray, dets: np.ndarray, last_frame: int, config: LinkingConfig, pixel_boxes: bool
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MOC's ``BuildTubes`` (K = 1) for one video and class.

    Args:
        frames: [N] frame numbers; dets: [N, 5] float32 (x1, y1, x2, y2, score) rows.
        last_frame: the video's last frame.

    Returns:
        [(frames [T] int64, boxes [T, 4] float32, score)], in ACT's finishing order.
    """
    iou = _pair_iou(pixel_boxes)
    by_frame: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(frames.tolist()):
        by_frame[int(f)].append(i)
    current: list[_OpenTube] = []
    finished: list[_OpenTube] = []
    # Frames before the first detection change nothing (no tube is open), so the loop starts there.
    for frame in range(int(frames.min()), last_frame + 1):
        rows = by_frame.get(frame)
        if rows is None and not current:
            continue
        if current:
            # ACT re-sorts the open tubes by score (default argsort) every frame; the order decides which tube
            # takes a contested detection and the order tubes finish in.
            order = np.argsort(-np.array([t.score for t in current]))
            current = [current[i] for i in order]
        if rows is None:  # no detection: every open tube ends, appended from the back as ACT deletes them
            finished += current[::-1]
            current = []
            continue
        candidates = _soft_nms(dets[rows], config.nms_iou, config.top_k, pixel_boxes)
        free = np.ones(candidates.shape[0], dtype=bool)
        if current:
            # One [tubes, candidates] IoU table: each pair's value is the one ACT computes when that tube's
            # turn comes; the candidates taken meanwhile are masked instead of deleted (order unchanged).
            last = np.stack([t.entries[-1][1][:4] for t in current])
            ious = iou(candidates[None, :, :4], last[:, None, :])
            ended = []
            for it, tube in enumerate(current):
                valid = np.where(free & (ious[it] >= config.link_iou))[0]
                if valid.size > 0:
                    j = valid[np.argmax(candidates[valid, -1])]
                    tube.add(frame, candidates[j])
                    free[j] = False
                else:
                    ended.append(it)
            finished += [current[it] for it in ended[::-1]]
            closed = set(ended)
            current = [t for it, t in enumerate(current) if it not in closed]
        current += [_OpenTube(frame, row) for row in candidates[free]]
    out = []
    for tube in finished + current:
        if tube.score < config.min_score:
            continue
        begin, end = tube.entries[0][0], tube.entries[-1][0]
        if end + 1 - begin < config.min_length:
            continue
        boxes = np.stack([row[:4] for _, row in tube.entries])
        out.append((np.arange(begin, end + 1, dtype=np.int64), boxes, float(tube.score)))
    return out


def tube_nms(tubes: Sequence[Tube], overlap: float, *, pixel_boxes: bool = True) -> list[int]:
    """Indices of the tubes kept by NMS on spatio-temporal IoU (ACT's ``nms3dt``), best score first.

    Ascending ``np.argsort`` (default kind) of the float32 scores, the last is kept; the tubes whose IoU with
    it is ``<= overlap`` stay in the running, in order."""
    order = np.argsort(np.array([t.score for t in tubes], dtype=np.float32))
    kept = []
    while order.size > 0:
        i = order[-1]
        kept.append(int(i))
        ious = np.array([_iou3dt(tubes[j], tubes[i], pixel_boxes) for j in order[:-1]])
        order = order[np.where(ious <= overlap)[0]]
    return kept


# ---------------------------------------------------------------------------------------------------------
# IoU and AP


def spatiotemporal_iou(a: Tube, b: Tube, *, pixel_boxes: bool = True) -> float:
    """ACT's ``iou3dt``: temporal IoU x mean per-frame IoU over the temporal overlap; 0 without overlap.

    Frames are counted inclusively: tubes over frames 1-10 and 6-15 have temporal IoU 5 / 15. Per-frame IoU
    is ACT's ``+1`` pixel IoU (``pixel_boxes``) or the continuous one. A frame of the overlap that one tube
    lacks counts as IoU 0.
    """
    return float(_iou3dt(a, b, pixel_boxes))


def _iou3dt(a: Tube, b: Tube, pixel_boxes: bool):
    """``iou3dt(a, b)`` as ACT computes it, a numpy scalar of ACT's dtype (or the Python 0.0 ACT returns)."""
    # ACT's tubes are [T, 5] arrays (frame, x1, y1, x2, y2): frame numbers are in the boxes' dtype, and the
    # builtin max / min pick between numpy scalars, so the temporal ratio is float32 for two linked tubes.
    fa, fb = a.frames.astype(a.boxes_xyxy.dtype), b.frames.astype(b.boxes_xyxy.dtype)
    t_min, t_max = max(fa[0], fb[0]), min(fa[-1], fb[-1])
    if t_max < t_min:
        return 0.0
    temporal_inter = t_max - t_min + 1
    temporal_union = max(fa[-1], fb[-1]) - min(fa[0], fb[0]) + 1
    lo, hi = int(t_min), int(t_max)
    in_a = (a.frames >= lo) & (a.frames <= hi)
    in_b = (b.frames >= lo) & (b.frames <= hi)
    iou = _pair_iou(pixel_boxes)
    if in_a.sum() == in_b.sum() == hi - lo + 1:
        spatial = np.mean(iou(a.boxes_xyxy[in_a], b.boxes_xyxy[in_b]))
    else:  # a gap inside the overlap (ACT would fail): the missing frames count as IoU 0
        span = np.arange(lo, hi + 1)
        ia, ib = np.searchsorted(a.frames, span), np.searchsorted(b.frames, span)
        both = (a.frames[np.minimum(ia, a.frames.size - 1)] == span) & (
            b.frames[np.minimum(ib, b.frames.size - 1)] == span)
        per_frame = iou(a.boxes_xyxy[ia[both]], b.boxes_xyxy[ib[both]])
        ious = np.zeros(span.size, dtype=np.result_type(a.boxes_xyxy, b.boxes_xyxy))
        ious[both] = per_frame
        spatial = np.mean(ious)
    return spatial * (temporal_inter / temporal_union)


def evaluate_video_map(
    gt_tubes: Iterable[Tube],
    det_tubes: Iterable[Tube],
    label_map: Mapping[int, str],
    iou_thresholds: Sequence[float] = VIDEO_MAP_THRESHOLDS,
    *,
    pixel_boxes: bool = True,
    video_order: Sequence[str] | None = None,
) -> dict[float, FrameMapResult]:
    """Video-AP per class and its mean at each threshold (ACT's ``videoAP``).

    Per class, detected tubes are put in ACT's order (videos in ``video_order``, then by name; within a
    video as given, i.e. tube-NMS order) and ranked by ``np.argsort(-score)`` on float32 scores (default,
    unstable kind: ties come out as ACT's come out); each is compared with the remaining ground-truth tubes
    of its video and class (in the order given), takes the one of highest spatio-temporal IoU if that IoU
    is ``>=`` the threshold (that tube is then removed) and is otherwise a false positive.

    Args:
        pixel_boxes: tubes in pixels with ACT's ``+1`` IoU (True), or normalised with continuous IoU.

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
    if det_tubes:
        rank = video_ranks(np.array([t.video_id for t in det_tubes], dtype=str), video_order)
        det_tubes = [det_tubes[i] for i in np.argsort(rank, kind="stable")]
    results = {}
    for threshold in iou_thresholds:
        per_class = []
        for c in class_ids.tolist():
            gts = [t for t in gt_tubes if t.label == c]
            ap = None
            if gts:
                dets = [t for t in det_tubes if t.label == c]
                order = np.argsort(-np.array([t.score for t in dets], dtype=np.float32))
                ap = act_average_precision(_match_tubes(gts, [dets[i] for i in order], threshold, pixel_boxes),
                                           len(gts))
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


def _match_tubes(gts: list[Tube], ranked: list[Tube], threshold: float, pixel_boxes: bool) -> np.ndarray:
    remaining: dict[str, list[Tube]] = defaultdict(list)
    for t in gts:
        remaining[t.video_id].append(t)
    tp = np.zeros(len(ranked), dtype=bool)
    for i, det in enumerate(ranked):
        pool = remaining.get(det.video_id)
        if not pool:
            continue
        ious = [_iou3dt(g, det, pixel_boxes) for g in pool]  # ACT: iou3dt(ground truth, detection)
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
