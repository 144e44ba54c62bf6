"""The hysteresis segmenter on hand-written score sequences, the timeline CSV and its figure."""

import csv
import math

import pytest
import torch

from bmvit.inference.results import Detections
from bmvit.inference.timeline import (
    TIMELINE_COLUMNS,
    ActionSegment,
    TimelineOptions,
    build_timeline,
    format_mmss,
    hysteresis_runs,
    plot_timeline,
    segment_scores,
    write_timeline_csv,
)

NAN = math.nan
SCORES = [0.2, 0.6, 0.4, 0.35, 0.2, 0.55, 0.9, 0.1]  # key frames at 0, 1, ..., 7 s


def test_hysteresis_opens_at_high_and_closes_below_low():
    assert hysteresis_runs(SCORES, high=0.5, low=0.3) == [(1, 3), (5, 6)]
    assert hysteresis_runs([0.5, 0.3, 0.29, 0.3], high=0.5, low=0.3) == [(0, 1)]  # the bounds: >= high, >= low
    assert hysteresis_runs([0.45, 0.49, 0.3], high=0.5, low=0.3) == []  # never reaches high
    assert hysteresis_runs([0.1, 0.7, 0.7], high=0.5, low=0.3) == [(1, 2)]  # open at the end
    assert hysteresis_runs([0.7, NAN, 0.35], high=0.5, low=0.3) == [(0, 0)]  # no box: below low


def test_segments_bridge_gaps_and_drop_short_ones():
    times = list(range(8))
    # Runs 1-3 and 5-6 span [0.5, 3.5] and [4.5, 6.5]: 1 s apart, merged with max_gap_s = 1.
    merged = segment_scores(times, SCORES, TimelineOptions(0.5, 0.3, max_gap_s=1.0, min_length_s=0.0), 1.0)
    assert merged == [pytest.approx((0.5, 6.5, 0.5, 0.9))]  # mean of 0.6 0.4 0.35 0.2 0.55 0.9
    apart = segment_scores(times, SCORES, TimelineOptions(0.5, 0.3, max_gap_s=0.5, min_length_s=0.0), 1.0)
    assert apart == [pytest.approx((0.5, 3.5, 0.45, 0.6)), pytest.approx((4.5, 6.5, 0.725, 0.9))]
    long_only = segment_scores(times, SCORES, TimelineOptions(0.5, 0.3, max_gap_s=0.5, min_length_s=2.5), 1.0)
    assert long_only == [pytest.approx((0.5, 3.5, 0.45, 0.6))]


def test_segments_clip_to_the_video_and_skip_missing_scores_in_the_mean():
    # At 5 key frames/s each key frame covers 0.2 s; the missing key frame (NaN) is bridged.
    times = [0.0, 0.2, 0.4, 0.6]
    got = segment_scores(times, [0.6, NAN, 0.8, 0.1], TimelineOptions(0.5, 0.3, 0.2, 0.0), 0.2, duration_s=0.5)
    assert got == [pytest.approx((0.0, 0.5, 0.7, 0.8))]


def test_options_reject_bad_thresholds():
    with pytest.raises(ValueError):
        TimelineOptions(high=0.3, low=0.5)
    with pytest.raises(ValueError):
        TimelineOptions(min_length_s=-1)


def _tracked(t: float, ids: list[int], scores: list[list[float]]) -> Detections:
    k = len(ids)
    norm = torch.tensor([[0.1 + 0.3 * i, 0.2, 0.3 + 0.3 * i, 0.8] for i in range(k)]).reshape(k, 4)
    return Detections("clip", t, int(t * 30), (100, 200), norm * torch.tensor([200.0, 100, 200, 100]), norm,
                      torch.full((k,), 0.9), torch.tensor(scores).reshape(k, 2), [1, 8], ["walk", "wave"],
                      torch.arange(k), track_ids=torch.tensor(ids))


def _video() -> list[Detections]:
    # Track 1 walks from 0 s to 2 s and waves at 3 s; track 2 appears at 2 s and waves until the end.
    return [
        _tracked(0.0, [1], [[0.9, 0.1]]),
        _tracked(1.0, [1], [[0.8, 0.2]]),
        _tracked(2.0, [1, 2], [[0.6, 0.1], [0.1, 0.7]]),
        _tracked(3.0, [2, 1], [[0.1, 0.6], [0.1, 0.9]]),
        _tracked(4.0, [2], [[0.2, 0.4]]),
    ]


def test_build_timeline_per_track_and_action():
    segments = build_timeline(_video(), TimelineOptions(0.5, 0.3, max_gap_s=0.0, min_length_s=1.0), keyframe_fps=1.0,
                              duration_s=4.5)
    got = [(s.track_id, s.action, s.start_s, s.end_s, round(s.mean_score, 4), round(s.peak_score, 4))
           for s in segments]
    assert got == [(1, "walk", 0.0, 2.5, round((0.9 + 0.8 + 0.6) / 3, 4), 0.9),
                   (1, "wave", 2.5, 3.5, 0.9, 0.9),
                   (2, "wave", 1.5, 4.5, round((0.7 + 0.6 + 0.4) / 3, 4), 0.7)]
    with pytest.raises(ValueError, match="tracked"):
        build_timeline([_tracked(0.0, [1], [[0.9, 0.1]]).__class__(**{**_video()[0].__dict__, "track_ids": None})])


def test_timeline_csv_columns_and_rows(tmp_path):
    segments = build_timeline(_video(), TimelineOptions(0.5, 0.3, 0.0, 1.0), keyframe_fps=1.0, duration_s=4.5)
    path = write_timeline_csv(tmp_path / "clip_timeline.csv", "clip", segments)
    with open(path) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == TIMELINE_COLUMNS
    assert rows[1:] == [["clip", "1", "1", "walk", "0.000", "2.500", "2.500", "0.7667", "0.9000"],
                        ["clip", "1", "8", "wave", "2.500", "3.500", "1.000", "0.9000", "0.9000"],
                        ["clip", "2", "8", "wave", "1.500", "4.500", "3.000", "0.5667", "0.7000"]]


def test_mm_ss_labels():
    assert [format_mmss(s) for s in (0, 59.6, 61, 600, -3)] == ["0:00", "1:00", "1:01", "10:00", "0:00"]


def test_timeline_png_for_a_long_video_with_many_actors(tmp_path):
    # 20 actors over 10 minutes, three actions each: the figure stays a readable size.
    names = [f"action_{i}" for i in range(12)]
    segments = [ActionSegment(t, a + 1, names[a], 30.0 * t + 5 * a, 30.0 * t + 5 * a + 40, 0.6, 0.8)
                for t in range(1, 21) for a in (t % 12, (t + 3) % 12, (t + 7) % 12)]
    path = plot_timeline(segments, tmp_path / "clip_timeline.png", duration_s=600, class_names=names, title="clip")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(path) as image:
        width, height = image.size
    assert width == 1200 and 800 <= height <= 4000
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # No segment at all still writes a figure (an empty lane area with a note).
    assert plot_timeline([], tmp_path / "empty.png", duration_s=10).is_file()
