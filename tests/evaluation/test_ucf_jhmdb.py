"""UCF101-24 / JHMDB-21 frame-AP (ACT's protocol): hand cases and agreement with a loop restatement of ACT."""

from __future__ import annotations

import numpy as np
import pytest

from bmvit.data.ava import BoxRows
from bmvit.evaluation.frame_map import evaluate_ava
from bmvit.evaluation.ucf_jhmdb import act_average_precision, evaluate_frame_ap

LABELS = {1: "Basketball", 2: "Biking", 3: "Diving"}


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


def test_a_matched_box_is_removed_so_the_next_detection_takes_the_second_best():
    g1, g2 = (0.0, 0.0, 0.4, 0.4), (0.0, 0.0, 0.3, 0.4)
    gt = rows([("v", 1, g1, 1, 0), ("v", 1, g2, 1, 1)])
    # d2 overlaps g1 by 0.9 and g2 by 0.83. ACT: g1 is gone after d1, so d2 takes g2: [TP, TP].
    det = rows([("v", 1, g1, 1, 0.9), ("v", 1, (0.0, 0.0, 0.36, 0.4), 1, 0.8)])
    # pr = (1, 0), (1, .5), (1, 1): trapezoids .5 * (1 + 1) / 2 * 2 = 1.
    assert evaluate_frame_ap(gt, det, LABELS).ap_by_id()[1] == 1.0
    # The AVA protocol compares d2 with g1 only (taken): FP, AP 0.5.
    assert evaluate_ava(gt, det, LABELS).ap_by_id()[1] == 0.5


def test_trapezoidal_ap_starts_at_precision_one():
    gt = rows([("v", 1, (0.1, 0.1, 0.5, 0.5), 2, 0)])
    det = rows([("v", 2, (0.1, 0.1, 0.5, 0.5), 2, 0.9), ("v", 1, (0.1, 0.1, 0.5, 0.5), 2, 0.5)])
    # Ranked [FP (wrong frame), TP]: pr = (1, 0), (0, 0), (.5, 1) -> 0 + 1 * (0 + .5) / 2 = 0.25 (VOC: 0.5).
    result = evaluate_frame_ap(gt, det, LABELS)
    assert result.ap_by_id() == {1: None, 2: 0.25, 3: None}
    assert result.mAP == 0.25 and result.protocol == "act"
    assert act_average_precision(np.zeros(0, bool), 3) == 0.0


def test_class_outside_the_label_map_is_an_error_with_the_line():
    gt = rows([("v", 1, (0.1, 0.1, 0.5, 0.5), 1, 0)])
    det = rows([("v", 1, (0.1, 0.1, 0.5, 0.5), 1, 0.9), ("v", 1, (0.1, 0.1, 0.5, 0.5), 7, 0.9)], path="dets.csv")
    with pytest.raises(ValueError, match=r"dets\.csv:2: class 7 is not in the label map"):
        evaluate_frame_ap(gt, det, LABELS)


def act_reference(gt: BoxRows, det: BoxRows, label_map, th=0.5):
    """ACT's frameAP, restated with its dictionaries, np.delete and float32 precision-recall array."""
    out = {}
    for c in sorted(label_map):
        gtd = {}
        for v, f, b, a in zip(gt.video_ids, gt.timestamps, gt.boxes_xyxy, gt.action_ids):
            if a == c:
                gtd.setdefault((v, int(f)), []).append(b.tolist())
        gtd = {k: np.array(v) for k, v in gtd.items()}
        mine = [i for i in range(len(det)) if det.action_ids[i] == c]
        fn = sum(g.shape[0] for g in gtd.values())
        if fn == 0:
            out[c] = None
            continue
        pr = np.empty((len(mine) + 1, 2), dtype=np.float32)
        pr[0] = (1.0, 0.0)
        tp = fp = 0
        scores = np.array([det.extra[i] for i in mine])
        for i, j in enumerate(np.argsort(-scores, kind="stable")):
            d = mine[j]
            k = (det.video_ids[d], int(det.timestamps[d]))
            positive = False
            if k in gtd:
                g, b = gtd[k], det.boxes_xyxy[d]
                w = np.maximum(0, np.minimum(g[:, 2], b[2]) - np.maximum(g[:, 0], b[0]))
                h = np.maximum(0, np.minimum(g[:, 3], b[3]) - np.maximum(g[:, 1], b[1]))
                ov = w * h
                ious = ov / ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - ov)
                amax = int(np.argmax(ious))
                if ious[amax] >= th:
                    positive = True
                    gtd[k] = np.delete(gtd[k], amax, 0)
                    if gtd[k].size == 0:
                        del gtd[k]
            tp, fp, fn = tp + positive, fp + (not positive), fn - positive
            pr[i + 1, 0] = float(tp) / float(tp + fp)
            pr[i + 1, 1] = float(tp) / float(tp + fn)
        out[c] = float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return out


def test_agrees_with_act_loop_reference_on_random_cases():
    rng = np.random.default_rng(0)
    for case in range(25):
        gt_items, det_items = [], []
        for v in range(2):
            for f in range(1, rng.integers(2, 6)):
                people = []
                for _ in range(rng.integers(0, 4)):
                    xs = np.sort(rng.choice(11, 2, replace=False)) / 10
                    ys = np.sort(rng.choice(11, 2, replace=False)) / 10
                    people.append(np.array([xs[0], ys[0], xs[1], ys[1]]))
                for p, box in enumerate(people):
                    gt_items.append((f"v{v}", f, tuple(box), int(rng.integers(1, 4)), p))
                for _ in range(rng.integers(0, 8)):
                    base = people[rng.integers(len(people))] if people and rng.random() < 0.8 else rng.random(4)
                    box = np.clip(base + rng.normal(0, 0.05, 4), 0, 1)
                    box = (min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3]))
                    det_items.append((f"v{v}", f, box, int(rng.integers(1, 4)), float(rng.integers(1, 6) / 5)))
        gt, det = rows(gt_items), rows(det_items)
        want = act_reference(gt, det, LABELS)
        if all(v is None for v in want.values()):
            continue
        assert evaluate_frame_ap(gt, det, LABELS).ap_by_id() == want, case
