"""Random scenes: bystanders never carry labels, actors switch actions on half seconds and cover every class."""

from __future__ import annotations

import numpy as np

from bmvit.data.synthetic.generate import create_video_spec
from bmvit.data.synthetic.keyframes import keyframe_boxes, keyframe_seconds
from bmvit.data.synthetic.scene import CLASSES


def test_bystanders_never_carry_labels_and_actors_switch_actions():
    kinds, multi, switching = set(), 0, 0
    for seed in range(8):
        spec = create_video_spec(np.random.default_rng(seed), (160, 120), 30)
        assert 2 <= len(spec.tracks) <= 4 and 1 <= spec.num_actors <= min(3, len(spec.tracks))
        for track in spec.tracks[spec.num_actors:]:
            assert all(seg.labels == () for seg in track.segments)
        ids = {b.person_id for b in keyframe_boxes(spec)}
        assert ids <= set(range(spec.num_actors))
        for track in spec.tracks[: spec.num_actors]:
            labels = [track.labels_at(s - 900.0) for s in keyframe_seconds(30)]
            kinds.update(name for names in labels for name in names)
            multi += sum(len(names) > 1 for names in labels)
            switching += len(set(labels)) > 1
            for seg in track.segments:  # changes fall on half seconds, away from key frames
                assert seg.start == 0.0 or seg.start % 1.0 == 0.5
                h = seg.state0.height
                assert 0.2 * 120 - 1e-6 <= h <= 0.6 * 120 + 1e-6
    assert kinds == set(CLASSES)
    assert multi > 20 and switching >= 8
