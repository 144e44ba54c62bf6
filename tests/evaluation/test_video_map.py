"""Video-mAP: spatio-temporal IoU, ACT-style linking of per-frame detections, tube NMS and AP by hand."""

from __future__ import annotations

import numpy as np
import pytest

from bmvit.data.ava import BoxRows
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
BOX = (0.2, 0.2, 0.6, 0.6)


def tube(video, label, first, last, box=BOX, score=1.0) -> Tube:
    frames = np.arange(first, last + 1)
    return Tube(video, label, frames, np.tile(np.array(box, dtype=np.float64), (frames.size, 1)), score)


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
    # Half-overlapping box (0.2-0.6 vs 0.4-0.6 in x: IoU 0.5) on the same frames -> 0.5.
    assert spatiotemporal_iou(a, tube("v", 1, 1, 10, box=(0.4, 0.2, 0.6, 0.6))) == pytest.approx(0.5)
    assert spatiotemporal_iou(a, tube("v", 1, 11, 20)) == 0.0  # no common frame
    # A frame of the overlap missing from one tube counts as IoU 0: 9 of 10 frames match -> 0.9.
    gap = Tube("v", 1, np.r_[1:5, 6:11], np.tile(np.array(BOX), (9, 1)))
    assert spatiotemporal_iou(a, gap) == pytest.approx(0.9)


def test_linking_follows_each_person_and_drops_short_tubes():
    items = []
    for f in range(1, 21):
        x = 0.1 + 0.01 * f  # a person walking right
        items.append(("v", f, (x, 0.2, x + 0.3, 0.8), 1, 0.9))
        items.append(("v", f, (0.7, 0.1, 0.95, 0.5), 1, 0.6))  # a second person, still
    items += [("v", f, (0.0, 0.0, 0.1, 0.1), 1, 0.8) for f in range(3, 8)]  # 5 frames only: dropped
    tubes = link_tubes(rows(items))
    assert len(tubes) == 2
    scores = sorted(t.score for t in tubes)
    assert scores == pytest.approx([0.6, 0.9])
    for t in tubes:
        assert t.frames.tolist() == list(range(1, 21)) and t.label == 1 and t.video_id == "v"
    walker = max(tubes, key=lambda t: t.score)
    assert walker.boxes_xyxy[:, 0] == pytest.approx(0.1 + 0.01 * np.arange(1, 21))


def test_a_missing_frame_ends_a_tube():
    items = [("v", f, BOX, 1, 0.9) for f in range(1, 21) if f != 10]
    tubes = link_tubes(rows(items), LinkingConfig(min_length=1))
    assert sorted(t.frames.tolist()[0] for t in tubes) == [1, 11]
    assert sorted(len(t) for t in tubes) == [9, 10]
    assert link_tubes(rows(items)) == []  # both shorter than 15 frames


def test_soft_nms_rescales_overlapping_boxes_instead_of_dropping_them():
    # Two boxes per frame, IoU 0.8 > 0.6: the weaker is re-scored by (1 - 0.8) and, being a box of its own,
    # starts a tube of its own whose score is 0.5 * 0.2 = 0.1.
    near = (0.2, 0.2, 0.6, 0.52)  # inside BOX, area .128 of .16 -> IoU 0.8
    items = [("v", f, b, 1, s) for f in range(1, 16) for b, s in ((BOX, 0.9), (near, 0.5))]
    tubes = link_tubes(rows(items), LinkingConfig(tube_nms_iou=1.0))
    assert sorted(t.score for t in tubes) == pytest.approx([0.1, 0.9])
    # With the default tube NMS (0.3) the weaker tube (IoU 0.8 with the stronger) is removed.
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
        gt_items.append(("vid", f, (0.65, 0.1, 0.95, 0.9), 2, 1))
        det_items.append(("vid", f, (0.21, 0.2, 0.6, 0.61), 2, 0.8))
        det_items.append(("vid", f, (0.66, 0.1, 0.95, 0.88), 2, 0.7))
        det_items.append(("vid", f, (0.66, 0.1, 0.95, 0.88), 1, 0.3))  # wrong class: no GT tube of class 1
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
