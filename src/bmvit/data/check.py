"""Checks of an AVA-layout dataset root before training on it (``bmvit data check ROOT``).

What is checked, each problem named by file, line, video and frame (``docs/data_check.md``):

1. clips: every annotated key frame of train and val (within the valid seconds, 902..1798 on AVA)
   has every frame its ``T x stride`` clip needs: frame files present and non-empty, or a video file
   long enough; a sample of frames (all of them with ``decode=True``) is decoded.
2. videos: frame count and frame rate of each video against the cut AVA annotates (seconds
   900..1800 at 30 fps, 27001 frames); a count that fits another rate is called out ("25 fps?").
3. annotations: boxes in [0, 1] with x1 < x2 and y1 < y2, duplicate rows, seconds outside the valid
   range, empty action ids, rows the reader cannot parse.
4. label map: AVA's 60-class evaluation list, the 80-class full list (the classic mistake), or a
   custom one; the classes of the train CSV against it.
5. exclusions that cannot match a val key frame.
6. frame lists: paths that do not exist, annotated videos they leave out.

Speed: a frame folder is read with one directory listing and its names are parsed once; only the
frames some clip needs are stat-ed (for their size) and only a sample is decoded. Everything per key
frame is numpy over arrays. ``quick_check`` runs the cheap part (files, label map, rows, media present)
for ``bmvit train`` to call at start-up.

Nothing here imports torch: the readers of ``bmvit.data.ava`` are numpy only, and PyAV / Pillow are
imported where a video or an image is opened.
"""

from __future__ import annotations

import bisect
import csv
import functools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np

from bmvit.data.ava import AVA_VALID_SECONDS, BoxRows, class_ids_in, read_annotations, read_label_map

if TYPE_CHECKING:
    from bmvit.config import DataConfig

Level = Literal["OK", "WARNING", "ERROR"]

SECTIONS = ("files", "label map", "annotations", "videos", "clips", "exclusions", "frame lists")
"""Report sections, in the order they are printed."""

AVA_FPS = 30.0
AVA_CUT_SECONDS = (900, 1800)
"""The part of each movie AVA annotates; a prepared video starts at second 900 (its time 0)."""
AVA_EXPECTED_FRAMES = round((AVA_CUT_SECONDS[1] - AVA_CUT_SECONDS[0]) * AVA_FPS) + 1
"""Frames of a prepared AVA video at 30 fps: 27001 (frame 000001 is second 900)."""

OTHER_RATES = (23.976, 24.0, 25.0, 50.0, 59.94, 60.0)
"""Extraction rates a wrong frame count is matched against (29.97 is left out: it is too close to 30
to tell from a video that is a second short)."""

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
"""Same list as ``bmvit.data.dataset.VIDEO_EXTENSIONS`` (not imported from there: that module needs torch)."""

DEFAULT_DECODE_SAMPLE = 2
"""Frames decoded per video when neither ``decode`` nor another sample size is asked for: the first and
the last frame the clips need (a truncated extraction usually breaks the last one)."""

_FRAME_DIGITS = 6  # the loader's name pattern is <video>_%06d.jpg


# ---------------------------------------------------------------------------------------------------------
# report


@dataclass(frozen=True)
class Finding:
    """One line of the report.

    Attributes:
        level: OK, WARNING or ERROR.
        section: one of ``SECTIONS``.
        code: a short stable name of the kind of finding (``missing_frame``, ``box_out_of_range``...).
        message: the line as printed: names the file and the problem.
        file, line, video, frame: where, when known (``frame`` is the 1-based frame number).
    """

    level: Level
    section: str
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    video: str | None = None
    frame: int | None = None


@dataclass
class CheckReport:
    """Findings of a check, grouped by section when printed; ``exit_code`` is 1 when any is an ERROR."""

    root: str
    findings: list[Finding] = field(default_factory=list)
    facts: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0
    max_per_code: int = 20

    def add(self, level: Level, section: str, code: str, message: str, **where) -> None:
        """Append a finding; ``where`` takes ``file``, ``line``, ``video``, ``frame``."""
        if section not in SECTIONS:
            raise ValueError(f"unknown report section {section!r}")
        self.findings.append(Finding(level, section, code, message, **where))

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "ERROR"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "WARNING"]

    @property
    def exit_code(self) -> int:
        """1 with errors, 0 with warnings only or none."""
        return 1 if self.errors else 0

    def codes(self, level: Level | None = None) -> set[str]:
        """The codes of the findings (of one level)."""
        return {f.code for f in self.findings if level is None or f.level == level}

    def find(self, code: str) -> list[Finding]:
        """The findings of one code."""
        return [f for f in self.findings if f.code == code]

    def to_text(self) -> str:
        """The report as printed: a header, one block per section, a summary line."""
        lines = [f"bmvit data check: {self.root}"]
        lines += [f"  {key}: {value}" for key, value in self.facts.items() if not key.startswith("_")]
        for section in SECTIONS:
            items = [f for f in self.findings if f.section == section]
            if not items:
                continue
            lines += ["", section]
            shown: Counter[tuple[str, str]] = Counter()
            for f in items:
                shown[(f.level, f.code)] += 1
                if shown[(f.level, f.code)] <= self.max_per_code:
                    lines.append(f"  {f.level:<8} {f.message}")
            for (level, code), n in shown.items():
                if n > self.max_per_code:
                    lines.append(f"  {level:<8} ... and {n - self.max_per_code} more {code} finding(s) (all in --json)")
        lines += ["", self.summary()]
        return "\n".join(lines)

    def summary(self) -> str:
        """One line: counts and the verdict."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        verdict = "NOT ready to train" if n_err else "ready to train"
        return (
            f"summary: {n_err} error(s), {n_warn} warning(s) in {self.seconds:.1f} s: {verdict} "
            f"(exit {self.exit_code})"
        )

    def to_dict(self) -> dict:
        """The report as JSON-ready data: every finding, by section."""
        return {
            "root": self.root,
            "exit_code": self.exit_code,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "seconds": round(self.seconds, 3),
            "facts": {k.lstrip("_"): v for k, v in self.facts.items()},
            "sections": {
                s: [
                    {k: v for k, v in vars(f).items() if v is not None and k != "section"}
                    for f in self.findings
                    if f.section == s
                ]
                for s in SECTIONS
            },
        }


# ---------------------------------------------------------------------------------------------------------
# what to check and where


@dataclass(frozen=True)
class CheckOptions:
    """How ``check_dataset`` checks.

    Attributes:
        num_frames, stride: the clip (T frames, ``stride`` frames apart on the ``fps`` timeline).
        fps: the rate of the frame timeline (AVA's frames: 30).
        time_offset: the second of the movie at video time 0 (AVA: 900).
        valid_seconds: inclusive key-frame seconds (AVA: 902..1798); rows outside are not key frames.
        expected_frames: frames of a complete video on the ``fps`` timeline (AVA: 27001); None: the
            most common count among the checked videos (for datasets of another length).
        source: "frames", "video", or "auto" (every one of frames/ and videos/ that exists).
        sizes: stat the frame files clips need to find empty ones (about half the time of a folder).
        decode: decode every frame a clip needs (frame folders) or every frame (video files).
        decode_sample: without ``decode``, frames (folders) or clips (video files) decoded per video.
        max_listed: problems named per video (or per file for CSV rows) before a count.
        workers: threads reading folders and files (directory listings and decoding wait on I/O).
        media: False: only whether each annotated video has a frame folder or a file (``quick_check``).
    """

    num_frames: int = 16
    stride: int = 4
    fps: float = AVA_FPS
    time_offset: float = float(AVA_CUT_SECONDS[0])
    valid_seconds: tuple[int, int] = AVA_VALID_SECONDS
    expected_frames: int | None = AVA_EXPECTED_FRAMES
    source: Literal["auto", "frames", "video"] = "auto"
    sizes: bool = True
    decode: bool = False
    decode_sample: int = DEFAULT_DECODE_SAMPLE
    max_listed: int = 5
    workers: int = 4
    media: bool = True

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {self.num_frames} and {self.stride}")
        if self.source not in ("auto", "frames", "video"):
            raise ValueError(f"source must be auto, frames or video, got {self.source!r}")
        if self.expected_frames is not None and self.expected_frames < 1:
            raise ValueError(f"expected_frames must be >= 1 (or None), got {self.expected_frames}")
        if self.decode_sample < 0 or self.max_listed < 1 or self.workers < 1:
            raise ValueError("decode_sample must be >= 0, max_listed and workers >= 1")


@dataclass(frozen=True)
class AvaLayout:
    """The files of an AVA-layout root (``AVADataset``'s layout); ``exclusions`` None: none configured."""

    root: str
    train_csv: str
    val_csv: str
    label_map: str
    exclusions: str | None
    frames_dir: str
    videos_dir: str
    frame_lists: dict[str, str]
    short_names: bool = True  # name files relative to the root in messages

    @classmethod
    def from_root(
        cls,
        root: str | os.PathLike,
        *,
        train_csv: str = "annotations/ava_train_v2.2.csv",
        val_csv: str = "annotations/ava_val_v2.2.csv",
        label_map: str = "annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt",
        exclusions: str | None = "annotations/ava_val_excluded_timestamps_v2.2.csv",
    ) -> AvaLayout:
        """Paths relative to ``root`` (absolute ones are kept); the defaults are ``DataConfig``'s."""
        root = os.fspath(root)
        return cls(
            root=root,
            train_csv=os.path.join(root, train_csv),
            val_csv=os.path.join(root, val_csv),
            label_map=os.path.join(root, label_map),
            exclusions=os.path.join(root, exclusions) if exclusions else None,
            frames_dir=os.path.join(root, "frames"),
            videos_dir=os.path.join(root, "videos"),
            frame_lists={s: os.path.join(root, "frame_lists", f"{s}.csv") for s in ("train", "val")},
        )

    @classmethod
    def from_config(cls, data: DataConfig) -> AvaLayout:
        """The files a run with this ``DataConfig`` reads."""
        return cls.from_root(
            data.root,
            train_csv=data.ava.train_csv,
            val_csv=data.ava.val_csv,
            label_map=data.ava.label_map,
            exclusions=data.ava.exclusions or None,
        )

    def csv(self, split: str) -> str:
        return self.train_csv if split == "train" else self.val_csv

    def rel(self, path: str) -> str:
        """``path`` relative to the root when inside it and ``short_names`` (shorter report lines)."""
        if not self.short_names:
            return path
        try:
            rel = os.path.relpath(path, self.root)
        except ValueError:  # another drive (Windows)
            return path
        return path if rel.startswith("..") else rel


# ---------------------------------------------------------------------------------------------------------
# entry points


def check_dataset(
    root: str | os.PathLike, options: CheckOptions | None = None, layout: AvaLayout | None = None
) -> CheckReport:
    """Check an AVA-layout root and return the report (``report.exit_code``: 1 on errors)."""
    start = time.perf_counter()
    options = options or CheckOptions()
    layout = layout or AvaLayout.from_root(root)
    report = CheckReport(layout.root, max_per_code=max(20, options.max_listed))
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    sources = _sources(layout, options, report)
    _note_options(report, options, sources)
    _check_files(layout, report)
    rows = timed("annotations", _read_all_rows, layout, options, report)
    label_map = timed("label map", _check_label_map, layout, rows, report)
    for split, split_rows in rows.items():
        if split_rows is not None:
            _check_rows(split_rows, split, label_map, layout, options, report)
    keys = _collect_keyframes(rows, options)
    report.facts["key frames"] = _describe_keyframes(rows, keys, options)
    report.facts["boxes under several person ids"] = _describe_shared_boxes(rows, options, report)
    folders: dict[str, _Folder] = {}
    if "frames" in sources:
        folders = timed("frame folders", _check_frame_folders, layout, keys, options, report)
    if "video" in sources:
        timed("video files", _check_video_files, layout, keys, options, report)
    if options.media:
        _check_exclusions(layout, rows.get("val"), options, report)
        if "frames" in sources:
            timed("frame lists", _check_frame_lists, layout, rows, folders, options, report)
    report.facts["_timings_s"] = timings
    report.seconds = time.perf_counter() - start
    _video_index.cache_clear()  # the rows are not kept past the check
    return report


def quick_check(data: DataConfig) -> list[str]:
    """The cheap checks, for ``bmvit train`` at start-up: one line per problem that would stop or spoil training.

    Covers: the annotation files and the label map exist and parse; the label map's classes occur in the
    train CSV; boxes are in [0, 1] with x1 < x2, y1 < y2 and rows parse (unless ``data.skip_bad``, with
    which the loader skips such rows); every annotated video has its frame folder (``data.source ==
    "frames"``) or video file (``"video"``). No frame folder is listed and no file decoded. Warnings (the
    80-class label map, duplicate rows...) are not returned: ``bmvit data check`` prints them.

    Returns:
        The error lines, each naming the file and the problem; empty when the data looks usable, and
        always empty for ``data.format`` other than "ava".
    """
    if data.format != "ava":
        return []
    if not data.root or not os.path.isdir(data.root):
        return [f"data.root {data.root!r} is not a directory"]
    options = CheckOptions(
        stride=data.sampling_stride,
        fps=data.fps,
        time_offset=data.ava.time_offset,
        valid_seconds=AVA_VALID_SECONDS,
        source="frames" if data.source == "frames" else "video",
        media=False,
    )
    report = check_dataset(data.root, options, replace(AvaLayout.from_config(data), short_names=False))
    skipped_by_loader = {"bad_row", "box_out_of_range"} if data.skip_bad else set()
    return [f.message for f in report.errors if f.code not in skipped_by_loader]


# ---------------------------------------------------------------------------------------------------------
# files


def _sources(layout: AvaLayout, options: CheckOptions, report: CheckReport) -> list[str]:
    """The media to check: frames and/or video."""
    have = {"frames": os.path.isdir(layout.frames_dir), "video": os.path.isdir(layout.videos_dir)}
    wanted = [options.source] if options.source != "auto" else [s for s in ("frames", "video") if have[s]]
    for source in wanted:
        if not have[source]:
            folder = layout.frames_dir if source == "frames" else layout.videos_dir
            report.add("ERROR", "files", "missing_media_dir",
                       f"{layout.rel(folder)}/: no such folder (source={source})", file=folder)
    if not wanted:
        report.add("ERROR", "files", "missing_media_dir",
                   f"{layout.root}: neither frames/ nor videos/ exists: nothing to train on")
    return [s for s in wanted if have[s]]


def _note_options(report: CheckReport, options: CheckOptions, sources: list[str]) -> None:
    report.facts["media"] = ", ".join(f"{s} ({'frames/' if s == 'frames' else 'videos/'})" for s in sources) or "none"
    expected = options.expected_frames if options.expected_frames is not None else "the most common count"
    report.facts["clips"] = (
        f"{options.num_frames}x{options.stride} at {options.fps:g} fps, key frames at seconds "
        f"{options.valid_seconds[0]}..{options.valid_seconds[1]}, {expected} frames expected per video"
    )
    if options.media:
        decode = "every needed frame" if options.decode else f"{options.decode_sample} per video"
        report.facts["decoded"] = decode + ("" if options.sizes else "; frame sizes not checked (--no-sizes)")


def _check_files(layout: AvaLayout, report: CheckReport) -> None:
    needed = (("train annotations", layout.train_csv), ("val annotations", layout.val_csv),
              ("label map", layout.label_map))
    for what, path in needed:
        if os.path.isfile(path):
            report.add("OK", "files", "file_present", f"{layout.rel(path)}: {what}", file=path)
        else:
            report.add("ERROR", "files", "missing_file", f"{layout.rel(path)}: {what} not found", file=path)
    if layout.exclusions is None:
        report.add("OK", "files", "no_exclusions", "no excluded-timestamps file configured: no val key frame excluded")
    elif os.path.isfile(layout.exclusions):
        report.add("OK", "files", "file_present", f"{layout.rel(layout.exclusions)}: excluded val timestamps",
                   file=layout.exclusions)
    else:
        report.add("WARNING", "files", "missing_exclusions",
                   f"{layout.rel(layout.exclusions)} not found: no val key frame is excluded, so detections at "
                   "AVA's unannotated (excluded) seconds count as false positives", file=layout.exclusions)


# ---------------------------------------------------------------------------------------------------------
# annotation rows


def _read_all_rows(layout: AvaLayout, options: CheckOptions, report: CheckReport) -> dict[str, BoxRows | None]:
    return {split: _read_rows(layout.csv(split), layout, options, report) for split in ("train", "val")}


@contextmanager
def _collect_log(name: str) -> Iterator[list[logging.LogRecord]]:
    """Records logged on ``name`` while the block runs, kept from the console."""
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger(name)
    handler, saved = _Keep(logging.DEBUG), (log.level, log.propagate)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


def _read_rows(path: str, layout: AvaLayout, options: CheckOptions, report: CheckReport) -> BoxRows | None:
    """All readable rows of a box CSV; each unreadable row becomes an ERROR naming its line."""
    if not os.path.isfile(path):
        return None
    with _collect_log("bmvit.data") as records:
        try:
            rows = read_annotations(path, check_boxes=False, skip_bad=True)
        except (ValueError, OSError) as e:
            report.add("ERROR", "annotations", "unreadable_file", _naming(e, path, layout), file=path)
            return None
    if rows.skipped:
        messages = [r.args[0] for r in records if r.msg == "skipping %s" and r.args]
        bad_lines = _skipped_lines(path, rows)
        for i, line in enumerate(bad_lines[: options.max_listed]):
            text = messages[i] if i < len(messages) else f"{path}:{line}: malformed row"
            report.add("ERROR", "annotations", "bad_row", text.replace(path, layout.rel(path), 1), file=path,
                       line=line)
        if len(bad_lines) > options.max_listed:
            report.add("ERROR", "annotations", "bad_row",
                       f"{layout.rel(path)}: ... and {len(bad_lines) - options.max_listed} more rows the reader "
                       f"cannot parse; {len(bad_lines)} in all", file=path)
    return rows


def _skipped_lines(path: str, rows: BoxRows) -> list[int]:
    """Line numbers of the non-blank lines the reader skipped."""
    with open(path, encoding="utf-8", newline="") as f:
        nonblank = [i for i, ln in enumerate(f.read().splitlines(), start=1) if ln.strip()]
    return sorted(set(nonblank) - set(rows.lines.tolist()))


def _add_row_findings(
    report: CheckReport,
    level: Level,
    code: str,
    rows: BoxRows,
    picked: np.ndarray,
    describe: Callable[[int], str],
    layout: AvaLayout,
    options: CheckOptions,
    what: str,
) -> None:
    """Rows ``picked`` (indices into ``rows``): the first ``max_listed`` one line each, then one line with the count."""
    for r in picked[: options.max_listed].tolist():
        report.add(level, "annotations", code, describe(r), file=rows.path, line=int(rows.lines[r]))
    rest = len(picked) - options.max_listed
    if rest > 0:
        report.add(level, "annotations", code, f"{layout.rel(rows.path)}: ... and {rest} more {what}; "
                   f"{len(picked)} in all", file=rows.path)


def _check_rows(
    rows: BoxRows, split: str, label_map: dict[int, str] | None, layout: AvaLayout, options: CheckOptions,
    report: CheckReport,
) -> None:
    path, rel = rows.path, layout.rel(rows.path)
    if len(rows) == 0:
        report.add("ERROR", "annotations", "no_rows", f"{rel}: no annotation rows", file=path)
        return
    _check_boxes(rows, layout, options, report)
    _check_seconds(rows, layout, options, report)
    _check_duplicates(rows, layout, options, report)
    _check_repeated_actions(rows, layout, options, report)
    _add_row_findings(report, "WARNING", "empty_action", rows, np.flatnonzero(rows.action_ids < 0),
                      lambda r: f"{rel}:{rows.lines[r]}: empty action_id (a person-box file, not annotations?)",
                      layout, options, "rows without an action id")
    if label_map:
        _check_action_ids(rows, split, label_map, layout, report)
    videos = _video_index(rows)[0].size
    report.add("OK", "annotations", "rows_read",
               f"{rel}: {len(rows):,} rows, {videos} videos, {len(class_ids_in(rows))} action classes", file=path)


def _describe_box(box: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):g}" for v in box) + ")"


def _check_boxes(rows: BoxRows, layout: AvaLayout, options: CheckOptions, report: CheckReport) -> None:
    boxes = rows.boxes_xyxy
    with np.errstate(invalid="ignore"):
        outside = ((boxes < 0.0) | (boxes > 1.0)).any(axis=1)
        inverted = ~outside & ((boxes[:, 0] >= boxes[:, 2]) | (boxes[:, 1] >= boxes[:, 3]))
    rel = layout.rel(rows.path)

    def describe(r: int) -> str:
        problem = "is outside [0, 1] (boxes are normalised to the frame)" if outside[r] else "has x1 >= x2 or y1 >= y2"
        return (f"{rel}:{rows.lines[r]}: video {rows.video_ids[r]}, second {rows.timestamps[r]}: box x1, y1, x2, y2 = "
                f"{_describe_box(boxes[r])} {problem}")

    _add_row_findings(report, "ERROR", "box_out_of_range", rows, np.flatnonzero(outside | inverted), describe,
                      layout, options, "rows with a box outside [0, 1] or inverted")


def _check_seconds(rows: BoxRows, layout: AvaLayout, options: CheckOptions, report: CheckReport) -> None:
    lo, hi = options.valid_seconds
    rel = layout.rel(rows.path)
    _add_row_findings(
        report, "WARNING", "second_out_of_range", rows, np.flatnonzero((rows.timestamps < lo) | (rows.timestamps > hi)),
        lambda r: (f"{rel}:{rows.lines[r]}: video {rows.video_ids[r]}: second {rows.timestamps[r]} is outside the "
                   f"key-frame seconds {lo}..{hi}: the row is left out of training and evaluation"),
        layout, options, f"rows outside the seconds {lo}..{hi}")


def _check_duplicates(rows: BoxRows, layout: AvaLayout, options: CheckOptions, report: CheckReport) -> None:
    """Rows equal in every field to an earlier row (compared as parsed: 0902 and 902 are equal)."""
    video = _video_index(rows)[1]
    person = np.where(np.isfinite(rows.extra), rows.extra, -1e18)
    keys = (rows.lines, person, rows.action_ids, *(rows.boxes_xyxy[:, k] for k in (3, 2, 1, 0)), rows.timestamps,
            video)
    order = np.lexsort(keys)
    same = np.ones(len(rows) - 1, dtype=bool)
    for k in keys[1:]:  # every field but the line number
        ks = k[order]
        same &= ks[1:] == ks[:-1]
    dup_pos = np.flatnonzero(same) + 1
    if dup_pos.size == 0:
        return
    group_start = np.maximum.accumulate(np.where(np.concatenate([[True], ~same]), np.arange(len(rows)), 0))
    original = {int(order[p]): int(order[group_start[p]]) for p in dup_pos.tolist()}  # duplicate row -> first row
    rel = layout.rel(rows.path)

    def describe(r: int) -> str:
        return (f"{rel}:{rows.lines[r]}: duplicate of line {rows.lines[original[r]]} (video {rows.video_ids[r]}, "
                f"second {rows.timestamps[r]}, action {rows.action_ids[r]})")

    _add_row_findings(report, "WARNING", "duplicate_row", rows, np.sort(order[dup_pos]), describe, layout, options,
                      "duplicate rows (the evaluator counts a duplicate ground-truth box as a second person)")


def _check_repeated_actions(rows: BoxRows, layout: AvaLayout, options: CheckOptions, report: CheckReport) -> None:
    """A box of a key frame given the same action under a second person id: training merges the rows into
    one target (as PySlowFast), but the evaluator reads each (box, action, person) row as a ground-truth
    box, so the second is a person nobody can detect, as with a duplicated row."""
    video = _video_index(rows)[1]
    person = np.where(np.isfinite(rows.extra), rows.extra, -1e18)
    group_keys = (rows.action_ids, *(rows.boxes_xyxy[:, k] for k in (3, 2, 1, 0)), rows.timestamps, video)
    order = np.lexsort((rows.lines, person, *group_keys))
    new_group = np.zeros(order.size, dtype=bool)
    new_group[0] = True
    for k in group_keys:
        ks = k[order]
        new_group[1:] |= ks[1:] != ks[:-1]
    new_person = new_group.copy()
    new_person[1:] |= person[order][1:] != person[order][:-1]
    flagged = order[new_person & ~new_group]  # the first row of each further person id in a group
    if flagged.size == 0:
        return
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(order.size), 0))
    first = {int(order[i]): int(order[group_start[i]]) for i in np.flatnonzero(new_person & ~new_group).tolist()}
    rel = layout.rel(rows.path)

    def describe(r: int) -> str:
        f = first[r]
        return (f"{rel}:{rows.lines[r]}: the box of line {rows.lines[f]} (video {rows.video_ids[r]}, second "
                f"{rows.timestamps[r]}) has action {rows.action_ids[r]} again, under person id "
                f"{_person_text(rows.extra[r])} after {_person_text(rows.extra[f])}")

    _add_row_findings(report, "WARNING", "repeated_action", rows, np.sort(flagged), describe, layout, options,
                      "actions repeated on one box under another person id (the evaluator counts a second "
                      "ground-truth box there, which nothing can match)")


def _person_text(value: float) -> str:
    return str(int(value)) if np.isfinite(value) and value == round(value) else "(none)"


def _check_action_ids(
    rows: BoxRows, split: str, label_map: dict[int, str], layout: AvaLayout, report: CheckReport
) -> None:
    ids = rows.action_ids
    stray = (ids >= 0) & ~np.isin(ids, np.fromiter(label_map, dtype=np.int64))
    if not stray.any():
        return
    stray_ids = sorted(set(ids[stray].tolist()))
    first = int(np.flatnonzero(stray)[0])
    rel, where = layout.rel(rows.path), f"first at line {rows.lines[first]}"
    shown = _listing([str(i) for i in stray_ids], 12)
    if _is_ava_eval_map(label_map) and all(1 <= i <= 80 for i in stray_ids):
        note = ("trained on, not evaluated" if split == "train"
                else "the evaluator leaves them out, as AVA intends")
        report.add("OK", "annotations", "not_evaluated_ids",
                   f"{rel}: {int(stray.sum()):,} rows have AVA actions outside the 60 evaluated ({shown}): {note}",
                   file=rows.path)
        return
    report.add("WARNING", "annotations", "unknown_action_id",
               f"{rel}: {int(stray.sum()):,} rows have action ids missing from the label map ({shown}; {where}): "
               f"{'they are trained but never evaluated' if split == 'train' else 'they are not evaluated'}; "
               "wrong label map?", file=rows.path, line=int(rows.lines[first]))


# ---------------------------------------------------------------------------------------------------------
# label map


def _ava_eval_ids() -> frozenset[int]:
    from bmvit.data.ava import AVA_V22_CLASS_IDS

    return frozenset(AVA_V22_CLASS_IDS)


def _is_ava_eval_map(label_map: dict[int, str]) -> bool:
    return set(label_map) == _ava_eval_ids()


def _is_ava_full_map(label_map: dict[int, str]) -> bool:
    return set(label_map) == set(range(1, 81))


def describe_label_map(label_map: dict[int, str]) -> tuple[Level, str, str]:
    """(level, code, words) saying which list a label map is: AVA's 60, AVA's 80, or its own."""
    n = len(label_map)
    if _is_ava_eval_map(label_map):
        return "OK", "label_map_ava60", (
            "label map has the 60 classes of AVA v2.2's evaluation list "
            "(ava_action_list_v2.2_for_activitynet_2019.pbtxt), as the official evaluation uses")
    if _is_ava_full_map(label_map):
        return "WARNING", "label_map_ava80", (
            "label map has 80 classes: this is the full AVA list (ava_action_list_v2.2.pbtxt); the official "
            "evaluation uses the 60-class ava_action_list_v2.2_for_activitynet_2019.pbtxt, and an mAP over 80 "
            "classes cannot be compared with published AVA results")
    if n == 60 and set(label_map) <= set(range(1, 81)):
        missing = sorted(_ava_eval_ids() - set(label_map))
        return "WARNING", "label_map_ava60_other", (
            f"label map has 60 AVA ids but not the official 60 (it lacks {_listing([str(i) for i in missing], 8)})")
    return "OK", "label_map_custom", f"label map has {n} classes (not an AVA list: a dataset of its own)"


def _check_label_map(
    layout: AvaLayout, rows: dict[str, BoxRows | None], report: CheckReport
) -> dict[int, str] | None:
    path, rel = layout.label_map, layout.rel(layout.label_map)
    if not os.path.isfile(path):
        return None
    try:
        label_map = read_label_map(path)
    except ValueError as e:
        report.add("ERROR", "label map", "bad_label_map", _naming(e, path, layout), file=path)
        return None
    level, code, words = describe_label_map(label_map)
    report.add(level, "label map", code, f"{rel}: {words}", file=path)
    ava_like = _is_ava_eval_map(label_map) or _is_ava_full_map(label_map)
    train, val = rows.get("train"), rows.get("val")
    if train is not None and len(train):
        _check_train_classes(label_map, train, ava_like, layout, report)
    if val is not None and len(val):
        absent = sorted(set(label_map) - set(class_ids_in(val)))
        if absent:
            report.add("WARNING", "label map", "class_not_in_val",
                       f"{rel}: {len(absent)} evaluated class(es) have no row in {layout.rel(val.path)} "
                       f"({_listing([str(i) for i in absent], 10)}): their AP is undefined", file=path)
    return label_map


def _check_train_classes(
    label_map: dict[int, str], train: BoxRows, ava_like: bool, layout: AvaLayout, report: CheckReport
) -> None:
    trained = class_ids_in(train)
    rel_train = layout.rel(train.path)
    if ava_like and len(trained) != 80:
        report.add("WARNING", "label map", "train_classes",
                   f"{rel_train} has {len(trained)} action classes; AVA v2.2 trains on all 80: is the train CSV "
                   "complete?", file=train.path)
    else:
        note = ": AVA's 80, right for training" if ava_like else ""
        report.add("OK", "label map", "train_classes",
                   f"{rel_train} has {len(trained)} action classes, the model trains on all of them{note}",
                   file=train.path)
    untrained = sorted(set(label_map) - set(trained))
    if untrained:
        names = [f"{i} {label_map[i]!r}" for i in untrained]
        report.add("WARNING", "label map", "class_not_trained",
                   f"{layout.rel(layout.label_map)}: {len(untrained)} evaluated class(es) never occur in {rel_train} "
                   f"({_listing(names, 6)}): the model cannot learn them, so their AP will be 0",
                   file=layout.label_map)


# ---------------------------------------------------------------------------------------------------------
# key frames


@dataclass(frozen=True)
class _VideoKeys:
    """The key frames of one video: seconds ascending, and where each is first annotated."""

    seconds: np.ndarray
    files: np.ndarray  # index into the layout's CSVs: 0 train, 1 val
    lines: np.ndarray

    def name(self, k: int, layout: AvaLayout) -> str:
        path = layout.train_csv if self.files[k] == 0 else layout.val_csv
        return f"key frame {self.seconds[k]}, {layout.rel(path)}:{self.lines[k]}"


def _collect_keyframes(rows: dict[str, BoxRows | None], options: CheckOptions) -> dict[str, _VideoKeys]:
    """Video id -> its key frames (rows within the valid seconds), train and val together."""
    lo, hi = options.valid_seconds
    parts = []
    for file_index, split in enumerate(("train", "val")):
        r = rows.get(split)
        if r is None or not len(r):
            continue
        keep = (r.timestamps >= lo) & (r.timestamps <= hi)
        parts.append((r.video_ids[keep], r.timestamps[keep], np.full(int(keep.sum()), file_index), r.lines[keep]))
    if not parts:
        return {}
    vids, secs, files, lines = (np.concatenate([p[i] for p in parts]) for i in range(4))
    names, vidx = np.unique(vids, return_inverse=True)
    vidx = vidx.reshape(-1)
    order = np.lexsort((lines, files, secs, vidx))
    vidx, secs, files, lines = vidx[order], secs[order], files[order], lines[order]
    first = np.ones(vidx.size, dtype=bool)
    first[1:] = (vidx[1:] != vidx[:-1]) | (secs[1:] != secs[:-1])
    vidx, secs, files, lines = vidx[first], secs[first], files[first], lines[first]
    bounds = np.flatnonzero(np.diff(vidx)) + 1
    out = {}
    for s, e in zip(np.concatenate([[0], bounds]).tolist(), np.concatenate([bounds, [vidx.size]]).tolist()):
        out[str(names[vidx[s]])] = _VideoKeys(secs[s:e], files[s:e], lines[s:e])
    return out


def _describe_keyframes(rows: dict[str, BoxRows | None], keys: dict[str, _VideoKeys], options: CheckOptions) -> str:
    lo, hi = options.valid_seconds
    parts = []
    for split in ("train", "val"):
        r = rows.get(split)
        if r is not None and len(r):
            valid = (r.timestamps >= lo) & (r.timestamps <= hi)
            video = _video_index(r)[1]
            pairs = np.unique(video[valid] * (hi - lo + 1) + (r.timestamps[valid] - lo)).size
            parts.append(f"{pairs:,} {split}")
    return f"{', '.join(parts) or 'none'} in {len(keys)} videos"


def _describe_shared_boxes(rows: dict[str, BoxRows | None], options: CheckOptions, report: CheckReport) -> str:
    """Per split: boxes of a key frame annotated under more than one person id, and their key frames.

    Training groups a key frame's rows by box (``group_by_keyframe``'s default, as PySlowFast), so
    each such box is one target with the actions of all its person ids. The counts also go to
    ``report.facts["_shared_boxes"]`` (``{split: {"key_frames", "boxes", "all_key_frames", "all_boxes"}}``).
    """
    parts, counts = [], {}
    for split in ("train", "val"):
        r = rows.get(split)
        if r is None or not len(r):
            continue
        frames, boxes, all_frames, all_boxes = _count_shared_boxes(r, options.valid_seconds)
        counts[split] = {"key_frames": frames, "boxes": boxes, "all_key_frames": all_frames, "all_boxes": all_boxes}
        parts.append(f"{split} {boxes:,} of {all_boxes:,} boxes in {frames:,} of {all_frames:,} key frames")
    report.facts["_shared_boxes"] = counts
    if not parts:
        return "none"
    return ", ".join(parts) + " (each trained as one target with the actions of all its ids, as PySlowFast)"


def _count_shared_boxes(rows: BoxRows, valid_seconds: tuple[int, int]) -> tuple[int, int, int, int]:
    """(key frames, boxes) annotated under more than one person id, then all (key frames, boxes).

    Only rows within ``valid_seconds`` count (the others are no key frame). Boxes are compared as
    parsed values, as ``group_by_keyframe`` does; a missing or non-integer person id counts as one
    more id (-1), so a box given once with and once without an id is counted.
    """
    lo, hi = valid_seconds
    keep = (rows.timestamps >= lo) & (rows.timestamps <= hi)
    if not keep.any():
        return 0, 0, 0, 0
    video = _video_index(rows)[1][keep]
    seconds = rows.timestamps[keep]
    boxes = rows.boxes_xyxy[keep]
    pid = rows.extra[keep]
    person = np.where(np.isfinite(pid) & (pid == np.round(pid)), pid, -1.0)
    frame_keys = (seconds, video)
    box_keys = (boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0])
    order = np.lexsort((person, *box_keys, *frame_keys))

    def starts(keys: Sequence[np.ndarray]) -> np.ndarray:
        """[M] bool: the sorted row starts a new run of ``keys``."""
        new = np.zeros(order.size, dtype=bool)
        new[0] = True
        for k in keys:
            ks = k[order]
            new[1:] |= ks[1:] != ks[:-1]
        return new

    new_frame = starts(frame_keys)
    new_box = new_frame | starts(box_keys)
    new_person = new_box | starts((person,))
    box_of_row = np.cumsum(new_box) - 1
    ids_per_box = np.bincount(box_of_row, weights=new_person)  # distinct person ids of each box
    frame_of_box = (np.cumsum(new_frame) - 1)[new_box]
    shared = ids_per_box > 1
    return (int(np.unique(frame_of_box[shared]).size), int(shared.sum()), int(new_frame.sum()),
            int(new_box.sum()))


@functools.lru_cache(maxsize=4)
def _video_index(rows: BoxRows) -> tuple[np.ndarray, np.ndarray]:
    """(sorted video ids, index of each row's video): one sort of the id strings per file."""
    names, index = np.unique(rows.video_ids, return_inverse=True)
    return names, index.reshape(-1).astype(np.int64)


def clip_frame_indices(centers: np.ndarray, num_frames: int, stride: int, length: int) -> np.ndarray:
    """0-based frame indices ``[K, T]`` of the clips centred on ``centers``, clamped to ``[0, length - 1]``.

    The loader's sampling (``video.clip_indices``) for many key frames at once.
    """
    start = np.asarray(centers, dtype=np.int64) - (num_frames * stride) // 2
    idx = start[:, None] + stride * np.arange(num_frames, dtype=np.int64)[None, :]
    return np.clip(idx, 0, max(0, length - 1))


def _centers(seconds: np.ndarray, options: CheckOptions) -> np.ndarray:
    """The key frames' 0-based indices on the ``fps`` timeline (nearest frame, as ``read_clip_at_time``)."""
    return np.floor((seconds - options.time_offset) * options.fps + 0.5).astype(np.int64)


def _needing(matrix: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """For each frame index in ``frames``, the first key frame (row of ``matrix``) whose clip uses it."""
    flat = matrix.ravel()
    order = np.argsort(flat, kind="stable")
    pos = np.searchsorted(flat[order], frames)
    return order[np.minimum(pos, flat.size - 1)] // matrix.shape[1]


# ---------------------------------------------------------------------------------------------------------
# frame counts


def frame_count_verdict(count: int, expected: int, fps: float, *, guess_rate: bool = True) -> tuple[Level, str, str]:
    """(level, code, words) for a video of ``count`` frames on a timeline where ``expected`` is complete.

    The cut spans ``(expected - 1) / fps`` seconds; a count fits a rate ``r`` when it lies between
    ``r * span`` and ``r * (span + 1)`` (an extraction of one extra second, as PySlowFast's ``-t 901``),
    give or take 3 frames. ``guess_rate`` (frame folders): a count that fits 25 fps or another common
    rate is called out as such.
    """
    span = max(expected - 1, 1) / fps

    def fits(rate: float) -> bool:
        return rate * span - 3 <= count <= rate * (span + 1) + 3

    if fits(fps):
        return "OK", "frame_count_ok", f"{count} frames"
    candidates = [r for r in OTHER_RATES if abs(r - fps) >= 1 and fits(r)] if guess_rate else []
    if candidates:  # on a short cut the ranges of near rates overlap: take the nearest
        rate = min(candidates, key=lambda r: min(abs(count - r * span), abs(count - r * (span + 1))))
        return "ERROR", "wrong_fps", (
            f"{count} frames fits the {span:.0f} s cut at {rate:g} fps, not {fps:g} ({expected} frames): "
            f"extracted at {rate:g} fps? re-extract at {fps:g} fps")
    if count < expected:
        hint = " (a dataset of another length? --expected-frames auto)" if count < expected / 2 else ""
        return "WARNING", "short_video", (
            f"{count} frames, fewer than the {expected} of the {span:.0f} s cut: it ends "
            f"{(expected - count) / fps:.1f} s early{hint}")
    return "ERROR", "long_video", (
        f"{count} frames, more than the {expected} of the {span:.0f} s cut ({count / span:.1f} fps over the cut): "
        "the whole movie, or a higher frame rate? the first frame must be the cut's first second")


def _expected_frames(counts: Sequence[int], options: CheckOptions) -> int | None:
    if options.expected_frames is not None:
        return options.expected_frames
    counts = [c for c in counts if c > 0]
    return Counter(counts).most_common(1)[0][0] if counts else None


# ---------------------------------------------------------------------------------------------------------
# frame folders


@dataclass
class _Folder:
    """What one listing of a frame folder says."""

    video: str
    path: str
    numbers: np.ndarray  # sorted frame numbers named like the loader reads them (<video>_%06d.jpg)
    strays: int = 0  # other entries
    stray_example: str = ""
    error: str = ""  # the folder is missing or unreadable

    @property
    def last(self) -> int:
        return int(self.numbers[-1]) if self.numbers.size else 0

    def frame_name(self, number: int) -> str:
        return f"{self.video}_{int(number):0{_FRAME_DIGITS}d}.jpg"


def scan_frame_folder(path: str, video: str) -> _Folder:
    """One directory listing; the frame numbers of the names ``<video>_NNNNNN.jpg`` (6 digits, as the loader).

    Hidden files (``.done`` markers of ``bmvit data prepare-ava``) are not counted as strays.
    """
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return _Folder(video, path, np.zeros(0, np.int64), error="no frame folder")
    except OSError as e:
        return _Folder(video, path, np.zeros(0, np.int64), error=f"cannot list ({e.strerror or e})")
    numbers = numbered_names(names, f"{video}_")
    strays = [names[i] for i in np.flatnonzero(numbers < 0).tolist() if not names[i].startswith(".")]  # not markers
    return _Folder(video, path, np.sort(numbers[numbers >= 0]), len(strays), strays[0] if strays else "")


def numbered_names(names: Sequence[str], prefix: str, suffix: str = ".jpg") -> np.ndarray:
    """The number of each name ``<prefix>NNNNNN<suffix>`` (exactly 6 ASCII digits), -1 for other names: [N] int64.

    Vectorised over the names' code points: a folder of 27001 names takes milliseconds.
    """
    width = len(prefix) + _FRAME_DIGITS + len(suffix)
    if not len(names):
        return np.zeros(0, dtype=np.int64)
    arr = np.asarray(names, dtype=str)
    longest = arr.dtype.itemsize // 4
    if longest < width:
        return np.full(len(names), -1, dtype=np.int64)
    codes = arr.view(np.uint32).reshape(len(names), longest)
    digits = codes[:, len(prefix):len(prefix) + _FRAME_DIGITS].astype(np.int64) - ord("0")
    ok = (codes[:, :len(prefix)] == _code_points(prefix)).all(axis=1)
    ok &= (codes[:, width - len(suffix):width] == _code_points(suffix)).all(axis=1)
    ok &= ((digits >= 0) & (digits <= 9)).all(axis=1)
    if longest > width:
        ok &= codes[:, width] == 0  # no longer than the pattern
    powers = 10 ** np.arange(_FRAME_DIGITS - 1, -1, -1, dtype=np.int64)
    return np.where(ok, digits @ powers, -1)


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _check_frame_folders(
    layout: AvaLayout, keys: dict[str, _VideoKeys], options: CheckOptions, report: CheckReport
) -> dict[str, _Folder]:
    """Videos and clips sections for frame folders; returns the folder listings."""
    videos = sorted(keys)
    if not options.media:
        missing = [v for v in videos if not os.path.isdir(os.path.join(layout.frames_dir, v))]
        _add_missing_media(report, layout, "frames", missing, len(videos))
        return {}
    with ThreadPoolExecutor(options.workers) as pool:
        folders = dict(zip(videos, pool.map(lambda v: scan_frame_folder(os.path.join(layout.frames_dir, v), v),
                                            videos)))
    _add_missing_media(report, layout, "frames", [v for v in videos if folders[v].error == "no frame folder"],
                       len(videos))
    expected = _expected_frames([f.last for f in folders.values()], options)
    checkable = []
    for video in videos:
        folder = folders[video]
        if folder.error:
            if folder.error != "no frame folder":
                report.add("ERROR", "videos", "unreadable_folder", f"{layout.rel(folder.path)}: {folder.error}",
                           file=folder.path, video=video)
            continue
        if _check_folder_count(folder, expected, layout, options, report):
            checkable.append(video)
    with ThreadPoolExecutor(options.workers) as pool:
        results = list(pool.map(lambda v: _folder_clip_findings(folders[v], keys[v], expected, layout, options),
                                checkable))
    for findings in results:
        report.findings.extend(findings)
    _summarise_folders(report, layout, folders, keys, checkable, expected)
    return folders


def _add_missing_media(report: CheckReport, layout: AvaLayout, source: str, missing: list[str], total: int) -> None:
    where = f"{layout.rel(layout.frames_dir)}/" if source == "frames" else f"{layout.rel(layout.videos_dir)}/"
    what = "frame folder" if source == "frames" else "video file"
    for video in missing:
        report.add("ERROR", "videos", f"missing_{'folder' if source == 'frames' else 'video'}",
                   f"{where}{video}: no {what} for annotated video {video}", video=video)
    if total and not missing:
        report.add("OK", "videos", "media_present", f"{where}: every one of the {total} annotated videos has a {what}")


def _check_folder_count(
    folder: _Folder, expected: int | None, layout: AvaLayout, options: CheckOptions, report: CheckReport
) -> bool:
    """Videos section for one folder; False when its frames cannot be checked clip by clip."""
    rel, video = layout.rel(folder.path), folder.video
    if not folder.numbers.size:
        hint = f" (found {folder.strays} other file(s) such as {folder.stray_example!r}: named differently?)" \
            if folder.strays else " (the folder is empty)"
        report.add("ERROR", "videos", "no_frames",
                   f"{rel}: no frame named like {folder.frame_name(1)}{hint}", file=folder.path, video=video)
        return False
    if folder.strays:
        report.add("WARNING", "videos", "stray_files",
                   f"{rel}: {folder.strays} file(s) not named like {folder.frame_name(1)} (such as "
                   f"{folder.stray_example!r}): the loader ignores them", file=folder.path, video=video)
    gaps = folder.last - folder.numbers.size
    if folder.numbers[0] != 1:
        report.add("ERROR", "videos", "first_frame_missing",
                   f"{rel}: the first frame is {folder.frame_name(folder.numbers[0])}, not {folder.frame_name(1)}: "
                   f"frame 000001 must be second {options.time_offset:g}", file=folder.path, video=video, frame=1)
    elif gaps:
        report.add("WARNING", "videos", "numbering_gaps",
                   f"{rel}: {gaps} frame number(s) missing between {folder.frame_name(1)} and "
                   f"{folder.frame_name(folder.last)}", file=folder.path, video=video)
    if expected is None:
        return True
    level, code, words = frame_count_verdict(folder.last, expected, options.fps)
    if level != "OK":
        report.add(level, "videos", code, f"{rel}: {words}", file=folder.path, video=video)
    return level != "ERROR"


def _folder_clip_findings(
    folder: _Folder, keys: _VideoKeys, expected: int | None, layout: AvaLayout, options: CheckOptions
) -> list[Finding]:
    """Clips section for one folder: missing, empty and undecodable frames that clips need."""
    centers = _centers(keys.seconds, options)
    length = expected if expected is not None else folder.last
    matrix = clip_frame_indices(centers, options.num_frames, options.stride, length)
    needed = np.unique(matrix) + 1  # frame numbers
    present = _sorted_contains(folder.numbers, needed)
    out: list[Finding] = []
    missing = needed[~present]
    out += _missing_frame_findings(folder, missing, matrix, keys, layout, options)
    have = needed[present]
    sizes = _frame_sizes(folder, have) if options.sizes else np.ones(have.size, dtype=np.int64)
    empty = have[sizes == 0]
    if empty.size:
        out.append(_listed_frames("ERROR", "empty_frame", folder, empty, matrix, keys, layout, options,
                                  "frame file(s) that clips need are empty (0 bytes)"))
    out += _decode_frames(folder, have[sizes > 0], matrix, keys, layout, options)
    return out


def _missing_frame_findings(
    folder: _Folder, missing: np.ndarray, matrix: np.ndarray, keys: _VideoKeys, layout: AvaLayout,
    options: CheckOptions,
) -> list[Finding]:
    out = []
    gaps, past = missing[missing <= folder.last], missing[missing > folder.last]
    if gaps.size:
        out.append(_listed_frames("ERROR", "missing_frame", folder, gaps, matrix, keys, layout, options,
                                  "frame file(s) that clips need are missing"))
    if past.size:
        rows = np.unique(_needing(matrix, past - 1))
        seconds = keys.seconds[rows]
        out.append(Finding(
            "ERROR", "clips", "frames_past_end",
            f"{layout.rel(folder.path)}: ends at {folder.frame_name(folder.last)} (second "
            f"{options.time_offset + (folder.last - 1) / options.fps:.1f}) but the clips of {rows.size} key frame(s) "
            f"(seconds {seconds[0]}..{seconds[-1]}, {keys.name(int(rows[0]), layout)}) need frames up to "
            f"{folder.frame_name(past[-1])}: the loader would repeat the last frame",
            file=folder.path, video=folder.video, frame=int(past[0])))
    return out


def _listed_frames(
    level: Level, code: str, folder: _Folder, numbers: np.ndarray, matrix: np.ndarray, keys: _VideoKeys,
    layout: AvaLayout, options: CheckOptions, what: str, reasons: Sequence[str] | None = None,
) -> Finding:
    """One finding per video: the first ``max_listed`` frames, each with the key frame that needs it."""
    shown = numbers[: options.max_listed]
    rows = _needing(matrix, shown - 1)
    items = []
    for i, (number, row) in enumerate(zip(shown.tolist(), rows.tolist())):
        reason = f"{reasons[i]}; " if reasons else ""
        items.append(f"{folder.frame_name(number)} ({reason}{keys.name(row, layout)})")
    more = f" and {numbers.size - shown.size} more" if numbers.size > shown.size else ""
    return Finding(level, "clips", code,
                   f"{layout.rel(folder.path)}: {numbers.size} {what}: {', '.join(items)}{more}",
                   file=os.path.join(folder.path, folder.frame_name(numbers[0])), video=folder.video,
                   frame=int(numbers[0]))


def _frame_sizes(folder: _Folder, numbers: np.ndarray) -> np.ndarray:
    """Byte sizes of the frames ``numbers``: a stat each, relative to the open folder where the OS allows;
    0 for a file that cannot be stat-ed (deleted since the listing, unreadable)."""
    stat = os.stat
    by_fd = stat in os.supports_dir_fd
    fd = os.open(folder.path, os.O_RDONLY) if by_fd else None
    prefix = ("" if by_fd else folder.path + os.sep) + f"{folder.video}_"
    digits = _number_texts(0, int(numbers.max()) + 1 if numbers.size else 0, _FRAME_DIGITS)
    sizes = []
    try:
        for n in numbers.tolist():  # the names of _Folder.frame_name
            try:
                sizes.append(stat(prefix + digits[n] + ".jpg", dir_fd=fd).st_size)
            except OSError:
                sizes.append(0)
    finally:
        if fd is not None:
            os.close(fd)
    return np.asarray(sizes, dtype=np.int64)


def _sample(values: np.ndarray, n: int) -> np.ndarray:
    """``n`` values evenly spread over ``values``, its first and last included."""
    if n <= 0 or values.size == 0:
        return values[:0]
    if n >= values.size:
        return values
    return values[np.unique(np.linspace(0, values.size - 1, n).round().astype(np.int64))]


def _decode_frames(
    folder: _Folder, candidates: np.ndarray, matrix: np.ndarray, keys: _VideoKeys, layout: AvaLayout,
    options: CheckOptions,
) -> list[Finding]:
    chosen = candidates if options.decode else _sample(candidates, options.decode_sample)
    bad, reasons = [], []
    for number in chosen.tolist():
        problem = image_problem(os.path.join(folder.path, folder.frame_name(number)))
        if problem:
            bad.append(number)
            reasons.append(problem)
    if not bad:
        return []
    return [_listed_frames("ERROR", "corrupt_frame", folder, np.asarray(bad), matrix, keys, layout, options,
                           f"of {chosen.size} decoded frame(s) cannot be decoded (corrupt or truncated JPEG)",
                           reasons=reasons)]


def image_problem(path: str) -> str | None:
    """None when the image decodes; else why not, in a few words (Pillow, at 1/8 scale; PyAV without Pillow)."""
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with matplotlib; without it, FFmpeg's decoders
        return _image_problem_av(path)
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Image.UnidentifiedImageError:
        return "not an image Pillow can read"
    except (OSError, SyntaxError, ValueError) as e:
        return str(e)[:120]
    return None


def _image_problem_av(path: str) -> str | None:
    import av

    with open(path, "rb") as f:
        data = f.read()
    codec = "png" if path.lower().endswith(".png") else "mjpeg"
    try:
        frames = av.CodecContext.create(codec, "r").decode(av.Packet(data)) if data else []
    except av.FFmpegError as e:
        return str(e)[:120]
    return None if len(frames) == 1 else "no picture decoded"


def _summarise_folders(
    report: CheckReport, layout: AvaLayout, folders: dict[str, _Folder], keys: dict[str, _VideoKeys],
    checked: list[str], expected: int | None,
) -> None:
    counts = Counter(folders[v].last for v in checked)
    if counts:
        common = ", ".join(f"{c} frames x{n}" for c, n in counts.most_common(3))
        report.add("OK", "videos", "frame_counts",
                   f"{layout.rel(layout.frames_dir)}/: {len(checked)} annotated frame folders checked "
                   f"({common}; {expected if expected is not None else 'no'} expected)")
    clip_codes = {"missing_frame", "frames_past_end", "empty_frame", "corrupt_frame"}
    bad = {f.video for f in report.findings if f.code in clip_codes}
    good = [v for v in checked if v not in bad]
    if good:
        n_keys = sum(keys[v].seconds.size for v in good)
        report.add("OK", "clips", "clips_complete",
                   f"{layout.rel(layout.frames_dir)}/: every clip of {n_keys:,} key frames in {len(good)} videos "
                   "has its frames")
    report.facts["frames listed"] = f"{sum(f.numbers.size for f in folders.values()):,}"


# ---------------------------------------------------------------------------------------------------------
# video files


def _video_files(videos_dir: str) -> dict[str, list[str]]:
    """Video id -> its files in ``videos_dir`` (one listing)."""
    by_id: dict[str, list[str]] = {}
    for name in os.listdir(videos_dir):
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS:
            by_id.setdefault(stem, []).append(os.path.join(videos_dir, name))
    return by_id


@dataclass
class _VideoInfo:
    video: str
    path: str
    fps: float = 0.0
    frames: int = 0  # on the file's own rate, as its header states
    findings: list[Finding] = field(default_factory=list)


def _check_video_files(
    layout: AvaLayout, keys: dict[str, _VideoKeys], options: CheckOptions, report: CheckReport
) -> None:
    files = _video_files(layout.videos_dir)
    videos = sorted(keys)
    _add_missing_media(report, layout, "video", [v for v in videos if v not in files], len(videos))
    paths = {}
    for video in videos:
        found = sorted(files.get(video, []))
        if len(found) > 1:
            report.add("ERROR", "videos", "several_videos",
                       f"{layout.rel(layout.videos_dir)}/: several files for video {video}: "
                       f"{', '.join(os.path.basename(p) for p in found)} (keep one)", video=video)
        elif found:
            paths[video] = found[0]
    if not options.media:
        return
    with ThreadPoolExecutor(options.workers) as pool:
        infos = list(pool.map(lambda v: _read_video_info(v, paths[v], layout), sorted(paths)))
    expected = _expected_frames([_timeline_length(i, options) for i in infos if i.fps], options)
    checkable = []
    for info in infos:
        report.findings.extend(info.findings)
        if info.fps and _check_video_length(info, expected, layout, options, report):
            checkable.append(info)
    with ThreadPoolExecutor(options.workers) as pool:
        results = list(pool.map(lambda i: _video_clip_findings(i, keys[i.video], expected, layout, options), checkable))
    for findings in results:
        report.findings.extend(findings)
    _summarise_videos(report, layout, infos, checkable, keys, options.fps)


def _read_video_info(video: str, path: str, layout: AvaLayout) -> _VideoInfo:
    from bmvit.data.video import VideoFileSource

    info = _VideoInfo(video, path)
    source = VideoFileSource(path, video)
    try:
        info.fps, info.frames = source.fps, source.num_frames
    except (ValueError, OSError) as e:
        info.findings.append(Finding("ERROR", "videos", "unreadable_video", _naming(e, path, layout), file=path,
                                     video=video))
    finally:
        source.close()
    if info.fps and not 10 <= info.fps <= 120:
        info.findings.append(Finding("WARNING", "videos", "odd_fps",
                                     f"{layout.rel(path)}: the stream states {info.fps:g} fps: a broken header?",
                                     file=path, video=video))
    return info


def _timeline_length(info: _VideoInfo, options: CheckOptions) -> int:
    """The video's length in frames of the ``fps`` timeline (``read_clip_at_time``'s)."""
    return max(1, int(np.floor(info.frames * options.fps / info.fps + 0.5)))


def _check_video_length(
    info: _VideoInfo, expected: int | None, layout: AvaLayout, options: CheckOptions, report: CheckReport
) -> bool:
    if expected is None:
        return True
    seconds = info.frames / info.fps
    level, code, words = frame_count_verdict(_timeline_length(info, options), expected, options.fps, guess_rate=False)
    if level != "OK":
        words = (f"{seconds:.1f} s ({info.frames} frames at {info.fps:g} fps), on the {options.fps:g} fps timeline "
                 + words)
        report.add(level, "videos", code, f"{layout.rel(info.path)}: {words}", file=info.path, video=info.video)
    return level != "ERROR"


def _video_clip_findings(
    info: _VideoInfo, keys: _VideoKeys, expected: int | None, layout: AvaLayout, options: CheckOptions
) -> list[Finding]:
    length = _timeline_length(info, options)
    matrix = clip_frame_indices(_centers(keys.seconds, options), options.num_frames, options.stride,
                                expected if expected is not None else length)
    out = []
    last_needed = matrix.max(axis=1)
    past = np.flatnonzero(last_needed >= length)
    rel = layout.rel(info.path)
    if past.size:
        out.append(Finding(
            "ERROR", "clips", "frames_past_end",
            f"{rel}: ends at {info.frames / info.fps:.2f} s but the clips of {past.size} key frame(s) (seconds "
            f"{keys.seconds[past[0]]}..{keys.seconds[past[-1]]}, {keys.name(int(past[0]), layout)}) reach "
            f"{(int(last_needed[past[-1]]) + 1) / options.fps:.2f} s: the loader would repeat the last frame",
            file=info.path, video=info.video))
    problem = _decode_video(info, keys, options)
    if problem:
        out.append(Finding("ERROR", "clips", "corrupt_video", _naming(problem, info.path, layout),
                           file=info.path, video=info.video))
    return out


def _decode_video(info: _VideoInfo, keys: _VideoKeys, options: CheckOptions) -> str | None:
    """Decode the whole stream (``decode``) or the clips of a few key frames; the first problem or None."""
    if options.decode:
        return _decode_whole_video(info)
    from bmvit.data.video import VideoFileSource

    chosen = _sample(np.arange(keys.seconds.size), options.decode_sample)
    source = VideoFileSource(info.path, info.video)
    try:
        for k in chosen.tolist():
            second = int(keys.seconds[k])
            try:
                source.read_clip_at_time(second - options.time_offset, options.num_frames, options.stride, options.fps)
            except (ValueError, IndexError, OSError) as e:
                return f"the clip of key frame {second} cannot be decoded: {e}"
    finally:
        source.close()
    return None


def _decode_whole_video(info: _VideoInfo) -> str | None:
    import av

    count = 0
    try:
        with av.open(info.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for _ in container.decode(stream):
                count += 1
    except (av.FFmpegError, OSError) as e:
        return f"decoding stops after {count} frames ({e}): truncated or corrupt file?"
    if count < info.frames - 1:
        return (f"only {count} of the {info.frames} frames its header states decode "
                f"(it stops at {count / info.fps:.2f} s): truncated?")
    return None


def _summarise_videos(
    report: CheckReport, layout: AvaLayout, infos: list[_VideoInfo], checked: list[_VideoInfo],
    keys: dict[str, _VideoKeys], fps: float,
) -> None:
    rates = Counter(f"{i.fps:g} fps" for i in infos if i.fps)
    if rates:
        seconds = [i.frames / i.fps for i in infos if i.fps]
        report.add("OK", "videos", "video_rates",
                   f"{layout.rel(layout.videos_dir)}/: {len(seconds)} video files, {min(seconds):.1f}.."
                   f"{max(seconds):.1f} s long; " + ", ".join(f"{r} x{n}" for r, n in rates.most_common())
                   + f" (clips are sampled on the {fps:g} fps timeline whatever the file's rate)")
    bad = {f.video for f in report.findings if f.code in ("frames_past_end", "corrupt_video")
           and f.file and f.file.startswith(layout.videos_dir)}
    good = [i for i in checked if i.video not in bad]
    if good:
        n_keys = sum(keys[i.video].seconds.size for i in good)
        report.add("OK", "clips", "clips_complete",
                   f"{layout.rel(layout.videos_dir)}/: every clip of {n_keys:,} key frames in {len(good)} video "
                   "files is inside the video")


# ---------------------------------------------------------------------------------------------------------
# exclusions


def _read_exclusion_rows(path: str) -> tuple[list[tuple[int, str, int]], list[tuple[int, str]]]:
    """(line, video, second) of each row, and (line, problem) of each row that is not ``video,second``."""
    good, bad = [], []
    with open(path, encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != 2:
                bad.append((line, f"expected 2 columns (video_id, timestamp), got {len(row)}"))
                continue
            try:
                good.append((line, row[0], int(row[1])))
            except ValueError:
                bad.append((line, f"timestamp {row[1]!r} is not an integer number of seconds"))
    return good, bad


def _check_exclusions(layout: AvaLayout, val: BoxRows | None, options: CheckOptions, report: CheckReport) -> None:
    path = layout.exclusions
    if path is None or not os.path.isfile(path) or val is None:
        return
    rel = layout.rel(path)
    try:
        rows, bad = _read_exclusion_rows(path)
    except (OSError, UnicodeDecodeError) as e:
        report.add("ERROR", "exclusions", "unreadable_file", f"{rel}: cannot read ({e})", file=path)
        return
    for line, problem in bad[: options.max_listed]:
        report.add("ERROR", "exclusions", "bad_exclusion", f"{rel}:{line}: {problem}", file=path, line=line)
    lo, hi = options.valid_seconds
    val_videos = set(_video_index(val)[0].tolist())
    annotated = set(zip(val.video_ids.tolist(), val.timestamps.tolist()))
    unmatched, at_keyframes = [], 0
    for line, video, second in rows:
        if video not in val_videos:
            unmatched.append((line, video, second, f"{video} is not a val video (no row of {layout.rel(val.path)})"))
        elif not lo <= second <= hi:
            unmatched.append((line, video, second, f"second {second} is outside the key-frame seconds {lo}..{hi}"))
        elif (video, second) in annotated:
            at_keyframes += 1
    for line, video, second, why in unmatched[: options.max_listed]:
        report.add("WARNING", "exclusions", "exclusion_no_match",
                   f"{rel}:{line}: excludes {video},{second:04d}, which matches no val key frame: {why}",
                   file=path, line=line, video=video)
    if len(unmatched) > options.max_listed:
        report.add("WARNING", "exclusions", "exclusion_no_match",
                   f"{rel}: ... and {len(unmatched) - options.max_listed} more exclusions matching no val key frame; "
                   f"{len(unmatched)} in all", file=path)
    matched = len(rows) - len(unmatched)
    report.add("OK", "exclusions", "exclusions_read",
               f"{rel}: {len(rows)} excluded timestamps, {matched} in val videos ({at_keyframes} at annotated key "
               f"frames, {matched - at_keyframes} at unannotated seconds, as AVA's are)", file=path)


# ---------------------------------------------------------------------------------------------------------
# frame lists


@dataclass
class _ListedVideo:
    """What a frame list says about one video."""

    rows: int = 0
    first_line: int = 0
    absent: int = 0  # listed files that do not exist
    absent_examples: list[tuple[int, str]] = field(default_factory=list)  # (line, path), the first few
    order_mismatch: tuple[int, str] | None = None  # first row whose frame_id is not its file number - 1


_FRAME_LIST_CHUNK = 1 << 23  # characters read per chunk (about 130k lines of AVA)
_ABSENT_KEPT = 20
_ORDER_SAMPLE = 64  # rows per video and chunk whose frame_id is compared with the file number


def _check_frame_lists(
    layout: AvaLayout, rows: dict[str, BoxRows | None], folders: dict[str, _Folder], options: CheckOptions,
    report: CheckReport,
) -> None:
    for split in ("train", "val"):
        path = layout.frame_lists[split]
        if not os.path.isfile(path):
            report.add("OK", "frame lists", "no_frame_list",
                       f"{layout.rel(path)}: none (frames are found by their names)", file=path)
            continue
        split_rows = rows.get(split)
        annotated = set(_video_index(split_rows)[0].tolist()) if split_rows is not None else set()
        listed = _scan_frame_list(path, annotated, layout, folders, report)
        if listed is not None:
            _report_frame_list(path, split, listed, annotated, folders, layout, options, report)


def _scan_frame_list(
    path: str, annotated: set[str], layout: AvaLayout, folders: dict[str, _Folder], report: CheckReport
) -> dict[str, _ListedVideo] | None:
    """A PySlowFast frame list (``original_video_id video_idx frame_id path labels``), read in chunks.

    Only rows of annotated videos are checked; None after reporting a row that does not have 5 columns.
    """
    listed: dict[str, _ListedVideo] = {}
    with open(path, encoding="utf-8") as f:
        f.readline()  # the header
        first_line, carry = 2, ""
        while True:
            block = f.read(_FRAME_LIST_CHUNK)
            text = carry + block
            cut = text.rfind("\n") + 1 if block else len(text)  # whole lines only, but all at the end
            text, carry = text[:cut], text[cut:]
            if not text:
                break
            n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
            tokens = text.split()
            line_numbers = first_line + np.arange(n_lines)
            if len(tokens) != 5 * n_lines:
                counts = np.array([len(ln.split()) for ln in text.splitlines()])
                bad = np.flatnonzero((counts != 0) & (counts != 5))
                if bad.size:
                    line = int(line_numbers[bad[0]])
                    report.add("ERROR", "frame lists", "bad_frame_list_row",
                               f"{layout.rel(path)}:{line}: expected 5 space-separated columns (original_video_id "
                               f"video_idx frame_id path labels), got {counts[bad[0]]}", file=path, line=line)
                    return None
                line_numbers = line_numbers[counts == 5]  # blank lines carry no row
            _check_frame_list_rows(tokens, line_numbers, annotated, layout, folders, listed)
            first_line += n_lines
    return listed


def _runs(values: list[str]) -> Iterator[tuple[int, int]]:
    """(start, end) of the runs of equal values; a frame list's rows come grouped by video, so each run's
    end is found by bisection (and checked: a list that is not grouped falls back to a scan)."""
    start, n = 0, len(values)
    while start < n:
        value = values[start]
        end = bisect.bisect_left(values, True, start, n, key=lambda v: v != value)
        if values[start:end].count(value) != end - start or (end < n and values[end] == value):
            end = start + 1
            while end < n and values[end] == value:
                end += 1
        yield start, end
        start = end


def _check_frame_list_rows(
    tokens: list[str], line_numbers: np.ndarray, annotated: set[str], layout: AvaLayout,
    folders: dict[str, _Folder], listed: dict[str, _ListedVideo],
) -> None:
    """One chunk of rows (5 tokens each), a run of rows of one video at a time."""
    videos, frame_ids, paths = tokens[0::5], tokens[2::5], tokens[3::5]
    for s, e in _runs(videos):
        video = videos[s]
        if video not in annotated:
            continue
        entry = listed.get(video) or listed.setdefault(video, _ListedVideo(first_line=int(line_numbers[s])))
        _check_listed_frames(video, paths[s:e], frame_ids[s:e], line_numbers[s:e], layout, folders.get(video), entry)


def _check_listed_frames(
    video: str, paths: list[str], frame_ids: list[str], lines: np.ndarray, layout: AvaLayout,
    folder: _Folder | None, entry: _ListedVideo,
) -> None:
    """Whether the listed files of one video exist (lookups in the folder's listing) and match their frame_id."""
    entry.rows += len(paths)
    in_place = folder is not None and (
        os.path.normpath(folder.path) == os.path.normpath(os.path.join(layout.frames_dir, video)))
    numbers = _canonical_run(video, paths, frame_ids) if in_place else None
    if numbers is not None:  # the common case: <video>/<video>_<frame_id + 1>.jpg, frame ids consecutive
        exists = _sorted_contains(folder.numbers, numbers)
        canonical = np.ones(len(paths), dtype=bool)
    else:
        numbers = numbered_names(paths, f"{video}/{video}_")
        canonical = (numbers >= 0) & in_place
        exists = np.zeros(len(paths), dtype=bool)
        if in_place:
            exists[canonical] = _sorted_contains(folder.numbers, numbers[canonical])
        for i in np.flatnonzero(~canonical).tolist():  # other layouts: a stat each
            exists[i] = os.path.isfile(os.path.join(layout.frames_dir, paths[i]))
        if entry.order_mismatch is None:  # a shifted numbering shows on any row: look at a few
            picked = _sample(np.flatnonzero(canonical & exists), _ORDER_SAMPLE).tolist()
            wrong = [i for i in picked if not frame_ids[i].isdigit() or int(frame_ids[i]) + 1 != numbers[i]]
            if wrong:
                entry.order_mismatch = (int(lines[wrong[0]]), paths[wrong[0]])
    absent = np.flatnonzero(~exists)
    entry.absent += int(absent.size)
    room = _ABSENT_KEPT - len(entry.absent_examples)
    entry.absent_examples += [(int(lines[i]), paths[i]) for i in absent[:max(0, room)].tolist()]


def _canonical_run(video: str, paths: list[str], frame_ids: list[str]) -> np.ndarray | None:
    """The file numbers when the rows are exactly ``frame_id = k, k+1, ...`` with paths
    ``<video>/<video>_<frame_id + 1>.jpg``; else None. Compared as joined strings, at C speed."""
    first = frame_ids[0]
    if not (first.isdigit() and first.isascii()):
        return None
    start, n = int(first), len(frame_ids)
    if "\n".join(frame_ids) != "\n".join(_number_texts(start, start + n, 0)):
        return None
    prefix = f"{video}/{video}_"
    expected = prefix + (".jpg\n" + prefix).join(_number_texts(start + 1, start + n + 1, _FRAME_DIGITS)) + ".jpg"
    if "\n".join(paths) != expected:
        return None
    return np.arange(start + 1, start + n + 1, dtype=np.int64)


_NUMBER_TEXTS: dict[int, list[str]] = {}  # zero-padding width -> str of 0, 1, 2, ... (grown on demand)


def _number_texts(start: int, stop: int, width: int) -> list[str]:
    """``[f"{i:0{width}d}" for i in range(start, stop)]``, from a cache shared by all videos."""
    cache = _NUMBER_TEXTS.setdefault(width, [])
    if len(cache) < stop:
        cache += [f"{i:0{width}d}" for i in range(len(cache), max(stop, 2 * len(cache)))]
    return cache[start:stop]


def _sorted_contains(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """``np.isin`` for a sorted array of unique values: a binary search per query."""
    if not sorted_values.size:
        return np.zeros(queries.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_values, queries), sorted_values.size - 1)
    return sorted_values[pos] == queries


def _report_frame_list(
    path: str, split: str, listed: dict[str, _ListedVideo], annotated: set[str], folders: dict[str, _Folder],
    layout: AvaLayout, options: CheckOptions, report: CheckReport,
) -> None:
    rel = layout.rel(path)
    for video in sorted(listed):
        entry = listed[video]
        if entry.absent:
            shown = ", ".join(f"line {ln}: {p}" for ln, p in entry.absent_examples[: options.max_listed])
            more = f" and {entry.absent - options.max_listed} more" if entry.absent > options.max_listed else ""
            report.add("ERROR", "frame lists", "frame_list_missing_file",
                       f"{rel}: {entry.absent} path(s) of video {video} do not exist under "
                       f"{layout.rel(layout.frames_dir)}/: {shown}{more}", file=path,
                       line=entry.absent_examples[0][0], video=video)
        if entry.order_mismatch:
            line, p = entry.order_mismatch
            report.add("WARNING", "frame lists", "frame_list_order",
                       f"{rel}:{line}: video {video}: the frame_id does not match the file number of {p} "
                       "(frame_id 0 is <video>_000001.jpg): clips would be read shifted", file=path, line=line,
                       video=video)
        folder = folders.get(video)
        if folder is not None and folder.numbers.size and entry.rows != folder.last:
            report.add("WARNING", "frame lists", "frame_list_count",
                       f"{rel}: lists {entry.rows} frames of video {video} (from line {entry.first_line}) but "
                       f"{layout.rel(folder.path)} has {folder.last}: the loader reads the list's", file=path,
                       line=entry.first_line, video=video)
    left_out = sorted(annotated - listed.keys())
    if left_out:
        report.add("WARNING", "frame lists", "frame_list_missing_video",
                   f"{rel}: {len(left_out)} annotated {split} video(s) are not in the list "
                   f"({_listing(left_out, options.max_listed)}): the loader falls back to their folders by name",
                   file=path)
    if not any(e.absent for e in listed.values()):
        report.add("OK", "frame lists", "frame_list_ok",
                   f"{rel}: every listed frame of {len(listed)} annotated videos exists", file=path)


# ---------------------------------------------------------------------------------------------------------
# small helpers


def _naming(problem: object, path: str, layout: AvaLayout) -> str:
    """``problem`` as one line that names ``path`` (as the report names files) once."""
    rel = layout.rel(path)
    text = str(problem).replace(path, rel)
    return text if rel in text else f"{rel}: {text}"


def _listing(items: Sequence[str], limit: int) -> str:
    """``a, b, c and 4 more``."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


__all__ = [
    "AVA_EXPECTED_FRAMES",
    "AvaLayout",
    "CheckOptions",
    "CheckReport",
    "Finding",
    "check_dataset",
    "clip_frame_indices",
    "describe_label_map",
    "frame_count_verdict",
    "image_problem",
    "quick_check",
    "scan_frame_folder",
]
