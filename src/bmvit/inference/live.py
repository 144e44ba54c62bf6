"""Live sources for ``bmvit predict``: a camera, a network stream or standard input, read by PyAV as the
frames arrive.

A live source has no length known in advance and cannot seek: frames come once, in order, and the
predictor keeps only the few it still needs (``Predictor.predict_live``). ``--source`` takes:

- ``-``: a stream on standard input (``ffmpeg ... -f matroska - | bmvit predict --source - ...``); any
  container FFmpeg can read from a pipe (Matroska, MPEG-TS; MP4 only with its index first);
- ``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``, ``tcp://``, ``srt://`` addresses;
- ``/dev/videoN`` (Video4Linux), or a camera index ``N`` (``/dev/videoN`` on Linux, AVFoundation's
  camera ``N`` on macOS; on Windows give DirectShow's ``video=NAME``).

A frame's index is its time since the first frame, in frames of the stream's stated rate, rounded: a
stream that drops frames leaves gaps in the indices instead of shifting every later frame in time.

``predict_live`` yields a key frame's detections as soon as the last frame of its clip has arrived, so
the delay is half a clip's span plus the model's time, and holds only the frames the next clips need.
``write_live_predictions`` writes as it goes: each file line is complete when written, and the files are
closed cleanly when the stream ends, stops or is interrupted (Ctrl-C), with the place it stopped at.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

import numpy as np

if TYPE_CHECKING:
    import torch

    from bmvit.inference.predictor import KeyFrameClip, Predictor
    from bmvit.inference.results import Detections
    from bmvit.inference.timeline import TimelineOptions
    from bmvit.inference.tracking import TrackerOptions

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt")
DEFAULT_FPS = 30.0
_CAMERA_DEVICE = re.compile(r"^/dev/video\d+$")


class LiveSourceError(ValueError):
    """A live source that cannot be opened or read; the message is one line naming it."""


def is_live_source(source: str | os.PathLike) -> bool:
    """Whether ``source`` names a live source (``-``, a stream address, a camera) rather than a file or folder."""
    text = os.fspath(source)
    if text == "-" or _CAMERA_DEVICE.match(text) or text.isdigit() or text.startswith("video="):
        return True
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return scheme in STREAM_SCHEMES


def live_source_name(source: str) -> str:
    """A file-name-safe id for a live source's outputs: ``stdin``, ``camera0``, ``host_path_name``."""
    if source == "-":
        return "stdin"
    if source.isdigit():
        return f"camera{source}"
    if _CAMERA_DEVICE.match(source):
        return "camera" + source[len("/dev/video"):]
    if source.startswith("video="):
        return "camera_" + _safe(source[len("video="):])
    rest = source.split("://", 1)[1].split("?", 1)[0]
    return _safe(rest.rstrip("/")) or "stream"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.")


@dataclass
class LiveSource:
    """A live source opened with PyAV.

    Args:
        source: what ``--source`` gave (see the module docstring).
        open_timeout_s: how long opening may wait for the source (network streams).
        read_timeout_s: how long a read may wait for the next packet before the stream counts as stopped.
        stdin: the byte stream ``-`` reads (default ``sys.stdin.buffer``; tests give a pipe).

    Attributes:
        video_id: ``live_source_name(source)``.
        fps: the rate the stream states (``DEFAULT_FPS`` when it states none, with a note).
        size: ``(H, W)`` of its frames.
        notes: what was noticed while opening (e.g. no stated frame rate).
        last_index, last_time_s: the last frame read; ``stopped``: why reading ended (None while it goes on).
    """

    source: str
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    stdin: BinaryIO | None = None
    video_id: str = ""
    fps: float = DEFAULT_FPS
    size: tuple[int, int] = (0, 0)
    notes: list[str] = field(default_factory=list)
    last_index: int = -1
    last_time_s: float = 0.0
    stopped: str | None = None
    _container: Any = None
    _stream: Any = None
    _pipe: _InterruptiblePipe | None = None

    def __post_init__(self) -> None:
        self.video_id = live_source_name(self.source)

    def open(self) -> LiveSource:
        """Open the source and read its rate and size; raises ``LiveSourceError`` (one line) when it cannot.
        Opening an open source does nothing."""
        import av

        if self._container is not None:
            return self

        target, options = self._target()
        try:
            self._container = av.open(target, timeout=(self.open_timeout_s, self.read_timeout_s), **options)
        except (av.FFmpegError, OSError) as err:
            raise LiveSourceError(f"cannot open {self._what()}: {_first_line(err)}") from None
        if not self._container.streams.video:
            self.close()
            raise LiveSourceError(f"{self._what()} has no video stream")
        self._stream = self._container.streams.video[0]
        rate = self._stream.average_rate or self._stream.guessed_rate or self._stream.base_rate
        if rate and 1.0 <= float(rate) <= 1000.0:
            self.fps = float(rate)
        else:
            self.notes.append(f"{self._what()} states no usable frame rate ({rate}); assumed {DEFAULT_FPS:g} fps")
        ctx = self._stream.codec_context
        self.size = (int(ctx.height or 0), int(ctx.width or 0))
        return self

    def _target(self) -> tuple[Any, dict[str, Any]]:
        if self.source == "-":
            # A pipe is probed from its first bytes: FFmpeg's default (5 MB) would hold the first frames
            # back until that much has arrived.
            self._pipe = _InterruptiblePipe(self.stdin if self.stdin is not None else sys.stdin.buffer)
            return self._pipe, {"options": {"probesize": "65536", "analyzeduration": "1000000"}}
        if _CAMERA_DEVICE.match(self.source):
            return self.source, {"format": "v4l2"}
        if self.source.isdigit():
            if sys.platform.startswith("linux"):
                return f"/dev/video{self.source}", {"format": "v4l2"}
            if sys.platform == "darwin":
                return f"{self.source}:none", {"format": "avfoundation"}
            raise LiveSourceError(f"camera {self.source}: on this platform give the camera by name "
                                  "(--source video=NAME, DirectShow)")
        if self.source.startswith("video="):
            return self.source, {"format": "dshow"}
        return self.source, {}

    def _what(self) -> str:
        if self.source == "-":
            return "standard input"
        if self.source.isdigit() or _CAMERA_DEVICE.match(self.source) or self.source.startswith("video="):
            return f"camera {self.source}"
        return self.source

    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, uint8 [H, W, 3])`` as frames arrive; ends at the end of the stream. A frame whose
        index is not after the previous one (a repeated timestamp) is skipped. When reading fails, the
        frames read so far stand and ``stopped`` says why."""
        import av

        if self._container is None:
            self.open()
        first_pts: float | None = None
        try:
            for frame in self._container.decode(self._stream):
                t = _frame_time(frame)
                if t is None:  # no timestamp: count frames at the stated rate
                    t = (self.last_index + 1) / self.fps + (first_pts or 0.0)
                if first_pts is None:
                    first_pts = t
                index = int(np.floor((t - first_pts) * self.fps + 0.5))
                if index <= self.last_index:
                    continue
                self.last_index, self.last_time_s = index, index / self.fps
                rgb = frame.to_ndarray(format="rgb24")
                if self.size == (0, 0):
                    self.size = (int(rgb.shape[0]), int(rgb.shape[1]))
                yield index, rgb
            self.stopped = "end of stream"
        except av.FFmpegError as err:
            self.stopped = f"reading stopped: {_first_line(err)}"
        if self._pipe is not None and self._pipe.interrupted:
            self.stopped = "interrupted (Ctrl-C)"
            raise KeyboardInterrupt

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


class _InterruptiblePipe:
    """Standard input as PyAV reads it, with Ctrl-C kept.

    PyAV calls ``read`` from inside FFmpeg, which would take an interrupt raised there for a read error and
    end the stream as if by itself. Worse, the signal may be delivered to one of the decoder's threads, and
    a ``read`` blocked in the main thread would then wait for bytes forever. So a thread of its own does
    the blocking reads, and ``read`` waits on it in short steps, letting the main thread see the signal;
    the interrupt is remembered, the stream ends (an empty read) and ``LiveSource.frames`` raises it.
    At most ``max_chunks`` chunks of 64 KiB are held.
    """

    def __init__(self, raw: BinaryIO, max_chunks: int = 64) -> None:
        import queue
        import threading

        self.interrupted = False
        self._chunks: queue.Queue[bytes] = queue.Queue(maxsize=max_chunks)
        self._buffer = b""
        self._ended = False
        threading.Thread(target=self._pump, args=(raw,), daemon=True, name="bmvit-stdin").start()

    def _pump(self, raw: BinaryIO) -> None:
        # The file descriptor itself: what has arrived, without waiting for a whole chunk, and without the
        # buffered reader's lock, which a thread still waiting at exit would hold as the interpreter ends.
        try:
            fd = raw.fileno()
            read = lambda size: os.read(fd, size)  # noqa: E731
        except (AttributeError, OSError, ValueError):  # an in-memory file: no descriptor
            read = getattr(raw, "read1", raw.read)
        try:
            while chunk := read(1 << 16):
                self._chunks.put(chunk)
        except (OSError, ValueError):
            pass
        self._chunks.put(b"")

    def read(self, size: int = -1) -> bytes:
        import queue

        try:
            while not self._buffer and not self._ended and not self.interrupted:
                try:
                    chunk = self._chunks.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._ended = not chunk
                self._buffer += chunk
            if self.interrupted:
                return b""
            n = len(self._buffer) if size < 0 else size
            out, self._buffer = self._buffer[:n], self._buffer[n:]
            return out
        except KeyboardInterrupt:
            self.interrupted = True
            return b""


def _frame_time(frame) -> float | None:
    if frame.pts is None or frame.time_base is None:
        return None
    return float(frame.pts * frame.time_base)


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]


# ------------------------------------------------------------------------------------------------
# predicting as frames arrive


def live_keyframe_clip(k: int, keyframe_fps: float, timeline_fps: float, num_frames: int, stride: int,
                       source_fps: float) -> KeyFrameClip:
    """Key frame ``k`` of a live source (``k / keyframe_fps`` s): its clip sampled as in training
    (``predictor.clip_frame_indices``) on a timeline that has a start but no known end."""
    from bmvit.data.video import clip_indices, resample_indices
    from bmvit.inference.predictor import KeyFrameClip

    no_end = np.iinfo(np.int64).max  # a length no index reaches: only the start clamps
    t = k / keyframe_fps
    center = int(np.floor(t * timeline_fps + 0.5))
    on_timeline = clip_indices(center, num_frames, stride, no_end)
    key = resample_indices(np.array([center]), timeline_fps, source_fps, no_end)
    return KeyFrameClip(t, int(key[0]), resample_indices(on_timeline, timeline_fps, source_fps, no_end))


def _nearest(window: dict[int, torch.Tensor], index: int) -> torch.Tensor:
    """The frame at ``index``, else the latest before it (a dropped frame), else the first after it."""
    if index in window:
        return window[index]
    before = [i for i in window if i < index]
    return window[max(before)] if before else window[min(window)]


def predict_live(predictor: Predictor, source: LiveSource, fps: float = 1.0) -> Iterator[Detections]:
    """Detections of a live source's key frames (every ``1 / fps`` s from its first frame), each as soon
    as the last frame of its clip has arrived; at the end of the stream the last clips are padded with
    its last frame, as at a video's end. Frames are decoded in this thread (a Ctrl-C stops at once)."""
    import torch

    from bmvit.inference.predictor import VideoPlan

    if not fps > 0:
        raise ValueError(f"key-frame rate fps must be > 0, got {fps}")
    spec = predictor.spec
    plan = VideoPlan(source, source.video_id, source.fps, 0, source.size, [], float(fps), notes=list(source.notes))

    def clip_of(k: int) -> KeyFrameClip:
        return live_keyframe_clip(k, fps, spec.timeline_fps, spec.num_frames, spec.stride, source.fps)

    def detect(kf: KeyFrameClip, indices: np.ndarray) -> Detections:
        clip = torch.stack([_nearest(window, int(i)) for i in indices], dim=1)[None]
        _, results = predictor.forward_clips(clip)
        return predictor.to_detections(results[0], kf, plan)

    window: dict[int, torch.Tensor] = {}
    k, kf = 0, clip_of(0)
    for index, rgb in source.frames():
        if plan.image_size == (0, 0):
            plan.image_size = (int(rgb.shape[0]), int(rgb.shape[1]))
        window[index] = predictor.transform(rgb[None], {})[0][:, 0]
        while int(kf.clip_indices[-1]) <= index:
            yield detect(kf, kf.clip_indices)
            k, kf = k + 1, clip_of(k + 1)
            _forget_before(window, int(kf.clip_indices[0]))
    last = source.last_index
    while window and kf.frame_index <= last:
        yield detect(kf, np.minimum(kf.clip_indices, last))
        k, kf = k + 1, clip_of(k + 1)


def _forget_before(window: dict[int, torch.Tensor], first_needed: int) -> None:
    """Drop the frames no later clip needs; while ``first_needed`` has not arrived, the latest frame
    before it stays, to stand in for it if the stream dropped it."""
    older = sorted(i for i in window if i < first_needed)
    if older and first_needed not in window:
        older.pop()
    for i in older:
        del window[i]


@dataclass
class LiveOutputs:
    """The files of one live source, written line by line as key frames arrive (``write_live_predictions``)."""

    csv: Path
    jsonl: Path
    tracks: Path
    timeline: Path
    summary: Path
    timeline_png: Path | None


def write_live_predictions(predictor: Predictor, source: LiveSource, out_dir: str | os.PathLike, *,
                           fps: float = 1.0, tracker: TrackerOptions | None = None,
                           timeline: TimelineOptions | None = None, timeline_png: bool = True,
                           max_rows_per_keyframe: int | None = 50, stream_json: TextIO | None = None,
                           on_keyframe=None) -> tuple[LiveOutputs, dict[str, Any]]:
    """Predict and track a live source, writing as it goes under ``out_dir``:

    - ``<id>.csv``: AVA detection rows (the official 8 columns; ``second`` is the key frame's time from the
      stream's first frame, rounded), appended per key frame;
    - ``<id>.jsonl``: one JSON line per key frame (``Detections.to_dict`` with track ids), also written to
      ``stream_json`` (standard output with ``--stream-json``);
    - ``<id>_tracks.csv``: one row per tracked box (``tracking.tracks_rows``);
    - ``<id>_timeline.csv``: action segments, appended when their track ends (``timeline.LiveTimeline``);
    - at the end (the stream ends or stops, or Ctrl-C): the last segments, ``<id>_timeline.png`` and
      ``<id>.json``, a summary saying how many key frames were predicted, up to when, and why it stopped.

    Returns ``(outputs, summary)``. A ``KeyboardInterrupt`` closes the files as above and is raised again.
    """
    import csv
    import json

    from bmvit.data.ava import ava_csv_line
    from bmvit.inference.timeline import (
        TIMELINE_COLUMNS,
        LiveTimeline,
        TimelineOptions,
        plot_timeline,
        timeline_row,
    )
    from bmvit.inference.tracking import ActorTracker, TrackerOptions, tracks_columns, tracks_rows

    tracker_options, timeline_options = tracker or TrackerOptions(), timeline or TimelineOptions()
    source.open()  # a source that cannot be opened leaves no files behind
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vid = source.video_id
    outputs = LiveOutputs(out_dir / f"{vid}.csv", out_dir / f"{vid}.jsonl", out_dir / f"{vid}_tracks.csv",
                          out_dir / f"{vid}_timeline.csv", out_dir / f"{vid}.json",
                          out_dir / f"{vid}_timeline.png" if timeline_png else None)
    tracker_ = ActorTracker(tracker_options)
    live_timeline = LiveTimeline(timeline_options, fps, tracker_options.max_missed)
    segments = []
    summary: dict[str, Any] = {"video_id": vid, "source": source.source, "keyframe_fps": fps,
                               "class_ids": predictor.class_ids, "class_names": predictor.class_names,
                               "threshold": predictor.threshold, "keyframes": 0, "last_keyframe_s": None}
    with (outputs.csv.open("w", encoding="utf-8") as ava, outputs.jsonl.open("w", encoding="utf-8") as lines,
          outputs.tracks.open("w", newline="", encoding="utf-8") as tracks_file,
          outputs.timeline.open("w", newline="", encoding="utf-8") as timeline_file):
        tracks_csv = csv.writer(tracks_file, lineterminator="\n")
        timeline_csv = csv.writer(timeline_file, lineterminator="\n")
        tracks_csv.writerow(tracks_columns())
        timeline_csv.writerow(TIMELINE_COLUMNS)
        stopped = "stopped by an error"  # what the summary says unless the loop ends or is interrupted
        try:
            for det in predict_live(predictor, source, fps):
                det = tracker_.track(det)
                ava.writelines(ava_csv_line(row) + "\n" for row in det.to_ava_rows(max_rows_per_keyframe))
                record = json.dumps(det.to_dict(include_classes=False))
                lines.write(record + "\n")
                tracks_csv.writerows(tracks_rows(det))
                ended = live_timeline.update(det)
                timeline_csv.writerows(timeline_row(vid, s) for s in ended)
                segments += ended
                for f in (ava, lines, tracks_file, timeline_file):
                    f.flush()
                summary["keyframes"] += 1  # counted as soon as its lines are in the files
                summary["last_keyframe_s"] = det.timestamp
                if stream_json is not None:
                    stream_json.write(record + "\n")
                    stream_json.flush()
                if on_keyframe is not None:
                    on_keyframe(det)
            stopped = source.stopped or "end of stream"
        except KeyboardInterrupt:
            stopped = "interrupted (Ctrl-C)"
            raise
        except BrokenPipeError:  # the reader of --stream-json went away (e.g. `| head`)
            stopped = "standard output was closed"
            raise
        finally:
            duration = (source.last_index + 1) / source.fps if source.last_index >= 0 else 0.0
            ended = live_timeline.finish(duration)
            timeline_csv.writerows(timeline_row(vid, s) for s in ended)
            segments += ended
            summary.update(stopped=stopped, frames_read=source.last_index + 1, stopped_at_s=round(duration, 3),
                           video_fps=source.fps, image_size=list(source.size), warnings=list(source.notes),
                           tracking=asdict(tracker_options),
                           timeline={**asdict(timeline_options), "segments": [asdict(s) for s in segments]})
            source.close()
            outputs.summary.write_text(json.dumps(summary), encoding="utf-8")
            if outputs.timeline_png is not None:
                plot_timeline(segments, outputs.timeline_png, duration_s=max(duration, 1.0),
                              class_names=predictor.class_names, title=f"{vid} (live)")
    return outputs, summary


__all__ = ["DEFAULT_FPS", "STREAM_SCHEMES", "LiveOutputs", "LiveSource", "LiveSourceError", "is_live_source",
           "live_keyframe_clip", "live_source_name", "predict_live", "write_live_predictions"]
