"""The plain CSV of ``bmvit data import --format csv``: one row per (person, action) at a key frame.

Columns, in this order (a header line naming them is optional)::

    video,time_s,x1,y1,x2,y2,action,person_id

- ``video``: the video's file name (``clip.mp4``) or its name without extension (``clip``).
- ``time_s``: the key frame's time, seconds from the video's first frame (``12``, ``12.4``).
- ``x1,y1,x2,y2``: the person's box, in pixels of the video frame, or in fractions of its width and height
  with ``--normalised`` (``normalised=True``).
- ``action``: the action's name; empty for a person doing none of the actions (a non-actor).
- ``person_id``: optional; the rows of one person at one time are one person with several actions.
  Without it, rows with the same box at the same time are one person.

A row with the four box columns empty marks a key frame where nobody is labelled. Every (video, time)
that appears is a key frame. Errors name the file and line (``AnnotationError``).
"""

from __future__ import annotations

import csv
import math
import os
from collections import OrderedDict

from bmvit.data.custom.records import AnnotationError, TimedLabels, people_to_boxes

COLUMNS = ("video", "time_s", "x1", "y1", "x2", "y2", "action", "person_id")


def read_csv_labels(path: str | os.PathLike, *, normalised: bool = False) -> TimedLabels:
    """Read the CSV at ``path`` (or every ``*.csv`` of a folder, sorted) into labelled people and key frames."""
    files = _files(path)
    out = TimedLabels()
    people: OrderedDict[tuple, dict] = OrderedDict()
    for file in files:
        _read_file(file, normalised, out, people)
    out.boxes = people_to_boxes(people, normalised=normalised)
    return out


def _files(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(".csv"))
        if not files:
            raise AnnotationError(f"{path}: no .csv file in this folder")
        return files
    if not os.path.isfile(path):
        raise AnnotationError(f"{path}: no such file")
    return [path]


def _read_file(file: str, normalised: bool, out: TimedLabels, people: OrderedDict) -> None:
    name = os.path.basename(file)
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{file}: not a text CSV file ({err.reason})") from None
    for number, row in enumerate(rows, start=1):
        where = f"{name}:{number}"
        if not row or all(not c.strip() for c in row):
            continue
        cells = [c.strip() for c in row]
        if number == 1 and cells[0].lower() == "video":
            _check_header(file, cells)
            continue
        if len(cells) not in (7, 8):
            raise AnnotationError(f"{file}:{number}: expected the columns {','.join(COLUMNS)} (7 or 8), "
                                  f"got {len(cells)}")
        video, time_s = cells[0], _time(cells[1], file, number)
        if not video:
            raise AnnotationError(f"{file}:{number}: the video column is empty")
        out.where.setdefault(video, where)
        out.keyframes.setdefault(video, set()).add(time_s)
        out.keyframe_where.setdefault((video, time_s), where)
        if not any(cells[2:6]):
            if cells[6]:
                raise AnnotationError(f"{file}:{number}: action {cells[6]!r} without a box")
            continue
        box = tuple(_number(c, file, number, col) for c, col in zip(cells[2:6], COLUMNS[2:6]))
        _check_box(box, normalised, file, number)
        person = cells[7] if len(cells) == 8 else ""
        key = (video, time_s, person if person else box)
        entry = people.get(key)
        if entry is None:
            entry = people[key] = {"box": box, "person": person, "actions": set(), "where": where}
        elif entry["box"] != box:
            raise AnnotationError(f"{file}:{number}: person {person} at {time_s:g} s has another box than at "
                                  f"{entry['where']}")
        if cells[6]:
            entry["actions"].add(cells[6])


def _check_header(file: str, cells: list[str]) -> None:
    names = [c.lower() for c in cells]
    if names not in (list(COLUMNS), list(COLUMNS[:7])):
        raise AnnotationError(f"{file}:1: the header must be {','.join(COLUMNS)} (person_id optional), "
                              f"got {','.join(cells)}")


def _time(text: str, file: str, number: int) -> float:
    value = _number(text, file, number, "time_s")
    if value < 0:
        raise AnnotationError(f"{file}:{number}: time_s {text!r} is negative")
    return round(value, 3)  # key frames are told apart to the millisecond


def _number(text: str, file: str, number: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise AnnotationError(f"{file}:{number}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise AnnotationError(f"{file}:{number}: {column} {text!r} is not a finite number")
    return value


def _check_box(box: tuple[float, ...], normalised: bool, file: str, number: int) -> None:
    x1, y1, x2, y2 = box
    if not (x2 > x1 and y2 > y1):
        raise AnnotationError(f"{file}:{number}: box {box} is empty (need x1 < x2 and y1 < y2)")
    if normalised and any(v < -0.01 or v > 1.01 for v in box):
        raise AnnotationError(f"{file}:{number}: box {box} is not normalised to [0, 1] (pixel boxes: leave out "
                              "--normalised)")


__all__ = ["COLUMNS", "read_csv_labels"]
