"""Clips of T frames around a key frame, from frame folders or from video files (decoded with PyAV).

Two sources behind one interface (``ClipSource``): ``FrameFolderSource`` reads AVA's
``<vid>/<vid>_%06d.jpg`` layout (or any numbered-image pattern), ``VideoFileSource`` decodes a video
file, seeking to the key frame before the first frame a clip needs and decoding only up to the last.
Both return ``uint8 [T, H, W, 3]`` RGB arrays.

Sampling follows PySlowFast (``slowfast/datasets/utils.py::get_sequence`` as called by
``ava_dataset.py`` with ``half_len = T * stride // 2``): frame ``i`` of the clip is
``center - T * stride // 2 + i * stride``, clamped to ``[0, num_frames - 1]``. So the key frame is clip
frame ``T // 2`` (for even ``T * stride``), and frames past the ends of the video repeat the end frame.

Sources hold no open file between calls that could be pickled: a ``VideoFileSource`` opens its
container lazily and drops it when pickled, so a dataset holding sources works with
``DataLoader(num_workers > 0)``.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

import av
import numpy as np

PathLike = str | os.PathLike


def get_sequence(center_idx: int, half_len: int, sample_rate: int, num_frames: int) -> list[int]:
    """PySlowFast's ``get_sequence``: ``range(center - half_len, center + half_len, sample_rate)``, clamped.

    Kept with PySlowFast's exact semantics (its length is ``ceil(2 * half_len / sample_rate)``) so the
    sampling can be checked against it; ``clip_indices`` is what the sources use.
    """
    seq = list(range(center_idx - half_len, center_idx + half_len, sample_rate))
    return [min(max(i, 0), num_frames - 1) for i in seq]


def clip_indices(center_idx: int, num_frames: int, stride: int, video_length: int) -> np.ndarray:
    """Indices of a clip of ``num_frames`` frames at ``stride`` centred on ``center_idx``: [T] int64.

    Equal to ``get_sequence(center_idx, num_frames * stride // 2, stride, video_length)`` whenever
    ``num_frames * stride`` is even (AVA's 16x4, 32x2, 8x8); for an odd product PySlowFast's range
    would give ``num_frames + 1`` or ``num_frames - 1`` frames, this always gives ``num_frames``.
    """
    if num_frames < 1 or stride < 1:
        raise ValueError(f"clip_indices: num_frames and stride must be >= 1, got {num_frames} and {stride}")
    if video_length < 1:
        raise ValueError(f"clip_indices: the video has no frames (video_length={video_length})")
    start = center_idx - (num_frames * stride) // 2
    return np.clip(start + stride * np.arange(num_frames, dtype=np.int64), 0, video_length - 1)


def resample_indices(indices: np.ndarray, sample_fps: float, source_fps: float, source_length: int) -> np.ndarray:
    """Map frame indices on a ``sample_fps`` timeline to the nearest frames of a ``source_fps`` video."""
    if sample_fps == source_fps:
        return np.asarray(indices, dtype=np.int64)
    mapped = np.floor(np.asarray(indices, dtype=np.float64) * (source_fps / sample_fps) + 0.5).astype(np.int64)
    return np.clip(mapped, 0, source_length - 1)


@runtime_checkable
class ClipSource(Protocol):
    """Frames of one video. ``size`` is (H, W); frames are RGB ``uint8 [H, W, 3]``."""

    video_id: str

    @property
    def fps(self) -> float: ...

    @property
    def num_frames(self) -> int: ...

    @property
    def size(self) -> tuple[int, int]: ...

    def read_frames(self, indices: Sequence[int]) -> np.ndarray: ...

    def close(self) -> None: ...


class _ClipReading:
    """``read_clip`` and ``read_clip_at_time`` for any source with ``read_frames``, ``fps`` and ``num_frames``."""

    def read_clip(self, center_index: int, num_frames: int, stride: int) -> np.ndarray:
        """``uint8 [T, H, W, 3]``: ``num_frames`` frames at ``stride`` around frame ``center_index`` (clamped)."""
        return self.read_frames(clip_indices(center_index, num_frames, stride, self.num_frames))

    def read_clip_at_time(
        self, center_time_s: float, num_frames: int, stride: int, sample_fps: float | None = None
    ) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` centred on the frame at ``center_time_s`` seconds from the first frame.

        ``stride`` counts frames of a ``sample_fps`` timeline (default: the source's own rate), so a
        clip spans the same time whatever the video's frame rate: AVA's frames are extracted at 30 fps
        and its strides count those frames, while a video file may be at 25 or 29.97 fps.
        """
        sample_fps = float(sample_fps or self.fps)
        timeline_length = max(1, int(np.floor(self.num_frames * sample_fps / self.fps + 0.5)))
        center = int(np.floor(center_time_s * sample_fps + 0.5))
        indices = clip_indices(center, num_frames, stride, timeline_length)
        return self.read_frames(resample_indices(indices, sample_fps, self.fps, self.num_frames))

    def index_at(self, time_s: float) -> int:
        """The frame shown at ``time_s`` seconds from the first frame (nearest frame, not clamped)."""
        return int(np.floor(time_s * self.fps + 0.5))


# ---------------------------------------------------------------------------------------------------------
# frame folders


class FrameFolderSource(_ClipReading):
    """Frames stored as numbered images: AVA's ``<folder>/<vid>_%06d.jpg`` (frame 000001 = index 0).

    Args:
        folder: the video's frame folder.
        video_id: the video's name (default: the folder's name); fills ``{video_id}`` in ``pattern``.
        fps: the frame rate the frames were extracted at (AVA: 30).
        pattern: file name of a frame; ``{frame}`` is the frame number (``first_frame`` for index 0).
        first_frame: the number of the first frame (AVA and the ACT UCF/JHMDB folders: 1).
        frame_paths: explicit frame files in index order (from PySlowFast frame lists); overrides
            ``pattern``, and ``num_frames`` is their count.
        num_frames: the number of frames; default: the highest frame number in the folder, so a gap
            is an error when read, not a silent shift.

    JPEG and PNG frames are decoded with PyAV (FFmpeg's image decoders); no Pillow needed.
    """

    def __init__(
        self,
        folder: PathLike,
        video_id: str | None = None,
        *,
        fps: float = 30.0,
        pattern: str = "{video_id}_{frame:06d}.jpg",
        first_frame: int = 1,
        frame_paths: Sequence[PathLike] | None = None,
        num_frames: int | None = None,
    ) -> None:
        self.folder = os.fspath(folder)
        self.video_id = video_id if video_id is not None else os.path.basename(os.path.normpath(self.folder))
        self._fps = float(fps)
        self.pattern = pattern
        self.first_frame = first_frame
        self.frame_paths = [os.fspath(p) for p in frame_paths] if frame_paths is not None else None
        self._num_frames = len(self.frame_paths) if self.frame_paths is not None else num_frames
        self._size: tuple[int, int] | None = None

    @property
    def fps(self) -> float:
        return self._fps

    @property
    def num_frames(self) -> int:
        if self._num_frames is None:
            self._num_frames = self._count_frames()
        return self._num_frames

    @property
    def size(self) -> tuple[int, int]:
        if self._size is None:
            h, w = self.read_frames([0]).shape[1:3]
            self._size = (h, w)
        return self._size

    def frame_path(self, index: int) -> str:
        if self.frame_paths is not None:
            return self.frame_paths[index]
        return os.path.join(self.folder, self.pattern.format(video_id=self.video_id, frame=index + self.first_frame))

    def _count_frames(self) -> int:
        if not os.path.isdir(self.folder):
            raise FileNotFoundError(f"video {self.video_id}: frame folder not found: {self.folder}")
        regex = _pattern_regex(self.pattern, self.video_id)
        numbers = [int(m.group(1)) for name in os.listdir(self.folder) if (m := regex.fullmatch(name))]
        if not numbers:
            raise FileNotFoundError(
                f"video {self.video_id}: no frames named like {self.pattern.format(video_id=self.video_id, frame=1)!r} "
                f"in {self.folder}"
            )
        return max(numbers) - self.first_frame + 1

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """``uint8 [len(indices), H, W, 3]``; repeated indices are decoded once."""
        indices = [int(i) for i in indices]
        decoded = {i: self._decode(i) for i in dict.fromkeys(indices)}
        shapes = {a.shape for a in decoded.values()}
        if len(shapes) > 1:
            raise ValueError(f"video {self.video_id}: frames of different sizes {sorted(shapes)} in {self.folder}")
        return np.stack([decoded[i] for i in indices])

    def _decode(self, index: int) -> np.ndarray:
        path = self.frame_path(index)
        where = f"video {self.video_id}: frame {index} (t={index / self._fps:.3f} s)"
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{where} is outside the video's {self.num_frames} frames")
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"{where} is missing: {path}") from None
        # A fresh decoder per image: a reused PNG decoder carries state from the previous image over
        # (wrong pixels), and creating one costs little next to decoding.
        decoder = av.CodecContext.create(_image_codec(path), "r")
        try:
            frames = decoder.decode(av.Packet(data)) if data else []
        except av.FFmpegError as e:
            raise ValueError(f"{where}: cannot decode {path} ({e}); corrupt or truncated image?") from None
        if len(frames) != 1:
            raise ValueError(f"{where}: cannot decode {path} (empty, corrupt or truncated image?)")
        return frames[0].to_ndarray(format="rgb24")

    def close(self) -> None:
        """Nothing stays open between reads."""


_IMAGE_CODECS = {".jpg": "mjpeg", ".jpeg": "mjpeg", ".png": "png", ".bmp": "bmp", ".webp": "webp"}


def _image_codec(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    try:
        return _IMAGE_CODECS[ext]
    except KeyError:
        raise ValueError(
            f"unsupported frame image type {ext!r} ({path}); expected one of {sorted(_IMAGE_CODECS)}"
        ) from None


def _pattern_regex(pattern: str, video_id: str) -> re.Pattern:
    """A regex matching file names made by ``pattern``, capturing the frame number."""
    parts = []
    for literal, field, _spec, _conv in string.Formatter().parse(pattern):
        parts.append(re.escape(literal))
        if field == "frame":
            parts.append(r"(\d+)")
        elif field == "video_id":
            parts.append(re.escape(video_id))
        elif field is not None:
            raise ValueError(f"frame pattern {pattern!r}: unknown field {{{field}}} (expected video_id and frame)")
    return re.compile("".join(parts))


# ---------------------------------------------------------------------------------------------------------
# video files


@dataclass(frozen=True)
class _StreamInfo:
    fps: float
    num_frames: int
    count_exact: bool  # False: estimated from the duration (containers without a frame count)
    size: tuple[int, int]
    time_base: Fraction
    start_s: float


class VideoFileSource(_ClipReading):
    """A video file decoded with PyAV: any container and codec FFmpeg reads, any frame rate and size.

    Frame ``i`` is the frame whose presentation time is nearest ``start + i / fps`` (``start``: the
    stream's first timestamp), so index 0 is the first frame. A read seeks to the key frame at or
    before the first needed frame and decodes only until the last one.

    Args:
        path: the video file.
        video_id: the video's name (default: the file name without extension).
        cache: decode the whole video into memory on first use ([N, H, W, 3] uint8; for small
            datasets, where every worker then decodes each video once).
        threads: decoder threads (1 suits DataLoader workers; 0 lets FFmpeg choose).
    """

    def __init__(self, path: PathLike, video_id: str | None = None, *, cache: bool = False, threads: int = 1) -> None:
        self.path = os.fspath(path)
        self.video_id = video_id if video_id is not None else os.path.splitext(os.path.basename(self.path))[0]
        self.cache = cache
        self.threads = threads
        self._container: av.container.InputContainer | None = None
        self._opened_by = -1  # pid of the process that opened _container
        self._meta: _StreamInfo | None = None
        self._frames: np.ndarray | None = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_container"] = None  # containers hold file handles: each process opens its own
        state["_frames"] = None
        return state

    def __del__(self) -> None:
        self.close()

    # --- metadata

    def _open(self) -> av.container.InputContainer:
        if self._container is not None and self._opened_by != os.getpid():
            # Inherited through fork (DataLoader workers): the file offset is shared with the parent and
            # the other workers, so reading it would interleave their reads. Open our own instead.
            self._container = None
        if self._container is None:
            if not os.path.exists(self.path):
                raise FileNotFoundError(f"video {self.video_id}: file not found: {self.path}")
            try:
                container = av.open(self.path)
            except av.FFmpegError as e:
                raise ValueError(
                    f"video {self.video_id}: cannot open {self.path} ({e}); truncated or corrupt?"
                ) from None
            if not container.streams.video:
                container.close()
                raise ValueError(f"video {self.video_id}: {self.path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_count = self.threads
            if self.threads != 1:
                stream.thread_type = "AUTO"
            self._container = container
            self._opened_by = os.getpid()
            if self._meta is None:
                self._meta = self._read_meta(container, stream)
        return self._container

    def _read_meta(self, container, stream) -> _StreamInfo:
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise ValueError(f"video {self.video_id}: {self.path} states no frame rate")
        fps = float(rate)
        time_base = stream.time_base or Fraction(1, 1_000_000)
        start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
        count = int(stream.frames or 0)
        exact = count > 0
        if not exact:  # containers without a frame count (MPEG-TS, some MKV): from the duration
            if stream.duration is not None:
                seconds = float(stream.duration * time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                raise ValueError(f"video {self.video_id}: {self.path} states neither a frame count nor a duration")
            count = max(1, int(np.floor(seconds * fps + 0.5)))
        size = (int(stream.codec_context.height), int(stream.codec_context.width))
        return _StreamInfo(fps, count, exact, size, time_base, start)

    def _metadata(self) -> _StreamInfo:
        if self._meta is None:
            self._open()
        assert self._meta is not None
        return self._meta

    @property
    def fps(self) -> float:
        return self._metadata().fps

    @property
    def num_frames(self) -> int:
        """Frames in the video: as decoded when cached, else as the container states."""
        if self._frames is not None:
            return int(self._frames.shape[0])
        return self._metadata().num_frames

    @property
    def size(self) -> tuple[int, int]:
        return self._metadata().size

    # --- decoding

    def read_frames(self, indices: Sequence[int]) -> np.ndarray:
        """``uint8 [len(indices), H, W, 3]`` for frame indices in ``[0, num_frames)``."""
        indices = [int(i) for i in indices]
        if self.cache:
            frames = self._all_frames()
            bad = [i for i in indices if not 0 <= i < frames.shape[0]]
            if bad:
                raise IndexError(
                    f"video {self.video_id}: frame {bad[0]} (t={bad[0] / self.fps:.3f} s) is outside its "
                    f"{frames.shape[0]} frames ({self.path})"
                )
            return frames[indices]
        wanted = sorted(set(indices))
        n = self.num_frames
        bad = [i for i in wanted if not 0 <= i < n]
        if bad:
            raise IndexError(
                f"video {self.video_id}: frame {bad[0]} (t={bad[0] / self.fps:.3f} s) is outside its {n} frames "
                f"({self.path})"
            )
        decoded = self._decode_range(wanted)
        return np.stack([decoded[i] for i in indices])

    def _all_frames(self) -> np.ndarray:
        if self._frames is None:
            decoded = self._decode_range(None)
            if not decoded:
                raise ValueError(f"video {self.video_id}: no frame could be decoded from {self.path}")
            last = max(decoded)
            missing = [i for i in range(last + 1) if i not in decoded]
            if missing:
                raise ValueError(
                    f"video {self.video_id}: frame {missing[0]} (t={missing[0] / self.fps:.3f} s) is missing from "
                    f"{self.path} (corrupt?)"
                )
            stated = self._metadata()
            if last + 1 < stated.num_frames - (0 if stated.count_exact else 1):
                raise ValueError(
                    f"video {self.video_id}: only {last + 1} of the {stated.num_frames} frames its header states could "
                    f"be decoded from {self.path} (decoding stops at t={(last + 1) / stated.fps:.3f} s: truncated?)"
                )
            self._frames = np.stack([decoded[i] for i in range(last + 1)])
            self.close()
        return self._frames

    def _decode_range(self, wanted: list[int] | None) -> dict[int, np.ndarray]:
        """Decode the frames in ``wanted`` (sorted; None: all); index -> RGB array."""
        container = self._open()
        info = self._metadata()
        fps, time_base, start = info.fps, info.time_base, info.start_s
        stream = container.streams.video[0]
        want = set(wanted) if wanted is not None else None
        first = wanted[0] if wanted else 0
        last = wanted[-1] if wanted else None
        out: dict[int, np.ndarray] = {}
        # Seek a little before the first frame's time so rounding never lands after it; retry earlier if
        # the demuxer still seeks past it (imprecise indexes), finally from the start.
        for back_s in (0.5 / fps, 2.0, None):
            out.clear()
            target_s = start + first / fps - back_s if back_s is not None else None
            reached = self._decode_from(container, stream, target_s, fps, time_base, start, want, last, out)
            if reached is not None and reached <= first:
                break
            if target_s is None or target_s <= start:
                break
        if want is not None:
            missing = sorted(want - out.keys())
            if missing:
                i = missing[0]
                raise ValueError(
                    f"video {self.video_id}: frame {i} (t={i / fps:.3f} s) could not be decoded from {self.path} "
                    f"(the stream ends or breaks before it: truncated or corrupt file?)"
                )
        return out

    def _decode_from(self, container, stream, target_s, fps, time_base, start, want, last, out) -> int | None:
        """Decode from a seek to ``target_s`` (None: the start); return the index of the first decoded frame."""
        first_seen = None
        where = f"video {self.video_id}"
        try:
            if target_s is None or target_s <= start:
                container.seek(int(stream.start_time or 0), stream=stream, backward=True)
            else:
                container.seek(int(target_s / time_base), stream=stream, backward=True)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        raise ValueError(f"{where}: {self.path} has frames without timestamps")
                    index = int(np.floor((float(frame.pts * time_base) - start) * fps + 0.5))
                    if first_seen is None:
                        first_seen = index
                    if want is None or index in want:
                        out[index] = frame.to_ndarray(format="rgb24")
                    if last is not None and index >= last:
                        return first_seen
        except av.FFmpegError as e:
            t = f"{(max(out) + 1) / fps:.3f} s" if out else "the start"
            raise ValueError(
                f"{where}: decoding {self.path} failed after {t} ({e}); truncated or corrupt file?"
            ) from None
        return first_seen

    def close(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            if self._opened_by == os.getpid():  # a forked copy is the parent's to close
                container.close()
            self._container = None


def open_clip_source(
    kind: Literal["video", "frames"],
    path: PathLike,
    video_id: str | None = None,
    **kwargs,
) -> FrameFolderSource | VideoFileSource:
    """``kind="video"``: a ``VideoFileSource`` on the file ``path``; ``kind="frames"``: a ``FrameFolderSource``
    on the folder ``path``. Keyword arguments go to the source."""
    if kind == "video":
        return VideoFileSource(path, video_id, **kwargs)
    if kind == "frames":
        return FrameFolderSource(path, video_id, **kwargs)
    raise ValueError(f"open_clip_source: kind must be 'video' or 'frames', got {kind!r}")


__all__ = [
    "ClipSource",
    "FrameFolderSource",
    "VideoFileSource",
    "clip_indices",
    "get_sequence",
    "open_clip_source",
    "resample_indices",
]
