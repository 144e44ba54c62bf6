from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from bmvit.inference.render import current_actions, draw_detections, nearest_keyframe, render_video
from bmvit.inference.results import Detections


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


def test_labels_show_the_track_id_and_current_actions():
    from bmvit.inference.timeline import ActionSegment

    det = _box_at(30, 0.1)
    det.track_ids = torch.tensor([7])
    segments = [ActionSegment(7, 1, "walk", 0.5, 1.5, 0.7, 0.7), ActionSegment(7, 1, "walk", 3.0, 4.0, 0.7, 0.7),
                ActionSegment(8, 1, "walk", 0.0, 9.0, 0.7, 0.7)]
    assert current_actions(det, segments) == [[("walk", pytest.approx(0.7))]]  # t = 1 s: the first segment
    assert current_actions(det, segments[1:2]) == [[]]
    frame = np.zeros((48, 63, 3), np.uint8)
    # The label's colour is the track's: id 7 picks palette entry 7, not the box's rank 0.
    from bmvit.inference.render import colour_for

    drawn = draw_detections(frame, det, actions=[[]])
    colours = {tuple(c) for c in drawn.reshape(-1, 3).tolist()}
    assert colour_for(7) in colours and colour_for(0) not in colours
