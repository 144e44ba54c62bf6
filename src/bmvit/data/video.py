"""Clips of T frames around a key frame, from frame folders or from video files (decoded with PyAV).

Two sources behind one interface (``ClipSource``): ``FrameFolderSource`` reads AVA's
``<vid>/<vid>_%06d.jpg`` layout (or any numbered-image pattern), ``VideoFileSource`` decodes a video
file, seeking to the key frame before the first frame a clip needs and decoding only up to the last,
or, when the next clip starts shortly after (sequential key frames), decoding on from where the last
read stopped and taking the frames two clips share from a ring of recently decoded frames.
Both return ``uint8 [T, H, W, 3]`` RGB arrays. ``FrameStream`` instead reads the frames a whole video's
clips need in one forward pass (what the predictor does, from time 0 to the end).

Sampling follows PySlowFast (``slowfast/datasets/utils.py::get_sequence`` as called by
``ava_dataset.py`` with ``half_len = T * stride // 2``): frame ``i`` of the clip is
``center - T * stride // 2 + i * stride``, clamped to ``[0, num_frames - 1]``. So the key frame is clip
frame ``T // 2`` (for even ``T * stride``), and frames past the ends of the video repeat the end frame.

Decoding at the needed size: every read takes ``min_size=(H, W)``, the smallest frame the caller
needs (e.g. the model's input size before its resize). A source may then return frames smaller than the
stored ones, never smaller than ``min_size`` on either side (unless the stored frame is), with the
aspect ratio kept up to rounding. JPEG frames are decoded by libjpeg at 1/2, 1/4 or 1/8 scale in the
DCT domain (Pillow's ``Image.draft``; ``jpeg_draft_size`` says which size); video frames are converted
from YUV straight to RGB at ``reduced_size`` (swscale's area filter). ``min_size=None`` (default)
returns the stored size, exactly as decoded before ``min_size`` existed.

Sources hold no open file between calls that could be pickled: a ``VideoFileSource`` opens its
container lazily and drops it when pickled, so a dataset holding sources works with
``DataLoader(num_workers > 0)``; a forked worker opens its own container and leaves what it inherited
(container, decoder, decoded frames) unfreed, as FFmpeg objects may own threads that exist only in the parent.
"""

from __future__ import annotations

import io
import logging
import os
import re
import string
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Protocol, runtime_checkable

import av
import av.video.reformatter
import numpy as np

logger = logging.getLogger("bmvit.data")

PathLike = str | os.PathLike
MinSize = tuple[int, int] | None
"""``(H, W)``: the smallest frame a reader needs; None: the stored size."""

DEFAULT_MAX_CACHE_BYTES = 4 << 30
"""``VideoFileSource(cache=True)`` refuses to cache a video whose frames would take more than this (4 GiB)."""


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


def clip_indices_around_frame(
    center_index: int, num_frames: int, stride: int, sample_fps: float, source_fps: float, video_length: int
) -> np.ndarray:
    """Indices of a clip centred exactly on frame ``center_index`` of a ``source_fps`` video, its frames
    ``stride`` frames of a ``sample_fps`` timeline apart: ``int64 [num_frames]``, clamped to the video.

    The offsets are ``clip_indices``' (PySlowFast's) taken on the ``sample_fps`` timeline, converted to
    seconds and then to the nearest source frames, so the key frame itself is never moved by the
    conversion; at equal rates this is ``clip_indices``.
    """
    if sample_fps <= 0 or source_fps <= 0:
        raise ValueError(f"clip_indices_around_frame: rates must be > 0, got {sample_fps} and {source_fps}")
    if num_frames < 1 or stride < 1:
        raise ValueError(f"clip_indices_around_frame: num_frames and stride must be >= 1, got {num_frames} and {stride}")
    offsets = stride * np.arange(num_frames, dtype=np.int64) - (num_frames * stride) // 2  # clip_indices' offsets
    if sample_fps != source_fps:
        offsets = np.floor(offsets * (source_fps / sample_fps) + 0.5).astype(np.int64)
    return np.clip(center_index + offsets, 0, video_length - 1)


def resample_indices(indices: np.ndarray, sample_fps: float, source_fps: float, source_length: int) -> np.ndarray:
    """Map frame indices on a ``sample_fps`` timeline to the nearest frames of a ``source_fps`` video."""
    if sample_fps == source_fps:
        return np.asarray(indices, dtype=np.int64)
    mapped = np.floor(np.asarray(indices, dtype=np.float64) * (source_fps / sample_fps) + 0.5).astype(np.int64)
    return np.clip(mapped, 0, source_length - 1)


def check_min_size(min_size) -> tuple[int, int] | None:
    """``min_size`` as ``(H, W)`` ints >= 1, or None; a ValueError for anything else."""
    if min_size is None:
        return None
    try:
        h, w = (int(v) for v in min_size)
    except (TypeError, ValueError):
        raise ValueError(f"min_size must be (H, W) or None, got {min_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"min_size must be >= 1 on each side, got {min_size!r}")
    return h, w


def reduced_size(size: tuple[int, int], min_size: MinSize) -> tuple[int, int]:
    """The smallest ``(H, W)`` of the aspect ratio of ``size`` (up to rounding) that is at least ``min_size``
    on each side; ``size`` itself when it is not larger (never an upscale) or ``min_size`` is None.

    ``reduced_size((720, 1280), (256, 256)) == (256, 455)``. What ``VideoFileSource`` returns.
    """
    h, w = int(size[0]), int(size[1])
    if min_size is None:
        return h, w
    mh, mw = min_size
    s = max(mh / h, mw / w)
    if s >= 1.0:
        return h, w
    return min(h, max(mh, round(h * s))), min(w, max(mw, round(w * s)))


def jpeg_draft_scale(size: tuple[int, int], min_size: MinSize) -> int:
    """The libjpeg scale denominator (1, 2, 4 or 8) Pillow's ``draft`` picks for a JPEG of ``size`` (H, W):
    the largest power of two ``s <= min(W // min_w, H // min_h)``, so both sides stay >= ``min_size``."""
    if min_size is None:
        return 1
    fit = min(int(size[1]) // min_size[1], int(size[0]) // min_size[0])
    return next(s for s in (8, 4, 2, 1) if s <= max(fit, 1))


def jpeg_draft_size(size: tuple[int, int], min_size: MinSize) -> tuple[int, int]:
    """The ``(H, W)`` a JPEG frame of ``size`` is decoded at for ``min_size``: ``ceil(side / scale)``.

    ``jpeg_draft_size((720, 1280), (256, 256)) == (360, 640)``: 1/4 would give 180 < 256 rows. What
    ``FrameFolderSource`` returns for JPEG frames.
    """
    s = jpeg_draft_scale(size, min_size)
    return -(-int(size[0]) // s), -(-int(size[1]) // s)


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

    def read_frames(self, indices: Sequence[int], *, min_size: MinSize = None) -> np.ndarray: ...

    def read_clip(self, center_index: int, num_frames: int, stride: int, *, min_size: MinSize = None) -> np.ndarray: ...

    def read_clip_at_time(
        self,
        center_time_s: float,
        num_frames: int,
        stride: int,
        sample_fps: float | None = None,
        *,
        min_size: MinSize = None,
    ) -> np.ndarray: ...

    def close(self) -> None: ...


class _ClipReading:
    """``read_clip`` and ``read_clip_at_time`` for any source with ``read_frames``, ``fps`` and ``num_frames``.

    ``min_size`` (H, W) goes to ``read_frames``: frames may come back smaller than stored, never below
    ``min_size`` on a side (unless stored smaller); None: the stored size.
    """

    def read_clip(self, center_index: int, num_frames: int, stride: int, *, min_size: MinSize = None) -> np.ndarray:
        """``uint8 [T, H, W, 3]``: ``num_frames`` frames at ``stride`` around frame ``center_index`` (clamped)."""
        return self.read_frames(clip_indices(center_index, num_frames, stride, self.num_frames), min_size=min_size)

    def read_clip_at_time(
        self,
        center_time_s: float,
        num_frames: int,
        stride: int,
        sample_fps: float | None = None,
        *,
        min_size: MinSize = None,
    ) -> np.ndarray:
        """``uint8 [T, H, W, 3]`` centred on the frame at ``center_time_s`` seconds from the first frame.

        ``stride`` counts frames of a ``sample_fps`` timeline (default: the source's own rate), so a
        clip spans the same time whatever the video's frame rate: AVA's frames are extracted at 30 fps
        and its strides count those frames, while a video file may be at 25 or 29.97 fps.
        """
        indices = self.clip_indices_at_time(center_time_s, num_frames, stride, sample_fps)
        return self.read_frames(indices, min_size=min_size)

    def clip_indices_at_time(
        self, center_time_s: float, num_frames: int, stride: int, sample_fps: float | None = None
    ) -> np.ndarray:
        """The frame indices ``read_clip_at_time`` reads: ``int64 [num_frames]``."""
        sample_fps = float(sample_fps or self.fps)
        timeline_length = max(1, int(np.floor(self.num_frames * sample_fps / self.fps + 0.5)))
        center = int(np.floor(center_time_s * sample_fps + 0.5))
        indices = clip_indices(center, num_frames, stride, timeline_length)
        return resample_indices(indices, sample_fps, self.fps, self.num_frames)


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

    Frames are decoded with PyAV (FFmpeg's image decoders), except JPEG frames read with a ``min_size``
    they are at least twice as large as on both sides: those are decoded by Pillow's libjpeg at 1/2, 1/4
    or 1/8 scale (``Image.draft``; ``jpeg_draft_size``), which skips most of the inverse DCT and returns
    a quarter or less of the pixels. A 1280x720 JPEG with ``min_size=(256, 256)`` comes back 640x360.
    PNG and other frames, and JPEGs too small to halve, are decoded at full size as without ``min_size``.
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
        # min_size -> True when this folder's JPEGs are too small to draft-decode smaller (known from a header)
        self._full_size_for: dict[tuple[int, int], bool] = {}

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

    def read_frames(self, indices: Sequence[int], *, min_size: MinSize = None) -> np.ndarray:
        """``uint8 [len(indices), H, W, 3]``; repeated indices are decoded once.

        ``min_size`` (H, W): JPEG frames may be decoded smaller, at ``jpeg_draft_size(stored, min_size)``.
        A missing frame raises FileNotFoundError, a corrupt or truncated one ValueError, each naming the
        video, the frame index, its time and the file; frames of different stored sizes raise ValueError.
        """
        min_size = check_min_size(min_size)
        indices = [int(i) for i in indices]
        decoded = {i: self._decode(i, min_size) for i in dict.fromkeys(indices)}
        stored = {s for _, s in decoded.values()}
        if len(stored) > 1:
            sizes = sorted((*s, 3) for s in stored)
            raise ValueError(f"video {self.video_id}: frames of different sizes {sizes} in {self.folder}")
        if len({a.shape for a, _ in decoded.values()}) > 1:  # a JPEG Pillow could not scale among scaled ones
            decoded = {i: self._decode(i) for i in decoded}
        return np.stack([decoded[i][0] for i in indices])

    def _read_file(self, index: int) -> tuple[bytes, str, str]:
        """Frame ``index``'s file: its bytes, its path, and how errors name the frame (video, index, time).
        An index outside the video raises IndexError, a missing file FileNotFoundError."""
        path = self.frame_path(index)
        where = f"video {self.video_id}: frame {index} (t={index / self._fps:.3f} s)"
        if not 0 <= index < self.num_frames:
            raise IndexError(f"{where} is outside the video's {self.num_frames} frames")
        try:
            with open(path, "rb") as f:
                return f.read(), path, where
        except FileNotFoundError:
            raise FileNotFoundError(f"{where} is missing: {path}") from None

    def _decode(self, index: int, min_size: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """The frame as ``uint8 [H, W, 3]`` RGB, and its stored (H, W)."""
        data, path, where = self._read_file(index)
        codec = _image_codec(path)
        if min_size is not None and codec == "mjpeg" and data and not self._full_size_for.get(min_size):
            frame, full_size = _decode_jpeg_draft(data, min_size, where, path)
            if frame is not None:
                return frame
            if full_size:  # this folder's frames are too small to decode smaller: skip the header from now on
                self._full_size_for[min_size] = True
        rgb = decode_image(data, codec, where, path)
        return rgb, rgb.shape[:2]

    def read_encoded(self, indices: Sequence[int]) -> tuple[list[bytes], tuple[int, int]]:
        """The JPEG files of frames ``indices``, read but not decoded, and their stored (H, W).

        For decoding elsewhere (``data.decode=device``: nvJPEG on the training GPU). What can be known
        without decoding is checked here, in the loader worker, so that a bad frame is skipped as in
        ``read_frames``: a missing file raises FileNotFoundError; a file that is not JPEG, whose header
        does not read, that lacks JPEG's end-of-image marker (truncated), or whose size differs from the
        clip's other frames raises ValueError, each naming the video, the frame index, its time and the
        file. Damage inside the compressed data shows only when it is decoded.
        """
        from PIL import Image

        files: dict[int, bytes] = {}
        sizes: dict[int, tuple[int, int]] = {}
        for index in dict.fromkeys(int(i) for i in indices):
            data, path, where = self._read_file(index)
            if _image_codec(path) != "mjpeg":
                raise ValueError(f"{where}: {path} is not a JPEG file; decoding on the device reads JPEG frames only")
            try:
                width, height = Image.open(io.BytesIO(data), formats=("JPEG",)).size
            except (*_PIL_ERRORS, Image.DecompressionBombError) as e:
                raise ValueError(f"{where}: cannot read the JPEG header of {path} ({e}); corrupt file?") from None
            # JPEG ends with the EOI marker (FF D9); encoders may pad after it, so look near the end.
            if b"\xff\xd9" not in data[-64:]:
                raise ValueError(f"{where}: {path} has no JPEG end marker; truncated file?")
            files[index], sizes[index] = data, (height, width)
        if len(set(sizes.values())) > 1:
            found = sorted({(*s, 3) for s in sizes.values()})
            raise ValueError(f"video {self.video_id}: frames of different sizes {found} in {self.folder}")
        return [files[int(i)] for i in indices], next(iter(sizes.values()))

    def close(self) -> None:
        """Nothing stays open between reads."""


def decode_image(data: bytes, codec: str = "mjpeg", where: str = "image", path: str = "") -> np.ndarray:
    """One image file's bytes (``codec``: FFmpeg's decoder name, e.g. ``mjpeg``, ``png``) decoded with PyAV at
    its stored size: ``uint8 [H, W, 3]`` RGB. An empty, corrupt or truncated file raises ValueError naming
    ``where`` and ``path``."""
    # A fresh decoder per image: a reused PNG decoder carries state from the previous image over
    # (wrong pixels), and creating one costs little next to decoding.
    decoder = av.CodecContext.create(codec, "r")
    try:
        frames = decoder.decode(av.Packet(data)) if data else []
    except av.FFmpegError as e:
        raise ValueError(f"{where}: cannot decode {path} ({e}); corrupt or truncated image?") from None
    if len(frames) != 1:
        raise ValueError(f"{where}: cannot decode {path} (empty, corrupt or truncated image?)")
    return _rgb24(frames[0])


_IMAGE_CODECS = {".jpg": "mjpeg", ".jpeg": "mjpeg", ".png": "png", ".bmp": "bmp", ".webp": "webp"}
_PIL_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, EOFError)


def _decode_jpeg_draft(
    data: bytes, min_size: tuple[int, int], where: str, path: str
) -> tuple[tuple[np.ndarray, tuple[int, int]] | None, bool]:
    """Decode a JPEG at the smallest libjpeg scale whose result is >= ``min_size``: ``((rgb, stored (H, W)), _)``.

    ``(None, True)``: the image is too small to scale down (decode it at full size, as without
    ``min_size``); ``(None, False)``: Pillow cannot read or scale it (let FFmpeg decide). A file whose
    header reads but whose data does not (corrupt, truncated) raises ValueError naming ``where`` and ``path``.
    """
    from PIL import Image

    try:
        image = Image.open(io.BytesIO(data), formats=("JPEG",))
        stored = (image.size[1], image.size[0])
    except (*_PIL_ERRORS, Image.DecompressionBombError):
        return None, False
    if jpeg_draft_scale(stored, min_size) == 1:
        return None, True
    try:
        if image.draft("RGB", (min_size[1], min_size[0])) is None:
            return None, False
        image.load()
        rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except (*_PIL_ERRORS, Image.DecompressionBombError) as e:
        raise ValueError(f"{where}: cannot decode {path} ({e}); corrupt or truncated image?") from None
    return (rgb, stored), False


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


class CacheLimitError(RuntimeError):
    """``VideoFileSource(cache=True)`` refused a video whose decoded frames would exceed ``max_cache_bytes``.

    Not a ValueError on purpose: it is a setting to change, not a bad clip for a trainer to skip.
    """


class VideoFileSource(_ClipReading):
    """A video file decoded with PyAV: any container and codec FFmpeg reads, any frame rate and size.

    Frame ``i`` is the frame whose presentation time is nearest ``start + i / fps`` (``start``: the
    stream's first timestamp), so index 0 is the first frame.

    Decoding (uncached): the source keeps its container and decoder open between reads (per process)
    and remembers where decoding stopped. A read whose first missing frame lies after that position,
    by at most ``max_forward_frames``, continues decoding forward instead of seeking; otherwise it seeks
    to the key frame at or before the first frame it needs. The last ``ring_frames`` decoded frames are
    kept (as decoded, YUV), so a clip that overlaps the previous one (AVA: 16 frames at stride 4 span 61
    frames, key frames are 30 apart) takes the frames it shares from there. Either way a read returns
    the same frames as a fresh seek would (for closed-GOP streams, which is what encoders write by default).

    ``min_size`` (H, W): frames are converted from YUV to RGB directly at ``reduced_size(size, min_size)``
    (swscale, area filter), smaller than stored when the caller needs less.

    Args:
        path: the video file.
        video_id: the video's name (default: the file name without extension).
        cache: decode the whole video into memory on first use (``[N, H, W, 3]`` uint8; for small
            datasets, where every worker then decodes each video once). The frames are cached at the
            size the first read asks for (``reduced_size(size, min_size)``; full size without
            ``min_size``). A later read with a larger ``min_size`` (or None after a sized read)
            decodes the video again at that size and replaces the cache; a smaller one is served
            from the cache (its frames are larger than asked, as ``min_size`` allows).
        threads: decoder threads (1 suits DataLoader workers; 0 lets FFmpeg choose).
        ring_frames: decoded frames kept for overlapping reads (0: none). 64 covers any clip spanning
            up to 64 frames (16x4, 32x2, 8x8) followed by one starting later. Only the source that
            decoded last in a process keeps its ring (reading another video frees it), so a process
            holds one ring: ``ring_frames`` x H x W x 1.5 bytes for yuv420p, ~88 MB at 1280x720.
        max_forward_frames: the farthest a read may start past the decoded position and still decode
            forward. None (default): the longest key-frame interval seen so far (2 s of frames until two
            key frames have been seen): farther than that, a seek lands past the position and decodes
            less. 0: always seek (with ``ring_frames=0`` too, every read is as from a fresh source).
        max_cache_bytes: with ``cache=True``, a video whose cache would be larger (frames x H x W x 3
            bytes, checked before decoding) raises ``CacheLimitError``.
    """

    def __init__(
        self,
        path: PathLike,
        video_id: str | None = None,
        *,
        cache: bool = False,
        threads: int = 1,
        ring_frames: int = 64,
        max_forward_frames: int | None = None,
        max_cache_bytes: int = DEFAULT_MAX_CACHE_BYTES,
    ) -> None:
        self.path = os.fspath(path)
        self.video_id = video_id if video_id is not None else os.path.splitext(os.path.basename(self.path))[0]
        self.cache = cache
        self.threads = threads
        self.ring_frames = int(ring_frames)
        self.max_forward_frames = max_forward_frames
        self.max_cache_bytes = int(max_cache_bytes)
        self._container: av.container.InputContainer | None = None
        self._opened_by = -1  # pid of the process that opened _container
        self._meta: _StreamInfo | None = None
        self._frames: np.ndarray | None = None
        self._reset_decoding()
        self.seeks = 0  # statistics of this process: seeks made, frames decoded, frames served from the ring
        self.frames_decoded = 0
        self.ring_hits = 0

    def _reset_decoding(self) -> None:
        self._decoding: Iterator[tuple[int, av.VideoFrame]] | None = None  # frames after the last one decoded
        self._position = -1  # index of the last frame decoded
        self._ring: OrderedDict[int, av.VideoFrame] = OrderedDict()
        self._last_key = -1  # index of the last key frame seen since the last seek
        self._gop = 0  # the longest key-frame interval seen

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_container"] = None  # containers hold file handles: each process opens its own
        state["_frames"] = None
        state.update(_decoding=None, _position=-1, _ring=OrderedDict(), _last_key=-1)
        return state

    def __del__(self) -> None:
        self.close()

    # --- metadata

    def _open(self) -> av.container.InputContainer:
        if self._container is not None and self._opened_by != os.getpid():
            # Inherited through fork (DataLoader workers): the file offset is shared with the parent and
            # the other workers, so reading it would interleave their reads. Open our own instead.
            self._leave_to_parent()
        if self._container is None:
            self._reset_decoding()
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
        """The stored frame size (H, W)."""
        return self._metadata().size

    # --- reading

    def read_frames(self, indices: Sequence[int], *, min_size: MinSize = None) -> np.ndarray:
        """``uint8 [len(indices), H, W, 3]`` for frame indices in ``[0, num_frames)``.

        ``min_size`` (H, W): frames at ``reduced_size(size, min_size)`` (uncached), or as cached (see
        ``cache``). Errors: IndexError outside the video, ValueError when the file cannot be decoded
        up to a wanted frame, ``CacheLimitError`` for a cache over ``max_cache_bytes``.
        """
        min_size = check_min_size(min_size)
        indices = [int(i) for i in indices]
        if self.cache:
            frames = self._cached_frames(min_size)
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
        decoded = self._decode_frames(wanted)
        rgb = {i: _to_rgb(decoded[i], min_size) for i in wanted}
        return np.stack([rgb[i] for i in indices])

    def _decode_frames(self, wanted: list[int]) -> dict[int, av.VideoFrame]:
        """The decoded frames of ``wanted`` (sorted, unique, inside the video): from the ring, by decoding
        forward from where the last read stopped, or after a seek."""
        self._open()  # after a fork: our own container, and the state inherited from the parent dropped
        _own_the_ring(self)
        found: dict[int, av.VideoFrame] = {}
        rest: list[int] = []
        for i in wanted:
            frame = self._ring.get(i)
            if frame is None:
                rest.append(i)
            else:
                found[i] = frame
        self.ring_hits += len(found)
        if rest and self._decoding is not None and self._position < rest[0] <= self._position + self._forward_limit():
            self._decode_until(rest, found)
            rest = [i for i in rest if i not in found]
        if rest:
            self._seek_and_decode(rest, found)
            missing = [i for i in rest if i not in found]
            if missing:
                i = missing[0]
                raise ValueError(
                    f"video {self.video_id}: frame {i} (t={i / self.fps:.3f} s) could not be decoded from {self.path} "
                    f"(the stream ends or breaks before it: truncated or corrupt file?)"
                )
        return found

    def _forward_limit(self) -> int:
        if self.max_forward_frames is not None:
            return int(self.max_forward_frames)
        return self._gop or int(round(2 * self._metadata().fps))

    def _decode_until(self, rest: list[int], found: dict[int, av.VideoFrame]) -> int | None:
        """Decode on from the current position until the last of ``rest``; returns the first index decoded."""
        want, last, first_seen = set(rest), rest[-1], None
        assert self._decoding is not None
        for index, frame in self._decoding:
            if first_seen is None:
                first_seen = index
            if index in want:
                found[index] = frame
            if index >= last:
                return first_seen
        self._decoding = None  # the end of the stream
        return first_seen

    def _seek_and_decode(self, rest: list[int], found: dict[int, av.VideoFrame]) -> None:
        info = self._metadata()
        first = rest[0]
        # Seek a little before the first frame's time so rounding never lands after it; retry earlier if
        # the demuxer still seeks past it (imprecise indexes), finally from the start.
        got: dict[int, av.VideoFrame] = {}
        for back_s in (0.5 / info.fps, 2.0, None):
            got = {}
            target_s = info.start_s + first / info.fps - back_s if back_s is not None else None
            self._seek(target_s)
            reached = self._decode_until(rest, got)
            if reached is not None and reached <= first:
                break
            if target_s is None or target_s <= info.start_s:
                break
        found.update(got)

    def _seek(self, target_s: float | None) -> None:
        """Seek to the key frame at or before ``target_s`` seconds (None: the start); decoding restarts there."""
        container = self._open()
        info = self._metadata()
        stream = container.streams.video[0]
        self._decoding, self._position, self._last_key = None, -1, -1
        try:
            if target_s is None or target_s <= info.start_s:
                container.seek(int(stream.start_time or 0), stream=stream, backward=True)
            else:
                container.seek(int(target_s / info.time_base), stream=stream, backward=True)
        except av.FFmpegError as e:
            raise ValueError(f"video {self.video_id}: seeking in {self.path} failed ({e}); corrupt file?") from None
        self.seeks += 1
        self._decoding = self._frames_from(container, stream)

    def _frames_from(self, container, stream, keep: bool = True) -> Iterator[tuple[int, av.VideoFrame]]:
        """``(index, frame)`` of each frame decoded from the container's position; updates the position,
        the key-frame interval and (``keep``) the ring."""
        info = self._metadata()
        fps, time_base, start = info.fps, info.time_base, info.start_s
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        raise ValueError(f"video {self.video_id}: {self.path} has frames without timestamps")
                    index = int(np.floor((float(frame.pts * time_base) - start) * fps + 0.5))
                    self._position = index
                    self.frames_decoded += 1
                    if frame.key_frame:
                        if self._last_key >= 0 and index > self._last_key:
                            self._gop = max(self._gop, index - self._last_key)
                        self._last_key = index
                    if keep and self.ring_frames > 0:
                        self._ring[index] = frame
                        self._ring.move_to_end(index)
                        while len(self._ring) > self.ring_frames:
                            self._ring.popitem(last=False)
                    yield index, frame
        except av.FFmpegError as e:
            self._decoding = None
            t = f"{(self._position + 1) / fps:.3f} s" if self._position >= 0 else "the start"
            raise ValueError(
                f"video {self.video_id}: decoding {self.path} failed after {t} ({e}); truncated or corrupt file?"
            ) from None

    # --- the cache

    def _cached_frames(self, min_size: tuple[int, int] | None) -> np.ndarray:
        info = self._metadata()
        size = reduced_size(info.size, min_size)
        if self._frames is not None:
            h, w = self._frames.shape[1:3]
            if (h, w) == info.size or (min_size is not None and h >= size[0] and w >= size[1]):
                return self._frames
            logger.debug("video %s: cached at %dx%d, decoding again at %dx%d", self.video_id, h, w, *size)
            self._frames = None
        count = info.num_frames
        need = count * size[0] * size[1] * 3
        if need > self.max_cache_bytes:
            raise CacheLimitError(self._cache_message(count, size, need))
        self._frames = self._decode_all(size)
        self.close()
        return self._frames

    def _cache_message(self, count: int, size: tuple[int, int], need: int) -> str:
        return (
            f"video {self.video_id}: caching its {count} frames at {size[0]}x{size[1]} needs {count} x {size[0]} x "
            f"{size[1]} x 3 = {need} bytes ({need / 2**30:.2f} GiB), over max_cache_bytes={self.max_cache_bytes} "
            f"({self.max_cache_bytes / 2**30:.2f} GiB) ({self.path}). Read it uncached (cache_videos off) or "
            f"from frame folders (`bmvit data prepare-ava` writes them)"
        )

    def _decode_all(self, size: tuple[int, int]) -> np.ndarray:
        """Every frame, converted at ``size`` (H, W), into one preallocated array."""
        info = self._metadata()
        container = self._open()
        stream = container.streams.video[0]
        frames = np.empty((info.num_frames, *size, 3), np.uint8)
        have = np.zeros(info.num_frames, bool)
        self._seek(None)
        self._decoding = None
        for index, frame in self._frames_from(container, stream, keep=False):
            if index < 0:
                continue
            if index >= len(frames):  # more frames than the container stated (estimated counts)
                grow = max(index + 1, len(frames) + len(frames) // 4 + 1)
                need = grow * size[0] * size[1] * 3
                if need > self.max_cache_bytes:
                    raise CacheLimitError(self._cache_message(grow, size, need))
                frames = np.concatenate([frames, np.empty((grow - len(frames), *size, 3), np.uint8)])
                have = np.concatenate([have, np.zeros(grow - len(have), bool)])
            frames[index] = _to_rgb(frame, size, exact=True)
            have[index] = True
        if not have.any():
            raise ValueError(f"video {self.video_id}: no frame could be decoded from {self.path}")
        last = int(np.flatnonzero(have)[-1])
        missing = np.flatnonzero(~have[: last + 1])
        if len(missing):
            i = int(missing[0])
            raise ValueError(
                f"video {self.video_id}: frame {i} (t={i / self.fps:.3f} s) is missing from {self.path} (corrupt?)"
            )
        if last + 1 < info.num_frames - (0 if info.count_exact else 1):
            raise ValueError(
                f"video {self.video_id}: only {last + 1} of the {info.num_frames} frames its header states could "
                f"be decoded from {self.path} (decoding stops at t={(last + 1) / info.fps:.3f} s: truncated?)"
            )
        return frames[: last + 1]

    def _leave_to_parent(self) -> None:
        """Forget a container and decoder state inherited through fork without freeing them: FFmpeg objects
        can own threads that exist only in the parent, and freeing them here would wait for those forever."""
        _FORK_LEFTOVERS.append((self._container, getattr(self, "_decoding", None), getattr(self, "_ring", None)))
        self._container = None
        self._reset_decoding()

    def close(self) -> None:
        """Close the container (and forget the decoding position and ring); the cache stays."""
        container = getattr(self, "_container", None)
        if container is not None:
            if self._opened_by != os.getpid():  # a forked copy is the parent's to close
                self._leave_to_parent()
                return
            self._decoding = None
            container.close()
            self._container = None
        if hasattr(self, "_ring"):
            self._reset_decoding()


def _to_rgb(frame: av.VideoFrame, size: tuple[int, int] | None, exact: bool = False) -> np.ndarray:
    """``uint8 [H, W, 3]`` RGB of a decoded frame: at its own size, or at ``reduced_size(its size, size)``
    (``exact``: at ``size`` itself), converted and scaled in one swscale pass (area filter)."""
    own = (frame.height, frame.width)
    out = size if exact else reduced_size(own, size)
    if out is None or tuple(out) == own:
        return _rgb24(frame)
    return _rgb24(frame, out)


_RING_OWNER: dict[int, weakref.ref] = {}  # pid -> the VideoFileSource whose ring is kept


def _own_the_ring(source: VideoFileSource) -> None:
    """Make ``source`` the one video of this process that keeps decoded frames; free the previous one's."""
    pid = os.getpid()
    ref = _RING_OWNER.get(pid)
    previous = ref() if ref is not None else None
    if previous is source:
        return
    if previous is not None and previous._opened_by == pid:
        previous._ring.clear()
    _RING_OWNER[pid] = weakref.ref(source)


_FORK_LEFTOVERS: list = []
"""FFmpeg objects inherited through fork, kept unfreed (see ``VideoFileSource._leave_to_parent``)."""
_REFORMATTERS: dict[int, OrderedDict] = {}  # pid -> OrderedDict(conversion key -> VideoReformatter)


def _rgb24(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
    """``frame.to_ndarray(format="rgb24")`` (the same pixels), optionally scaled to ``size`` (H, W) with the
    area filter, through a reformatter kept per process and conversion, on one thread.

    ``VideoFrame.to_ndarray`` makes a new swscale context per frame with a thread per core: slower, and
    a frame that kept one could not be freed in a forked DataLoader worker (its threads are the parent's).
    """
    pid = os.getpid()
    cache = _REFORMATTERS.get(pid)
    if cache is None:
        _FORK_LEFTOVERS.extend(_REFORMATTERS.values())  # another process's: never free them here
        _REFORMATTERS.clear()
        cache = _REFORMATTERS[pid] = OrderedDict()
    key = (frame.format.name, frame.width, frame.height, size)
    reformatter = cache.get(key)
    if reformatter is None:
        reformatter = cache[key] = av.video.reformatter.VideoReformatter()
        while len(cache) > 8:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    if size is None:
        return reformatter.reformat(frame, format="rgb24", threads=1).to_ndarray()
    return reformatter.reformat(
        frame, width=size[1], height=size[0], format="rgb24", interpolation="AREA", threads=1
    ).to_ndarray()


# ---------------------------------------------------------------------------------------------------------
# one forward pass over a whole video


class FrameStream:
    """The wanted frames of a source, in increasing index order, each decoded once (the predictor's reader).

    Where a ``ClipSource`` serves clips in any order, this reads a whole video once, forward: a video
    file is decoded from its start without seeking, and frames nobody wants are decoded but not
    converted to RGB; a frame folder reads the wanted frames one by one. Frames are ``uint8 [H, W, 3]``
    RGB at the stored size.

    Decoding that stops early (the end of a truncated file, a decoder error, an unreadable image) ends
    the iteration instead of raising; the attributes then say where and why:

    Attributes:
        source: the ``ClipSource`` read.
        last_index: the highest frame index decoded so far (-1: none).
        complete: every wanted frame was yielded.
        error: the decoder's or reader's message when reading stopped on an error, else None.

    Whoever iterates ``frames`` in another thread must read these attributes only after that thread has ended.
    """

    def __init__(self, source: ClipSource) -> None:
        self.source = source
        self.last_index = -1
        self.complete = False
        self.error: str | None = None

    def frames(self, wanted: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, uint8 [H, W, 3] RGB)`` for each index of ``wanted`` (``int [N]``, sorted, unique)."""
        if isinstance(self.source, VideoFileSource):
            yield from self._decode_file([int(i) for i in wanted])
            return
        for i in wanted.tolist():
            try:
                frame = self.source.read_frames([i])[0]
            except (OSError, ValueError, IndexError) as err:
                self.error = str(err)
                return
            self.last_index = i
            yield i, frame
        self.complete = True

    def _decode_file(self, pending: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        fps, pos, previous = self.source.fps, 0, None
        try:
            with av.open(self.source.path) as container:
                # FFmpeg's default threading: frame threads would compete with torch's for the cores and cost
                # more than they save on the small frames most videos have.
                stream = container.streams.video[0]
                time_base = stream.time_base
                start = float(stream.start_time * time_base) if stream.start_time is not None else 0.0
                for frame in container.decode(stream):
                    # VideoFileSource's index formula, so that both agree on which frame is which.
                    index = (int(np.floor((float(frame.pts * time_base) - start) * fps + 0.5))
                             if frame.pts is not None else self.last_index + 1)
                    # A variable-rate stream can skip an index: the frame on screen then is the previous one.
                    while pos < len(pending) and pending[pos] < index:
                        yield pending[pos], (previous if previous is not None else frame).to_ndarray(format="rgb24")
                        pos += 1
                    if pos < len(pending) and pending[pos] == index:
                        yield index, frame.to_ndarray(format="rgb24")
                        pos += 1
                    previous = frame
                    self.last_index = max(self.last_index, index)
                    if pos == len(pending):
                        self.complete = True
                        return
        except av.FFmpegError as err:
            self.error = f"{type(err).__name__}: {err}"


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
    "DEFAULT_MAX_CACHE_BYTES",
    "CacheLimitError",
    "ClipSource",
    "FrameFolderSource",
    "FrameStream",
    "VideoFileSource",
    "check_min_size",
    "clip_indices",
    "decode_image",
    "get_sequence",
    "jpeg_draft_scale",
    "jpeg_draft_size",
    "open_clip_source",
    "reduced_size",
    "resample_indices",
]
