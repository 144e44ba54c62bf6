"""The tracking and timeline measures of ``bmvit.bench.tracking`` on hand-made cases with known answers."""

import numpy as np
import pytest
import torch

from bmvit.bench.tracking import (
    TruthBox,
    interval_scores,
    mot_metrics,
    read_excluded_times,
    read_ground_truth,
    scored_frames,
    temporal_iou,
    true_intervals,
)
from bmvit.inference.results import Detections
from bmvit.inference.timeline import ActionSegment

A = (0.1, 0.2, 0.3, 0.8)  # person 0's box
B = (0.6, 0.2, 0.8, 0.8)  # person 1's box
FAR = (0.0, 0.0, 0.05, 0.05)  # overlaps no one


def test_temporal_iou():
    assert temporal_iou((1.5, 4.5), (1.5, 4.0)) == pytest.approx(2.5 / 3)
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0


def test_mot_metrics_on_a_hand_counted_case():
    pytest.importorskip("motmetrics")
    # 4 key frames, 2 people (8 true boxes). Person 1's track changes id at frame 2 (1 switch); at
    # frame 3 person 1 is missed (1 miss) and a box far from anyone is a false positive.
    frames = [
        ("v", [0, 1], np.array([A, B]), [1, 2], np.array([A, B])),
        ("v", [0, 1], np.array([A, B]), [1, 2], np.array([A, B])),
        ("v", [0, 1], np.array([A, B]), [1, 3], np.array([A, B])),
        ("v", [0, 1], np.array([A, B]), [1, 4], np.array([A, FAR])),
    ]
    got = mot_metrics(frames)
    assert got["id_switches"] == 1 and got["misses"] == 1 and got["false_positives"] == 1
    assert got["mota"] == pytest.approx(1 - 3 / 8)
    # Identity matching: person 0 <-> track 1 (4 frames), person 1 <-> track 2 (2 frames): IDTP 6 of
    # 8 true and 8 predicted boxes, IDF1 = 2 * 6 / 16.
    assert got["idf1"] == pytest.approx(0.75)
    # Person 0 is matched on 4/4 key frames, person 1 on 3/4 < 80%: one of two mostly tracked.
    assert got["mostly_tracked"] == pytest.approx(0.5) and got["people"] == 2


def _truth() -> dict:
    walk, wave = frozenset({1}), frozenset({8})
    return {"v": {2.0: [TruthBox(0, A, walk)], 3.0: [TruthBox(0, A, walk)], 4.0: [TruthBox(0, A, walk)],
                  6.0: [TruthBox(0, A, wave)]}}


def test_true_intervals_join_consecutive_key_frames():
    got = [(iv.person_id, iv.action_id, iv.start_s, iv.end_s) for iv in true_intervals(_truth())]
    assert got == [(0, 1, 1.5, 4.5), (0, 8, 5.5, 6.5)]


def _tracked(t: float) -> Detections:
    norm = torch.tensor([A])
    return Detections("v", t, int(t * 30), (100, 100), norm * 100, norm, torch.tensor([0.9]),
                      torch.tensor([[0.9, 0.1]]), [1, 8], ["walk", "wave"], torch.tensor([0]),
                      track_ids=torch.tensor([7]))


def test_interval_recall_and_segment_precision():
    tracked = {"v": [_tracked(t) for t in (2.0, 3.0, 4.0, 5.0, 6.0)]}
    segments = [ActionSegment(7, 1, "walk", 1.5, 4.0, 0.8, 0.9),  # tIoU 2.5 / 3 with [1.5, 4.5]: found
                ActionSegment(7, 8, "wave", 5.5, 7.5, 0.8, 0.9),  # tIoU 1 / 2 with [5.5, 6.5]: found
                ActionSegment(7, 1, "walk", 8.0, 9.0, 0.8, 0.9)]  # no true interval there
    got = interval_scores(_truth(), tracked, {"v": segments})
    assert got == {"interval_recall": 1.0, "intervals": 2, "segment_precision": pytest.approx(2 / 3), "segments": 3}
    # A wave segment of [5.0, 7.5] overlaps the true one at tIoU 1 / 2.5 < 0.5: not found.
    segments[1] = ActionSegment(7, 8, "wave", 5.0, 7.5, 0.8, 0.9)
    assert interval_scores(_truth(), tracked, {"v": segments})["interval_recall"] == 0.5
    # On another track (the person's boxes carry id 7) nothing is found.
    other = [ActionSegment(9, 1, "walk", 1.5, 4.5, 0.8, 0.9)]
    assert interval_scores(_truth(), tracked, {"v": other})["interval_recall"] == 0.0


def test_ground_truth_from_the_synthetic_csvs(tmp_path):
    (tmp_path / "gt.csv").write_text("v,0902,0.1,0.2,0.3,0.8,1,0\nv,0902,0.1,0.2,0.3,0.8,3,0\n"
                                     "v,0903,0.6,0.2,0.8,0.8,8,1\n")
    (tmp_path / "ex.csv").write_text("v,0903\n")
    truth = read_ground_truth(tmp_path / "gt.csv")
    assert truth == {"v": {2.0: [TruthBox(0, pytest.approx(A), frozenset({1, 3}))],
                           3.0: [TruthBox(1, pytest.approx(B), frozenset({8}))]}}
    excluded = read_excluded_times(tmp_path / "ex.csv")
    assert excluded == {("v", 3.0)}
    # Only annotated, predicted, not excluded key frames are scored (5 fps: the ones on the second).
    tracked = {"v": [_tracked(t) for t in (2.0, 2.2, 2.4, 2.6, 2.8, 3.0)]}
    frames = scored_frames(truth, tracked, excluded)
    assert [(f[0], f[1], f[3]) for f in frames] == [("v", [0], [7])]
