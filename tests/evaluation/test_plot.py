"""Per-class AP figures: files are written, and the comparison counts wins and losses correctly."""

from __future__ import annotations

import json

import pytest

from bmvit.evaluation.frame_map import ClassAP, FrameMapResult
from bmvit.evaluation.plot import compare_results, load_result_json, plot_compare, plot_per_class_ap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

OURS = FrameMapResult(
    mAP=(0.5 + 0.3 + 0.2) / 3,
    per_class=[ClassAP(1, "stand", 0.5), ClassAP(2, "sit", 0.3), ClassAP(3, "swim", None), ClassAP(4, "walk", 0.2)],
    protocol="activitynet",
    num_detections_used=10,
    num_groundtruth=5,
)
OTHER = {
    "mAP": 0.42,
    "protocol": "activitynet",
    "per_class": [{"id": 1, "name": "stand", "ap": 0.4}, {"id": 2, "name": "sit", "ap": 0.3},
                  {"id": 3, "name": "swim", "ap": 0.9}, {"id": 4, "name": "walk", "ap": 0.6},
                  {"id": 5, "name": "run", "ap": 0.1}],
}


def test_per_class_plot_is_written(tmp_path):
    path = plot_per_class_ap(OURS, tmp_path / "sub" / "ap.png")
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5_000


def test_compare_counts_wins_and_losses():
    # Shared classes with an AP in both: 1 (.5 vs .4: win), 2 (.3 vs .3: tie), 4 (.2 vs .6: loss).
    # Class 3 has no AP in ours, class 5 is not in ours: both left out.
    comparison = compare_results(OURS, OTHER)
    assert [c.id for c in comparison.classes] == [1, 2, 4]  # sorted by our AP, best first
    assert (comparison.wins, comparison.losses) == (1, 1)
    assert [round(c.diff, 12) for c in comparison.classes] == [0.1, 0.0, -0.4]
    assert comparison.other_mAP == 0.42
    # Swapping the two swaps wins and losses.
    swapped = compare_results(OTHER, OURS)
    assert (swapped.wins, swapped.losses) == (1, 1) and [c.id for c in swapped.classes] == [4, 1, 2]


def test_compare_plot_is_written_and_returns_its_comparison(tmp_path):
    comparison = plot_compare(OURS, OTHER, tmp_path / "cmp.png", names=("single-stage", "two-stage"))
    assert (comparison.wins, comparison.losses) == (1, 1)
    assert (tmp_path / "cmp.png").read_bytes().startswith(PNG_MAGIC)


def test_result_json_round_trip_and_bad_files(tmp_path):
    good = tmp_path / "r.json"
    good.write_text(json.dumps(OURS.to_json()))
    assert load_result_json(good) == OURS.to_json()
    broken = tmp_path / "broken.json"
    broken.write_text('{"mAP": 0.3,\n "per_class": [}\n')
    with pytest.raises(ValueError, match=r"broken\.json:2: not valid JSON"):
        load_result_json(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"mAP": 0.3, "per_class": [{"id": "1", "name": "a", "ap": 0.1}]}))
    with pytest.raises(ValueError, match=r"wrong\.json: per_class\[0\]"):
        load_result_json(wrong)
    with pytest.raises(FileNotFoundError, match="result JSON not found"):
        load_result_json(tmp_path / "missing.json")


def test_nothing_to_plot_is_an_error(tmp_path):
    empty = {"mAP": 0.0, "per_class": [{"id": 1, "name": "a", "ap": None}]}
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_per_class_ap(empty, tmp_path / "x.png")
    with pytest.raises(ValueError, match="nothing to compare"):
        plot_compare(OURS, empty, tmp_path / "y.png")
