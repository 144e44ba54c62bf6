"""Key-frame ground truth: an actor hidden behind a nearer figure is reported as barely visible."""

from __future__ import annotations

import dataclasses

import numpy as np

from bmvit.data.synthetic.generate import create_video_spec
from bmvit.data.synthetic.keyframes import keyframe_boxes
from bmvit.data.synthetic.scene import BodyState, Segment, Track
from bmvit.data.synthetic.write import EXCLUDE_BELOW_VISIBLE


def test_a_hidden_actor_is_reported_as_barely_visible():
    spec = create_video_spec(np.random.default_rng(0), (160, 120), 6)
    spec = dataclasses.replace(spec, distractors=(), occluder=None)
    style, motion = spec.tracks[0].style, spec.tracks[0].motion
    far = Track(0, style, motion, spec.horizon, (Segment("spin", 0.0, 6.0, BodyState(80.0, 26.0, 0.0, 0.0, 0.0)),))
    near_style = dataclasses.replace(style, build=1.25, ground_ratio=style.ground_ratio)
    near_state = BodyState(80.0, 70.0, 0.0, 1.0, 0.0)
    near = Track(1, near_style, motion, spec.horizon - 8, (Segment("idle", 0.0, 6.0, near_state),))
    boxes = keyframe_boxes(dataclasses.replace(spec, tracks=(far, near), num_actors=1))
    assert [b.person_id for b in boxes] == [0, 0, 0]
    assert max(b.visible for b in boxes) < EXCLUDE_BELOW_VISIBLE
    alone = keyframe_boxes(dataclasses.replace(spec, tracks=(far,), num_actors=1))
    assert all(b.visible > 0.95 for b in alone)
