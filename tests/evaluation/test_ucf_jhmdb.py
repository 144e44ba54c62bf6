"""UCF101-24 / JHMDB-21 frame-AP as ACT scores it: hand cases at each boundary (the +1 pixel IoU, unclipped
ground truth, ``>=`` at the threshold, ACT's order of tied scores) and agreement with a loop restatement of
ACT's ``frameAP`` on random cases."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bmvit.box_ops import act_pixel_iou_numpy, matched_box_iou_numpy
from bmvit.data.ava import BoxRows, write_ava_csv
from bmvit.data.ucf_jhmdb import TubeAnnotations
from bmvit.evaluation.frame_map import evaluate_ava
from bmvit.evaluation.tie_order import legacy_argsort
from bmvit.evaluation.ucf_jhmdb import (
    act_average_precision,
    act_groundtruth_rows,
    act_pixel_rows,
    evaluate_act_detections,
    evaluate_frame_ap,
)

LABELS = {1: "Basketball", 2: "Biking", 3: "Diving"}
W, H = 320, 240


def rows(items, path="<rows>") -> BoxRows:
    """(video, frame, (x1, y1, x2, y2), class, extra) tuples -> BoxRows."""
    n = len(items)
    return BoxRows(
        path=path,
        video_ids=np.array([i[0] for i in items], dtype=str) if n else np.zeros(0, dtype=str),
        timestamps=np.array([i[1] for i in items], dtype=np.int64),
        boxes_xyxy=np.array([i[2] for i in items], dtype=np.float64).reshape(n, 4),
        action_ids=np.array([i[3] for i in items], dtype=np.int64),
        extra=np.array([i[4] for i in items], dtype=np.float64),
        lines=np.arange(1, n + 1, dtype=np.int64),
    )


def annotations(gttubes, videos, nframes=10) -> TubeAnnotations:
    """``gttubes``: {video: {label index: [[(frame, x1, y1, x2, y2), ...], ...]}} in pixels of a W x H frame."""
    tubes = {v: {label: [np.array(t, dtype=np.float64) for t in ts] for label, ts in by.items()}
             for v, by in gttubes.items()}
    return TubeAnnotations("gt.pkl", list(LABELS.values()), tubes, {v: nframes for v in videos},
                           {v: (H, W) for v in videos}, [list(videos)], [list(videos)])


# ---------------------------------------------------------------------------------------------------------
# ACT's pixel IoU


def test_act_pixel_iou_by_hand():
    gt = np.array([0.0, 0.0, 9.0, 9.0])  # 10 x 10 pixels with the +1: area 100
    half = np.array([0.0, 0.0, 4.0, 9.0], dtype=np.float32)  # 5 x 10 pixels inside it: area 50
    # ACT: 50 / (100 + 50 - 50) = 0.5 exactly. Continuous widths (9 x 9 and 4 x 9): 36 / 81 = 0.444.
    assert act_pixel_iou_numpy(gt, half) == 0.5
    assert matched_box_iou_numpy(gt, half.astype(np.float64)) == pytest.approx(36 / 81)
    # Touching boxes share a pixel column under the +1 convention: [0, 9] and [9, 18] overlap on x = 9.
    assert act_pixel_iou_numpy(gt, np.array([9.0, 0.0, 18.0, 9.0])) == pytest.approx(10 / 190)
    # Broadcasting like matched_box_iou_numpy: [2, 1, 4] x [2, 3, 4] -> [2, 3]; float32 pairs stay float32.
    pair = act_pixel_iou_numpy(np.zeros((2, 1, 4), np.float32), np.zeros((2, 3, 4), np.float32))
    assert pair.shape == (2, 3) and pair.dtype == np.float32 and (pair == 1).all()


# ---------------------------------------------------------------------------------------------------------
# hand cases


def test_a_matched_box_is_removed_so_the_next_detection_takes_the_second_best():
    g1, g2 = (0, 0, 40, 40), (0, 0, 30, 40)
    gt = rows([("v", 1, g1, 1, 0), ("v", 1, g2, 1, 1)])
    # d2 overlaps g1 by 37 * 41 / 41^2 = 0.90 and g2 by 31 / 37 = 0.84. ACT: g1 is gone after d1, so d2 takes
    # g2: [TP, TP].
    det = rows([("v", 1, g1, 1, 0.9), ("v", 1, (0, 0, 36, 40), 1, 0.8)])
    # pr = (1, 0), (1, .5), (1, 1): trapezoids .5 * (1 + 1) / 2 * 2 = 1.
    assert evaluate_frame_ap(gt, det, LABELS).ap_by_id()[1] == 1.0
    # The AVA protocol compares d2 with g1 only (taken): FP, AP 0.5.
    assert evaluate_ava(gt, det, LABELS).ap_by_id()[1] == 0.5


def test_trapezoidal_ap_starts_at_precision_one():
    gt = rows([("v", 1, (32, 24, 160, 120), 2, 0)])
    det = rows([("v", 2, (32, 24, 160, 120), 2, 0.9), ("v", 1, (32, 24, 160, 120), 2, 0.5)])
    # Ranked [FP (wrong frame), TP]: pr = (1, 0), (0, 0), (.5, 1) -> 0 + 1 * (0 + .5) / 2 = 0.25 (VOC: 0.5).
    result = evaluate_frame_ap(gt, det, LABELS)
    assert result.ap_by_id() == {1: None, 2: 0.25, 3: None}
    assert result.mAP == 0.25 and result.protocol == "act"
    assert act_average_precision(np.zeros(0, bool), 3) == 0.0


def test_iou_of_exactly_one_half_with_the_plus_one_is_a_hit():
    # Ground truth (32, 24, 97, 120) px: 66 x 97 = 6402 px. The detection, normalised (0.1, 0.1, 0.2, 0.5) of a
    # 320 x 240 frame = (32, 24, 64, 120) px: 33 x 97 = 3201 px, inside the ground truth.
    # ACT: 3201 / (6402 + 3201 - 3201) = 0.5 exactly, and 0.5 >= 0.5: a hit, AP 1.
    # Without the +1 (widths 65 and 32, height 96): 3072 / 6240 = 0.492, a miss: AP 0.
    gt = rows([("v", 1, (32, 24, 97, 120), 1, 0)])
    det = rows([("v", 1, (0.1, 0.1, 0.2, 0.5), 1, 0.9)])
    pixels = act_pixel_rows(det, {"v": (H, W)})
    assert pixels.boxes_xyxy.tolist() == [[32.0, 24.0, 64.0, 120.0]]
    assert evaluate_frame_ap(gt, pixels, LABELS).ap_by_id()[1] == 1.0
    normalised_gt = rows([("v", 1, (32 / W, 24 / H, 97 / W, 120 / H), 1, 0)])
    assert evaluate_frame_ap(normalised_gt, det, LABELS, pixel_boxes=False).ap_by_id()[1] == 0.0
    # One pixel narrower (x2 = 63): 3104 / 6402 = 0.485 < 0.5, a miss for ACT too.
    narrower = rows([("v", 1, (32, 24, 63, 120), 1, 0.9)])
    assert evaluate_frame_ap(gt, narrower, LABELS).ap_by_id()[1] == 0.0


def test_groundtruth_past_the_frame_edge_stays_unclipped(tmp_path):
    # A 320 x 240 frame (x in 0..319); the ground truth reaches x2 = 361, past the right edge. The detection,
    # normalised (0.875, 0.25, 1.0, 0.75) = (280, 60, 320, 180) px: 41 x 121 = 4961 px.
    # ACT, unclipped: ground truth 82 x 121 = 9922 px, overlap 41 x 121 -> 4961 / 9922 = 0.5: a hit.
    # One pixel more (x2 = 362): 4961 / 10043 = 0.494: a miss. Clipped to the frame, both would be 1.
    write_ava_csv(tmp_path / "det.csv", [("v", 1, 0.875, 0.25, 1.0, 0.75, 1, 0.9)])
    dataset = SimpleNamespace(videos={"v": None}, keyframes=[])
    for x2, hit in ((361, True), (362, False)):
        ann = annotations({"v": {0: [[(1, 280, 60, x2, 180)]]}}, ["v"])
        assert act_groundtruth_rows(ann, ["v"]).boxes_xyxy.tolist() == [[280, 60, x2, 180]]
        result = evaluate_act_detections(dataset, tmp_path / "det.csv", LABELS, annotations=ann)
        assert result["box_space"] == "act_pixels"
        assert [c["ap"] for c in result["per_class"]] == [1.0 if hit else 0.0, None, None]


def test_tied_scores_are_ranked_as_act_ranks_them():
    """ACT puts detections in (video in list order, frame) order and ranks them by numpy's default argsort of
    -score, which is not stable: the order of ties is that sort's, on this array. Four detections, in ACT's
    order d0, d1 (frame 1, score 0.8), d2, d3 (frame 2, score 0.9); d1 and d2 hit, d0 and d3 miss; 2 boxes."""
    ga, gb, far = (0, 0, 99, 99), (100, 100, 199, 199), (250, 150, 300, 200)
    gt = rows([("v", 1, ga, 1, 0), ("v", 2, gb, 1, 1)])
    d0, d1, d2, d3 = ("v", 1, far, 1, 0.8), ("v", 1, ga, 1, 0.8), ("v", 2, gb, 1, 0.9), ("v", 2, far, 1, 0.9)
    # Hand AP of each order the ties allow (pr starts at (1, 0); recall steps of 0.5):
    expected = {
        (3, 2, 1, 0): 5 / 12,   # FP TP TP FP: (0,0) (.5,.5) (2/3,1) (.5,1) -> .5*.5/2 + .5*(.5+2/3)/2
        (2, 3, 0, 1): 17 / 24,  # TP FP FP TP: (1,.5) (.5,.5) (1/3,.5) (.5,1) -> .5 + .5*(1/3+.5)/2
        (2, 3, 1, 0): 19 / 24,  # TP FP TP FP: (1,.5) (.5,.5) (2/3,1) (.5,1) -> .5 + .5*(.5+2/3)/2
        (3, 2, 0, 1): 1 / 3,    # FP TP FP TP: (0,0) (.5,.5) (1/3,.5) (.5,1) -> .125 + .5*(1/3+.5)/2
    }
    # ACT's NumPy sorts an array this short by insertion, which keeps ties in place: d2, d3, d0, d1. (NumPy
    # 2.4's SIMD sort on AVX2 gives (3, 2, 1, 0), both pairs reversed: 5/12; bmvit scores as ACT's NumPy did.)
    act_rank = tuple(legacy_argsort(-np.array([0.8, 0.8, 0.9, 0.9], dtype=np.float32)).tolist())
    assert act_rank == (2, 3, 0, 1)
    want = expected[act_rank]
    # The file order differs from ACT's (frame 2 first): the rows are put in ACT's order before the sort.
    assert evaluate_frame_ap(gt, rows([d2, d3, d0, d1]), LABELS).ap_by_id()[1] == pytest.approx(want, abs=1e-6)
    # Across videos, the split's list order decides: video "b" before "a" as listed, not by name.
    gt_v = rows([("b", 1, ga, 1, 0), ("a", 1, gb, 1, 1)])
    det_v = rows([("a", 1, gb, 1, 0.9), ("a", 1, far, 1, 0.9), ("b", 1, far, 1, 0.8), ("b", 1, ga, 1, 0.8)])
    result = evaluate_frame_ap(gt_v, det_v, LABELS, video_order=["b", "a"])
    assert result.ap_by_id()[1] == pytest.approx(want, abs=1e-6)


def test_class_outside_the_label_map_is_an_error_with_the_line():
    gt = rows([("v", 1, (32, 24, 160, 120), 1, 0)])
    det = rows([("v", 1, (32, 24, 160, 120), 1, 0.9), ("v", 1, (32, 24, 160, 120), 7, 0.9)], path="dets.csv")
    with pytest.raises(ValueError, match=r"dets\.csv:2: class 7 is not in the label map"):
        evaluate_frame_ap(gt, det, LABELS)


def test_groundtruth_rows_from_the_annotations_and_pixel_rows():
    ann = annotations({"v2": {2: [[(1, 1, 2, 3, 4), (2, 5, 6, 7, 8)]], 0: [[(1, 0, 0, 9, 9)], [(3, 1, 1, 5, 5)]]},
                       "v1": {1: [[(4, 10, 10, 20, 20)]]}}, ["v2", "v1"])
    gt = act_groundtruth_rows(ann, ["v2", "v1"])
    # Videos in the given order, labels ascending, tubes in list order; tube ids count per video over labels.
    assert gt.video_ids.tolist() == ["v2"] * 4 + ["v1"]
    assert gt.action_ids.tolist() == [1, 1, 3, 3, 2] and gt.extra.tolist() == [0, 1, 2, 2, 0]
    assert gt.timestamps.tolist() == [1, 3, 1, 2, 4] and gt.lines.tolist() == [1, 2, 3, 4, 5]
    only = act_groundtruth_rows(ann, ["v2"], {3: "Diving"})
    assert only.action_ids.tolist() == [3, 3] and only.extra.tolist() == [2, 2]
    det = rows([("v1", 1, (0.5, 0.5, 1.0, 1.0), 1, 0.9), ("nope", 1, (0, 0, 1, 1), 1, 0.9)], path="det.csv")
    with pytest.raises(ValueError, match=r"det\.csv:2: video nope is not in the annotations"):
        act_pixel_rows(det, ann.resolution)
    assert act_pixel_rows(det.select(np.array([0])), ann.resolution).boxes_xyxy.tolist() == [[160, 120, 320, 240]]


# ---------------------------------------------------------------------------------------------------------
# agreement with ACT's loop


def _act_iou2d(gt_boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    """ACT's iou2d(b1 = ground truth [M, 4], b2 = one detection [4]), spelled out with its +1 terms."""
    b2 = box[None, :]
    width = np.maximum(0, np.minimum(gt_boxes[:, 2] + 1, b2[:, 2] + 1) - np.maximum(gt_boxes[:, 0], b2[:, 0]))
    height = np.maximum(0, np.minimum(gt_boxes[:, 3] + 1, b2[:, 3] + 1) - np.maximum(gt_boxes[:, 1], b2[:, 1]))
    overlap = width * height
    area_gt = (gt_boxes[:, 2] - gt_boxes[:, 0] + 1) * (gt_boxes[:, 3] - gt_boxes[:, 1] + 1)
    area_det = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    return overlap / (area_gt + area_det - overlap)


def act_frame_ap_reference(gttubes, per_frame, vlist, num_labels, th=0.5):
    """ACT's frameAP restated: one float32 array <video index, frame, label, score, x1, y1, x2, y2> built video
    by video (list order), frame by frame, rows of a frame in their order; per label ``np.argsort(-score)``;
    ground truth per (video index, frame) as float64 arrays from ``tolist``, a matched box deleted; float32
    precision-recall and ``pr_to_ap``. ``per_frame``: {(video, frame): [(label index, score, box), ...]}."""
    table = []
    for iv, v in enumerate(vlist):
        for frame in sorted(f for (vv, f) in per_frame if vv == v):
            for label, score, box in per_frame[(v, frame)]:
                table.append([iv, frame, label, score, *box])
    alldets = np.array(table, dtype=np.float32).reshape(-1, 8)
    ap = {}
    for label in range(num_labels):
        dets = alldets[alldets[:, 2] == label, :]
        gt = {}
        for iv, v in enumerate(vlist):
            for tube in gttubes.get(v, {}).get(label, []):
                for row in tube:
                    gt.setdefault((iv, int(row[0])), []).append(row[1:5].tolist())
        gt = {k: np.array(b) for k, b in gt.items()}
        remaining = sum(b.shape[0] for b in gt.values())
        if remaining == 0:
            ap[label + 1] = None
            continue
        pr = np.empty((dets.shape[0] + 1, 2), dtype=np.float32)
        pr[0] = (1.0, 0.0)
        tp = fp = 0
        for i, j in enumerate(legacy_argsort(-dets[:, 3])):  # ACT's np.argsort under its NumPy (test_tie_order.py)
            key = (int(dets[j, 0]), int(dets[j, 1]))
            hit = False
            if key in gt:
                ious = _act_iou2d(gt[key], dets[j, 4:8])
                best = np.argmax(ious)
                if ious[best] >= th:
                    hit = True
                    gt[key] = np.delete(gt[key], best, 0)
                    if gt[key].size == 0:
                        del gt[key]
            tp, fp, remaining = tp + hit, fp + (not hit), remaining - hit
            pr[i + 1, 0] = float(tp) / float(tp + fp)
            pr[i + 1, 1] = float(tp) / float(tp + remaining)
        ap[label + 1] = float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return ap


def random_case(rng, videos=("v3", "v1", "v2"), frames=6):
    """Integer ground-truth boxes (some past the 320 x 240 frame), detections near them with integer or
    fractional offsets (IoUs on 0.5 happen) and scores from five values (many ties, > 16 per class so
    numpy's sort is not stable)."""
    gttubes = {}
    per_frame = {}
    for v in videos:
        by_label = {}
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(0, 3))
            x1, y1 = rng.integers(0, 280), rng.integers(0, 200)
            w, h = rng.integers(10, 80, 2)
            first = int(rng.integers(1, 3))
            tube = [(f, x1 + 3 * f, y1, x1 + 3 * f + w, y1 + h) for f in range(first, frames + 1)]
            by_label.setdefault(label, []).append(np.array(tube, dtype=np.float64))
        gttubes[v] = by_label
        for f in range(1, frames + 1):
            boxes = [t[t[:, 0] == f, 1:5][0] for ts in by_label.values() for t in ts if f in t[:, 0]]
            dets = []
            for _ in range(int(rng.integers(2, 9))):
                if boxes and rng.random() < 0.8:
                    base = boxes[int(rng.integers(len(boxes)))]
                    jitter = rng.integers(-6, 7, 4) if rng.random() < 0.5 else rng.normal(0, 4, 4)
                    box = base + jitter
                else:
                    box = np.r_[rng.integers(0, 250, 2), 0, 0]
                    box[2:] = box[:2] + rng.integers(5, 70, 2)
                box = np.array([min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])])
                # ACT's detections are float32: draw values float32 can hold, so both sides see the same boxes.
                box = box.astype(np.float32).astype(np.float64)
                dets.append((int(rng.integers(0, 3)), float(np.float32(rng.integers(1, 6) / 5)), box))
            per_frame[(v, f)] = dets
    return gttubes, per_frame


def test_agrees_with_act_loop_reference_on_random_cases():
    rng = np.random.default_rng(0)
    vlist = ["v3", "v1", "v2"]  # not sorted: the list order is ACT's, names are not
    checked = 0
    for case in range(30):
        gttubes, per_frame = random_case(rng)
        want = act_frame_ap_reference(gttubes, per_frame, vlist, 3)
        if all(v is None for v in want.values()):
            continue
        ann = annotations(gttubes, vlist)
        # File order: frames shuffled across the whole file (ACT's order is rebuilt), rows of a frame kept.
        keys = list(per_frame)
        items = [(v, f, tuple(box), label + 1, score)
                 for k in rng.permutation(len(keys)) for v, f in [keys[k]] for label, score, box in per_frame[(v, f)]]
        got = evaluate_frame_ap(act_groundtruth_rows(ann, vlist), rows(items), LABELS, video_order=vlist)
        assert got.ap_by_id() == want, case
        checked += 1
    assert checked > 20
