"""Readers for AVA's file formats: parsing, grouping and every bad-input case with its line number."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bmvit.data.ava import (
    AVA_VALID_SECONDS,
    class_ids_in,
    group_by_keyframe,
    image_key,
    read_annotations,
    read_detections,
    read_exclusions,
    read_frame_lists,
    read_label_map,
)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


ANNOTATIONS = """\
vidA,0902,0.1,0.2,0.5,0.9,12,0
vidA,0902,0.1,0.2,0.5,0.9,80,0
vidA,902,0.6,0.1,0.9,0.8,14,1
vidB,1798,0.0,0.0,1.0,1.0,12,3
vidA,0903,0.1,0.2,0.5,0.9,12,0
"""


# ------------------------------------------------------------------------------------------------ box CSVs


def test_read_annotations_values(tmp_path):
    rows = read_annotations(write(tmp_path, "a.csv", ANNOTATIONS))
    assert len(rows) == 5 and rows.skipped == 0
    assert rows.video_ids.tolist() == ["vidA", "vidA", "vidA", "vidB", "vidA"]
    assert rows.timestamps.dtype == np.int64
    assert rows.timestamps.tolist() == [902, 902, 902, 1798, 903]  # '0902' and '902' are the same second
    np.testing.assert_array_equal(rows.boxes_xyxy[2], [0.6, 0.1, 0.9, 0.8])
    assert rows.action_ids.tolist() == [12, 80, 14, 12, 12]
    assert rows.extra.tolist() == [0, 0, 1, 3, 0]
    assert rows.lines.tolist() == [1, 2, 3, 4, 5]


def test_careful_path_gives_the_same_rows(tmp_path):
    """Quotes, blank lines and 7-column rows take the row-by-row path: same numbers, right line numbers."""
    fast = read_annotations(write(tmp_path, "a.csv", ANNOTATIONS))
    quoted = '"vidA",0902,0.1,0.2,0.5,0.9,12,0\n' + ANNOTATIONS.split("\n", 1)[1].replace("vidB,", "\nvidB,")
    slow = read_annotations(write(tmp_path, "b.csv", quoted))
    assert slow.video_ids.tolist() == fast.video_ids.tolist()
    np.testing.assert_array_equal(slow.timestamps, fast.timestamps)
    np.testing.assert_array_equal(slow.boxes_xyxy, fast.boxes_xyxy)
    np.testing.assert_array_equal(slow.action_ids, fast.action_ids)
    np.testing.assert_array_equal(slow.extra, fast.extra)
    assert slow.lines.tolist() == [1, 2, 3, 5, 6]  # the blank line 4 is skipped, not renumbered


def test_seven_columns_and_empty_action(tmp_path):
    rows = read_annotations(write(tmp_path, "a.csv", "v,0902,0.1,0.1,0.2,0.2,5\nv,0902,0.3,0.3,0.4,0.4,,7\n"))
    assert np.isnan(rows.extra[0]) and rows.extra[1] == 7
    assert rows.action_ids.tolist() == [5, -1]  # PySlowFast person-box files leave the action empty


def test_read_detections(tmp_path):
    text = "v,0902,0.1,0.1,0.2,0.2,5,0.75\nv,0903,-0.01,0.1,0.2,1.02,6,0.5\n"
    rows = read_detections(write(tmp_path, "d.csv", text))
    assert rows.extra.tolist() == [0.75, 0.5]
    assert rows.boxes_xyxy[1].tolist() == [-0.01, 0.1, 0.2, 1.02]  # detections' boxes are not range-checked by default
    with pytest.raises(ValueError, match=r"d\.csv:2: box .* is outside \[0, 1\]"):
        read_detections(tmp_path / "d.csv", check_boxes=True)


def test_empty_file(tmp_path):
    rows = read_detections(write(tmp_path, "d.csv", ""))
    assert len(rows) == 0 and rows.boxes_xyxy.shape == (0, 4)
    assert group_by_keyframe(rows) == []


GOOD = "v,0902,0.1,0.1,0.2,0.2,5,1\n"


@pytest.mark.parametrize(
    "bad_line, reader, message",
    [
        ("v,0902,0.1,0.1,0.2,0.2\n", read_annotations, r"expected 7 or 8 comma-separated columns .* got 6"),
        ("v,0902,0.1,0.1,0.2,0.2,5,1,9\n", read_annotations, r"expected 7 or 8 .* got 9"),
        ("v,0902,abc,0.1,0.2,0.2,5,1\n", read_annotations, r"x1 'abc' is not a number"),
        ("v,902.5,0.1,0.1,0.2,0.2,5,1\n", read_annotations, r"timestamp '902.5' is not an integer number of seconds"),
        ("v,,0.1,0.1,0.2,0.2,5,1\n", read_annotations, r"timestamp '' is not an integer"),
        ("v,0902,0.1,0.1,1.2,0.2,5,1\n", read_annotations, r"box .* is outside \[0, 1\]"),
        ("v,0902,-0.1,0.1,0.2,0.2,5,1\n", read_annotations, r"box .* is outside \[0, 1\]"),
        ("v,0902,0.3,0.1,0.2,0.2,5,1\n", read_annotations, r"box .* has x1 >= x2 or y1 >= y2"),
        ("v,0902,0.1,0.2,0.2,0.2,5,1\n", read_annotations, r"box .* has x1 >= x2 or y1 >= y2"),
        ("v,0902,0.1,0.1,0.2,0.2,five,1\n", read_annotations, r"action_id 'five' is not an integer"),
        ("v,0902,0.1,0.1,0.2,0.2,-3,1\n", read_annotations, r"action_id '-3' is negative"),
        ("v,0902,0.1,0.1,0.2,0.2,5,x\n", read_annotations, r"person_id 'x' is not a number"),
        ("v,0902,nan,0.1,0.2,0.2,5,1\n", read_annotations, r"x1 'nan' is not a finite number"),
        ("v,0902,0.1,0.1,0.2,0.2,5\n", read_detections, r"expected 8 comma-separated columns .*score.* got 7"),
        ("v,0902,0.1,0.1,0.2,0.2,5,\n", read_detections, r"score '' is not a number"),
        ("v,0902,0.1,0.1,0.2,0.2,5,high\n", read_detections, r"score 'high' is not a number"),
        ("v,0902,0.1,0.1,0.2,0.2,5,inf\n", read_detections, r"score 'inf' is not a finite number"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path, bad_line, reader, message):
    path = write(tmp_path, "x.csv", GOOD + GOOD + bad_line + GOOD)
    with pytest.raises(ValueError, match=r"x\.csv:3: " + message):
        reader(path)


def test_error_quotes_the_line(tmp_path):
    path = write(tmp_path, "x.csv", GOOD + "v,0902,0.1,0.1,0.2\n")
    with pytest.raises(ValueError) as e:
        read_annotations(path)
    assert "'v,0902,0.1,0.1,0.2'" in str(e.value)


def test_first_bad_line_is_reported(tmp_path):
    path = write(tmp_path, "x.csv", GOOD + "v,0902,0.1,0.1,0.2,0.2,5,z\n" + "v,x,0.1,0.1,0.2,0.2,5,1\n")
    with pytest.raises(ValueError, match=r"x\.csv:2: person_id"):
        read_annotations(path)


def test_skip_bad_counts_and_logs(tmp_path, caplog):
    text = (
        GOOD
        + "v,0902,0.1,0.1,0.2\n"
        + "v,0903,0.1,0.1,0.2,0.2,6,2\n"
        + "v,0902,0.5,0.1,0.2,0.2,5,1\n"
        + "v,0904,1,1,1,1,1,1\n"
    )
    path = write(tmp_path, "x.csv", text)
    with caplog.at_level(logging.WARNING, logger="bmvit.data"):
        rows = read_annotations(path, skip_bad=True)
    assert rows.skipped == 3
    assert rows.lines.tolist() == [1, 3]
    assert rows.timestamps.tolist() == [902, 903]
    messages = [r.getMessage() for r in caplog.records]
    assert any("x.csv:2:" in m and "got 5" in m for m in messages)
    assert any("x.csv:4:" in m and "x1 >= x2" in m for m in messages)
    assert any("x.csv:5:" in m for m in messages)
    assert any("skipped 3 bad row(s) of 5" in m for m in messages)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="AVA detection CSV not found: .*nope.csv"):
        read_detections(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------------------ label map

OFFICIAL_PBTXT = """\
item {
  name: "bend/bow (at the waist)"
  id: 1
}
item {
  name: "crawl"
  id: 3
}
"""


def test_label_map_official_layout(tmp_path):
    assert read_label_map(write(tmp_path, "l.pbtxt", OFFICIAL_PBTXT)) == {1: "bend/bow (at the waist)", 3: "crawl"}


def test_label_map_single_line_and_sorted(tmp_path):
    text = 'item { name: "stand" id: 12 }\nitem { name: "sit" id: 11 }\n'
    labels = read_label_map(write(tmp_path, "l.pbtxt", text))
    assert list(labels.items()) == [(11, "sit"), (12, "stand")]


def test_label_map_label_id_and_display_name(tmp_path):
    text = (
        'label {\n  name: "bend/bow (at the waist)"\n  label_id: 1\n  label_type: PERSON_MOVEMENT\n}\n'
        'item { id: 2 display_name: "person" }\n'
        '# a comment with item { name: "ghost" id: 9 }\n'
    )
    assert read_label_map(write(tmp_path, "l.pbtxt", text)) == {1: "bend/bow (at the waist)", 2: "person"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"l\.pbtxt: no classes found"),
        ("# nothing\n", r"no classes found"),
        (
            'item {\n  name: "a"\n  id: 1\n}\nitem {\n  name: "b"\n  id: 1\n}\n',
            r"l\.pbtxt:5: label-map id 1 appears twice",
        ),
        ('item { name: "a" }\n', r"l\.pbtxt:1: .* has no 'id'"),
        ("item { id: 4 }\n", r"has no 'name'"),
        ('item { name: "a" id: one }\n', r"id 'one' is not an integer"),
    ],
)
def test_label_map_errors(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_label_map(write(tmp_path, "l.pbtxt", text))


# ------------------------------------------------------------------------------------ exclusions, frame lists


def test_exclusions(tmp_path):
    path = write(tmp_path, "e.csv", "vidA,0902\nvidB,1000\n\n")
    assert read_exclusions(path) == {("vidA", 902), ("vidB", 1000)}
    with pytest.raises(ValueError, match=r"e2\.csv:2: expected 2 columns"):
        read_exclusions(write(tmp_path, "e2.csv", "vidA,0902\nvidB\n"))
    with pytest.raises(ValueError, match=r"e3\.csv:1: timestamp '9x' is not an integer"):
        read_exclusions(write(tmp_path, "e3.csv", "vidA,9x\n"))


def test_frame_lists_order_and_prefix(tmp_path):
    text = (
        "original_vido_id video_id frame_id path labels\n"
        'b 1 1 b/b_000002.jpg ""\n'
        'a 0 0 a/a_000001.jpg ""\n'
        'b 1 0 b/b_000001.jpg "1,2"\n'
        'a 0 1 a/a_000002.jpg ""\n'
    )
    path = write(tmp_path, "train.csv", text)
    lists = read_frame_lists(path)
    assert list(lists) == ["b", "a"]
    assert lists["b"] == ["b/b_000001.jpg", "b/b_000002.jpg"]  # frame_id order, not file order
    assert read_frame_lists(path, prefix="/frames")["a"][0] == "/frames/a/a_000001.jpg"
    with pytest.raises(ValueError, match=r"bad\.csv:2: expected 5 space-separated columns"):
        read_frame_lists(write(tmp_path, "bad.csv", "header\na 0 0 a/a_000001.jpg\n"))


# ------------------------------------------------------------------------------------------------ grouping


def test_group_by_keyframe_people_and_labels(tmp_path):
    rows = read_annotations(write(tmp_path, "a.csv", ANNOTATIONS))
    frames = group_by_keyframe(rows)
    assert [(k.video_id, k.timestamp) for k in frames] == [("vidA", 902), ("vidA", 903), ("vidB", 1798)]
    k = frames[0]
    assert len(k) == 2
    assert k.action_ids == ((12, 80), (14,))
    assert k.person_ids.tolist() == [0, 1]
    np.testing.assert_array_equal(k.boxes_xyxy, [[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.8]])
    assert k.labels is None

    frames = group_by_keyframe(rows, class_ids=[80, 12, 14])
    np.testing.assert_array_equal(frames[0].labels, [[1, 1, 0], [0, 0, 1]])
    assert frames[0].labels.dtype == np.float32
    np.testing.assert_array_equal(frames[2].labels, [[0, 1, 0]])


def test_group_same_box_different_person_and_file_order(tmp_path):
    text = (
        "v,0902,0.5,0.5,0.6,0.6,1,7\n"
        "v,0902,0.1,0.1,0.2,0.2,2,3\n"
        "v,0902,0.5,0.5,0.6,0.6,3,8\n"  # same box, another person id
        "v,0902,0.5,0.5,0.6,0.6,4,7\n"
    )
    rows = read_annotations(write(tmp_path, "a.csv", text))
    (k,) = group_by_keyframe(rows)  # PySlowFast's box key (the default) merges them, in file order
    assert k.action_ids == ((1, 3, 4), (2,))
    assert k.person_ids.tolist() == [-1, 3]  # 7 and 8 disagree: no single person id
    np.testing.assert_array_equal(k.boxes_xyxy, [[0.5, 0.5, 0.6, 0.6], [0.1, 0.1, 0.2, 0.2]])
    (k,) = group_by_keyframe(rows, key="person")  # one target per (box, person id)
    assert k.person_ids.tolist() == [7, 3, 8]  # first appearance in the file
    assert k.action_ids == ((1, 4), (2,), (3,))


def test_group_box_under_two_person_ids_is_one_target_with_both_actions(tmp_path):
    """The training grouping: one target per box, labels the union over its person ids (PySlowFast)."""
    text = (
        "v,0902,0.2,0.1,0.6,0.9,12,4\n"
        "v,0902,0.2,0.1,0.6,0.9,80,5\n"  # the same box under person 5, another action
        "v,0902,0.2,0.1,0.6,0.9,12,5\n"  # and an action both carry: still one column set
        "v,0903,0.2,0.1,0.6,0.9,80,4\n"  # the same box at the next second is another key frame's
    )
    rows = read_annotations(write(tmp_path, "a.csv", text))
    first, second = group_by_keyframe(rows, class_ids=[12, 14, 80])
    assert len(first) == 1
    assert first.action_ids == ((12, 80),)
    np.testing.assert_array_equal(first.labels, [[1, 0, 1]])
    np.testing.assert_array_equal(first.boxes_xyxy, [[0.2, 0.1, 0.6, 0.9]])
    assert first.person_ids.tolist() == [-1] and first.person_ids.dtype == np.int64
    assert second.action_ids == ((80,),) and second.person_ids.tolist() == [4]  # one id: kept


def test_group_different_boxes_of_one_person_id_stay_apart(tmp_path):
    text = (
        "v,0902,0.1,0.1,0.4,0.9,12,2\n"
        "v,0902,0.5,0.1,0.9,0.9,14,2\n"  # person id 2 again, another box
        "v,0902,0.1,0.1,0.4,0.9,80,2\n"
        "v,0902,0.1,0.1,0.4,0.901,14,2\n"  # differs in one coordinate: another box
    )
    rows = read_annotations(write(tmp_path, "a.csv", text))
    (k,) = group_by_keyframe(rows, class_ids=[12, 14, 80])
    assert len(k) == 3
    assert k.action_ids == ((12, 80), (14,), (14,))
    assert k.person_ids.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(k.labels, [[1, 0, 1], [0, 1, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="key must be 'box' or 'person'"):
        group_by_keyframe(rows, key="tube")


def test_group_unknown_action(tmp_path):
    rows = read_annotations(write(tmp_path, "a.csv", ANNOTATIONS))
    with pytest.raises(ValueError, match=r"a\.csv:2: action_id 80 is not among the classes \(\[12, 14\]\)"):
        group_by_keyframe(rows, class_ids=[12, 14])
    frames = group_by_keyframe(rows, class_ids=[12, 14], unknown="ignore")
    np.testing.assert_array_equal(frames[0].labels, [[1, 0], [0, 1]])
    assert frames[0].action_ids == ((12, 80), (14,))  # the raw ids stay available


def test_group_valid_seconds(tmp_path, caplog):
    text = "v,0901,0.1,0.1,0.2,0.2,1,0\nv,0902,0.1,0.1,0.2,0.2,1,0\nv,1799,0.1,0.1,0.2,0.2,1,0\n"
    rows = read_annotations(write(tmp_path, "a.csv", text))
    with caplog.at_level(logging.WARNING, logger="bmvit.data"):
        frames = group_by_keyframe(rows, valid_seconds=AVA_VALID_SECONDS)
    assert [k.timestamp for k in frames] == [902]
    assert any("2 row(s) outside the key-frame seconds 902..1798" in r.getMessage() for r in caplog.records)
    assert len(group_by_keyframe(rows, valid_seconds=(0, 5000))) == 3


def test_group_rejects_scores_as_person_ids(tmp_path):
    rows = read_detections(write(tmp_path, "d.csv", "v,0902,0.1,0.1,0.2,0.2,5,0.75\n"))
    with pytest.raises(ValueError, match=r"d\.csv:1: person_id 0.75 is not an integer .*key='box'"):
        group_by_keyframe(rows, key="person")
    (k,) = group_by_keyframe(rows, key="box")
    assert k.action_ids == ((5,),) and k.person_ids.tolist() == [-1]  # a score is no person id


def test_helpers(tmp_path):
    rows = read_annotations(write(tmp_path, "a.csv", ANNOTATIONS + "v,0902,0.1,0.1,0.2,0.2,,0\n"))
    assert class_ids_in(rows) == [12, 14, 80]
    assert image_key("vidA", 902) == "vidA,0902"


@pytest.mark.parametrize("key", ["box", "person"])
def test_grouping_matches_a_plain_python_reference(key):
    """Vectorised grouping equals a dictionary-based reference on random rows, in both modes."""
    from bmvit.data.ava import BoxRows

    rng = np.random.default_rng(0)
    n = 400
    boxes = np.round(rng.random((n, 4)) * 3) / 4  # few distinct boxes so boxes and people repeat
    rows = BoxRows(
        path="mem",
        video_ids=rng.choice(["a", "b", "c"], n),
        timestamps=rng.integers(902, 906, n),
        boxes_xyxy=boxes,
        action_ids=rng.integers(-1, 6, n),
        extra=rng.integers(0, 3, n).astype(np.float64),
        lines=np.arange(1, n + 1),
    )
    reference: dict = {}  # (video, second) -> target key -> (person ids, actions), in file order
    for i in range(n):
        frame = reference.setdefault((str(rows.video_ids[i]), int(rows.timestamps[i])), {})
        box = tuple(boxes[i].tolist())
        target = box if key == "box" else (box, int(rows.extra[i]))
        pids, actions = frame.setdefault(target, (set(), set()))
        pids.add(int(rows.extra[i]))
        if rows.action_ids[i] >= 0:
            actions.add(int(rows.action_ids[i]))
    frames = group_by_keyframe(rows, key=key)
    assert [(k.video_id, k.timestamp) for k in frames] == sorted(reference)
    merged = 0
    for k in frames:
        ref = [
            (target, pids.pop() if len(pids) == 1 else -1, actions)
            for target, (pids, actions) in reference[(k.video_id, k.timestamp)].items()
        ]
        merged += sum(p == -1 for _, p, _ in ref)
        got = [
            (tuple(b.tolist()) if key == "box" else (tuple(b.tolist()), int(p)), int(p), set(a))
            for b, p, a in zip(k.boxes_xyxy, k.person_ids, k.action_ids)
        ]
        assert got == ref  # same targets, same first-appearance order, same person ids and actions
    assert (merged > 0) == (key == "box")  # the rows do put boxes under several person ids
