"""AVA-format CSVs of another timeline, for ``bmvit data import --format ava``.

The files have AVA's eight columns (``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``, boxes
normalised xyxy) but their videos may have any frame rate, length and start: ``timestamp`` is a whole
second of the video, and ``time_offset`` is the timestamp of the video's first frame (AVA itself: 900,
the second its 15-minute cut starts at; 0 for a dataset whose timestamps count from the start). Action ids
are named by the label map given (``.pbtxt``, AVA's ``item { name: ... id: ... }``). An empty action id
is a person doing none of the actions.

A folder of CSVs: every ``*.csv`` except AVA's excluded-timestamp files; a file whose name says ``train``
or ``val`` (or ``test``) puts its videos in that split, unless the import chooses the split itself.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np

from bmvit.data.ava import read_annotations, read_label_map
from bmvit.data.custom.records import AnnotationError, TimedLabels, people_to_boxes


def read_ava_labels(
    path: str | os.PathLike, label_map: str | os.PathLike | None = None, *, time_offset: float = 0.0
) -> TimedLabels:
    """Read AVA CSVs (a file, or a folder of them) with the label map ``label_map`` (default: the one
    ``.pbtxt`` of the folder). Times are ``timestamp - time_offset`` seconds of each video."""
    files = _csv_files(path)
    map_path = _label_map_path(path, label_map)
    try:
        names = read_label_map(map_path)
    except (OSError, ValueError) as err:
        raise AnnotationError(f"{map_path}: cannot read the label map ({err})") from None
    if not names:
        raise AnnotationError(f"{map_path}: the label map names no action")
    out = TimedLabels(actions=[names[i] for i in sorted(names)])
    people: OrderedDict[tuple, dict] = OrderedDict()
    for file in files:
        _read_file(file, names, map_path, time_offset, out, people)
    out.boxes = people_to_boxes(people, normalised=True)
    return out


def _csv_files(path: str | os.PathLike) -> list[str]:
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise AnnotationError(f"{path}: no such file or folder")
    files = sorted(os.path.join(path, n) for n in os.listdir(path)
                   if n.lower().endswith(".csv") and "excluded" not in n.lower())
    if not files:
        raise AnnotationError(f"{path}: no AVA .csv file in this folder")
    return files


def _label_map_path(path: str | os.PathLike, label_map: str | os.PathLike | None) -> str:
    if label_map is not None:
        return os.fspath(label_map)
    folder = os.fspath(path) if os.path.isdir(path) else os.path.dirname(os.fspath(path))
    found = sorted(n for n in os.listdir(folder or ".") if n.endswith(".pbtxt"))
    if len(found) != 1:
        raise AnnotationError(f"{path}: give the label map with --label-map (found {len(found)} .pbtxt files beside "
                              "the annotations)")
    return os.path.join(folder, found[0])


def split_of_file(file: str) -> str | None:
    """"train" or "val" when the file's name says so (``ava_train_v2.2.csv``, ``val.csv``, ``test.csv``)."""
    name = os.path.basename(file).lower()
    if "train" in name:
        return "train"
    if "val" in name or "test" in name:
        return "val"
    return None


def _read_file(file: str, names: dict[int, str], map_path: str, time_offset: float, out: TimedLabels,
               people: OrderedDict) -> None:
    try:
        rows = read_annotations(file)
    except ValueError as err:
        raise AnnotationError(str(err).splitlines()[0]) from None
    base = os.path.basename(file)
    split = split_of_file(file)
    for r in range(len(rows)):
        where = f"{base}:{int(rows.lines[r])}"
        video = str(rows.video_ids[r])
        time_s = round(float(rows.timestamps[r]) - time_offset, 3)
        if time_s < 0:
            raise AnnotationError(f"{file}:{int(rows.lines[r])}: timestamp {int(rows.timestamps[r])} is before the "
                                  f"video's start (time offset {time_offset:g}); set --time-offset")
        action = int(rows.action_ids[r])
        if action >= 0 and action not in names:
            raise AnnotationError(f"{file}:{int(rows.lines[r])}: action id {action} is not in the label map {map_path}")
        if split is not None:
            previous = out.splits.setdefault(video, split)
            if previous != split:
                raise AnnotationError(f"{file}:{int(rows.lines[r])}: video {video} is in both a train and a val file")
        out.where.setdefault(video, where)
        out.keyframes.setdefault(video, set()).add(time_s)
        out.keyframe_where.setdefault((video, time_s), where)
        pid = float(rows.extra[r])
        person = str(int(pid)) if np.isfinite(pid) and pid == round(pid) else ""
        box = tuple(float(v) for v in rows.boxes_xyxy[r])
        key = (video, time_s, person if person else box)
        entry = people.get(key)
        if entry is None:
            entry = people[key] = {"box": box, "person": person, "actions": set(), "where": where}
        elif entry["box"] != box:
            # AVA keys a person by box (PySlowFast): one id with two boxes at one time is two people
            key = (video, time_s, box)
            entry = people.setdefault(key, {"box": box, "person": person, "actions": set(), "where": where})
        if action >= 0:
            entry["actions"].add(names[action])


__all__ = ["read_ava_labels", "split_of_file"]
