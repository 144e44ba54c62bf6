"""Readers for AVA's file formats: box CSVs, the label-map ``.pbtxt``, excluded timestamps, frame lists.

Pure functions over files: nothing here decodes video or touches torch. The formats are the official
ones (https://research.google.com/ava/download.html) and PySlowFast's (``slowfast/datasets/ava_helper.py``):

- box CSV, one row per (person box, action): ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
  for annotations, ``..., action_id, score`` for detections. Boxes are ``xyxy`` normalised to [0, 1] of
  the frame; timestamps are whole seconds of the original movie (``0902`` and ``902`` are the same).
  PySlowFast's person-box files leave ``action_id`` empty: it reads as -1.
- label map: ``item { name: "..." id: N }`` blocks, one field per line (official) or on one line;
  ``label { name: ... label_id: N }`` (the 80-class AVA list) and ``display_name`` are accepted too.
- excluded timestamps: ``video_id, timestamp``.
- frame lists: space separated ``original_video_id video_idx frame_id path labels`` with a header line.

Bad input raises ``ValueError`` naming the file, the 1-based line and the problem. With
``skip_bad=True`` the box readers log each bad row on the ``bmvit.data`` logger instead, count them and
report the count in ``BoxRows.skipped``; nothing is ever dropped silently.
"""

from __future__ import annotations

import csv
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

logger = logging.getLogger("bmvit.data")

PathLike = str | os.PathLike

AVA_VALID_SECONDS = (902, 1798)
"""AVA's annotated key-frame seconds, inclusive (PySlowFast's ``AVA_VALID_FRAMES = range(902, 1799)``)."""

AVA_V22_CLASS_IDS = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27, 28, 29, 30, 34, 36, 37, 38, 41, 43,
    45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76,
    77, 78, 79, 80,
)
"""The 60 evaluated AVA v2.2 action ids (``ava_action_list_v2.2_for_activitynet_2019.pbtxt``)."""

_MAX_LOGGED_SKIPS = 10  # per file: beyond this, skipped rows are logged at DEBUG and only counted


@dataclass(frozen=True, eq=False)
class BoxRows:
    """The rows of an AVA box CSV, column-wise: one row per (box, action).

    Attributes:
        path: the file the rows come from.
        video_ids: [N] str.
        timestamps: [N] int64 seconds.
        boxes_xyxy: [N, 4] float64, normalised x1, y1, x2, y2.
        action_ids: [N] int64; -1 where the column is empty.
        extra: [N] float64: person_id for annotations, score for detections; NaN where absent.
        lines: [N] int64 1-based line numbers in ``path`` (for error messages downstream).
        skipped: number of bad rows skipped (only non-zero with ``skip_bad=True``).
    """

    path: str
    video_ids: np.ndarray
    timestamps: np.ndarray
    boxes_xyxy: np.ndarray
    action_ids: np.ndarray
    extra: np.ndarray
    lines: np.ndarray
    skipped: int = 0

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def select(self, mask_or_index: np.ndarray) -> BoxRows:
        """Rows picked by a boolean mask or an index array (``skipped`` is kept)."""
        return BoxRows(
            path=self.path,
            video_ids=self.video_ids[mask_or_index],
            timestamps=self.timestamps[mask_or_index],
            boxes_xyxy=self.boxes_xyxy[mask_or_index],
            action_ids=self.action_ids[mask_or_index],
            extra=self.extra[mask_or_index],
            lines=self.lines[mask_or_index],
            skipped=self.skipped,
        )


@dataclass(frozen=True, eq=False)
class KeyFrame:
    """The people of one key frame.

    Attributes:
        video_id: the video.
        timestamp: AVA: the key frame's second of the movie; frame-annotated datasets: the 1-based
            frame number.
        boxes_xyxy: [P, 4] float64, normalised x1, y1, x2, y2 of the key frame.
        action_ids: P sorted tuples of the person's action ids (empty tuple: no action).
        person_ids: [P] int64, -1 where the file gives none, or (``group_by_keyframe(key="box")``)
            where the rows merged into the box carry different person ids.
        labels: [P, C] float32 multi-hot over the ``class_ids`` given to ``group_by_keyframe``
            (column j is ``class_ids[j]``), or None when none were given.
        frame_index: the key frame's 0-based index in its frame source when the dataset is annotated
            per frame (UCF101-24, JHMDB-21); None for AVA, where it follows from the timestamp.
    """

    video_id: str
    timestamp: int
    boxes_xyxy: np.ndarray
    action_ids: tuple[tuple[int, ...], ...]
    person_ids: np.ndarray
    labels: np.ndarray | None = None
    frame_index: int | None = None

    def __len__(self) -> int:
        return int(self.boxes_xyxy.shape[0])


@dataclass
class _Problems:
    """Bad rows found while parsing: row index -> first problem (rows are 0-based into the parsed list)."""

    by_row: dict[int, str] = field(default_factory=dict)

    def add(self, rows: np.ndarray, message_for_row) -> None:
        for r in rows.tolist():
            if r not in self.by_row:
                self.by_row[r] = message_for_row(r)


# ---------------------------------------------------------------------------------------------------------
# box CSVs


def read_annotations(path: PathLike, *, check_boxes: bool = True, skip_bad: bool = False) -> BoxRows:
    """Read an AVA annotation CSV (``video_id, timestamp, x1, y1, x2, y2, action_id[, person_id]``).

    7- and 8-column rows are both valid; ``extra`` holds the person id (NaN for a 7-column row or an
    empty person id). ``check_boxes`` requires 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1.
    """
    return _read_box_csv(path, kind="annotation", check_boxes=check_boxes, skip_bad=skip_bad)


def read_detections(path: PathLike, *, check_boxes: bool = False, skip_bad: bool = False) -> BoxRows:
    """Read an AVA detection CSV (``video_id, timestamp, x1, y1, x2, y2, action_id, score``).

    The score column is required and must be a finite number; ``extra`` holds it. Box coordinates
    must be finite numbers; their range is only checked with ``check_boxes``.
    """
    return _read_box_csv(path, kind="detection", check_boxes=check_boxes, skip_bad=skip_bad)


def _read_box_csv(
    path: PathLike, *, kind: Literal["annotation", "detection"], check_boxes: bool, skip_bad: bool
) -> BoxRows:
    path = os.fspath(path)
    text = _read_text(path, f"AVA {kind} CSV")
    raw_lines = text.splitlines()
    fast = _parse_clean_file(text, raw_lines, kind, check_boxes)
    if fast is not None:
        video_ids, timestamps, boxes, action_ids, extra = fast
        return BoxRows(
            path=path,
            video_ids=video_ids,
            timestamps=timestamps,
            boxes_xyxy=boxes,
            action_ids=action_ids,
            extra=extra,
            lines=np.arange(1, len(raw_lines) + 1, dtype=np.int64),
        )
    # Something is unusual or wrong: the row-by-row path below finds and names each bad line.
    # Quoted fields are legal CSV but rare in AVA files: only then pay for the csv module.
    if '"' in text:
        rows = list(csv.reader(raw_lines))
    else:
        rows = [ln.split(",") for ln in raw_lines]
    line_numbers = np.arange(1, len(rows) + 1, dtype=np.int64)
    blank = [i for i, ln in enumerate(raw_lines) if not ln.strip()]
    if blank:  # blank lines carry no row (a trailing newline, a gap); they are not data to report
        keep = np.ones(len(rows), dtype=bool)
        keep[blank] = False
        rows = [r for r, k in zip(rows, keep) if k]
        line_numbers = line_numbers[keep]

    allowed = (7, 8) if kind == "annotation" else (8,)
    problems = _Problems()
    ncols = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    bad_cols = ~np.isin(ncols, allowed)
    if bad_cols.any():
        expected = " or ".join(str(a) for a in allowed)
        columns = "video_id, timestamp, x1, y1, x2, y2, action_id, " + (
            "[person_id]" if kind == "annotation" else "score"
        )
        problems.add(
            np.flatnonzero(bad_cols),
            lambda r: f"expected {expected} comma-separated columns ({columns}), got {ncols[r]}",
        )
        rows = [r if ok else [""] * 8 for r, ok in zip(rows, ~bad_cols)]
    if kind == "annotation" and (ncols == 7).any():
        rows = [r + [""] if len(r) == 7 else r for r in rows]

    n = len(rows)
    cols = list(zip(*rows)) if n else [()] * 8
    video_ids = np.array(cols[0], dtype=str) if n else np.zeros(0, dtype=str)
    timestamps = _parse_ints(cols[1], problems, "timestamp", "an integer number of seconds")
    boxes = (
        np.stack(
            [_parse_floats(cols[2 + k], problems, name) for k, name in enumerate(("x1", "y1", "x2", "y2"))], axis=1
        )
        if n
        else np.zeros((0, 4))
    )
    action_ids = _parse_action_ids(cols[6], problems)
    if kind == "annotation":
        extra = _parse_floats(cols[7], problems, "person_id", allow_empty=True)
    else:
        extra = _parse_floats(cols[7], problems, "score")
    if check_boxes and n:
        _check_boxes(boxes, problems)

    skipped = 0
    if problems.by_row:
        bad_rows = sorted(problems.by_row)
        if not skip_bad:
            r = bad_rows[0]
            raise ValueError(_row_message(path, int(line_numbers[r]), problems.by_row[r], raw_lines))
        skipped = len(bad_rows)
        for i, r in enumerate(bad_rows):
            level = logging.WARNING if i < _MAX_LOGGED_SKIPS else logging.DEBUG
            logger.log(level, "skipping %s", _row_message(path, int(line_numbers[r]), problems.by_row[r], raw_lines))
        logger.warning("%s: skipped %d bad row(s) of %d (skip_bad=True)", path, skipped, n)
        keep = np.ones(n, dtype=bool)
        keep[bad_rows] = False
        video_ids, timestamps, boxes = video_ids[keep], timestamps[keep], boxes[keep]
        action_ids, extra, line_numbers = action_ids[keep], extra[keep], line_numbers[keep]

    return BoxRows(
        path=path,
        video_ids=video_ids,
        timestamps=timestamps,
        boxes_xyxy=boxes,
        action_ids=action_ids,
        extra=extra,
        lines=line_numbers,
        skipped=skipped,
    )


def _parse_clean_file(
    text: str, raw_lines: list[str], kind: str, check_boxes: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Parse a well-formed file with numpy's C parser; None if anything needs the careful path.

    The careful path handles quoting, blank lines, mixed widths and empty fields, and produces the
    error messages; this one only has to be fast on the common case and never accept a bad row.
    """
    if not raw_lines or '"' in text:
        return None
    commas = np.fromiter((ln.count(",") for ln in raw_lines), dtype=np.int64, count=len(raw_lines))
    width = int(commas[0]) + 1
    if width not in ((7, 8) if kind == "annotation" else (8,)) or (commas != width - 1).any():
        return None
    number_cols = (2, 3, 4, 5, 7) if width == 8 else (2, 3, 4, 5)
    try:
        timestamps = np.loadtxt(raw_lines, usecols=1, dtype=np.int64, delimiter=",", comments=None, ndmin=1)
        action_ids = np.loadtxt(raw_lines, usecols=6, dtype=np.int64, delimiter=",", comments=None, ndmin=1)
        numbers = np.loadtxt(raw_lines, usecols=number_cols, dtype=np.float64, delimiter=",", comments=None, ndmin=2)
    except ValueError:  # empty or non-numeric fields (blank lines are ruled out above)
        return None
    if timestamps.shape[0] != len(raw_lines) or numbers.shape[0] != len(raw_lines):
        return None
    boxes = np.ascontiguousarray(numbers[:, :4])
    extra = numbers[:, 4].copy() if width == 8 else np.full(len(raw_lines), np.nan)
    if not np.isfinite(boxes).all() or (width == 8 and not np.isfinite(extra).all()) or (action_ids < 0).any():
        return None
    if check_boxes and not _boxes_valid(boxes):
        return None
    video_ids = np.array([ln[: ln.index(",")] for ln in raw_lines], dtype=str)
    return video_ids, timestamps, boxes, action_ids, extra


def _boxes_valid(boxes: np.ndarray) -> bool:
    return bool(
        ((boxes >= 0.0) & (boxes <= 1.0)).all()
        and (boxes[:, 0] < boxes[:, 2]).all()
        and (boxes[:, 1] < boxes[:, 3]).all()
    )


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: {what} is not UTF-8 text ({e})") from None


def _row_message(path: str, line: int, problem: str, raw_lines: list[str]) -> str:
    raw = raw_lines[line - 1]
    if len(raw) > 120:
        raw = raw[:117] + "..."
    return f"{path}:{line}: {problem}; the line reads {raw!r}"


def _parse_ints(col: Sequence[str], problems: _Problems, name: str, expected: str) -> np.ndarray:
    """Parse integers with Python's ``int()`` semantics ('0902' -> 902, '902.5' -> error)."""
    try:
        return np.array(col, dtype=str).astype(np.int64) if len(col) else np.zeros(0, np.int64)
    except (ValueError, OverflowError):
        pass
    out = np.zeros(len(col), dtype=np.int64)
    bad = []
    for i, s in enumerate(col):
        try:
            out[i] = int(s)
        except (ValueError, OverflowError):
            bad.append(i)
    problems.add(np.asarray(bad, dtype=np.int64), lambda r: f"{name} {col[r]!r} is not {expected}")
    return out


def _parse_floats(col: Sequence[str], problems: _Problems, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """Parse finite floats; empty strings become NaN when ``allow_empty``, else are an error."""
    if not len(col):
        return np.zeros(0, dtype=np.float64)
    arr = np.array(col, dtype=str)
    empty = arr == ""
    try:
        if allow_empty and empty.any():
            out = np.full(len(col), np.nan)
            out[~empty] = arr[~empty].astype(np.float64)
        else:
            out = arr.astype(np.float64)
        fast_ok = True
    except ValueError:
        fast_ok = False
    if not fast_ok:
        out = np.full(len(col), np.nan)
        bad = []
        for i, s in enumerate(col):
            if allow_empty and s == "":
                continue
            try:
                out[i] = float(s)
            except ValueError:
                bad.append(i)
        problems.add(np.asarray(bad, dtype=np.int64), lambda r: f"{name} {col[r]!r} is not a number")
    nonfinite = ~np.isfinite(out)
    if allow_empty:
        nonfinite &= ~empty
    if nonfinite.any():
        problems.add(np.flatnonzero(nonfinite), lambda r: f"{name} {col[r]!r} is not a finite number")
    return out


def _parse_action_ids(col: Sequence[str], problems: _Problems) -> np.ndarray:
    if not len(col):
        return np.zeros(0, dtype=np.int64)
    arr = np.array(col, dtype=str)
    empty = arr == ""
    out = np.full(len(col), -1, dtype=np.int64)
    try:
        out[~empty] = arr[~empty].astype(np.int64)
    except (ValueError, OverflowError):
        bad = []
        for i in np.flatnonzero(~empty).tolist():
            try:
                out[i] = int(col[i])
            except (ValueError, OverflowError):
                bad.append(i)
        problems.add(np.asarray(bad, dtype=np.int64), lambda r: f"action_id {col[r]!r} is not an integer")
    negative = (out < 0) & ~empty
    if negative.any():
        problems.add(
            np.flatnonzero(negative), lambda r: f"action_id {col[r]!r} is negative (expected an id >= 0 or empty)"
        )
    return out


def _check_boxes(boxes: np.ndarray, problems: _Problems) -> None:
    with np.errstate(invalid="ignore"):
        outside = ((boxes < 0.0) | (boxes > 1.0)).any(axis=1)
        inverted = (boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3])
    finite = np.isfinite(boxes).all(axis=1)  # non-finite coordinates are already reported

    def describe(r: int) -> str:
        x1, y1, x2, y2 = (float(v) for v in boxes[r])
        box = f"({x1:g}, {y1:g}, {x2:g}, {y2:g})"
        if outside[r]:
            return f"box x1, y1, x2, y2 = {box} is outside [0, 1] (expected normalised coordinates)"
        return f"box x1, y1, x2, y2 = {box} has x1 >= x2 or y1 >= y2 (expected x1 < x2 and y1 < y2)"

    problems.add(np.flatnonzero((outside | inverted) & finite), describe)


# ---------------------------------------------------------------------------------------------------------
# label map, exclusions, frame lists

_PBTXT_BLOCK = re.compile(r"(\w+)\s*\{([^{}]*)\}", re.DOTALL)
_PBTXT_FIELD = re.compile(r'(\w+)\s*:\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[^\s"\']+)')


def read_label_map(path: PathLike) -> dict[int, str]:
    """Read an AVA label map ``.pbtxt`` into ``{action_id: name}``, ids ascending.

    Accepts ``item { name: "x" id: 1 }`` blocks (multi-line, as in
    ``ava_action_list_v2.2_for_activitynet_2019.pbtxt``, or on one line) and ``label { name: "x"
    label_id: 1 ... }`` blocks (``ava_action_list_v2.2.pbtxt``). The name is ``name``, or
    ``display_name`` when a block has no ``name``. Other fields (``label_type``) are ignored.
    """
    path = os.fspath(path)
    text = _read_text(path, "label map")
    stripped = re.sub(r"#[^\n]*", lambda m: " " * len(m.group(0)), text)  # comments, keeping offsets
    labels: dict[int, str] = {}
    for block in _PBTXT_BLOCK.finditer(stripped):
        line = stripped.count("\n", 0, block.start()) + 1
        fields: dict[str, str] = {}
        for f in _PBTXT_FIELD.finditer(block.group(2)):
            value = f.group(2)
            if value[:1] in "\"'":
                value = value[1:-1]
            fields.setdefault(f.group(1), value)
        raw_id = fields.get("id", fields.get("label_id"))
        name = fields.get("name", fields.get("display_name"))
        if raw_id is None:
            raise ValueError(f"{path}:{line}: label-map block {block.group(1)!r} has no 'id' (or 'label_id') field")
        if name is None:
            raise ValueError(f"{path}:{line}: label-map block {block.group(1)!r} has no 'name' (or 'display_name')")
        try:
            class_id = int(raw_id)
        except ValueError:
            raise ValueError(f"{path}:{line}: label-map id {raw_id!r} is not an integer") from None
        if class_id in labels:
            raise ValueError(
                f"{path}:{line}: label-map id {class_id} appears twice ({labels[class_id]!r} and {name!r})"
            )
        labels[class_id] = name
    if not labels:
        raise ValueError(
            f"{path}: no classes found in the label map (expected blocks like 'item {{ name: \"stand\" id: 12 }}')"
        )
    return dict(sorted(labels.items()))


def read_exclusions(path: PathLike) -> set[tuple[str, int]]:
    """Read an excluded-timestamps CSV (``video_id, timestamp``) into ``{(video_id, second)}``."""
    path = os.fspath(path)
    text = _read_text(path, "excluded-timestamps CSV")
    out: set[tuple[str, int]] = set()
    for line_no, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != 2:
            raise ValueError(f"{path}:{line_no}: expected 2 columns (video_id, timestamp), got {len(row)}: {row!r}")
        try:
            out.add((row[0], int(row[1])))
        except ValueError:
            raise ValueError(f"{path}:{line_no}: timestamp {row[1]!r} is not an integer number of seconds") from None
    return out


class FrameList(Sequence[str]):
    """The frame paths of one video, in frame-id order, stored compactly: what ``read_frame_lists`` returns.

    A video whose paths follow AVA's pattern ``<video_id>/<video_id>_%06d.jpg`` numbered 1, 2, ... in
    frame-id order (every video of the official lists) is stored as its ``count`` alone, and each path
    is made when asked for; any other video keeps its ``paths``. Either way it reads as the list of
    paths (indexing, slicing, iteration, ``len``, ``==`` with a list), each joined to ``prefix``.

    Attributes:
        video_id: the video's id (the frame list's first column).
        count: the number of frames.
        prefix: joined in front of each path (``read_frame_lists``'s ``prefix``), or None.
        paths: the explicit paths (prefix joined), or None for the standard pattern.
    """

    __slots__ = ("video_id", "count", "prefix", "paths")

    def __init__(
        self, video_id: str, count: int, prefix: str | None = None, paths: Sequence[str] | None = None
    ) -> None:
        if paths is not None and len(paths) != count:
            raise ValueError(f"FrameList {video_id}: {len(paths)} paths for count={count}")
        self.video_id, self.count, self.prefix = video_id, int(count), prefix
        self.paths = tuple(paths) if paths is not None else None

    @property
    def standard(self) -> bool:
        """True when the paths are ``<prefix>/<video_id>/<video_id>_%06d.jpg`` from 000001 (only ``count`` stored)."""
        return self.paths is None

    @property
    def folder(self) -> str:
        """The folder of a standard list's frames: ``<prefix>/<video_id>``."""
        return os.path.join(self.prefix, self.video_id) if self.prefix is not None else self.video_id

    def path(self, index: int) -> str:
        if self.paths is not None:
            return self.paths[index]
        if not -self.count <= index < self.count:
            raise IndexError(f"FrameList {self.video_id}: frame {index} is outside its {self.count} frames")
        index %= self.count
        relative = f"{self.video_id}/{self.video_id}_{index + 1:06d}.jpg"
        return os.path.join(self.prefix, relative) if self.prefix is not None else relative

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.path(i) for i in range(*index.indices(self.count))]
        return self.path(index)

    def __iter__(self):
        if self.paths is not None:
            return iter(self.paths)
        return (self.path(i) for i in range(self.count))

    def __eq__(self, other) -> bool:
        if isinstance(other, FrameList):
            if self.standard and other.standard:
                return (self.video_id, self.count, self.prefix) == (other.video_id, other.count, other.prefix)
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        if isinstance(other, (list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        kind = "standard" if self.standard else "explicit paths"
        return f"FrameList({self.video_id!r}, count={self.count}, prefix={self.prefix!r}, {kind})"

    def __reduce__(self):
        return (FrameList, (self.video_id, self.count, self.prefix, self.paths))


class _FrameListReader:
    """One video's rows while a frame list is read: a count while they follow the pattern in order."""

    __slots__ = ("video_id", "stem", "count", "next_id", "rows")

    def __init__(self, video_id: str, first_id: int) -> None:
        self.video_id, self.stem = video_id, f"{video_id}/{video_id}_"
        self.count, self.next_id = 0, first_id
        self.rows: list[tuple[int, str]] | None = None  # (frame_id, path) once a row breaks the pattern

    def explicit(self) -> list[tuple[int, str]]:
        if self.rows is None:
            start = self.next_id - self.count
            self.rows = [(start + k, f"{self.stem}{k + 1:06d}.jpg") for k in range(self.count)]
        return self.rows

    def finish(self, prefix: str | None) -> FrameList:
        if self.rows is None:
            return FrameList(self.video_id, self.count, prefix)
        self.rows.sort(key=lambda t: t[0])  # stable: duplicates keep file order
        paths = [p for _, p in self.rows]
        stem = self.stem
        if all(p == f"{stem}{k + 1:06d}.jpg" for k, p in enumerate(paths)):  # out of file order, else standard
            return FrameList(self.video_id, len(paths), prefix)
        if prefix is not None:
            paths = [os.path.join(prefix, p) for p in paths]
        return FrameList(self.video_id, len(paths), prefix, paths)


def read_frame_lists(path: PathLike, prefix: PathLike | None = None) -> dict[str, FrameList]:
    """Read a PySlowFast frame list into ``{video_id: FrameList}``: each video's frame paths in frame-id order.

    Rows are space-separated ``original_video_id video_idx frame_id path labels`` after one header line
    (PySlowFast's ``load_image_lists``). ``prefix`` is joined in front of each path (PySlowFast's
    ``AVA.FRAME_DIR``). Videos keep their first-appearance order. Rows are ordered by frame id (stable:
    rows with the same frame id keep their file order, and each stays a frame); gaps in the ids are
    not frames (the n-th row in id order is frame index n).

    Compact: a video whose paths are ``<video_id>/<video_id>_%06d.jpg`` numbered 1, 2, ... in frame-id
    order (all of AVA's) is stored as a frame count (``FrameList.standard``), so the 6.35 M rows of
    AVA's train and val lists do not become 6.35 M strings held by every rank and loader worker. Each
    ``FrameList`` still reads as the list of paths.
    """
    path = os.fspath(path)
    join = os.fspath(prefix) if prefix is not None else None
    readers: dict[str, _FrameListReader] = {}
    numbers: list[str] = []  # numbers[k] == f"{k + 1:06d}.jpg" and ids[k] == str(k), grown as needed
    ids: list[str] = []
    # The video being read while its rows follow the pattern, in locals: the loop's fast path. Any other
    # row goes through the general path, which keeps the same state in the video's _FrameListReader.
    current: _FrameListReader | None = None
    video, stem, count, next_id = None, "", 0, 0
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"frame list not found: {path}") from None
    line_no = 1
    try:
        with f:
            next(f, None)  # the header
            for line_no, line in enumerate(f, start=2):
                row = line.split()
                if (
                    len(row) == 5
                    and row[0] == video
                    and next_id < len(ids)
                    and count < len(numbers)
                    and row[2] == ids[next_id]
                    and row[3] == stem + numbers[count]
                ):
                    count += 1
                    next_id += 1
                    continue
                if current is not None and current.rows is None:
                    current.count, current.next_id = count, next_id
                if len(row) != 5:
                    if not row:
                        continue
                    raise ValueError(
                        f"{path}:{line_no}: expected 5 space-separated columns "
                        f"(original_video_id video_idx frame_id path labels), got {len(row)}: {line.rstrip()!r}"
                    )
                try:
                    frame_id = int(row[2])
                except ValueError:
                    raise ValueError(f"{path}:{line_no}: frame_id {row[2]!r} is not an integer") from None
                current = readers.get(row[0])
                if current is None:
                    current = readers[row[0]] = _FrameListReader(row[0], frame_id)
                if current.rows is None and frame_id == current.next_id:
                    while current.count >= len(numbers):
                        numbers.extend(f"{k + 1:06d}.jpg" for k in range(len(numbers), 2 * len(numbers) + 1024))
                    if row[3] == current.stem + numbers[current.count]:
                        current.count += 1
                        current.next_id += 1
                        if 0 <= current.next_id < (1 << 22):
                            while current.next_id >= len(ids):
                                ids.extend(str(k) for k in range(len(ids), 2 * len(ids) + 1024))
                        video, stem, count, next_id = row[0], current.stem, current.count, current.next_id
                        continue
                current.explicit().append((frame_id, row[3]))
                video = None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: frame list is not UTF-8 text (after line {line_no}: {e})") from None
    if current is not None and current.rows is None:
        current.count, current.next_id = count, next_id
    return {video: reader.finish(join) for video, reader in readers.items()}


# ---------------------------------------------------------------------------------------------------------
# grouping


def group_by_keyframe(
    rows: BoxRows,
    class_ids: Sequence[int] | None = None,
    *,
    key: Literal["box", "person"] = "box",
    unknown: Literal["error", "ignore"] = "error",
    valid_seconds: tuple[int, int] | None = None,
) -> list[KeyFrame]:
    """Group box rows into key frames, one entry per target box, sorted by (video_id, timestamp).

    ``key="box"`` (the default, what ``AVADataset`` trains on) does what PySlowFast's
    ``ava_helper.parse_bboxes_file`` does: the rows of one key frame with the same box are one target,
    whatever their person ids, and its actions are the union of theirs. A box annotated under two
    person ids is therefore one target with both persons' actions, not two targets on the same box
    each with half of them. The merged target's person id is the one its rows share; -1 when they
    disagree (no single person is right, and -1 cannot be mistaken for either one), when the file
    gives none, or when the last column holds non-integer numbers (a detection file's scores).
    PySlowFast keys a box by the text of its four coordinate columns; here the parsed values are
    compared, which is the same for files that print every box the same way (AVA's do) and merges
    ``0.1`` with ``0.100`` where PySlowFast would not.

    ``key="person"`` keeps the rows of one box under different person ids apart: a target per
    (box, person id), the person id required to be an integer.

    Targets keep the order of their first row in the file (PySlowFast's dictionary order).

    Args:
        rows: from ``read_annotations`` (or ``read_detections`` with ``key="box"``): N rows, boxes
            ``[N, 4]`` normalised ``x1, y1, x2, y2``.
        class_ids: the trained classes, in column order of the multi-hot ``labels`` ``[P, C]``. An
            action id outside them is an error naming file and line (``unknown="error"``), or is left
            out of ``labels`` (``unknown="ignore"``; counted and logged; the target stays, with the
            remaining labels, possibly none). Empty action ids (-1) never count.
        key: ``"box"`` or ``"person"``, as above.
        valid_seconds: inclusive (first, last) key-frame seconds; rows outside are left out, counted and
            logged (AVA: ``AVA_VALID_SECONDS``, as PySlowFast's ``get_keyframe_data``).

    Returns:
        One ``KeyFrame`` per annotated (video_id, timestamp): ``boxes_xyxy`` ``[P, 4]``,
        ``action_ids`` (P sorted tuples), ``person_ids`` ``[P]``, ``labels`` ``[P, C]`` or None.
    """
    if key not in ("box", "person"):
        raise ValueError(f"group_by_keyframe: key must be 'box' or 'person', got {key!r}")
    if len(rows) == 0:
        return []
    n = len(rows)
    if valid_seconds is not None:
        lo, hi = valid_seconds
        keep = (rows.timestamps >= lo) & (rows.timestamps <= hi)
        dropped = int((~keep).sum())
        if dropped:
            first = int(np.flatnonzero(~keep)[0])
            logger.warning(
                "%s: %d row(s) outside the key-frame seconds %d..%d left out (first at line %d, second %d)",
                rows.path,
                dropped,
                lo,
                hi,
                int(rows.lines[first]),
                int(rows.timestamps[first]),
            )
            rows = rows.select(keep)
            n = len(rows)
            if n == 0:
                return []

    pid = rows.extra
    whole = np.isfinite(pid) & (pid == np.round(pid))  # a person id; NaN (none) or a score is not
    if key == "person":
        non_integer = np.isfinite(pid) & ~whole
        if non_integer.any():
            r = int(np.flatnonzero(non_integer)[0])
            raise ValueError(
                f"{rows.path}:{int(rows.lines[r])}: person_id {float(pid[r])!r} is not an integer "
                "(a detection file's score column? group those with key='box')"
            )
        person_key = np.where(whole, pid, -1.0)
    else:
        person_key = np.zeros(n)  # one group per box: the person id takes no part

    video_names, video_idx = np.unique(rows.video_ids, return_inverse=True)
    video_idx = video_idx.reshape(-1)
    person_of_row, first_row = _person_index(video_idx, rows.timestamps, rows.boxes_xyxy, person_key)

    col_of_row = None
    if class_ids is not None:
        col_of_row = _columns_for(rows, np.asarray(list(class_ids), dtype=np.int64), unknown)

    # Actions per target (sorted, unique, empty ids left out): one pass over rows sorted by (target, action).
    row_order = np.lexsort((rows.action_ids, person_of_row))
    actions_of: list[list[int]] = [[] for _ in range(first_row.size)]
    for p, a in zip(person_of_row[row_order].tolist(), rows.action_ids[row_order].tolist()):
        acts = actions_of[p]
        if a >= 0 and (not acts or acts[-1] != a):
            acts.append(a)
    actions = [tuple(a) for a in actions_of]

    num_classes = 0 if class_ids is None else len(class_ids)
    multi_hot = None
    if col_of_row is not None:
        multi_hot = np.zeros((first_row.size, num_classes), dtype=np.float32)
        has = col_of_row >= 0
        multi_hot[person_of_row[has], col_of_row[has]] = 1.0  # rows merged into one box: the union

    p_video = video_idx[first_row]
    p_time = rows.timestamps[first_row]
    frame_bounds = np.flatnonzero((np.diff(p_video) != 0) | (np.diff(p_time) != 0)) + 1
    starts = np.concatenate([[0], frame_bounds])
    ends = np.concatenate([frame_bounds, [first_row.size]])
    boxes = rows.boxes_xyxy[first_row]
    row_pid = np.where(whole, pid, -1).astype(np.int64)
    pids = _shared_person_ids(person_of_row, row_pid, first_row.size)
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        out.append(
            KeyFrame(
                video_id=str(video_names[p_video[s]]),
                timestamp=int(p_time[s]),
                boxes_xyxy=boxes[s:e],
                action_ids=tuple(actions[s:e]),
                person_ids=pids[s:e],
                labels=None if multi_hot is None else multi_hot[s:e],
            )
        )
    return out


def _shared_person_ids(target_of_row: np.ndarray, row_pid: np.ndarray, num_targets: int) -> np.ndarray:
    """Person id of each target ``[P]`` int64: the one all its rows carry, -1 where they differ.

    ``target_of_row`` ``[N]`` numbers the targets 0..P-1; ``row_pid`` ``[N]`` int64 holds -1 for a row
    without a person id (which then makes its target's id -1 too, unless every row lacks one).
    """
    lowest = np.full(num_targets, np.iinfo(np.int64).max, dtype=np.int64)
    highest = np.full(num_targets, np.iinfo(np.int64).min, dtype=np.int64)
    np.minimum.at(lowest, target_of_row, row_pid)
    np.maximum.at(highest, target_of_row, row_pid)
    return np.where(lowest == highest, lowest, -1)


def _person_index(
    video_idx: np.ndarray, timestamps: np.ndarray, boxes: np.ndarray, person_key: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Number the people: rows with equal (video, timestamp, box, person key) are one person.

    Returns (person index of each row [N], first row of each person [P]); people are numbered in
    (video, timestamp, first appearance in the file) order.
    """
    n = timestamps.shape[0]
    keys = (person_key, boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], timestamps, video_idx)
    order = np.lexsort(keys)
    changed = np.zeros(n, dtype=bool)
    changed[0] = True
    for k in keys:
        ks = k[order]
        changed[1:] |= ks[1:] != ks[:-1]
    group_sorted = np.cumsum(changed) - 1
    starts = np.flatnonzero(changed)
    first_row = np.minimum.reduceat(order, starts)  # earliest file row of each group
    group_of_row = np.empty(n, dtype=np.int64)
    group_of_row[order] = group_sorted
    rank_order = np.lexsort((first_row, timestamps[first_row], video_idx[first_row]))
    rank = np.empty_like(rank_order)
    rank[rank_order] = np.arange(rank_order.size)
    return rank[group_of_row], first_row[rank_order]


def _columns_for(rows: BoxRows, class_ids: np.ndarray, unknown: str) -> np.ndarray:
    """Column of each row's action id in ``class_ids``; -1 for empty or (ignored) unknown ids."""
    if unknown not in ("error", "ignore"):
        raise ValueError(f"group_by_keyframe: unknown must be 'error' or 'ignore', got {unknown!r}")
    if np.unique(class_ids).size != class_ids.size:
        raise ValueError(f"group_by_keyframe: class_ids has duplicates: {class_ids.tolist()}")
    sorter = np.argsort(class_ids)
    pos = np.searchsorted(class_ids, rows.action_ids, sorter=sorter)
    pos = np.clip(pos, 0, class_ids.size - 1) if class_ids.size else np.zeros_like(pos)
    cols = sorter[pos] if class_ids.size else np.full(len(rows), -1)
    found = class_ids[cols] == rows.action_ids if class_ids.size else np.zeros(len(rows), dtype=bool)
    empty = rows.action_ids == -1
    stray = ~found & ~empty
    if stray.any():
        r = int(np.flatnonzero(stray)[0])
        if unknown == "error":
            shown = class_ids.tolist() if class_ids.size <= 20 else f"{class_ids.size} ids"
            raise ValueError(
                f"{rows.path}:{int(rows.lines[r])}: action_id {int(rows.action_ids[r])} is not among the "
                f"classes ({shown})"
            )
        logger.info(
            "%s: %d row(s) with an action outside the %d trained classes left out of the labels "
            "(first at line %d, action %d)",
            rows.path,
            int(stray.sum()),
            class_ids.size,
            int(rows.lines[r]),
            int(rows.action_ids[r]),
        )
    return np.where(found, cols, -1)


def class_ids_in(rows: BoxRows) -> list[int]:
    """The action ids present in ``rows`` (empty ids left out), ascending."""
    ids = np.unique(rows.action_ids)
    return [int(i) for i in ids if i >= 0]


def image_key(video_id: str, timestamp: int) -> str:
    """The official evaluator's key for a key frame: ``'<video_id>,<timestamp:04d>'``."""
    return f"{video_id},{int(timestamp):04d}"


def ava_csv_line(row: tuple) -> str:
    """One AVA detection row ``(video_id, timestamp, x1, y1, x2, y2, action_id, score)`` as a CSV line (no
    newline): the timestamp in 4 digits, the box in 4 decimals, the score in 6."""
    v, s, x1, y1, x2, y2, a, sc = row
    return f"{v},{s:04d},{x1:.4f},{y1:.4f},{x2:.4f},{y2:.4f},{a},{sc:.6f}"


def write_ava_csv(path: str | os.PathLike, rows: list[tuple]) -> None:
    """Write AVA detection rows: ``video_id,timestamp(4 digits),x1,y1,x2,y2,action_id,score``."""
    from bmvit.checkpoint import atomic_write_bytes

    lines = [ava_csv_line(row) for row in rows]
    atomic_write_bytes(path, ("\n".join(lines) + ("\n" if lines else "")).encode())

__all__ = [
    "AVA_V22_CLASS_IDS",
    "AVA_VALID_SECONDS",
    "BoxRows",
    "FrameList",
    "KeyFrame",
    "ava_csv_line",
    "class_ids_in",
    "group_by_keyframe",
    "image_key",
    "read_annotations",
    "read_detections",
    "read_exclusions",
    "read_frame_lists",
    "read_label_map",
    "write_ava_csv",
]
