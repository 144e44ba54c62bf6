"""Turn downloaded AVA videos into the dataset root bmvit reads (PySlowFast's layout).

What is written under ``ROOT``::

    frames/<vid>/<vid>_000001.jpg ... <vid>_027001.jpg   (--format frames, the default)
    frames/<vid>/.done                                    JSON marker: the video is complete
    videos/<vid>.mp4                                      (--format video: H.264, 30 fps, short GOP)
    videos/.done/<vid>.json                               JSON marker for the mp4
    frame_lists/train.csv, val.csv                        PySlowFast frame lists (videos with frames)
    annotations/...                                       every file of the annotation folder

Time and frame conventions
--------------------------
AVA annotates seconds 902 to 1798 of each movie; the readers (``bmvit.data.video``, ``bmvit.data.dataset``)
expect the window from second 900 re-timed to 30 fps, frame ``<vid>_000001.jpg`` being frame index 0.

* Times are seconds of the raw file measured from its start time (the container's first timestamp),
  the reference ffmpeg's ``-ss 900`` uses.
* Output frame ``i`` (``i = 0 .. 27000``; file number ``i + 1``; in the mp4, pts ``i / 30`` s) shows
  time ``900 + i / 30``: the first is second 900.0, the last second 1800.0, so 27001 frames.
* Which source frame lands in output frame ``i``: each decoded frame at time ``t`` gets the output
  slot ``round((t - 900) * 30)`` (halves round up) and output frame ``i`` is the *latest* source frame
  whose slot is ``<= i``; equivalently the latest frame shown before ``900 + (i + 1/2) / 30``. This is
  what ffmpeg's ``-r 30`` (fps filter, rounding to nearest) does. A 30 fps source maps one to one even
  when the container stores timestamps rounded to milliseconds (Matroska, WebM); from 25 fps every
  fifth source frame is shown twice (output ``i`` = source ``floor((10 i + 4) / 12)`` counted from
  second 900); from 29.97 fps one frame in a thousand is shown twice.
* The raw video must reach second 1800: a source frame whose slot is 27000 or later. A shorter video,
  a file without a video stream, a decoder error or a hole of more than ``max_gap_s`` seconds between
  consecutive frames (what a damaged Matroska file decodes to) fail that video only.

Resumable: a video's output is written under a temporary name and renamed when complete and checked,
with its marker written last. A re-run skips videos whose marker records the same settings and redoes
any other (including half-written ones).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path
from typing import Literal

import av
from PIL import Image

PathLike = str | os.PathLike

FIRST_SECOND = 900
"""The first second written (output frame 0): AVA's annotated window starts at 902 and clips reach back."""
LAST_SECOND = 1800
"""The last second written (output frame 27000)."""
OUTPUT_FPS = 30
NUM_FRAMES = (LAST_SECOND - FIRST_SECOND) * OUTPUT_FPS + 1
"""Frames per prepared video: 27001, seconds 900.0 to 1800.0 inclusive."""

VIDEO_LIST_NAME = "ava_file_names_trainval_v2.1.txt"
SPLIT_CSVS = {"train": "ava_train_v2.2.csv", "val": "ava_val_v2.2.csv"}
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".ts", ".flv")
FRAME_LIST_HEADER = "original_vido_id video_idx frame_id path labels"  # PySlowFast's spelling, typo included
MARKER_VERSION = 1

Format = Literal["frames", "video"]


class PrepareError(Exception):
    """One video could not be prepared; the message is the one-line reason shown in the summary."""


# ---------------------------------------------------------------------------------------------------------
# settings, paths and markers


@dataclass(frozen=True)
class PrepareSettings:
    """What decides the bytes written for a video; a re-run with other settings redoes the video.

    Attributes:
        format: ``"frames"`` (JPEG folders) or ``"video"`` (one H.264 mp4 per video).
        short_side: pixels of the output's shorter side (aspect kept); 0 keeps the source size.
        jpeg_quality: Pillow JPEG quality of the frames.
        crf: x264 constant rate factor of the mp4 (lower is better quality, larger files).
        gop: frames between key frames of the mp4 (a clip read decodes at most this many extra).
    """

    format: Format = "frames"
    short_side: int = 256
    jpeg_quality: int = 90
    crf: int = 18
    gop: int = 16

    def recorded(self) -> dict:
        """The settings stored in a video's marker (only those that matter for its format)."""
        if self.format == "frames":
            return {"format": "frames", "short_side": self.short_side, "jpeg_quality": self.jpeg_quality}
        return {"format": "video", "short_side": self.short_side, "crf": self.crf, "gop": self.gop}


def output_path(root: PathLike, video_id: str, fmt: Format) -> Path:
    """The finished output of a video: its frame folder or its mp4."""
    root = Path(root)
    return root / "frames" / video_id if fmt == "frames" else root / "videos" / f"{video_id}.mp4"


def partial_path(root: PathLike, video_id: str, fmt: Format) -> Path:
    """Where a video is written before it is complete (renamed to ``output_path`` at the end)."""
    root = Path(root)
    if fmt == "frames":
        return root / "frames" / f"{video_id}.partial"
    return root / "videos" / ".partial" / f"{video_id}.mp4"


def marker_path(root: PathLike, video_id: str, fmt: Format) -> Path:
    """The small JSON file whose presence says the video is complete."""
    root = Path(root)
    return root / "frames" / video_id / ".done" if fmt == "frames" else root / "videos" / ".done" / f"{video_id}.json"


def read_marker(root: PathLike, video_id: str, fmt: Format) -> dict | None:
    """The video's marker, or None when it is absent or unreadable (then the video is redone)."""
    try:
        marker = json.loads(marker_path(root, video_id, fmt).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_done(root: PathLike, video_id: str, settings: PrepareSettings, source: PathLike | None = None) -> bool:
    """True when the video is complete with these settings (and, given ``source``, from a file of that size)."""
    marker = read_marker(root, video_id, settings.format)
    if marker is None or marker.get("version") != MARKER_VERSION or marker.get("frames") != NUM_FRAMES:
        return False
    if marker.get("settings") != settings.recorded() or not output_path(root, video_id, settings.format).exists():
        return False
    if source is not None:
        with contextlib.suppress(OSError):
            if marker.get("source", {}).get("bytes") != os.path.getsize(source):
                return False
    return True


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write through a temporary file and a rename, so a reader never sees half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---------------------------------------------------------------------------------------------------------
# time: which source frame goes where


def output_slot(time_s: Fraction) -> int:
    """The output frame a source frame shown at ``time_s`` rounds to: ``round((t - 900) * 30)``, halves up."""
    time_s = Fraction(time_s)
    # floor(t * 30 + 1/2) in integers (exact, and quicker than Fraction arithmetic for every frame)
    rounded = (2 * OUTPUT_FPS * time_s.numerator + time_s.denominator) // (2 * time_s.denominator)
    return rounded - FIRST_SECOND * OUTPUT_FPS


class _StartedLate(Exception):
    """The first decoded frame is already past output frame 0: the seek went too far."""


def pick_output_frames(
    timed_frames: Iterable[tuple[Fraction, object]],
    num_frames: int = NUM_FRAMES,
    max_gap_s: float = 2.0,
) -> Iterator[tuple[int, object, Fraction]]:
    """Resample decoded frames to the 30 fps output timeline.

    Args:
        timed_frames: ``(time_s, frame)`` in presentation order, ``time_s`` in seconds from the file's
            start. The first must fall at or before output frame 0 (a seek to just before second 900).
        num_frames: output frames wanted (27001: seconds 900 to 1800).
        max_gap_s: a longer jump between consecutive source frames is an error (lost data).

    Yields:
        ``(i, frame, time_s)`` for ``i = 0 .. num_frames - 1`` in order: output frame ``i`` is the latest
        source frame whose ``output_slot`` is ``<= i``; a source frame is yielded again for each output
        frame it fills.

    Raises:
        PrepareError: the video ends before the last output frame or has a hole.
        _StartedLate: the first frame comes after output frame 0.
    """
    next_i = 0
    held = None  # (frame, time, slot): the latest frame whose slot is <= next_i
    for t, frame in timed_frames:
        slot = output_slot(t)
        if held is None:
            if slot > 0:
                raise _StartedLate(float(t))
            held = (frame, t, slot)
            continue
        if t <= held[1]:
            continue  # a repeated or backward timestamp (broken muxing): keep the frame already held
        if slot <= next_i:
            held = (frame, t, slot)
            continue
        # The next frame rounds past next_i: the held one is final for slots next_i .. slot - 1.
        if float(t - held[1]) > max_gap_s:
            raise PrepareError(
                f"no frame between {float(held[1]):.3f} s and {float(t):.3f} s (damaged or corrupt file?)"
            )
        for i in range(next_i, min(slot, num_frames)):
            yield i, held[0], held[1]
        next_i = slot
        if next_i >= num_frames:
            return
        held = (frame, t, slot)
    if held is None:
        raise PrepareError("no video frame could be decoded after the seek to second 900")
    if held[2] < num_frames - 1:
        last_s = FIRST_SECOND + Fraction(num_frames - 1, OUTPUT_FPS)
        raise PrepareError(f"the video ends at {float(held[1]):.3f} s, before {float(last_s):.1f} s")
    yield num_frames - 1, held[0], held[1]


def scaled_size(width: int, height: int, short_side: int, even: bool = False) -> tuple[int, int]:
    """``(width, height)`` with the shorter side ``short_side`` and the aspect kept (0: unchanged).

    ``even`` rounds both to even numbers (H.264 in yuv420p needs them).
    """
    if short_side > 0:
        if width <= height:
            width, height = short_side, round(height * short_side / width)
        else:
            width, height = round(width * short_side / height), short_side
    if even:
        width, height = 2 * ((width + 1) // 2), 2 * ((height + 1) // 2)  # odd sizes round up
    return width, height


# ---------------------------------------------------------------------------------------------------------
# decoding


@dataclass
class SourceInfo:
    """What the raw file says about its video stream."""

    path: str
    bytes: int
    fps: float
    width: int
    height: int
    codec: str


def _open_video(path: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise PrepareError(
            f"cannot open {path} as a video ({e.strerror or e}): not a video, truncated or corrupt?"
        ) from None
    if not container.streams.video:
        container.close()
        raise PrepareError(f"{path} has no video stream")
    return container, container.streams.video[0]


def _start_time(container: av.container.InputContainer, stream) -> Fraction:
    """The file's start time in seconds: ffmpeg measures ``-ss`` from it."""
    if container.start_time is not None:
        return Fraction(container.start_time, av.time_base)
    if stream.start_time is not None and stream.time_base:
        return stream.start_time * stream.time_base
    return Fraction(0)


def _decode_timed(container, stream, start: Fraction, seek_to: Fraction | None) -> Iterator[tuple[Fraction, object]]:
    """Decoded frames of ``stream`` as ``(seconds from the file start, frame)``, from a seek to ``seek_to``.

    The seek lands on the key frame at or before ``seek_to`` (None: the file's beginning).
    """
    time_base = stream.time_base
    if seek_to is None:
        container.seek(0, backward=True)
    else:
        container.seek(math.floor((start + seek_to) / time_base), stream=stream, backward=True)
    # pts * time_base - start over one common denominator: one Fraction per frame
    scale = time_base.numerator * start.denominator
    offset = start.numerator * time_base.denominator
    denominator = time_base.denominator * start.denominator
    last = None
    try:
        for frame in container.decode(stream):
            if frame.pts is None:
                raise PrepareError("decoded frames carry no timestamps")
            last = Fraction(frame.pts * scale - offset, denominator)
            yield last, frame
    except av.FFmpegError as e:
        where = f"after {float(last):.3f} s" if last is not None else "at the start"
        raise PrepareError(f"decoder error {where} ({e.strerror or e}): corrupt file?") from None


def iter_output_frames(
    container, stream, max_gap_s: float = 2.0, num_frames: int = NUM_FRAMES
) -> Iterator[tuple[int, object, Fraction]]:
    """``pick_output_frames`` over ``stream`` decoded from just before second 900.

    Seeks 1 s before second 900 (a key frame at or before it) rather than decoding the first 15
    minutes; should the demuxer land after second 900 (imprecise index) it retries 30 s earlier and
    finally from the beginning of the file.
    """
    start = _start_time(container, stream)
    for margin in (1, 30, None):
        seek_to = Fraction(FIRST_SECOND - margin) if margin is not None else None
        try:
            yield from pick_output_frames(_decode_timed(container, stream, start, seek_to), num_frames, max_gap_s)
            return
        except _StartedLate as late:
            if margin is None:
                raise PrepareError(
                    f"the video's first frame is at {late.args[0]:.3f} s, after second {FIRST_SECOND}"
                ) from None


# ---------------------------------------------------------------------------------------------------------
# writers


class _Resizer:
    """Converts frames to one pixel format and size (area averaging to shrink, bicubic to enlarge).

    One swscale context is kept for the whole video, single-threaded: ``VideoFrame.reformat`` would set
    up a new multi-threaded one for every frame, which costs far more than the conversion itself.
    """

    def __init__(self, size: tuple[int, int], pix_fmt: str) -> None:
        from av.video.reformatter import VideoReformatter

        self.size, self.pix_fmt = size, pix_fmt
        self._reformatter = VideoReformatter()

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        width, height = self.size
        shrink = width * height <= frame.width * frame.height
        return self._reformatter.reformat(frame, width=width, height=height, format=self.pix_fmt,
                                          interpolation="AREA" if shrink else "BICUBIC", threads=1)


class FrameFolderWriter:
    """Writes output frame ``i`` to ``folder/<vid>_{i+1:06d}.jpg`` (JPEG via Pillow)."""

    def __init__(self, folder: Path, video_id: str, size: tuple[int, int], quality: int) -> None:
        self.folder, self.video_id, self.size, self.quality = folder, video_id, size, quality
        self._last: tuple[object, bytes] | None = None  # a source frame repeated (25 fps) is encoded once
        self._resize = _Resizer(size, "rgb24")
        folder.mkdir(parents=True)

    def write(self, index: int, frame: av.VideoFrame) -> None:
        if self._last is None or self._last[0] is not frame:
            rgb = self._resize(frame)
            plane = rgb.planes[0]
            # straight from the frame's buffer (rows padded to line_size); to_image would convert again
            image = Image.frombuffer("RGB", (rgb.width, rgb.height), plane, "raw", "RGB", plane.line_size, 1)
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.quality)
            self._last = (frame, buffer.getvalue())
        fd = os.open(self.folder / f"{self.video_id}_{index + 1:06d}.jpg", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            data = memoryview(self._last[1])
            while data:  # a short write happens when the disk is nearly full; the next one raises ENOSPC
                data = data[os.write(fd, data):]
        finally:
            os.close(fd)

    def finish(self) -> None:
        """Check the folder holds exactly frames 000001 .. 027001."""
        self._last = None
        prefix = f"{self.video_id}_"
        names = {n for n in os.listdir(self.folder) if n.startswith(prefix) and n.endswith(".jpg")}
        expected = {f"{self.video_id}_{i:06d}.jpg" for i in range(1, NUM_FRAMES + 1)}
        if names != expected:
            missing = sorted(expected - names)
            raise PrepareError(
                f"{self.folder} holds {len(names)} frames, expected {NUM_FRAMES}"
                + (f" (first missing: {missing[0]})" if missing else "")
            )

    def close(self) -> None:
        self._last = None


class Mp4Writer:
    """Writes output frames as H.264 (libx264, yuv420p) at 30 fps: frame ``i`` has pts ``i / 30`` s.

    A key frame every ``gop`` frames without scene-cut key frames, so a clip read seeks to within
    ``gop`` frames of what it needs. The index is moved to the front (faststart) for quick opening.
    """

    def __init__(self, path: Path, size: tuple[int, int], crf: int, gop: int, threads: int = 0) -> None:
        self.path, self.size = path, size
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w", options={"movflags": "+faststart"})
        stream = self._container.add_stream("libx264", rate=OUTPUT_FPS)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {
            "crf": str(crf),
            "preset": "veryfast",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:threads={threads or 'auto'}",
        }
        self._stream = stream
        self._resize = _Resizer(size, "yuv420p")
        self._last: tuple[object, av.VideoFrame] | None = None

    def write(self, index: int, frame: av.VideoFrame) -> None:
        if self._last is None or self._last[0] is not frame:
            self._last = (frame, self._resize(frame))
        out = self._last[1]
        out.pict_type = 0  # AV_PICTURE_TYPE_NONE: the source's key frames must not force key frames here
        out.pts = index  # time base 1/30: pts i is i/30 s
        out.time_base = Fraction(1, OUTPUT_FPS)
        self._container.mux(self._stream.encode(out))

    def finish(self) -> None:
        """Flush the encoder, close the file and check it: 27001 frames from 0.0 s to 900.0 s."""
        self._last = None
        self._container.mux(self._stream.encode(None))
        self._container.close()
        check_mp4(self.path)

    def close(self) -> None:
        self._last = None
        with contextlib.suppress(Exception):
            self._container.close()


def check_mp4(path: PathLike) -> None:
    """Raise ``PrepareError`` unless ``path`` holds 27001 video packets timed 0.0 .. 900.0 s at 30 fps.

    Reads packets only (no decoding), so it is quick.
    """
    path = os.fspath(path)
    with av.open(path) as container:
        stream = container.streams.video[0]
        times = [p.pts * stream.time_base for p in container.demux(stream) if p.pts is not None]
    if len(times) != NUM_FRAMES:
        raise PrepareError(f"{path} holds {len(times)} frames, expected {NUM_FRAMES}")
    first, last = min(times), max(times)
    if first != 0 or last != Fraction(NUM_FRAMES - 1, OUTPUT_FPS):
        raise PrepareError(f"{path} runs from {float(first):.3f} s to {float(last):.3f} s, expected 0.0 to 900.0")


# ---------------------------------------------------------------------------------------------------------
# one video


@dataclass(frozen=True)
class VideoJob:
    """One raw video to prepare into ``root``."""

    video_id: str
    source: str
    root: str
    settings: PrepareSettings
    decoder_threads: int = 0  # 0: FFmpeg chooses
    max_gap_s: float = 2.0


@dataclass
class VideoResult:
    """How one video went. ``status``: ``"done"``, ``"skipped"`` (already done) or ``"failed"``."""

    video_id: str
    status: str
    frames: int = 0
    seconds: float = 0.0
    reason: str = ""
    source_fps: float | None = None
    source_size: tuple[int, int] | None = None
    output_size: tuple[int, int] | None = None


ProgressFn = Callable[[str, int], None]


def prepare_video(job: VideoJob, progress: ProgressFn | None = None) -> VideoResult:
    """Prepare one video (see the module docstring for the layout and the frame/time conventions).

    ``progress(video_id, n)`` is called as frames are written (``n`` new frames since the last call).
    Never raises for a problem of the video itself: that is a ``"failed"`` result with a one-line reason.
    """
    settings, fmt = job.settings, job.settings.format
    if is_done(job.root, job.video_id, settings, job.source):
        return VideoResult(job.video_id, "skipped", frames=NUM_FRAMES)
    begin = time.perf_counter()
    partial = partial_path(job.root, job.video_id, fmt)
    _remove(partial)  # what an interrupted run left
    try:
        info, first_last, size = _write_video(job, partial, progress)
        _publish(job, partial, info, first_last, size, time.perf_counter() - begin)
    except OSError as e:
        _remove(partial)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return VideoResult(job.video_id, "failed", reason=_disk_full_message(job.root, e))
        return VideoResult(job.video_id, "failed", reason=f"cannot write {e.filename or partial}: {e.strerror or e}")
    except PrepareError as e:
        _remove(partial)
        reason = str(e) if job.source in str(e) else f"{job.source}: {e}"
        return VideoResult(job.video_id, "failed", reason=reason)
    except av.FFmpegError as e:  # an encoder or muxer error: this video fails, the run goes on
        _remove(partial)
        return VideoResult(job.video_id, "failed", reason=f"{job.source}: FFmpeg error writing {partial} ({e})")
    return VideoResult(
        job.video_id,
        "done",
        frames=NUM_FRAMES,
        seconds=time.perf_counter() - begin,
        source_fps=info.fps,
        source_size=(info.width, info.height),
        output_size=size,
    )


def _write_video(
    job: VideoJob, partial: Path, progress: ProgressFn | None
) -> tuple[SourceInfo, tuple[float, float], tuple[int, int]]:
    """Decode, resample, resize and write the video to ``partial``; return the source, the source times
    of output frames 0 and 27000, and the output size."""
    container, stream = _open_video(job.source)
    try:
        stream.thread_type = "AUTO"  # frame and slice threads: decoding is most of the work
        stream.thread_count = job.decoder_threads
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        info = SourceInfo(
            path=job.source,
            bytes=os.path.getsize(job.source),
            fps=float(rate) if rate else 0.0,
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            codec=stream.codec_context.name,
        )
        if info.width <= 0 or info.height <= 0:
            raise PrepareError(f"{job.source}: the video stream states no frame size")
        video = job.settings.format == "video"
        size = scaled_size(info.width, info.height, job.settings.short_side, even=video)
        if video:
            writer = Mp4Writer(partial, size, job.settings.crf, job.settings.gop)
        else:
            writer = FrameFolderWriter(partial, job.video_id, size, job.settings.jpeg_quality)
        try:
            first_last = _write_frames(container, stream, writer, job, progress)
            writer.finish()
        finally:
            writer.close()
    finally:
        container.close()
    return info, first_last, size


def _write_frames(container, stream, writer, job: VideoJob, progress: ProgressFn | None) -> tuple[float, float]:
    """Write all output frames; return the source times shown at output frames 0 and 27000."""
    first = last = None
    unreported = 0
    for i, frame, t in iter_output_frames(container, stream, job.max_gap_s):
        writer.write(i, frame)
        if i == 0:
            first = float(t)
        last = float(t)
        unreported += 1
        if progress is not None and unreported >= 500:
            progress(job.video_id, unreported)
            unreported = 0
    if progress is not None and unreported:
        progress(job.video_id, unreported)
    assert first is not None and last is not None
    return first, last


def _publish(
    job: VideoJob, partial: Path, info: SourceInfo, first_last: tuple[float, float], size: tuple[int, int],
    seconds: float,
) -> None:
    """Move the finished output in place and write its marker last."""
    fmt = job.settings.format
    final = output_path(job.root, job.video_id, fmt)
    marker = {
        "version": MARKER_VERSION,
        "video_id": job.video_id,
        "frames": NUM_FRAMES,
        "fps": OUTPUT_FPS,
        "first_time_s": float(FIRST_SECOND),
        "last_time_s": float(LAST_SECOND),
        "size": list(size),
        "settings": job.settings.recorded(),
        "source": {
            "file": os.path.basename(info.path),
            "bytes": info.bytes,
            "fps": info.fps,
            "size": [info.width, info.height],
            "codec": info.codec,
            "time_at_first_frame_s": first_last[0],
            "time_at_last_frame_s": first_last[1],
        },
        "seconds_taken": round(seconds, 2),
    }
    _remove(marker_path(job.root, job.video_id, fmt))  # an old marker must not vouch for the new output
    _remove(final)
    os.rename(partial, final)
    _write_json_atomic(marker_path(job.root, job.video_id, fmt), marker)


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _disk_full_message(root: PathLike, e: OSError) -> str:
    root = Path(root)
    try:
        free = f", {shutil.disk_usage(root).free / 2**30:.1f} GiB free now"
    except OSError:
        free = ""
    return (
        f"the output disk is full ({e.strerror or 'no space left'}) writing under {root} "
        f"(file system at {_mount_point(root)}{free}); free space and re-run: this video will be redone"
    )


# ---------------------------------------------------------------------------------------------------------
# which videos


def video_id_of(name: str) -> str:
    """``-5KQ66BBWC4.mkv`` -> ``-5KQ66BBWC4``: the name without a known video extension."""
    stem, ext = os.path.splitext(name.strip())
    return stem if ext.lower() in VIDEO_EXTENSIONS else name.strip()


def read_video_list(path: PathLike) -> list[str]:
    """File names of an AVA video list (one per line, e.g. ``ava_file_names_trainval_v2.1.txt``), in order."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            names = [line.strip() for line in f]
    except OSError as e:
        raise FileNotFoundError(f"video list {path}: {e.strerror}") from None
    return list(dict.fromkeys(n for n in names if n and not n.startswith("#")))


@dataclass
class VideoSelection:
    """The raw files to prepare, by video id, and what could not be matched."""

    sources: dict[str, str]
    missing: list[str] = field(default_factory=list)  # listed but not in the folder
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # several files for one id


def find_videos(videos_dir: PathLike, names: Sequence[str] | None = None) -> VideoSelection:
    """Match video ids to files of ``videos_dir``.

    With ``names`` (a video list) only those are taken; a name matches its exact file or, failing
    that, a file of the same id with another video extension (a video downloaded as mp4 instead of
    mkv). Without, every file with a video extension is taken.
    """
    videos_dir = Path(videos_dir)
    by_id: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(videos_dir), key=lambda e: e.name):
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in VIDEO_EXTENSIONS:
            by_id.setdefault(video_id_of(entry.name), []).append(entry.path)
    selection = VideoSelection(sources={})
    if names is None:
        wanted = {vid: None for vid in by_id}
    else:
        wanted = {video_id_of(n): n for n in names}
    for vid, name in wanted.items():
        exact = videos_dir / name if name else None
        if exact is not None and exact.is_file():
            selection.sources[vid] = str(exact)
        elif len(by_id.get(vid, [])) == 1:
            selection.sources[vid] = by_id[vid][0]
        elif by_id.get(vid):
            selection.ambiguous[vid] = by_id[vid]
        else:
            selection.missing.append(vid)
    return selection


def annotated_video_ids(csv_path: PathLike) -> list[str]:
    """The video ids of an AVA box CSV (first column), sorted."""
    ids: set[str] = set()
    with open(csv_path) as f:
        for line in f:
            vid = line.split(",", 1)[0].strip()
            if vid:
                ids.add(vid)
    return sorted(ids)


# ---------------------------------------------------------------------------------------------------------
# frame lists and annotations


def write_frame_list(path: PathLike, video_ids: Sequence[str]) -> None:
    """PySlowFast's frame list: a header, then ``vid idx frame_id vid/vid_%06d.jpg ""`` per frame.

    ``idx`` numbers the videos in the order given; ``frame_id`` is the 0-based frame index, the file
    number is ``frame_id + 1``. Written through a temporary file, so a listed path is always complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(FRAME_LIST_HEADER + "\n")
        for idx, vid in enumerate(video_ids):
            f.writelines(f'{vid} {idx} {k} {vid}/{vid}_{k + 1:06d}.jpg ""\n' for k in range(NUM_FRAMES))
    os.replace(tmp, path)


def copy_annotations(ann_dir: PathLike, out_dir: PathLike, link: bool = False) -> list[str]:
    """Copy (or symlink, ``link``) every file of ``ann_dir`` into ``out_dir``; return the names.

    Sub-folders are not copied. A file already there with the same size and time is left alone.
    """
    ann_dir, out_dir = Path(ann_dir).resolve(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() == ann_dir:
        return sorted(p.name for p in ann_dir.iterdir() if p.is_file())
    names = []
    for src in sorted(ann_dir.iterdir()):
        if not src.is_file():
            continue
        dst = out_dir / src.name
        if link:
            if not (dst.is_symlink() and os.readlink(dst) == str(src)):
                _remove(dst)
                dst.symlink_to(src)
        else:
            same = dst.is_file() and not dst.is_symlink() and _same_file_stat(src, dst)
            if not same:
                _remove(dst)
                shutil.copy2(src, dst)
        names.append(src.name)
    return names


def _same_file_stat(a: Path, b: Path) -> bool:
    sa, sb = a.stat(), b.stat()
    return sa.st_size == sb.st_size and int(sa.st_mtime) == int(sb.st_mtime)


# ---------------------------------------------------------------------------------------------------------
# the whole run


@dataclass
class PrepareSummary:
    """What ``prepare_ava`` did."""

    root: str
    settings: PrepareSettings
    results: list[VideoResult] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    video_list: str | None = None
    frame_lists: dict[str, int] = field(default_factory=dict)  # split -> videos listed
    without_frames: dict[str, list[str]] = field(default_factory=dict)  # split -> annotated videos lacking frames
    annotations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def by_status(self, status: str) -> list[VideoResult]:
        return [r for r in self.results if r.status == status]

    @property
    def frames_written(self) -> int:
        return sum(r.frames for r in self.by_status("done"))

    @property
    def ok(self) -> bool:
        """No video failed and none of the listed ones is missing."""
        return not self.by_status("failed") and not self.missing

    def describe(self) -> str:
        done, skipped, failed = self.by_status("done"), self.by_status("skipped"), self.by_status("failed")
        s = self.settings
        what = (
            f"frames, JPEG quality {s.jpeg_quality}" if s.format == "frames" else f"H.264 mp4, crf {s.crf}, GOP {s.gop}"
        )
        size = f"short side {s.short_side}" if s.short_side else "source size"
        rate = f" ({self.frames_written / self.seconds:.0f} frames/s)" if self.seconds > 0 and done else ""
        lines = [
            f"prepare-ava into {self.root} ({what}, {size}, 30 fps, seconds {FIRST_SECOND}-{LAST_SECOND})",
            f"  done:    {len(done)} video(s), {self.frames_written} frames{rate}",
            f"  skipped: {len(skipped)} video(s) already done with the same settings",
            f"  failed:  {len(failed)} video(s)",
        ]
        lines += [f"    {r.video_id}: {r.reason}" for r in failed]
        if self.missing:
            source = f"listed in {self.video_list}" if self.video_list else "listed"
            shown = ", ".join(self.missing[:10]) + (" ..." if len(self.missing) > 10 else "")
            lines.append(f"  missing: {len(self.missing)} video(s) {source} but not found: {shown}")
        for split, count in self.frame_lists.items():
            lacking = self.without_frames.get(split, [])
            extra = ""
            if lacking:
                extra = f"; {len(lacking)} annotated video(s) without frames left out: {', '.join(lacking[:5])}"
            lines.append(f"  frame list {split}: {count} video(s){extra}")
        if self.annotations:
            lines.append(f"  annotations: {len(self.annotations)} file(s) in {Path(self.root) / 'annotations'}")
        lines.append(f"  took {self.seconds:.1f} s")
        return "\n".join(lines)


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def prepare_ava(
    videos_dir: PathLike,
    annotations_dir: PathLike | None,
    out_root: PathLike,
    *,
    settings: PrepareSettings | None = None,
    workers: int | None = None,
    video_list: PathLike | None = None,
    link_annotations: bool = False,
    progress: bool = True,
    max_gap_s: float = 2.0,
    log: Callable[[str], None] | None = None,
) -> PrepareSummary:
    """Prepare every selected video of ``videos_dir`` into ``out_root``; see the module docstring.

    Videos are selected by ``video_list``, else by ``ava_file_names_trainval_v2.1.txt`` in
    ``annotations_dir`` when present, else all video files. A problem with a video fails that video
    only (reported in the summary); problems with the arguments raise ``ValueError`` or
    ``FileNotFoundError`` with a one-line message before anything is written.
    """
    begin = time.perf_counter()
    settings = settings or PrepareSettings()
    _check_arguments(videos_dir, annotations_dir, settings, workers)
    root = Path(out_root)
    if video_list is None and annotations_dir is not None and (Path(annotations_dir) / VIDEO_LIST_NAME).is_file():
        video_list = Path(annotations_dir) / VIDEO_LIST_NAME
    names = read_video_list(video_list) if video_list is not None else None
    selection = find_videos(videos_dir, names)
    summary = PrepareSummary(root=str(root), settings=settings, missing=list(selection.missing),
                             video_list=os.fspath(video_list) if video_list is not None else None)
    summary.results += [
        VideoResult(vid, "failed", reason=f"several files for this video, keep one: {', '.join(paths)}")
        for vid, paths in selection.ambiguous.items()
    ]
    root.mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else 0
    jobs = [
        VideoJob(vid, src, str(root), settings, decoder_threads=threads, max_gap_s=max_gap_s)
        for vid, src in selection.sources.items()
    ]
    summary.results += run_jobs(jobs, workers, progress=progress, log=log)
    if annotations_dir is not None:
        summary.annotations = copy_annotations(annotations_dir, root / "annotations", link=link_annotations)
        _write_frame_lists(root, Path(annotations_dir), summary)
    summary.seconds = time.perf_counter() - begin
    return summary


def _check_arguments(videos_dir, annotations_dir, settings: PrepareSettings, workers: int | None) -> None:
    if not Path(videos_dir).is_dir():
        raise FileNotFoundError(f"video folder not found: {videos_dir}")
    if annotations_dir is not None and not Path(annotations_dir).is_dir():
        raise FileNotFoundError(f"annotation folder not found: {annotations_dir}")
    if settings.format not in ("frames", "video"):
        raise ValueError(f"format must be 'frames' or 'video', got {settings.format!r}")
    if settings.short_side < 0:
        raise ValueError(f"short side must be >= 0 (0 keeps the source size), got {settings.short_side}")
    if not 1 <= settings.jpeg_quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {settings.jpeg_quality}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")


def _write_frame_lists(root: Path, ann_dir: Path, summary: PrepareSummary) -> None:
    """Frame lists of the train and val videos that have complete frame folders."""
    for split, name in SPLIT_CSVS.items():
        csv_path = ann_dir / name
        if not csv_path.is_file():
            continue
        annotated = annotated_video_ids(csv_path)
        with_frames = [v for v in annotated if (read_marker(root, v, "frames") or {}).get("frames") == NUM_FRAMES]
        if not with_frames:
            continue  # e.g. --format video only: no frames to list
        write_frame_list(root / "frame_lists" / f"{split}.csv", with_frames)
        summary.frame_lists[split] = len(with_frames)
        summary.without_frames[split] = [v for v in annotated if v not in set(with_frames)]


# ---------------------------------------------------------------------------------------------------------
# running jobs, in this process or in worker processes

_progress_queue = None  # set in worker processes: frames-written messages go back through it


def _init_worker(queue) -> None:
    global _progress_queue
    _progress_queue = queue


def _queue_progress(video_id: str, n: int) -> None:
    if _progress_queue is not None:
        _progress_queue.put((video_id, n))


def _run_in_worker(job: VideoJob) -> VideoResult:
    return prepare_video(job, _queue_progress)


def run_jobs(
    jobs: Sequence[VideoJob], workers: int = 1, *, progress: bool = True, log: Callable[[str], None] | None = None
) -> list[VideoResult]:
    """Prepare ``jobs``, ``workers`` at a time (processes when more than one), with a progress bar.

    Finished videos are skipped without counting in the bar. Once a video fails for a full disk,
    the videos not yet started are not started (each reported as failed for that reason).
    """
    from tqdm import tqdm

    results: dict[str, VideoResult] = {}
    todo = []
    for job in jobs:
        if is_done(job.root, job.video_id, job.settings, job.source):
            results[job.video_id] = VideoResult(job.video_id, "skipped", frames=NUM_FRAMES)
        else:
            todo.append(job)
    bar = tqdm(total=len(todo) * NUM_FRAMES, unit="frame", unit_scale=True, dynamic_ncols=True,
               disable=True if not progress or not todo else None,  # None: shown on a terminal only
               desc=f"{len(todo)} video(s)", smoothing=0.05)
    written: dict[str, int] = {}

    def advance(video_id: str, n: int) -> None:
        if video_id in results:
            return  # a late message from a worker whose video was already counted as finished
        written[video_id] = written.get(video_id, 0) + n
        bar.update(n)

    def finished(result: VideoResult) -> None:
        bar.update(NUM_FRAMES - written.get(result.video_id, 0))  # a failed video's frames still count as handled
        results[result.video_id] = result
        message = _result_line(result)
        if log is not None:
            log(message)
        elif progress:
            bar.write(message)

    try:
        if workers <= 1 or len(todo) <= 1:
            _run_here(todo, advance, finished)
        else:
            _run_in_processes(todo, min(workers, len(todo)), advance, finished)
    finally:
        bar.close()
    return [results[job.video_id] for job in jobs if job.video_id in results]


def _result_line(result: VideoResult) -> str:
    if result.status == "failed":
        return f"FAILED {result.video_id}: {result.reason}"
    src = result.source_size and f"{result.source_size[0]}x{result.source_size[1]} {result.source_fps:.2f} fps"
    out = result.output_size and f"{result.output_size[0]}x{result.output_size[1]}"
    return f"done   {result.video_id}: {result.frames} frames ({src} -> {out} 30 fps) in {result.seconds:.1f} s"


def _run_here(jobs: Sequence[VideoJob], advance: ProgressFn, finished: Callable[[VideoResult], None]) -> None:
    disk_full = None
    for job in jobs:
        if disk_full is not None:
            finished(VideoResult(job.video_id, "failed", reason=f"not started: {disk_full}"))
            continue
        result = prepare_video(job, advance)
        if _is_disk_full(result):
            disk_full = "the output disk is full (see the video before)"
        finished(result)


def _is_disk_full(result: VideoResult) -> bool:
    return result.status == "failed" and result.reason.startswith("the output disk is full")


def _run_in_processes(
    jobs: Sequence[VideoJob], workers: int, advance: ProgressFn, finished: Callable[[VideoResult], None]
) -> None:
    # Processes, not threads: JPEG encoding and frame conversion hold the GIL. fork starts workers at
    # once (spawn would re-import torch through the bmvit package in each).
    method = "fork" if "fork" in get_all_start_methods() else "spawn"
    context = get_context(method)
    queue = context.Queue()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                             initargs=(queue,)) as pool:
        futures: dict[Future, VideoJob] = {pool.submit(_run_in_worker, job): job for job in jobs}
        try:
            _collect(futures, queue, advance, finished)
        except KeyboardInterrupt:
            for future in futures:  # start no new video; the running ones stop on their own interrupt
                future.cancel()
            raise


def _collect(
    futures: dict[Future, VideoJob], queue, advance: ProgressFn, finished: Callable[[VideoResult], None]
) -> None:
    """Pass on progress and results as the workers send them, until every video is done or cancelled.

    After a full disk, the videos not yet started are cancelled.
    """
    pending = set(futures)
    disk_full = False
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
        _drain(queue, advance)
        for future in done:
            job = futures[future]
            if future.cancelled():
                finished(VideoResult(job.video_id, "failed", reason="not started: the output disk is full"))
                continue
            try:
                result = future.result()
            except Exception as e:  # noqa: BLE001 - a worker that died (killed, out of memory) fails its video only
                result = VideoResult(job.video_id, "failed", reason=f"worker process failed: {e!r}")
            finished(result)
            if _is_disk_full(result) and not disk_full:
                disk_full = True
                for other in pending:
                    other.cancel()
    _drain(queue, advance)


def _drain(queue, advance: ProgressFn) -> None:
    import queue as queue_module

    while True:
        try:
            video_id, n = queue.get_nowait()
        except queue_module.Empty:
            return
        advance(video_id, n)


__all__ = [
    "FIRST_SECOND",
    "LAST_SECOND",
    "NUM_FRAMES",
    "OUTPUT_FPS",
    "PrepareError",
    "PrepareSettings",
    "PrepareSummary",
    "VideoJob",
    "VideoResult",
    "annotated_video_ids",
    "check_mp4",
    "copy_annotations",
    "find_videos",
    "is_done",
    "output_slot",
    "pick_output_frames",
    "prepare_ava",
    "prepare_video",
    "read_video_list",
    "run_jobs",
    "scaled_size",
    "write_frame_list",
]
