"""ActorTracker on hand-made boxes whose right ids are known, and the tracks CSV."""

import csv

import numpy as np
import pytest
import torch

from bmvit.inference.results import Detections
from bmvit.inference.tracking import (
    ActorTracker,
    TrackerOptions,
    association_cost,
    track_detections,
    tracks_columns,
    write_tracks_csv,
)


def _box(x: float, y: float = 0.2, w: float = 0.2, h: float = 0.6) -> list[float]:
    return [x, y, x + w, y + h]


def test_ids_persist_through_reordering_and_start_at_one():
    tracker = ActorTracker(TrackerOptions(min_iou=0.3, motion=False))
    a, b = _box(0.0), _box(0.5)
    assert tracker.update(torch.tensor([a, b])) == [1, 2]
    c = _box(0.8, y=0.0, w=0.1, h=0.1)
    assert tracker.update(torch.tensor([_box(0.52), c, _box(0.02)])) == [2, 3, 1]  # c is new
    assert tracker.update(torch.zeros(0, 4)) == []


def test_two_people_crossing_keep_their_ids_with_motion():
    # A walks right and B walks left, 0.1 a key frame; at the third key frame they overlap
    # almost entirely, where boxes alone cannot say who is who. A's predicted box (x = 0.4 + 0.1)
    # is exactly its new box, B's likewise, so the assignment follows the motion.
    tracker = ActorTracker(TrackerOptions(min_iou=0.1, motion=True))
    xs_a, xs_b = [0.3, 0.4, 0.5, 0.6], [0.7, 0.6, 0.5, 0.4]
    ids = [tracker.update(torch.tensor([_box(xa), _box(xb)])) for xa, xb in zip(xs_a, xs_b)]
    # At the crossing (third key frame) both boxes are identical, so either order is a right answer
    # there; after it the velocities carry each id to the right side.
    assert ids[0] == [1, 2] and ids[1] == [1, 2] and sorted(ids[2]) == [1, 2] and ids[3] == [1, 2]


def test_crossing_swaps_ids_without_motion_where_boxes_alone_mislead():
    # Boxes 0.2 wide. At the third key frame A (at 0.50) overlaps B's last box (0.52) at IoU 0.82 and
    # its own (0.40) at 0.33, and B (at 0.42) the other way round: boxes alone swap the ids. Moving
    # each track by its velocity (+0.1, -0.1) predicts exactly the new boxes.
    tracker = ActorTracker(TrackerOptions(min_iou=0.1, motion=False))
    tracker.update(torch.tensor([_box(0.30), _box(0.62)]))  # A left, B right
    tracker.update(torch.tensor([_box(0.40), _box(0.52)]))  # closing in
    # A moved to 0.50 and B to 0.42: A's box now overlaps B's last box (0.52) more than its own (0.40).
    assert tracker.update(torch.tensor([_box(0.50), _box(0.42)])) == [2, 1]
    motion = ActorTracker(TrackerOptions(min_iou=0.1, motion=True))
    motion.update(torch.tensor([_box(0.30), _box(0.62)]))
    motion.update(torch.tensor([_box(0.40), _box(0.52)]))
    assert motion.update(torch.tensor([_box(0.50), _box(0.42)])) == [1, 2]


def test_a_person_missed_for_a_key_frame_gets_the_id_back():
    tracker = ActorTracker(TrackerOptions(min_iou=0.3, max_missed=1, motion=False))
    assert tracker.update(torch.tensor([_box(0.1), _box(0.6)])) == [1, 2]
    assert tracker.update(torch.tensor([_box(0.6)])) == [2]  # the first person is not detected
    assert tracker.live_ids == [1, 2]
    assert tracker.update(torch.tensor([_box(0.11), _box(0.6)])) == [1, 2]
    # Missed twice with max_missed=1: the track ends, and the person comes back under a new id.
    tracker.update(torch.zeros(0, 4))
    tracker.update(torch.zeros(0, 4))
    assert tracker.live_ids == []
    assert tracker.update(torch.tensor([_box(0.11)])) == [3]


def test_a_new_person_gets_a_new_id_and_ids_are_never_reused():
    tracker = ActorTracker(TrackerOptions(min_iou=0.3, max_missed=0))
    assert tracker.update(torch.tensor([_box(0.1)])) == [1]
    assert tracker.update(torch.tensor([_box(0.1), _box(0.7)])) == [1, 2]
    assert tracker.update(torch.tensor([_box(0.7)])) == [2]  # person 1 gone (max_missed 0)
    assert tracker.update(torch.tensor([_box(0.1), _box(0.7)])) == [3, 2]


def test_hungarian_beats_greedy_on_a_shared_candidate():
    # Greedy (highest IoU first) gives track 1 the box both want and leaves track 2 with nothing
    # above the gate; the minimum total cost keeps both.
    tracker = ActorTracker(TrackerOptions(min_iou=0.2, motion=False))
    tracker.update(torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.3, 0.0, 0.7, 0.4]]))
    new = torch.tensor([[0.25, 0.0, 0.65, 0.4], [0.0, 0.0, 0.35, 0.4]])
    # IoU(new0, old0) = 0.15/0.65 = 0.23, IoU(new0, old1) = 0.35/0.45 = 0.78,
    # IoU(new1, old0) = 0.35/0.40 = 0.875, IoU(new1, old1) = 0.05/0.70 = 0.07.
    assert tracker.update(new) == [2, 1]


def test_association_cost_gates_and_mixes_appearance():
    boxes = torch.tensor([_box(0.0), _box(0.5)])
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cost = association_cost(boxes, boxes, feats, feats, min_iou=0.1, appearance_weight=0.5)
    assert cost[0, 0] == pytest.approx(0.0) and cost[1, 1] == pytest.approx(0.0)
    assert cost[0, 1] >= 1e6  # no overlap: forbidden whatever the appearance
    # Same box, orthogonal features: (1 - 0.5) * 0 + 0.5 * (1 - 0) / 2 = 0.25.
    cost = association_cost(boxes[:1], boxes[:1], feats[:1], feats[1:], min_iou=0.1, appearance_weight=0.5)
    assert cost[0, 0] == pytest.approx(0.25)


def test_appearance_resolves_a_full_overlap():
    # Two people at the same place at the next key frame: boxes are equal, so only the embeddings
    # can tell who is who.
    options = TrackerOptions(min_iou=0.1, motion=False, appearance_weight=0.5)
    tracker = ActorTracker(options)
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    tracker.update(torch.tensor([_box(0.40), _box(0.44)]), torch.stack([e1, e2]))
    same = torch.tensor([_box(0.42), _box(0.42)])
    assert tracker.update(same, torch.stack([e2, e1])) == [2, 1]
    assert tracker.update(same, torch.stack([e1, e2])) == [1, 2]


def test_confident_boxes_are_associated_first():
    # A weak duplicate (score 0.35) overlaps the track's box better than the confident box (0.9);
    # in one stage the duplicate takes the id, in two stages the confident box does.
    boxes = torch.tensor([_box(0.12), _box(0.10)])
    scores = torch.tensor([0.9, 0.35])
    one = ActorTracker(TrackerOptions(min_iou=0.1, motion=False))
    one.update(torch.tensor([_box(0.10)]))
    assert one.update(boxes, scores=scores) == [2, 1]
    two = ActorTracker(TrackerOptions(min_iou=0.1, motion=False, confident_score=0.5))
    two.update(torch.tensor([_box(0.10)]))
    assert two.update(boxes, scores=scores) == [1, 2]


@pytest.mark.parametrize("kwargs", [{"min_iou": 1.0}, {"max_missed": -1}, {"max_missed": 1.5},
                                    {"appearance_weight": 1.0}, {"embedding_momentum": -0.1}])
def test_options_reject_bad_values(kwargs):
    with pytest.raises(ValueError):
        TrackerOptions(**kwargs)


def _keyframe(t: float, xs: list[float], names=("walk", "wave")) -> Detections:
    norm = torch.tensor([_box(x) for x in xs]).reshape(-1, 4)
    k = len(xs)
    return Detections("clip", t, int(t * 30), (100, 200), norm * torch.tensor([200.0, 100, 200, 100]), norm,
                      torch.linspace(0.9, 0.5, k), torch.tensor([[0.8, 0.1]] * k).reshape(k, 2), [1, 8], list(names),
                      torch.arange(k))


def test_tracks_csv_rows_match_the_tracked_detections(tmp_path):
    tracked = track_detections([_keyframe(0.0, [0.1, 0.6]), _keyframe(0.2, [0.6]), _keyframe(0.4, [0.12, 0.6])])
    assert [d.track_ids.tolist() for d in tracked] == [[1, 2], [2], [1, 2]]
    path = write_tracks_csv(tmp_path / "clip_tracks.csv", tracked, top_k=3)
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == tracks_columns(3)
    assert [(r["time_s"], r["track_id"]) for r in rows] == [("0.000", "1"), ("0.000", "2"), ("0.200", "2"),
                                                             ("0.400", "1"), ("0.400", "2")]
    assert rows[0]["action_1"] == "walk" and rows[0]["score_1"] == "0.8000" and rows[0]["action_2"] == "wave"
    assert rows[0]["action_3"] == "" and rows[0]["score_3"] == ""  # two classes, three columns
    assert np.allclose([float(rows[2][c]) for c in ("x1", "y1", "x2", "y2")], _box(0.6))
    # The JSON view carries the same ids.
    assert [b["track_id"] for b in tracked[2].to_dict()["boxes"]] == [1, 2]


def test_a_key_frame_without_boxes_keeps_tracks_with_embeddings():
    tracker = ActorTracker(TrackerOptions(min_iou=0.3, max_missed=1, appearance_weight=0.3))
    assert tracker.update(torch.tensor([_box(0.1)]), torch.ones(1, 4)) == [1]
    assert tracker.update(torch.zeros(0, 4), torch.zeros(0, 4)) == []
    assert tracker.update(torch.tensor([_box(0.1)]), torch.ones(1, 4)) == [1]
    with pytest.raises(ValueError, match="embeddings"):
        tracker.update(torch.tensor([_box(0.1)]), torch.ones(2, 4))
