import json

import numpy as np
import pytest
import torch

from bmvit.inference.render import PALETTE
from bmvit.inference.results import Detections


def _detections(timestamp: float = 3.4) -> Detections:
    # Two boxes on a 100x200 (H x W) frame, three classes.
    norm = torch.tensor([[0.1, 0.2, 0.3, 0.6], [0.5, 0.5, 0.9, 1.0]])
    return Detections(
        video_id="clip",
        timestamp=timestamp,
        frame_index=102,
        image_size=(100, 200),
        boxes_xyxy=norm * torch.tensor([200.0, 100, 200, 100]),
        boxes_xyxy_norm=norm,
        actor_scores=torch.tensor([0.9, 0.6]),
        action_scores=torch.tensor([[0.10, 0.80, 0.45], [0.50, 0.05, 0.30]]),
        class_ids=[4, 7, 11],
        class_names=["stand", "walk", "wave"],
        token_indices=torch.tensor([5, 12]),
    )


def test_top_actions_per_box_best_first():
    det = _detections()
    assert det.top_actions(2) == [[("walk", pytest.approx(0.80)), ("wave", pytest.approx(0.45))],
                                  [("stand", pytest.approx(0.50)), ("wave", pytest.approx(0.30))]]
    assert len(det.top_actions(10)[0]) == 3


def test_ava_rows_sorted_capped_and_on_whole_seconds():
    det = _detections(timestamp=3.4)
    rows = det.to_ava_rows()
    assert len(rows) == 6
    assert [(r[6], round(r[7], 2)) for r in rows] == [(7, 0.8), (4, 0.5), (11, 0.45), (11, 0.3), (4, 0.1), (7, 0.05)]
    assert rows[0][:6] == ("clip", 3, pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3), pytest.approx(0.6))
    assert len(det.to_ava_rows(max_rows=2)) == 2
    assert det.to_ava_rows(time_offset=900)[0][1] == 903
    assert _detections(timestamp=3.5).to_ava_rows()[0][1] == 4  # half a second rounds up


def test_json_round_trip_and_cpu_copy():
    det = _detections()
    data = json.loads(det.to_json())
    assert data["timestamp"] == 3.4 and data["image_size"] == [100, 200] and data["class_ids"] == [4, 7, 11]
    assert data["boxes"][1]["box_xyxy"] == [100.0, 50.0, 180.0, 100.0]
    assert data["boxes"][0]["top_actions"][0] == {"name": "walk", "score": 0.8}
    copy = det.cpu()
    assert copy is not det and torch.equal(copy.action_scores, det.action_scores)


def test_shapes_are_checked():
    det = _detections()
    with pytest.raises(ValueError, match=r"action_scores must be shaped \[2, 3\]"):
        Detections(**{**det.__dict__, "action_scores": torch.zeros(2, 4)})


def test_plot_draws_each_box_in_its_colour_and_leaves_the_frame_alone():
    det = _detections()
    frame = np.zeros((100, 200, 3), np.uint8)
    out = det.plot(frame, track_ids=[0, 3])
    assert out.shape == frame.shape and out.dtype == np.uint8 and frame.max() == 0
    # The left edge of box 0 at x = 20 (rows 40..55: below its label) is drawn in colour 0.
    assert tuple(out[50, 20]) == PALETTE[0]
    # The right edge of box 1 at x = 180 (lower part, below its label) is drawn in colour 3.
    assert tuple(out[90, 180]) == PALETTE[3]
    assert out[2:15, 120:190].max() == 0  # away from boxes and labels nothing changes
    with pytest.raises(ValueError, match="100x200"):
        det.plot(np.zeros((50, 50, 3), np.uint8))
