"""Frame-mAP on AVA files: the official example, one hand-built case per official behaviour, properties, and
agreement with a straightforward loop-based restatement of the official evaluator on random cases."""

from __future__ import annotations

import csv
import heapq
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmvit.data.ava import BoxRows, read_annotations, read_detections, read_label_map
from bmvit.bench.evaluator import bench_evaluator, write_benchmark_files
from bmvit.evaluation.frame_map import evaluate_ava, evaluate_ava_files, voc_average_precision
from bmvit.evaluation.tie_order import legacy_argsort

EXAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "ava_eval_example"
LABELS = {1: "a", 2: "b", 3: "c"}
G = (0.1, 0.1, 0.5, 0.5)  # a ground-truth box used by many cases, xyxy


def rows(items, *, path="<rows>") -> BoxRows:
    """BoxRows from (video, second, (x1, y1, x2, y2), action, extra) tuples, in that order."""
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


def aps(result) -> dict[int, float | None]:
    return result.ap_by_id()


# ---------------------------------------------------------------------------------------------------------
# the official example


def test_official_example_reproduced_exactly():
    expected = json.loads((EXAMPLE / "expected.json").read_text())
    result = evaluate_ava_files(EXAMPLE / "groundtruth.csv", EXAMPLE / "detections.csv", EXAMPLE / "labelmap.pbtxt",
                                EXAMPLE / "excluded.csv")
    assert result.mAP == expected["mAP"] == 0.5
    got = aps(result)
    for entry in expected["per_class"]:
        assert got[entry["id"]] == entry["ap"], entry
    listed = {e["id"] for e in expected["per_class"]}
    assert all(ap is None for i, ap in got.items() if i not in listed)  # the other 56 classes have no GT
    assert [c["id"] for c in result.to_json()["per_class"]] == sorted(got)


# ---------------------------------------------------------------------------------------------------------
# one hand-built case per behaviour


def test_cap_of_50_rows_per_keyframe_ignores_rows_outside_the_label_map():
    gt = rows([("v", 902, G, 1, 0)])
    hit = ("v", 902, G, 1, 0.01)  # class 1, the lowest score of the key frame, a perfect match
    outside = [("v", 902, G, 99, 0.99)] * 60  # class 99 is not in the label map: dropped before the cap
    far = (0.6, 0.6, 0.9, 0.9)
    # 49 class-2 rows + the hit = 50 label-map rows: all kept, the hit is a TP -> AP(1) = 1.
    det49 = rows(outside + [("v", 902, far, 2, 0.5 + i / 1000) for i in range(49)] + [hit])
    assert aps(evaluate_ava(gt, det49, LABELS))[1] == 1.0
    # 50 class-2 rows + the hit = 51: the hit is the lowest and falls out -> class 1 has GT, no detection: 0.
    det50 = rows(outside + [("v", 902, far, 2, 0.5 + i / 1000) for i in range(50)] + [hit])
    result = evaluate_ava(gt, det50, LABELS)
    assert aps(result)[1] == 0.0 and result.mAP == 0.0 and result.num_detections_capped == 1
    # PySlowFast has no cap: the hit survives.
    assert aps(evaluate_ava(gt, det50, LABELS, protocol="slowfast"))[1] == 1.0
    # Invalid boxes are removed after the cap, so they take cap slots: 50 inverted boxes push the hit out.
    inverted = [("v", 902, (0.5, 0.1, 0.1, 0.5), 2, 0.9)] * 50
    assert aps(evaluate_ava(gt, rows(inverted + [hit]), LABELS))[1] == 0.0


def test_cap_boundary_tie_keeps_the_earlier_row():
    # 51 rows of score 0.5: the heap is full after 50 and the 51st is not strictly higher, so it is not kept.
    gt = rows([("v", 902, G, 1, 0)])
    far = (0.6, 0.6, 0.9, 0.9)
    first_hit = rows([("v", 902, G, 1, 0.5)] + [("v", 902, far, 2, 0.5)] * 50)
    last_hit = rows([("v", 902, far, 2, 0.5)] * 50 + [("v", 902, G, 1, 0.5)])
    assert aps(evaluate_ava(gt, first_hit, LABELS))[1] == 1.0
    assert aps(evaluate_ava(gt, last_hit, LABELS))[1] == 0.0


def test_sorting_within_a_keyframe_activitynet_vs_file_order_slowfast():
    gt = rows([("v", 902, G, 1, 0)])
    d1 = ("v", 902, (0.1, 0.1, 0.5, 0.433333), 1, 0.3)  # IoU with G = 0.8333: a match, listed first
    d2 = ("v", 902, G, 1, 0.9)  # the perfect box, listed second
    det = rows([d1, d2])
    # activitynet sorts the key frame by score: d2 takes G (TP), d1 finds it taken (FP).
    # Ranked: [0.9 TP, 0.3 FP] -> precision [1, .5], recall [1, 1] -> AP = 1.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 1.0
    # slowfast matches in file order: d1 takes G, d2 is a FP. Ranked: [0.9 FP, 0.3 TP] -> precision [0, .5],
    # recall [0, 1]; the envelope at recall 1 is 0.5 -> AP = 0.5.
    assert aps(evaluate_ava(gt, det, LABELS, protocol="slowfast"))[1] == 0.5


def test_greedy_matching_to_the_highest_iou_box_only():
    g1, g2 = (0.0, 0.0, 0.4, 0.4), (0.0, 0.0, 0.3, 0.4)  # areas .16 and .12
    gt = rows([("v", 902, g1, 1, 0), ("v", 902, g2, 1, 1)])
    # d2 = (0,0,.36,.4), area .144: IoU(d2, g1) = .144/.16 = 0.9 > IoU(d2, g2) = .12/.144 = 0.833 >= 0.5.
    det = rows([("v", 902, g1, 1, 0.9), ("v", 902, (0.0, 0.0, 0.36, 0.4), 1, 0.8)])
    # d1 takes g1; d2 aims at g1 only (taken) -> FP, although g2 is free and overlaps it by 0.83.
    # Ranked [TP, FP], 2 GT: precision [1, .5], recall [.5, .5] -> AP = .5 * 1 = 0.5 (1.0 if it took g2).
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 0.5


def test_identical_ground_truth_boxes_the_second_detection_aims_at_the_first_box():
    # argmax picks the first of two equal IoUs: both detections aim at the first box; the second is a FP.
    gt = rows([("v", 902, G, 1, 0), ("v", 902, G, 1, 1)])
    det = rows([("v", 902, G, 1, 0.9), ("v", 902, G, 1, 0.8)])
    # Ranked [TP, FP] with 2 GT -> precision [1, .5], recall [.5, .5] -> AP = 0.5.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 0.5


def test_groundtruth_order_by_person_id_activitynet_vs_file_order_slowfast():
    # A and B overlap the detection d1 equally (IoU 0.75 exactly, binary fractions), so the order of the
    # ground truth decides which one d1 takes. The official reader orders a key frame's GT by the last
    # column (person id) descending: A (id 2) before B (id 1); PySlowFast keeps the file order: B, A.
    a, b = (0.25, 0.25, 0.75, 0.625), (0.25, 0.375, 0.75, 0.75)
    gt = rows([("v", 902, b, 1, 1), ("v", 902, a, 1, 2)])
    det = rows([("v", 902, (0.25, 0.25, 0.75, 0.75), 1, 0.9), ("v", 902, b, 1, 0.8)])
    # activitynet: d1 takes A, d2 (= B) takes B: [TP, TP], 2 GT -> AP 1.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 1.0
    # slowfast: d1 takes B, d2 aims at B (taken): [TP, FP] -> precision [1, .5], recall [.5, .5] -> AP 0.5.
    assert aps(evaluate_ava(gt, det, LABELS, protocol="slowfast"))[1] == 0.5


def test_iou_of_exactly_half_counts():
    # det (0,0,.5,.5) area .25; GT (0,0,.5,.25) area .125 inside it: IoU = .125 / (.25 + .125 - .125) = 0.5
    # exactly in binary floating point.
    gt = rows([("v", 902, (0.0, 0.0, 0.5, 0.25), 1, 0)])
    assert aps(evaluate_ava(gt, rows([("v", 902, (0.0, 0.0, 0.5, 0.5), 1, 0.7)]), LABELS))[1] == 1.0
    # A hair wider detection (IoU < 0.5) is a FP: AP 0.
    assert aps(evaluate_ava(gt, rows([("v", 902, (0.0, 0.0, 0.5, 0.5001), 1, 0.7)]), LABELS))[1] == 0.0


def test_invalid_detection_boxes_are_dropped():
    gt = rows([("v", 902, G, 1, 0)])
    det = rows([
        ("v", 902, (0.5, 0.1, 0.1, 0.5), 1, 0.9),  # x1 > x2
        ("v", 902, (0.3, 0.1, 0.3, 0.5), 1, 0.8),  # x1 == x2: the official test is strict (x1 < x2)
        ("v", 902, G, 1, 0.5),
    ])
    # Dropped rows are not false positives: only [0.5 TP] is ranked -> AP 1 (0.5... if they counted: 1/3).
    result = evaluate_ava(gt, det, LABELS)
    assert aps(result)[1] == 1.0
    assert result.num_detections_invalid == 2 and result.num_detections_used == 1


def test_exclusions_remove_keyframes_on_both_sides():
    gt = rows([("v", 902, G, 1, 0), ("v", 903, G, 1, 0)])
    far = (0.6, 0.6, 0.9, 0.9)
    det = rows([("v", 902, G, 1, 0.5), ("v", 903, far, 1, 0.9)])
    # Without exclusions: 2 GT, ranked [0.9 FP, 0.5 TP] -> precision [0, .5], recall [0, .5] -> AP = .25.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 0.25
    # Excluding v,903 removes its GT (1 GT left) and its FP: [0.5 TP] -> AP 1. Removing only one side would
    # give 0.5 (FP kept, 1 GT) or 0.5 (FP gone, 2 GT).
    result = evaluate_ava(gt, det, LABELS, exclusions={("v", 903)})
    assert aps(result)[1] == 1.0 and result.num_groundtruth == 1


def test_detections_on_keyframes_without_groundtruth_are_false_positives():
    gt = rows([("v", 902, G, 1, 0)])
    det = rows([("v", 902, G, 1, 0.5), ("w", 902, G, 1, 0.9)])  # video w has no GT at all
    # Ranked [0.9 FP, 0.5 TP], 1 GT: precision [0, .5], recall [0, 1] -> AP = 0.5.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 0.5


def test_classes_without_groundtruth_are_null_and_out_of_the_mean():
    gt = rows([("v", 902, G, 1, 0), ("v", 902, G, 2, 0)])
    det = rows([("v", 902, G, 1, 0.5), ("v", 902, G, 3, 0.9)])
    # class 1: TP -> 1; class 2: GT but no detection -> 0; class 3: detections but no GT -> null.
    result = evaluate_ava(gt, det, LABELS)
    assert aps(result) == {1: 1.0, 2: 0.0, 3: None}
    assert result.mAP == 0.5  # (1 + 0) / 2
    assert result.to_json() == {
        "mAP": 0.5,
        "protocol": "activitynet",
        "per_class": [{"id": 1, "name": "a", "ap": 1.0}, {"id": 2, "name": "b", "ap": 0.0},
                      {"id": 3, "name": "c", "ap": None}],
    }


def test_ground_truth_outside_the_label_map_is_ignored_and_no_groundtruth_is_an_error():
    gt = rows([("v", 902, G, 1, 0), ("v", 902, G, 42, 0)])
    assert evaluate_ava(gt, rows([("v", 902, G, 1, 0.5)]), LABELS).num_groundtruth == 1
    with pytest.raises(ValueError, match="no ground-truth box of any label-map class"):
        evaluate_ava(rows([("v", 902, G, 42, 0)]), rows([]), LABELS)


def test_inverted_groundtruth_box_is_an_error_naming_file_and_line():
    gt = rows([("v", 902, G, 1, 0), ("v", 902, (0.5, 0.1, 0.1, 0.5), 1, 1)], path="gt.csv")
    with pytest.raises(ValueError, match=r"gt\.csv:2: .*x1 > x2"):
        evaluate_ava(gt, rows([]), LABELS)


def test_protocol_and_label_map_checks():
    gt = rows([("v", 902, G, 1, 0)])
    with pytest.raises(ValueError, match="protocol"):
        evaluate_ava(gt, rows([]), LABELS, protocol="coco")
    with pytest.raises(ValueError, match="no classes"):
        evaluate_ava(gt, rows([]), {})
    with pytest.raises(ValueError, match="1-indexed"):
        evaluate_ava(gt, rows([]), {0: "x", 1: "a"})


def test_voc_average_precision_envelope_by_hand():
    # Ranked TP, FP, TP, FP with 4 GT: precision 1, .5, .667, .5; recall .25, .25, .5, .5.
    # Envelope at the recall steps: .25 -> max(1, ...) = 1; .5 -> 2/3. AP = .25*1 + .25*(2/3) = 0.41666...
    ap = voc_average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, False, True, False]), 4)
    assert ap == pytest.approx(0.25 + 0.25 * 2 / 3, abs=1e-15)
    assert voc_average_precision(np.zeros(0), np.zeros(0, bool), 3) == 0.0


# ---------------------------------------------------------------------------------------------------------
# bad files, through the file API (the CLI test does the same through the command)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "det_text, message",
    [
        ("v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,0902,0.1,0.1,0.5,1,0.9\n", r"det\.csv:2: .*columns"),
        ("v,0902,0.1,0.1,0.5,0.5,1,0.9\nv,902.5,0.1,0.1,0.5,0.5,1,0.9\n", r"det\.csv:2: timestamp '902\.5'"),
        ("v,0902,0.1,0.1,0.5,0.5,1,high\n", r"det\.csv:1: score 'high' is not a number"),
    ],
)
def test_bad_detection_files_name_file_and_line(tmp_path, det_text, message):
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1,0\n")
    det = _write(tmp_path / "det.csv", det_text)
    labels = _write(tmp_path / "labels.pbtxt", 'item {\n  name: "a"\n  id: 1\n}\n')
    with pytest.raises(ValueError, match=message):
        evaluate_ava_files(gt, det, labels)


def test_empty_label_map_file_is_an_error(tmp_path):
    gt = _write(tmp_path / "gt.csv", "v,0902,0.1,0.1,0.5,0.5,1,0\n")
    labels = _write(tmp_path / "labels.pbtxt", "# nothing here\n")
    with pytest.raises(ValueError, match=r"labels\.pbtxt: no classes"):
        evaluate_ava_files(gt, gt, labels)


# ---------------------------------------------------------------------------------------------------------
# a loop-based restatement of the official evaluator (written from reading get_ava_performance.py,
# object_detection_evaluation.py, per_image_evaluation.py, metrics.py, np_box_ops.py), on the raw CSV text


def reference_evaluate(gt_path, det_path, label_map, exclusions, protocol):
    whitelist = set(label_map)

    def read(path, capacity, with_score):
        keyed = defaultdict(list)
        for row in csv.reader(open(path)):
            key = (row[0], int(row[1]))
            x1, y1, x2, y2 = (float(v) for v in row[2:6])
            action = int(row[6])
            if action not in whitelist:
                continue
            score = float(row[7]) if (with_score and len(row) == 8) else 1.0
            item = (score, action, y1, x1, y2, x2)
            if protocol == "slowfast":
                keyed[key].append(item)
            elif capacity < 1 or len(keyed[key]) < capacity:
                heapq.heappush(keyed[key], item)
            elif score > keyed[key][0][0]:
                heapq.heapreplace(keyed[key], item)
        if protocol == "activitynet":
            keyed = {k: sorted(v, key=lambda t: -t[0]) for k, v in keyed.items()}
        return keyed

    official = protocol == "activitynet"
    gt = read(gt_path, 0, with_score=official)  # the official reader takes GT's last column as a "score"
    det = read(det_path, 50, with_score=True)
    num_gt = defaultdict(int)
    for key, items in gt.items():
        if key not in exclusions:
            for item in items:
                num_gt[item[1]] += 1
    scores, labels = defaultdict(list), defaultdict(list)
    for key, items in det.items():
        if key in exclusions:
            continue
        items = [t for t in items if t[2] < t[4] and t[3] < t[5]]
        gt_items = gt.get(key, []) if key not in exclusions else []
        for c in sorted(whitelist):
            mine = [t for t in items if t[1] == c]
            boxes = [t[2:] for t in gt_items if t[1] == c]
            taken = [False] * len(boxes)
            for t in mine:
                tp = False
                if boxes:
                    ious = np.array([box_iou_yxyx(t[2:], b) for b in boxes])
                    j = int(np.argmax(ious))
                    if ious[j] >= 0.5 and not taken[j]:
                        tp = taken[j] = True
                scores[c].append(t[0])
                labels[c].append(tp)
    if not any(num_gt.values()):
        return None
    per_class = np.full(max(whitelist), np.nan)
    for c in whitelist:
        if num_gt[c] == 0:
            continue
        s, lab = np.array(scores[c], dtype=float), np.array(labels[c], dtype=bool)
        if s.size == 0:
            per_class[c - 1] = 0.0
            continue
        order = legacy_argsort(s)[::-1]  # the official np.argsort under its NumPy (1.23; test_tie_order.py)
        tp = lab.astype(int)[order]
        ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
        precision = list(ctp.astype(float) / (ctp + cfp))
        recall = list(ctp.astype(float) / num_gt[c])
        recall = [0.0] + recall + [1.0]
        precision = [0.0] + precision + [0.0]
        for i in range(len(precision) - 2, -1, -1):
            precision[i] = max(precision[i], precision[i + 1])
        idx = [i for i in range(1, len(recall)) if recall[i] != recall[i - 1]]
        per_class[c - 1] = np.sum(np.array([(recall[i] - recall[i - 1]) * precision[i] for i in idx]))
    return float(np.nanmean(per_class)), {c: None if math.isnan(per_class[c - 1]) else float(per_class[c - 1])
                                          for c in whitelist}


def box_iou_yxyx(a, b):
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union != 0 else float("nan")


def random_case(seed: int, tmp_path: Path):
    """Small AVA-like files with plenty of ties: scores on a coarse grid, duplicate person ids and boxes,
    out-of-map classes, invalid boxes, crowded key frames past the cap, and an excluded key frame."""
    rng = np.random.default_rng(seed)
    label_map = {1: "a", 2: "b", 4: "d", 7: "g"}
    actions = [1, 2, 4, 7, 9]  # 9 is not in the label map
    frames = [(f"vid{v}", 902 + t) for v in range(2) for t in range(rng.integers(2, 5))]
    gt_lines, det_lines = [], []
    for vid, sec in frames:
        persons = []
        for _ in range(rng.integers(1, 4)):
            xs, ys = rng.choice(10, 2, replace=False) / 10, rng.choice(10, 2, replace=False) / 10
            persons.append(np.array([xs.min(), ys.min(), xs.max(), ys.max()]))
        for p, box in enumerate(persons):
            for a in rng.choice(actions, rng.integers(1, 3), replace=False):
                pid = p if rng.random() < 0.8 else 0
                gt_lines.append(f"{vid},{sec},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},{a},{pid}")
        if rng.random() < 0.3:  # equal-IoU GT pair with tied person ids: the GT order becomes visible
            pid, a = int(rng.integers(0, 2)), int(rng.choice(actions))
            for box in ("0.25,0.25,0.75,0.625", "0.25,0.375,0.75,0.75", "0.25,0.25,0.625,0.75")[: rng.integers(2, 4)]:
                gt_lines.append(f"{vid},{sec},{box},{a},{pid}")
            for box in ("0.25,0.25,0.75,0.75", "0.25,0.375,0.75,0.75", "0.25,0.25,0.625,0.75"):
                det_lines.append(f"{vid},{sec},{box},{a},{rng.integers(1, 5) / 4}")
        n_det = int(rng.choice([rng.integers(0, 12), rng.integers(45, 70)]))
        for _ in range(n_det):
            base = persons[rng.integers(len(persons))] if rng.random() < 0.7 else rng.random(4)
            box = np.clip(base + rng.normal(0, 0.04, 4), 0, 1)
            if rng.random() < 0.05:
                box = box[[2, 1, 0, 3]]  # inverted or degenerate
            score = rng.integers(1, 8) / 8 if rng.random() < 0.7 else rng.random()
            det_lines.append(f"{vid},{sec:04d},{box[0]:.3f},{box[1]:.3f},{box[2]:.3f},{box[3]:.3f},"
                             f"{rng.choice(actions)},{score}")
    order = rng.permutation(len(det_lines))
    det_lines = [det_lines[i] for i in order]
    gt_path = _write(tmp_path / f"gt{seed}.csv", "\n".join(gt_lines) + "\n")
    det_path = _write(tmp_path / f"det{seed}.csv", "\n".join(det_lines) + "\n" if det_lines else "")
    exclusions = {frames[int(rng.integers(len(frames)))]} if rng.random() < 0.5 else set()
    return gt_path, det_path, label_map, exclusions


@pytest.mark.parametrize("protocol", ["activitynet", "slowfast"])
def test_agrees_with_loop_reference_on_random_cases_with_ties(tmp_path, protocol):
    checked = 0
    for seed in range(40):
        gt_path, det_path, label_map, exclusions = random_case(seed, tmp_path)
        reference = reference_evaluate(gt_path, det_path, label_map, exclusions, protocol)
        if reference is None:  # no GT outside the exclusions: not a case to compare
            continue
        want_map, want = reference
        gt = read_annotations(gt_path, check_boxes=False)
        det = read_detections(det_path) if det_path.stat().st_size else rows([])
        got = evaluate_ava(gt, det, label_map, exclusions, protocol=protocol)
        assert got.ap_by_id() == want, seed  # exact equality, ties included
        assert got.mAP == want_map, seed
        checked += 1
    assert checked >= 30


def test_benchmark_files_evaluate_like_the_reference(tmp_path):
    paths = write_benchmark_files(tmp_path, num_rows=3000, num_keyframes=150, seed=3)
    label_map = read_label_map(paths["labelmap"])
    want_map, want = reference_evaluate(paths["groundtruth"], paths["detections"], label_map, set(), "activitynet")
    got = evaluate_ava_files(paths["groundtruth"], paths["detections"], paths["labelmap"])
    assert got.ap_by_id() == want and got.mAP == want_map
    assert got.num_detections_capped > 0  # some key frames are past the cap of 50
    report = bench_evaluator(num_rows=3000, num_keyframes=150, seed=3, repeats=1)
    assert report["mAP"] == want_map and report["num_rows"] == 3000 and report["total_s"] >= report["evaluate_s"] > 0


def test_a_detection_without_score_counts_as_score_one():
    # The official reader gives a 7-column row the score 1.0; BoxRows carries that as NaN.
    gt = rows([("v", 902, G, 1, 0)])
    det = rows([("v", 902, (0.6, 0.6, 0.9, 0.9), 1, 0.99), ("v", 902, G, 1, float("nan"))])
    # The NaN row ranks first (1.0 > 0.99) and is a TP: [TP, FP] -> AP 1.
    assert aps(evaluate_ava(gt, det, LABELS))[1] == 1.0


# ---------------------------------------------------------------------------------------------------------
# properties


@st.composite
def small_case(draw):
    n_frames = draw(st.integers(1, 4))
    gt_items = []
    for f in range(n_frames):
        for p in range(draw(st.integers(0, 3))):
            x, y = draw(st.integers(0, 5)) / 10, draw(st.integers(0, 5)) / 10
            box = (x, y, x + 0.3, y + 0.4)
            for a in draw(st.sets(st.sampled_from([1, 2, 3]), min_size=1, max_size=2)):
                gt_items.append(("v", 902 + f, box, a, float(p)))
    n_det = draw(st.integers(0, 25))
    scores = draw(st.lists(st.integers(1, 10**6), min_size=n_det, max_size=n_det, unique=True))
    det_items = []
    for s in scores:
        f = draw(st.integers(0, n_frames - 1))
        x, y = draw(st.integers(0, 6)) / 10, draw(st.integers(0, 6)) / 10
        det_items.append(("v", 902 + f, (x, y, x + 0.3, y + 0.4), draw(st.sampled_from([1, 2, 3])), s / 10**6))
    return gt_items, det_items, draw(st.randoms(use_true_random=False))


def _maybe_eval(gt_items, det_items, protocol="activitynet"):
    try:
        return evaluate_ava(rows(gt_items), rows(det_items), LABELS, protocol=protocol)
    except ValueError:
        return None  # no ground truth at all


@settings(max_examples=60, deadline=None)
@given(small_case())
def test_row_order_does_not_matter_with_unique_scores(case):
    gt_items, det_items, rnd = case
    base = _maybe_eval(gt_items, det_items)
    shuffled_gt, shuffled_det = list(gt_items), list(det_items)
    rnd.shuffle(shuffled_gt)
    rnd.shuffle(shuffled_det)
    other = _maybe_eval(shuffled_gt, shuffled_det)
    assert (base is None) == (other is None)
    if base is not None:
        assert other.ap_by_id() == base.ap_by_id() and other.mAP == base.mAP


@settings(max_examples=60, deadline=None)
@given(small_case(), st.data())
def test_detections_below_every_score_never_lower_ap_and_false_ones_change_nothing(case, data):
    gt_items, det_items, _ = case
    base = _maybe_eval(gt_items, det_items)
    if base is None:
        return
    n_new = data.draw(st.integers(1, 5))
    low = [1e-9 * (i + 1) for i in range(n_new)]  # below every drawn score (>= 1e-6)
    anywhere = [("v", 902 + data.draw(st.integers(0, 3)), (0.2, 0.2, 0.5, 0.6), data.draw(st.sampled_from([1, 2, 3])),
                 s) for s in low]
    nowhere = [("w", 902, (0.2, 0.2, 0.5, 0.6), data.draw(st.sampled_from([1, 2, 3])), s) for s in low]
    for protocol in ("activitynet", "slowfast"):
        before = _maybe_eval(gt_items, det_items, protocol).ap_by_id()
        more = _maybe_eval(gt_items, det_items + anywhere, protocol).ap_by_id()
        fps = _maybe_eval(gt_items, det_items + nowhere, protocol).ap_by_id()
        for c, ap in before.items():
            if ap is not None:
                assert more[c] >= ap - 1e-12  # may only add recall at the end of the ranking
                assert fps[c] == ap  # false positives at the end change no step of the envelope
