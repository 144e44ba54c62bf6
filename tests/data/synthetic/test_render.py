"""Drawing: a figure stays inside its tight box, and frames outside the video are refused."""

from __future__ import annotations

import numpy as np
import pytest

from bmvit.data.synthetic.generate import create_video_spec
from bmvit.data.synthetic.render import draw_parts, figure_parts, parts_box, render_frame

SIZE = (128, 96)
SECONDS = 6


def test_rendered_figure_lies_inside_its_tight_box():
    for seed in range(4):
        spec = create_video_spec(np.random.default_rng(seed), (160, 120), 8)
        for track in spec.tracks:
            for t in (0.5, 2.3, 4.1, 7.0):
                parts = figure_parts(track.style, track.pose_at(t))
                x1, y1, x2, y2 = parts_box(parts)
                canvas = np.zeros((120, 160, 3), np.float32)
                draw_parts(canvas, parts)
                ii, jj = np.nonzero(canvas.max(axis=2) > 0)
                assert len(ii) > 20
                # every touched pixel overlaps the box
                assert (jj + 1 > x1).all() and (jj < x2).all() and (ii + 1 > y1).all() and (ii < y2).all()
                if x1 >= 0 and y1 >= 0 and x2 <= 160 and y2 <= 120:  # tight: a pixel within half a pixel of each edge
                    assert jj.min() <= x1 + 0.51 and jj.max() + 1 >= x2 - 0.51
                    assert ii.min() <= y1 + 0.51 and ii.max() + 1 >= y2 - 0.51


def test_frame_index_outside_the_video_is_named():
    with pytest.raises(IndexError, match=r"frame_index must be in \[0, 180\)"):
        render_frame(create_video_spec(np.random.default_rng(0), SIZE, SECONDS), 180)
