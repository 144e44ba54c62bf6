"""Actions as time intervals: per-track score sequences cut into segments, written as CSV and drawn.

A tracked video (``bmvit.inference.tracking``) gives each actor track a score per action at every
key frame where the track has a box. ``build_timeline`` turns those into ``ActionSegment`` s:

1. **hysteresis**: a segment opens at a key frame whose score is at least ``high`` and stays open
   while the score is at least ``low`` (a key frame where the track has no box counts as below); two
   thresholds, so that a score wavering around one value does not cut an action into pieces;
2. **gaps bridged**: segments of the same track and action less than ``max_gap_s`` apart are merged;
3. **minimum length**: segments shorter than ``min_length_s`` are dropped.

A key frame at time ``t`` stands for ``[t - dt/2, t + dt/2]`` with ``dt = 1 / keyframe_fps``, so a segment
over key frames ``t_i .. t_j`` spans ``[t_i - dt/2, t_j + dt/2]`` (clipped to the video), and one key
frame at 1 fps is one second long. Times are seconds from the video's first frame.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bmvit.inference.results import Detections

TIMELINE_COLUMNS = ("video_id", "track_id", "action_id", "action", "start_s", "end_s", "duration_s", "mean_score",
                    "peak_score")


@dataclass(frozen=True)
class TimelineOptions:
    """How score sequences become segments (scores are ``p(actor) * sigmoid(action logit)``).

    Attributes:
        high: a segment opens where the score reaches this.
        low: an open segment closes where the score falls below this (``low <= high``).
        max_gap_s: segments of one track and action at most this many seconds apart are merged.
        min_length_s: segments shorter than this (seconds) are dropped.
    """

    high: float = 0.5
    low: float = 0.3
    max_gap_s: float = 1.0
    min_length_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.low <= self.high <= 1.0:
            raise ValueError(f"TimelineOptions needs 0 <= low <= high <= 1, got low={self.low}, high={self.high}")
        if self.max_gap_s < 0 or self.min_length_s < 0:
            raise ValueError(f"TimelineOptions.max_gap_s and min_length_s must be >= 0 seconds, got "
                             f"{self.max_gap_s} and {self.min_length_s}")


@dataclass(frozen=True)
class ActionSegment:
    """One action of one track over a time interval.

    Attributes:
        track_id: the actor track.
        action_id, action: the class id (label-map id) and name.
        start_s, end_s: the interval in seconds from the video's first frame.
        mean_score, peak_score: mean and maximum score over the key frames inside the interval where
            the track has a box.
    """

    track_id: int
    action_id: int
    action: str
    start_s: float
    end_s: float
    mean_score: float
    peak_score: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


def hysteresis_runs(scores: Sequence[float], high: float, low: float) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` index ranges where ``scores`` rose to ``high`` and stayed ``>= low``.

    NaN (no box at that key frame) counts as below ``low``.
    """
    runs = []
    start = None
    for i, value in enumerate(scores):
        value = float(value)
        above_low = not math.isnan(value) and value >= low
        if start is None and not math.isnan(value) and value >= high:
            start = i
        elif start is not None and not above_low:
            runs.append((start, i - 1))
            start = None
    if start is not None:
        runs.append((start, len(scores) - 1))
    return runs


def segment_scores(times_s: Sequence[float], scores: Sequence[float], options: TimelineOptions, interval_s: float,
                   duration_s: float | None = None) -> list[tuple[float, float, float, float]]:
    """``(start_s, end_s, mean_score, peak_score)`` segments of one score sequence.

    Args:
        times_s: key-frame times in seconds, increasing, every ``interval_s`` (missing key frames as NaN
            scores, not left out).
        scores: the score at each time; NaN where the track has no box.
        options: thresholds, gap and minimum length.
        interval_s: seconds between key frames (each key frame covers ``interval_s`` around it).
        duration_s: the video's length; segments are clipped to ``[0, duration_s]``.
    """
    times = np.asarray(times_s, dtype=np.float64)
    values = np.asarray(scores, dtype=np.float64)
    half = interval_s / 2
    runs = [[times[a] - half, times[b] + half, a, b] for a, b in hysteresis_runs(values, options.high, options.low)]
    merged: list[list] = []
    for run in runs:
        # A small epsilon: a gap of exactly max_gap_s computed from float times is bridged.
        if merged and run[0] - merged[-1][1] <= options.max_gap_s + 1e-9:
            merged[-1][1], merged[-1][3] = run[1], run[3]
        else:
            merged.append(run)
    out = []
    for start, end, a, b in merged:
        start, end = max(0.0, start), end if duration_s is None else min(end, duration_s)
        if end - start < options.min_length_s - 1e-9:
            continue
        inside = values[a : b + 1]
        inside = inside[~np.isnan(inside)]
        out.append((float(start), float(end), float(inside.mean()), float(inside.max())))
    return out


def build_timeline(detections: Sequence[Detections], options: TimelineOptions | None = None,
                   keyframe_fps: float | None = None, duration_s: float | None = None) -> list[ActionSegment]:
    """The action segments of every track of one tracked video.

    Args:
        detections: the video's key frames in time order, with ``track_ids`` set
            (``tracking.track_detections``).
        options: thresholds, gap and minimum length (default ``TimelineOptions()``).
        keyframe_fps: key frames per second; default: from the key frames' times (1 if only one).
        duration_s: the video's length in seconds, to clip the last segments.

    Returns:
        Segments ordered by track id, then action column, then start.
    """
    options = options or TimelineOptions()
    if not detections:
        return []
    if any(det.track_ids is None for det in detections):
        raise ValueError("build_timeline needs tracked detections (track_ids set; see tracking.track_detections)")
    interval = 1.0 / keyframe_fps if keyframe_fps else _interval(detections)
    times = np.array([det.timestamp for det in detections], dtype=np.float64)
    class_ids, class_names = detections[0].class_ids, detections[0].class_names
    segments = []
    for track_id, scores in sorted(_track_scores(detections).items()):
        seen = np.flatnonzero(~np.isnan(scores).all(axis=1))
        first, last = int(seen[0]), int(seen[-1])
        segments += _track_segments(track_id, times[first : last + 1], scores[first : last + 1], class_ids,
                                    class_names, options, interval, duration_s)
    return segments


def _track_segments(track_id: int, times: np.ndarray, scores: np.ndarray, class_ids: Sequence[int],
                    class_names: Sequence[str], options: TimelineOptions, interval_s: float,
                    duration_s: float | None) -> list[ActionSegment]:
    """One track's segments, action column by column: ``times [T]`` seconds, ``scores [T, C]`` (NaN: no box)."""
    return [ActionSegment(track_id, int(class_ids[c]), class_names[c], start, end, mean, peak)
            for c in range(scores.shape[1])
            for start, end, mean, peak in segment_scores(times, scores[:, c], options, interval_s, duration_s)]


class LiveTimeline:
    """``build_timeline`` for key frames that arrive one at a time, from a stream that may never end.

    Each track's scores are kept only while the track can still grow: once it has gone unseen for more
    than ``horizon`` key frames (the tracker's ``max_missed``: after that its id is never given again),
    its segments are cut and returned, and its scores forgotten. Memory thus holds the live tracks'
    histories, not the stream's. Over the same key frames the segments are ``build_timeline``'s.

    Args:
        options: thresholds, gap and minimum length.
        keyframe_fps: key frames per second; key frame ``k`` is at ``k / keyframe_fps`` seconds.
        horizon: key frames a track may go unseen and still be extended.
    """

    def __init__(self, options: TimelineOptions, keyframe_fps: float, horizon: int) -> None:
        self.options, self.fps, self.horizon = options, float(keyframe_fps), int(horizon)
        self._scores: dict[int, dict[int, np.ndarray]] = {}  # track id -> key frame number -> [C]
        self._classes: tuple[list[int], list[str]] | None = None
        self._last_key = -1

    def update(self, det: Detections) -> list[ActionSegment]:
        """Add one tracked key frame; returns the segments of the tracks that ended before it."""
        if det.track_ids is None:
            raise ValueError("LiveTimeline needs tracked detections (track_ids set)")
        self._classes = (list(det.class_ids), list(det.class_names))
        key = int(round(det.timestamp * self.fps))
        self._last_key = key
        scores = det.action_scores.detach().float().cpu().numpy()
        for i, track_id in enumerate(det.track_ids.tolist()):
            self._scores.setdefault(track_id, {})[key] = scores[i]
        ended = [t for t, seen in self._scores.items() if key - max(seen) > self.horizon]
        return self._cut(ended, None)

    def finish(self, duration_s: float | None = None) -> list[ActionSegment]:
        """The segments of every track still held (the stream ended), clipped to ``duration_s``."""
        return self._cut(list(self._scores), duration_s)

    def _cut(self, track_ids: list[int], duration_s: float | None) -> list[ActionSegment]:
        segments = []
        for track_id in sorted(track_ids):
            seen = self._scores.pop(track_id)
            first, last = min(seen), max(seen)
            assert self._classes is not None
            class_ids, class_names = self._classes
            scores = np.full((last - first + 1, len(class_ids)), np.nan)
            for key, row in seen.items():
                scores[key - first] = row
            times = np.arange(first, last + 1, dtype=np.float64) / self.fps
            segments += _track_segments(track_id, times, scores, class_ids, class_names, self.options,
                                        1.0 / self.fps, duration_s)
        return segments


def _interval(detections: Sequence[Detections]) -> float:
    if len(detections) < 2:
        return 1.0
    return float(np.median(np.diff([det.timestamp for det in detections])))


def _track_scores(detections: Sequence[Detections]) -> dict[int, np.ndarray]:
    """track id -> ``[num key frames, C]`` action scores, NaN where the track has no box."""
    num_classes = len(detections[0].class_ids)
    out: dict[int, np.ndarray] = {}
    for k, det in enumerate(detections):
        scores = det.action_scores.detach().float().cpu().numpy()
        for i, track_id in enumerate(det.track_ids.tolist()):
            if track_id not in out:
                out[track_id] = np.full((len(detections), num_classes), np.nan)
            out[track_id][k] = scores[i]
    return out


# ------------------------------------------------------------------------------------------------
# files


def write_timeline_csv(path: str | os.PathLike, video_id: str, segments: Sequence[ActionSegment]) -> Path:
    """Write the segments as CSV (``TIMELINE_COLUMNS``, header included; seconds with 3 decimals)."""
    import io

    from bmvit.checkpoint import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TIMELINE_COLUMNS)
    writer.writerows(timeline_row(video_id, s) for s in segments)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


def timeline_row(video_id: str, s: ActionSegment) -> list[str]:
    """One segment as a timeline-CSV row (``TIMELINE_COLUMNS``)."""
    return [video_id, str(s.track_id), str(s.action_id), s.action, f"{s.start_s:.3f}", f"{s.end_s:.3f}",
            f"{s.duration_s:.3f}", f"{s.mean_score:.4f}", f"{s.peak_score:.4f}"]


def format_mmss(seconds: float, _position: object = None) -> str:
    """``m:ss`` of a time in seconds (negative times are shown as 0:00)."""
    total = max(0, int(round(seconds)))
    return f"{total // 60}:{total % 60:02d}"


def plot_timeline(segments: Sequence[ActionSegment], out_path: str | os.PathLike, duration_s: float | None = None,
                  class_names: Sequence[str] | None = None, title: str | None = None, dpi: int = 100) -> Path:
    """Draw one lane per track, its actions as coloured bars over time, to a PNG.

    Lanes are ordered by their first segment and labelled ``#<track id>``; inside a lane each action the
    track does has its own thin row, so simultaneous actions (``walk`` and ``move_left``) do not hide
    each other. The time axis reads ``m:ss``; the legend lists the actions shown. Tracks without any
    segment get no lane.

    Args:
        segments: from ``build_timeline``.
        out_path: the PNG to write.
        duration_s: the time axis' end (default: the last segment's end).
        class_names: every class in its colour order, so that a class keeps its colour across videos;
            default: the classes of ``segments`` by id.
        title: drawn above the lanes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    names = list(class_names) if class_names is not None else [
        s.action for s in sorted({(s.action_id, s.action): s for s in segments}.values(), key=lambda s: s.action_id)]
    colours = _class_colours(names)
    lanes = _lanes(segments, names)
    rows = sum(len(actions) for _, actions in lanes)
    end = duration_s if duration_s is not None else max((s.end_s for s in segments), default=1.0)
    fig, ax = plt.subplots(figsize=(12, min(40.0, 1.2 + 0.2 * rows + 0.1 * len(lanes))), dpi=dpi)
    y, ticks, labels = 0.0, [], []
    for lane_index, (track_id, actions) in enumerate(lanes):
        height = len(actions)
        if lane_index % 2 == 0:  # alternate shading, so a lane's rows read as one actor
            ax.axhspan(y - 0.1, y + height + 0.1, color="0.94", zorder=0)
        for row, action in enumerate(actions):
            bars = [(s.start_s, s.duration_s) for s in segments if s.track_id == track_id and s.action == action]
            ax.broken_barh(bars, (y + row + 0.1, 0.8), facecolors=colours[action], zorder=2)
        ticks.append(y + height / 2)
        labels.append(f"#{track_id}")
        y += height + 0.2
    ax.set_ylim(y, -0.2)  # first lane at the top
    ax.set_yticks(ticks, labels)
    ax.set_xlim(0, end)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 3, 5, 6, 10]))
    ax.xaxis.set_major_formatter(FuncFormatter(format_mmss))
    ax.set_xlabel("time (m:ss)")
    ax.set_ylabel("actor track")
    ax.grid(axis="x", color="0.8", linewidth=0.6, zorder=1)
    shown = [n for n in names if any(s.action == n for s in segments)]
    if shown:
        ax.legend(handles=[Patch(color=colours[n], label=n) for n in shown], loc="upper left",
                  bbox_to_anchor=(1.005, 1.0), fontsize=8, frameon=False, title="action")
    if title:
        ax.set_title(title)
    if not lanes:
        ax.text(0.5, 0.5, "no action segment", transform=ax.transAxes, ha="center", va="center", color="0.4")
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=dpi)
        os.replace(tmp, out_path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out_path


def _lanes(segments: Sequence[ActionSegment], names: Sequence[str]) -> list[tuple[int, list[str]]]:
    """``(track id, its actions in class order)`` per track with segments, by first start."""
    order = {n: i for i, n in enumerate(names)}
    first: dict[int, float] = {}
    actions: dict[int, set[str]] = {}
    for s in segments:
        first[s.track_id] = min(first.get(s.track_id, math.inf), s.start_s)
        actions.setdefault(s.track_id, set()).add(s.action)
    tracks = sorted(first, key=lambda t: (first[t], t))
    return [(t, sorted(actions[t], key=lambda a: order.get(a, len(order)))) for t in tracks]


def _class_colours(names: Sequence[str]) -> dict[str, tuple]:
    """A distinct colour per class: tab10 up to 10 classes, tab20 up to 20, then evenly spaced hues."""
    from matplotlib import colormaps

    if len(names) <= 10:
        cmap, n = colormaps["tab10"], 10
    elif len(names) <= 20:
        cmap, n = colormaps["tab20"], 20
    else:
        cmap, n = colormaps["hsv"], len(names) + 1
    return {name: cmap(i / n if n > 20 else i) for i, name in enumerate(names)}


__all__ = ["ActionSegment", "LiveTimeline", "TIMELINE_COLUMNS", "TimelineOptions", "build_timeline", "format_mmss",
           "hysteresis_runs", "plot_timeline", "segment_scores", "timeline_row", "write_timeline_csv"]
