"""The scene model: one key frame cannot tell some classes apart, and bad segments are refused."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from bmvit.data.synthetic.generate import create_video_spec
from bmvit.data.synthetic.render import render_frame
from bmvit.data.synthetic.scene import FPS, BodyState, Segment, Track

SECONDS = 6  # key frames 0902 .. 0904


def _with_pose_at(track: Track, seg: Segment, t: float, **targets: float) -> Track:
    """``track`` doing only ``seg``, its start state nudged (by ulps) so that its pose at ``t`` has exactly
    the ``targets`` values. Targets lie in a binade no finer than the start values, so rounding can hit them."""
    for name, target in targets.items():
        def pose_value(start: float) -> float:
            state = dataclasses.replace(seg.state0, **{name: start})
            moved = dataclasses.replace(track, segments=(dataclasses.replace(seg, state0=state),))
            return getattr(moved.pose_at(t), name)

        start = target - pose_value(0.0)  # the segment adds pose_value(0) by time t
        for _ in range(32):
            got = pose_value(start)
            if got == target:
                break
            start = float(np.nextafter(start, -math.inf if got > target else math.inf))
        assert got == target, name
        seg = dataclasses.replace(seg, state0=dataclasses.replace(seg.state0, **{name: start}))
    return dataclasses.replace(track, segments=(seg,))


@pytest.mark.parametrize("case", ["left_vs_right", "walk_vs_run", "wave_vs_raised_hand"])
def test_one_key_frame_cannot_separate_two_classes(case):
    """Two clips from the generator whose key frames are pixel-identical while their labels differ."""
    spec = create_video_spec(np.random.default_rng(11), (160, 120), SECONDS)
    t, key = 2.0, 2 * FPS  # AVA second 902
    start = BodyState(x=80.0, height=64.0, phase=0.4, stride=1.0, facing=0.7)
    base = spec.tracks[0]
    if case == "left_vs_right":
        a = _with_pose_at(base, Segment("walk", 0.0, 6.0, start, direction=-1), t, x=130.0)
        b = _with_pose_at(base, Segment("walk", 0.0, 6.0, start, direction=1), t, x=130.0)
        expect = {("walk", "move_left"), ("walk", "move_right")}
    elif case == "walk_vs_run":
        a = _with_pose_at(base, Segment("walk", 0.0, 6.0, start, direction=-1), t, x=130.0, phase=40.0)
        b = _with_pose_at(base, Segment("run", 0.0, 6.0, start, direction=-1), t, x=130.0, phase=40.0)
        expect = {("walk", "move_left"), ("run", "move_left")}
    else:
        a = dataclasses.replace(base, segments=(Segment("idle", 0.0, 6.0, start, arm="wave", arm_phase=1.0),))
        still = a.pose_at(t).forearm_phase
        raised = Segment("idle", 0.0, 6.0, start, arm="raised", arm_phase=still)
        b = dataclasses.replace(base, segments=(raised,))
        expect = {("wave",), ()}
    assert a.pose_at(t) == b.pose_at(t)
    assert {a.labels_at(t), b.labels_at(t)} == expect
    clip_a = dataclasses.replace(spec, tracks=(a, *spec.tracks[1:]))
    clip_b = dataclasses.replace(spec, tracks=(b, *spec.tracks[1:]))
    assert np.array_equal(render_frame(clip_a, key), render_frame(clip_b, key))
    for offset in (-8, -4, 4, 8):  # time tells them apart
        diff = np.abs(render_frame(clip_a, key + offset).astype(int) - render_frame(clip_b, key + offset))
        assert (diff.max(axis=2) > 20).sum() >= 5, offset


def test_unknown_segment_kind_is_named():
    with pytest.raises(ValueError, match="kind in"):
        Segment("dance", 0.0, 1.0, BodyState(10.0, 30.0, 0.0, 0.0, 0.0))
