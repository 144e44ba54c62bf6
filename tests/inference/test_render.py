from fractions import Fraction

import av
import numpy as np
import torch

from bmvit.inference.render import IoUTracker, nearest_keyframe, render_video
from bmvit.inference.results import Detections


def test_tracker_keeps_ids_through_reordering_and_never_reuses_them():
    tracker = IoUTracker(min_iou=0.3)
    a, b = [0.0, 0.0, 0.2, 0.4], [0.5, 0.5, 0.7, 0.9]
    assert tracker.update(torch.tensor([a, b])) == [0, 1]
    moved_a, moved_b = [0.02, 0.0, 0.22, 0.4], [0.52, 0.5, 0.72, 0.9]
    c = [0.8, 0.0, 0.9, 0.1]
    assert tracker.update(torch.tensor([moved_b, c, moved_a])) == [1, 2, 0]
    assert tracker.update(torch.zeros(0, 4)) == []
    assert tracker.update(torch.tensor([a])) == [3]  # a gap breaks the track: a new id, not 0 again


def test_tracker_matches_greedily_by_highest_iou():
    tracker = IoUTracker(min_iou=0.1)
    tracker.update(torch.tensor([[0.0, 0.0, 0.4, 0.4], [0.3, 0.0, 0.7, 0.4]]))
    # The new box overlaps the second old box more (IoU 0.78) than the first (IoU 0.23).
    assert tracker.update(torch.tensor([[0.25, 0.0, 0.65, 0.4]])) == [1]


def test_nearest_keyframe_within_half_an_interval():
    keys = np.array([0, 30, 60])
    frames = np.arange(0, 100, 5)
    got = nearest_keyframe(frames, keys, max_distance=15)
    # ties (15 from both) go to the earlier key frame; past 75 nothing is within 15 frames
    assert got.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, -1, -1, -1, -1]
    assert nearest_keyframe(frames, np.array([], dtype=np.int64), 15).tolist() == [-1] * 20


def _box_at(frame_index: int, x: float) -> Detections:
    norm = torch.tensor([[x, 0.25, x + 0.3, 0.9]])
    return Detections("v", frame_index / 30, frame_index, (48, 63), norm * torch.tensor([63.0, 48, 63, 48]), norm,
                      torch.tensor([0.9]), torch.tensor([[0.7]]), [1], ["walk"], torch.tensor([0]))


def test_rendered_video_keeps_frames_size_and_rate_and_holds_boxes(make_video, tmp_path):
    # Odd width: yuv420p cannot hold it, the renderer falls back to yuv444p at the same size.
    source = make_video(tmp_path / "odd.mp4", 45, size=(48, 63))
    out = tmp_path / "out" / "odd_annotated.mp4"
    written = render_video(source, [_box_at(0, 0.1), _box_at(30, 0.5)], out, keyframe_fps=1.0)
    assert written == 45
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (63, 48)
        assert stream.codec_context.name == "h264" and Fraction(stream.average_rate) == 30
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 45
    original = []
    with av.open(str(source)) as container:
        original = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]

    def changed(i: int, x0: int, x1: int) -> float:  # mean change over a column band below the label
        return float(np.abs(frames[i][30:40, x0:x1].astype(int) - original[i][30:40, x0:x1]).mean())

    # Frames 0-15 carry the box of key frame 0 (left edge at x = 6); frames 16-44 the one of key frame 30 (x = 31).
    assert changed(10, 5, 8) > 12 and changed(10, 30, 33) < 6
    assert changed(40, 30, 33) > 12 and changed(40, 5, 8) < 6
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
