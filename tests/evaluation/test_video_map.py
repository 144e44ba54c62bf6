"""Video-mAP as ACT scores it: spatio-temporal IoU with the +1 pixel convention, linking of per-frame
detections (MOC's BuildTubes with K = 1), tube NMS, ACT's order of tied scores, AP by hand, and agreement with
a loop restatement of ACT's BuildTubes / nms3dt / videoAP on random cases. Boxes are pixels of a 320 x 240
frame unless a test says otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from bmvit.data.ava import BoxRows
from bmvit.data.ucf_jhmdb import TubeAnnotations
from bmvit.evaluation.ucf_jhmdb import act_groundtruth_rows
from bmvit.evaluation.video_map import (
    LinkingConfig,
    Tube,
    evaluate_video_map,
    groundtruth_tubes,
    link_tubes,
    spatiotemporal_iou,
    tube_nms,
)

LABELS = {1: "Basketball", 2: "Biking"}
BOX = (64, 48, 191, 143)  # 128 x 96 pixels with the +1


def tube(video, label, first, last, box=BOX, score=1.0, dtype=np.float64) -> Tube:
    frames = np.arange(first, last + 1)
    return Tube(video, label, frames, np.tile(np.array(box, dtype=dtype), (frames.size, 1)), score)


def rows(items, path="<rows>") -> BoxRows:
    n = len(items)
    return BoxRows(
        path=path,
        video_ids=np.array([i[0] for i in items], dtype=str),
        timestamps=np.array([i[1] for i in items], dtype=np.int64),
        boxes_xyxy=np.array([i[2] for i in items], dtype=np.float64).reshape(n, 4),
        action_ids=np.array([i[3] for i in items], dtype=np.int64),
        extra=np.array([i[4] for i in items], dtype=np.float64),
        lines=np.arange(1, n + 1, dtype=np.int64),
    )


def test_spatiotemporal_iou_by_hand():
    a = tube("v", 1, 1, 10)
    # Frames 1-10 vs 6-15: overlap 6..10 = 5 frames of 15 -> temporal 1/3; same box -> spatial 1.
    assert spatiotemporal_iou(a, tube("v", 1, 6, 15)) == pytest.approx(1 / 3, abs=1e-15)
    # The right half of BOX (x 128..191: 64 of its 128 pixel columns) on the same frames -> 0.5 exactly.
    assert spatiotemporal_iou(a, tube("v", 1, 1, 10, box=(128, 48, 191, 143))) == 0.5
    assert spatiotemporal_iou(a, tube("v", 1, 11, 20)) == 0.0  # no common frame
    # A frame of the overlap missing from one tube counts as IoU 0: 9 of 10 frames match -> 0.9.
    gap = Tube("v", 1, np.r_[1:5, 6:11], np.tile(np.array(BOX, dtype=np.float64), (9, 1)))
    assert spatiotemporal_iou(a, gap) == pytest.approx(0.9)
    # Normalised boxes with continuous IoU (the fallback): 0.2-0.6 vs 0.4-0.6 in x -> 0.5.
    n = tube("v", 1, 1, 10, box=(0.2, 0.2, 0.6, 0.6))
    assert spatiotemporal_iou(n, tube("v", 1, 1, 10, box=(0.4, 0.2, 0.6, 0.6)), pixel_boxes=False) == pytest.approx(0.5)


def test_a_tube_at_exactly_one_half_is_a_hit():
    gt = [tube("v", 1, 1, 20, box=(0, 0, 9, 9))]  # 10 x 10 pixels, float64 as the annotations
    # Spatially exact 0.5 on every frame (ACT: 5 x 10 inside 10 x 10 -> 50 / 100), temporally 1: 0.5 >= 0.5.
    spatial = tube("v", 1, 1, 20, box=(0, 0, 4, 9), score=0.9, dtype=np.float32)
    # Same box, temporally 20 of 40 frames: 1 x 0.5.
    temporal = tube("v", 1, 1, 40, box=(0, 0, 9, 9), score=0.9, dtype=np.float32)
    for det in (spatial, temporal):
        assert spatiotemporal_iou(gt[0], det) == 0.5
        assert evaluate_video_map(gt, [det], LABELS, (0.5,))[0.5].ap_by_id()[1] == 1.0
    # Without the +1 the spatial case is 36 / 81 = 0.444 per frame: a miss.
    assert spatiotemporal_iou(gt[0], spatial, pixel_boxes=False) == pytest.approx(36 / 81)
    assert evaluate_video_map(gt, [spatial], LABELS, (0.5,), pixel_boxes=False)[0.5].ap_by_id()[1] == 0.0
    # One frame more (1-41): 20 / 41 < 0.5, a miss.
    assert evaluate_video_map(gt, [tube("v", 1, 1, 41, box=(0, 0, 9, 9), score=0.9)], LABELS,
                              (0.5,))[0.5].ap_by_id()[1] == 0.0


def test_tied_tube_scores_are_ranked_as_act_ranks_them():
    """ACT appends each video's tubes in the split's list order and ranks them by numpy's default (unstable)
    argsort of -score: tubes d0, d1 of video "b" (score 0.8; d1 hits), then d2, d3 of video "a" (0.9; d2 hits)."""
    far = (250, 150, 300, 200)
    gts = [tube("b", 1, 1, 20), tube("a", 1, 1, 20)]
    dets = [tube("a", 1, 1, 20, score=0.9), tube("a", 1, 1, 20, box=far, score=0.9),
            tube("b", 1, 1, 20, box=far, score=0.8), tube("b", 1, 1, 20, score=0.8)]
    # Hand AP of each order the ties allow (hits of d1 and d2; 2 ground-truth tubes): see test_ucf_jhmdb.
    expected = {(3, 2, 1, 0): 5 / 12, (2, 3, 0, 1): 17 / 24, (2, 3, 1, 0): 19 / 24, (3, 2, 0, 1): 1 / 3}
    act_rank = tuple(np.argsort(-np.array([0.8, 0.8, 0.9, 0.9], dtype=np.float32)).tolist())
    result = evaluate_video_map(gts, dets, LABELS, (0.5,), video_order=["b", "a"])
    assert result[0.5].ap_by_id()[1] == pytest.approx(expected[act_rank], abs=1e-6)


def test_linking_follows_each_person_and_drops_short_tubes():
    items = []
    for f in range(1, 21):
        x = 32 + 3.2 * f  # a person walking right
        items.append(("v", f, (x, 48, x + 96, 192), 1, 0.9))
        items.append(("v", f, (224, 24, 304, 120), 1, 0.6))  # a second person, still
    items += [("v", f, (0, 0, 32, 24), 1, 0.8) for f in range(3, 8)]  # 5 frames only: dropped
    tubes = link_tubes(rows(items))
    assert len(tubes) == 2
    scores = sorted(t.score for t in tubes)
    assert scores == pytest.approx([0.6, 0.9])
    for t in tubes:
        assert t.frames.tolist() == list(range(1, 21)) and t.label == 1 and t.video_id == "v"
        assert t.boxes_xyxy.dtype == np.float32  # ACT's tubes are float32
    walker = max(tubes, key=lambda t: t.score)
    assert walker.boxes_xyxy[:, 0] == pytest.approx(32 + 3.2 * np.arange(1, 21))


def test_a_missing_frame_ends_a_tube():
    items = [("v", f, BOX, 1, 0.9) for f in range(1, 21) if f != 10]
    tubes = link_tubes(rows(items), LinkingConfig(min_length=1))
    assert sorted(t.frames.tolist()[0] for t in tubes) == [1, 11]
    assert sorted(len(t) for t in tubes) == [9, 10]
    assert link_tubes(rows(items)) == []  # both shorter than 15 frames


def test_soft_nms_rescales_overlapping_boxes_instead_of_dropping_them():
    # Two boxes per frame, IoU 72 / 96 = 0.75 > 0.6 (the top 72 of BOX's 96 pixel rows): the weaker is
    # re-scored by (1 - 0.75) and, being a box of its own, starts a tube of its own scoring 0.5 * 0.25.
    near = (64, 48, 191, 119)
    items = [("v", f, b, 1, s) for f in range(1, 16) for b, s in ((BOX, 0.9), (near, 0.5))]
    tubes = link_tubes(rows(items), LinkingConfig(tube_nms_iou=1.0))
    assert sorted(t.score for t in tubes) == pytest.approx([0.125, 0.9])
    # With the default tube NMS (0.3) the weaker tube (IoU 0.75 with the stronger) is removed.
    assert [t.score for t in link_tubes(rows(items))] == pytest.approx([0.9])


def test_tube_nms_keeps_the_best_and_drops_overlapping_ones():
    tubes = [tube("v", 1, 1, 20, score=0.5), tube("v", 1, 1, 20, score=0.9), tube("v", 1, 30, 50, score=0.1)]
    assert tube_nms(tubes, 0.3) == [1, 2]


def test_video_ap_at_02_and_05_by_hand():
    gts = [tube("v1", 1, 1, 30), tube("v2", 1, 1, 30)]
    dets = [tube("v1", 1, 1, 30, score=0.9), tube("v2", 1, 21, 50, score=0.8)]
    # v2's detection overlaps frames 21-30: temporal IoU 10 / 50 = 0.2, spatial 1 -> ST-IoU 0.2.
    results = evaluate_video_map(gts, dets, LABELS)
    # @0.2: [TP, TP] -> 1. @0.5: [TP, FP] with 2 GT: pr (1,0), (1,.5), (.5,.5) -> .5 * (1 + 1) / 2 = 0.5.
    assert results[0.2].ap_by_id() == {1: 1.0, 2: None}
    assert results[0.5].ap_by_id() == {1: 0.5, 2: None}
    assert results[0.5].mAP == 0.5 and results[0.5].protocol == "act-video@0.5"


def test_groundtruth_tubes_from_rows_and_full_pipeline():
    gt_items, det_items = [], []
    for f in range(1, 31):
        gt_items.append(("vid", f, BOX, 2, 0))
        gt_items.append(("vid", f, (208, 24, 304, 216), 2, 1))
        det_items.append(("vid", f, (67, 48, 192, 146), 2, 0.8))
        det_items.append(("vid", f, (211, 24, 304, 211), 2, 0.7))
        det_items.append(("vid", f, (211, 24, 304, 211), 1, 0.3))  # wrong class: no GT tube of class 1
    gts = groundtruth_tubes(rows(gt_items))
    assert [(t.label, len(t)) for t in gts] == [(2, 30), (2, 30)]
    results = evaluate_video_map(gts, link_tubes(rows(det_items)), LABELS)
    for th in (0.2, 0.5):
        assert results[th].ap_by_id() == {1: None, 2: 1.0}
        assert results[th].num_groundtruth == 2 and results[th].num_detections_used == 3


def test_groundtruth_tube_with_two_boxes_on_a_frame_is_an_error():
    bad = rows([("v", 1, BOX, 1, 0), ("v", 2, BOX, 1, 0), ("v", 2, BOX, 1, 0)], path="gt.csv")
    with pytest.raises(ValueError, match=r"gt\.csv:3: a second box on frame 2"):
        groundtruth_tubes(bad)


# ---------------------------------------------------------------------------------------------------------
# agreement with ACT's loops (MOC's BuildTubes with K = 1, nms3dt, videoAP)


def _iou2d(b1: np.ndarray, box: np.ndarray) -> np.ndarray:
    """ACT's iou2d(b1 [M, 4], b2 [4]) with its +1 terms, in the arrays' own dtypes."""
    b2 = box[None, :]
    w = np.maximum(0, np.minimum(b1[:, 2] + 1, b2[:, 2] + 1) - np.maximum(b1[:, 0], b2[:, 0]))
    h = np.maximum(0, np.minimum(b1[:, 3] + 1, b2[:, 3] + 1) - np.maximum(b1[:, 1], b2[:, 1]))
    ov = w * h
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    return ov / (area1 + area2 - ov)


def _iou3dt(t1: np.ndarray, t2: np.ndarray):
    """ACT's iou3dt on [T, 5+] arrays (frame, x1, y1, x2, y2, ...), gap-free tubes."""
    tmin, tmax = max(t1[0, 0], t2[0, 0]), min(t1[-1, 0], t2[-1, 0])
    if tmax < tmin:
        return 0.0
    inter = tmax - tmin + 1
    union = max(t1[-1, 0], t2[-1, 0]) - min(t1[0, 0], t2[0, 0]) + 1
    a = t1[int(np.where(t1[:, 0] == tmin)[0][0]):int(np.where(t1[:, 0] == tmax)[0][0]) + 1, 1:5]
    b = t2[int(np.where(t2[:, 0] == tmin)[0][0]):int(np.where(t2[:, 0] == tmax)[0][0]) + 1, 1:5]
    ov = np.maximum(0, np.minimum(a[:, 2] + 1, b[:, 2] + 1) - np.maximum(a[:, 0], b[:, 0])) * \
        np.maximum(0, np.minimum(a[:, 3] + 1, b[:, 3] + 1) - np.maximum(a[:, 1], b[:, 1]))
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    return np.mean(ov / (area_a + area_b - ov)) * (inter / union)


def _soft_nms(dets: np.ndarray, thresh=0.6, top_k=10) -> np.ndarray:
    """MOC's nms_tubelets with K = 1 on float32 rows (x1, y1, x2, y2, score)."""
    if len(dets) == 0:
        return dets
    dets = dets.copy()
    x1, y1, x2, y2, scores = (dets[:, i] for i in range(5))
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(scores)[::-1]
    weight = np.zeros_like(scores) + 1
    while order.size > 0:
        i = order[0]
        w = np.maximum(0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        ious = inter / (area[order[1:]] + area[i] - inter)
        weight[order[np.where(ious > thresh)[0] + 1]] = 1 - ious[np.where(ious > thresh)[0]]
        order = order[np.where(ious <= thresh)[0] + 1]
    dets[:, -1] = dets[:, -1] * weight
    return dets[np.argsort(dets[:, -1])[::-1], :][:top_k]


def act_build_tubes(vdets: dict[int, np.ndarray], nframes: int) -> list[tuple[np.ndarray, np.float32]]:
    """BuildTubes for one video and label, K = 1: ``vdets`` {frame: float32 [n, 5]} -> [(tube [T, 6], score)]."""
    def score_of(t):
        return np.mean(np.array([row[-1] for _, row in t]))

    current, finished = [], []
    for frame in range(1, nframes + 1):
        lt = _soft_nms(vdets.get(frame, np.zeros((0, 5), np.float32)))
        if frame == 1:
            current = [[(1, lt[i])] for i in range(lt.shape[0])]
            continue
        current = [current[i] for i in np.argsort(-np.array([score_of(t) for t in current]))]
        ended = []
        for it, t in enumerate(current):
            ious = _iou2d(lt[:, :4], t[-1][1][:4])
            valid = np.where(ious >= 0.5)[0]
            if valid.size > 0:
                idx = valid[np.argmax(lt[valid, -1])]
                current[it].append((frame, lt[idx]))
                lt = np.delete(lt, idx, axis=0)
            else:
                ended.append(it)
        for it in ended[::-1]:
            finished.append(current[it][:])
            del current[it]
        current += [[(frame, lt[i])] for i in range(lt.shape[0])]
    finished += current
    out = []
    for t in finished:
        score = score_of(t)
        if score < 0.005 or t[-1][0] + 1 - t[0][0] < 15:
            continue
        arr = np.zeros((len(t), 6), dtype=np.float32)
        arr[:, 0] = np.arange(t[0][0], t[-1][0] + 1)
        for k, (_, row) in enumerate(t):
            arr[k, 1:] = row
        out.append((arr, score))
    return out


def act_nms3dt(tubes, overlap=0.3):
    order = np.argsort([t[1] for t in tubes])
    kept = []
    while order.size > 0:
        i = order[-1]
        kept.append(i)
        ious = np.array([_iou3dt(tubes[j][0], tubes[i][0]) for j in order[:-1]])
        order = order[np.where(ious <= overlap)[0]]
    return kept


def act_video_ap_reference(gttubes, per_frame, vlist, nframes, th):
    """ACT's videoAP over BuildTubes + nms3dt, per label; ``per_frame`` {(video, frame): [(label, score, box)]}."""
    alldets = {label: [] for label in range(2)}
    for v in vlist:
        for label in range(2):
            vdets = {}
            for (vv, f), dets in per_frame.items():
                mine = [[*box, score] for lab, score, box in dets if vv == v and lab == label]
                if mine:
                    vdets[f] = np.array(mine, dtype=np.float32)
            tubes = act_build_tubes(vdets, nframes)
            alldets[label] += [(v, tubes[i][1], tubes[i][0]) for i in act_nms3dt(tubes)]
    ap = {}
    for label in range(2):
        dets = alldets[label]
        gt = {v: list(gttubes[v][label]) for v in vlist if gttubes.get(v, {}).get(label)}
        remaining = sum(len(g) for g in gt.values())
        if remaining == 0:
            ap[label + 1] = None
            continue
        pr = np.empty((len(dets) + 1, 2), dtype=np.float32)
        pr[0] = (1.0, 0.0)
        tp = fp = 0
        for i, j in enumerate(np.argsort(-np.array([d[1] for d in dets]))):
            v, _, t = dets[j]
            hit = False
            if v in gt:
                ious = [_iou3dt(g, t) for g in gt[v]]
                best = np.argmax(ious)
                if ious[best] >= th:
                    hit = True
                    del gt[v][best]
                    if not gt[v]:
                        del gt[v]
            tp, fp, remaining = tp + hit, fp + (not hit), remaining - hit
            pr[i + 1, 0] = float(tp) / float(tp + fp)
            pr[i + 1, 1] = float(tp) / float(tp + remaining)
        ap[label + 1] = float(np.sum((pr[1:, 1] - pr[:-1, 1]) * (pr[1:, 0] + pr[:-1, 0]) * 0.5))
    return ap


def random_video_case(rng, vlist, nframes):
    """Ground-truth tubes of 15-24 frames moving 2 px per frame (some past the 320 x 240 frame); per frame a
    few detections near them (integer or fractional offsets) and some elsewhere, scores from a few values."""
    gttubes, per_frame = {}, {}
    for v in vlist:
        by_label = {}
        for _ in range(int(rng.integers(1, 4))):
            label = int(rng.integers(0, 2))
            first = int(rng.integers(1, nframes - 14))
            last = int(rng.integers(first + 14, nframes + 1))
            x1, y1 = rng.integers(0, 280), rng.integers(0, 200)
            w, h = rng.integers(30, 90, 2)
            t = [(f, x1 + 2 * f, y1, x1 + 2 * f + w, y1 + h) for f in range(first, last + 1)]
            by_label.setdefault(label, []).append(np.array(t, dtype=np.float64))
        gttubes[v] = by_label
        for f in range(1, nframes + 1):
            dets = []
            for label, ts in by_label.items():
                for t in ts:
                    if f in t[:, 0] and rng.random() < 0.97:
                        for _ in range(int(rng.integers(1, 3))):
                            base = t[t[:, 0] == f, 1:5][0]
                            jitter = rng.integers(-3, 4, 4) if rng.random() < 0.5 else rng.normal(0, 3, 4)
                            dets.append((label, base + jitter))
            for _ in range(int(rng.integers(0, 3))):
                box = np.r_[rng.integers(0, 250, 2), 0, 0].astype(np.float64)
                box[2:] = box[:2] + rng.integers(10, 70, 2)
                dets.append((int(rng.integers(0, 2)), box))
            per_frame[(v, f)] = [
                (label, float(np.float32(rng.integers(1, 6) / 5)),
                 np.sort(box.reshape(2, 2), axis=0).reshape(4).astype(np.float32).astype(np.float64))
                for label, box in dets
            ]
    return gttubes, per_frame


def test_agrees_with_act_loop_reference_on_random_cases():
    rng = np.random.default_rng(1)
    vlist, nframes = ["v2", "v0", "v1"], 24
    for case in range(8):
        gttubes, per_frame = random_video_case(rng, vlist, nframes)
        ann = TubeAnnotations("gt.pkl", list(LABELS.values()), gttubes, {v: nframes for v in vlist},
                              {v: (240, 320) for v in vlist}, [vlist], [vlist])
        gts = groundtruth_tubes(act_groundtruth_rows(ann, vlist))
        keys = list(per_frame)
        items = [(v, f, tuple(box), label + 1, score)
                 for k in rng.permutation(len(keys)) for v, f in [keys[k]] for label, score, box in per_frame[(v, f)]]
        tubes = link_tubes(rows(items), nframes=ann.nframes)
        got = evaluate_video_map(gts, tubes, LABELS, (0.2, 0.5), video_order=vlist)
        for th in (0.2, 0.5):
            want = act_video_ap_reference(gttubes, per_frame, vlist, nframes, th)
            assert got[th].ap_by_id() == want, (case, th)
