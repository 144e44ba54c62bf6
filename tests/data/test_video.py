"""Clip sampling (PySlowFast's get_sequence), frame folders and video files, and their errors."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bmvit.data.video import (
    ClipSource,
    FrameFolderSource,
    VideoFileSource,
    clip_indices,
    get_sequence,
    open_clip_source,
    resample_indices,
)

H, W = 32, 48


def write_image(path: Path, img: np.ndarray) -> None:
    """PNG (lossless) or JPEG by extension, encoded with PyAV."""
    codec, pix = ("png", "rgb24") if path.suffix == ".png" else ("mjpeg", "yuvj444p")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = img.shape[1], img.shape[0], pix
    ctx.time_base = Fraction(1, 30)
    frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix)
    path.write_bytes(b"".join(bytes(p) for p in ctx.encode(frame) + ctx.encode(None)))


def write_frame_folder(folder: Path, video_id: str, frames: list[np.ndarray], ext: str = ".png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        write_image(folder / f"{video_id}_{i + 1:06d}{ext}", f)
    return folder


# ------------------------------------------------------------------------------------------------ sampling


def test_get_sequence_is_pyslowfast():
    # ava_dataset.py: get_sequence(center, seq_len // 2, sample_rate, num_frames), seq_len = T * rate
    assert get_sequence(100, 32, 4, 1000) == list(range(68, 132, 4))
    assert get_sequence(10, 32, 4, 1000) == [0] * 6 + [2, 6, 10, 14, 18, 22, 26, 30, 34, 38]
    assert get_sequence(95, 8, 4, 100) == [87, 91, 95, 99]
    assert get_sequence(98, 8, 4, 100) == [90, 94, 98, 99]


@pytest.mark.parametrize(
    "center, t, s, n",
    [(100, 16, 4, 1000), (10, 16, 4, 1000), (990, 16, 4, 1000), (5, 8, 8, 30), (3, 32, 2, 7), (0, 4, 2, 1)],
)
def test_clip_indices_equal_get_sequence(center, t, s, n):
    idx = clip_indices(center, t, s, n)
    assert idx.tolist() == get_sequence(center, t * s // 2, s, n)
    assert len(idx) == t


def test_clip_indices_hand_computed():
    # AVA second 902 at 30 fps: centre (902 - 900) * 30 = 60; 16 frames at stride 4 from 60 - 32 = 28.
    assert clip_indices(60, 16, 4, 27000).tolist() == list(range(28, 92, 4))
    assert clip_indices(60, 16, 4, 27000)[8] == 60  # the key frame is clip frame T // 2
    # Near the end: 16x4 around frame 95 of a 100-frame video.
    assert clip_indices(95, 16, 4, 100).tolist() == [63, 67, 71, 75, 79, 83, 87, 91, 95] + [99] * 7
    # Odd T * stride: always T frames (PySlowFast's range would give one fewer here).
    assert clip_indices(10, 3, 3, 100).tolist() == [6, 9, 12]
    with pytest.raises(ValueError, match="num_frames and stride must be >= 1"):
        clip_indices(10, 0, 3, 100)


def test_resample_indices():
    idx = np.array([0, 1, 29, 30, 60])
    assert resample_indices(idx, 30, 30, 100).tolist() == [0, 1, 29, 30, 60]
    # 30 fps timeline onto a 25 fps video: nearest frame in time, clamped to the video.
    assert resample_indices(idx, 30, 25, 40).tolist() == [0, 1, 24, 25, 39]


# ------------------------------------------------------------------------------------------------ sources


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory, make_frames, write_h264):
    root = tmp_path_factory.mktemp("clips")
    frames = make_frames(60, H, W)
    return {
        "frames": frames,
        "lossless": write_h264(root / "vid.mkv", frames, lossless=True),
        "h264": write_h264(root / "vid.mp4", frames),
        "folder": write_frame_folder(root / "vid", "vid", frames),
        "root": root,
    }


def test_frame_folder_reads_exact_frames(clip_files):
    src = FrameFolderSource(clip_files["folder"], pattern="{video_id}_{frame:06d}.png")
    assert isinstance(src, ClipSource)
    assert src.video_id == "vid" and src.num_frames == 60 and src.size == (H, W) and src.fps == 30.0
    clip = src.read_clip(30, 8, 4)
    expected = np.stack([clip_files["frames"][i] for i in range(14, 46, 4)])
    assert clip.dtype == np.uint8 and clip.shape == (8, H, W, 3)
    np.testing.assert_array_equal(clip, expected)


def test_video_file_equals_frame_folder(clip_files):
    """Lossless video and PNG frames give the same clip, including clamped ends and random access."""
    folder = FrameFolderSource(clip_files["folder"], pattern="{video_id}_{frame:06d}.png")
    video = VideoFileSource(clip_files["lossless"])
    assert video.video_id == "vid" and video.num_frames == 60 and video.size == (H, W) and video.fps == 30.0
    for center in (0, 31, 59, 13):
        np.testing.assert_array_equal(video.read_clip(center, 8, 4), folder.read_clip(center, 8, 4))
    np.testing.assert_array_equal(
        VideoFileSource(clip_files["lossless"], cache=True).read_clip(40, 4, 3), folder.read_clip(40, 4, 3)
    )


def test_h264_video_picks_the_right_frames(clip_files):
    """Lossy H.264 (B-frames, key frame every 12): each decoded frame is closest to its own original."""
    video = VideoFileSource(clip_files["h264"])
    frames = clip_files["frames"]
    clip = video.read_clip(25, 16, 3)
    for got, i in zip(clip, clip_indices(25, 16, 3, 60)):
        errors = [np.abs(got.astype(int) - f).mean() for f in frames]
        assert int(np.argmin(errors)) == i
        assert errors[i] < 12  # lossy (sharp synthetic pattern, yuv420p), but close


def test_other_frame_rate_keeps_the_time_span(tmp_path, make_frames, write_h264):
    frames = make_frames(50, H, W)
    video = VideoFileSource(write_h264(tmp_path / "v25.mkv", frames, lossless=True, fps=25))
    assert video.fps == 25.0 and video.num_frames == 50
    # 30 fps timeline: centre at 1.0 s = timeline frame 30; frames 30 - 4 + 2i -> 26, 28, 30, 32 (of 30 fps)
    # -> nearest 25 fps frames round(k * 25 / 30) = 22, 23, 25, 27.
    clip = video.read_clip_at_time(1.0, 4, 2, sample_fps=30)
    np.testing.assert_array_equal(clip, np.stack([frames[i] for i in (22, 23, 25, 27)]))
    # Without sample_fps, strides count the video's own frames.
    np.testing.assert_array_equal(video.read_clip_at_time(1.0, 2, 5), np.stack([frames[20], frames[25]]))


def test_sources_pickle_without_open_files(clip_files):
    video = VideoFileSource(clip_files["lossless"])
    first = video.read_frames([3])
    assert video._container is not None
    clone = pickle.loads(pickle.dumps(video))
    assert clone._container is None
    np.testing.assert_array_equal(clone.read_frames([3]), first)
    folder = FrameFolderSource(clip_files["folder"], pattern="{video_id}_{frame:06d}.png")
    folder.read_frames([0])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(folder)).read_frames([0]), folder.read_frames([0]))


def test_open_clip_source(clip_files):
    assert isinstance(open_clip_source("video", clip_files["lossless"]), VideoFileSource)
    assert isinstance(open_clip_source("frames", clip_files["folder"]), FrameFolderSource)
    with pytest.raises(ValueError, match="kind must be 'video' or 'frames'"):
        open_clip_source("gif", clip_files["folder"])


def test_jpeg_frames_decode(tmp_path, make_frames):
    frames = make_frames(3, H, W)
    folder = write_frame_folder(tmp_path / "j", "j", frames, ext=".jpg")
    clip = FrameFolderSource(folder).read_frames([0, 2])
    assert clip.shape == (2, H, W, 3)
    assert np.abs(clip.astype(int) - np.stack([frames[0], frames[2]])).mean() < 6


def test_explicit_frame_paths(clip_files):
    paths = [clip_files["folder"] / f"vid_{i:06d}.png" for i in (5, 6, 7)]
    src = FrameFolderSource(clip_files["folder"], frame_paths=paths)
    assert src.num_frames == 3
    np.testing.assert_array_equal(src.read_clip(1, 3, 1), np.stack(clip_files["frames"][4:7]))


# ------------------------------------------------------------------------------------------------ errors


def test_missing_frame_names_video_and_time(clip_files, tmp_path):
    folder = tmp_path / "gap"
    folder.mkdir()
    for i in (1, 2, 4):  # frame 3 (index 2) is missing
        (folder / f"gap_{i:06d}.png").write_bytes((clip_files["folder"] / f"vid_{i:06d}.png").read_bytes())
    src = FrameFolderSource(folder, pattern="{video_id}_{frame:06d}.png")
    assert src.num_frames == 4
    with pytest.raises(FileNotFoundError, match=r"video gap: frame 2 \(t=0.067 s\) is missing: .*gap_000003.png"):
        src.read_clip(2, 4, 1)


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="video nope: frame folder not found"):
        _ = FrameFolderSource(tmp_path / "nope").num_frames
    with pytest.raises(FileNotFoundError, match="video nope: file not found"):
        VideoFileSource(tmp_path / "nope.mp4").read_frames([0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="video empty: no frames named like 'empty_000001.jpg'"):
        _ = FrameFolderSource(tmp_path / "empty").num_frames


def test_corrupt_frame(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "bad_000001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"video bad: frame 0 \(t=0.000 s\): cannot decode .*bad_000001.jpg"):
        FrameFolderSource(folder).read_frames([0])


def test_truncated_video_errors(clip_files, tmp_path):
    data = clip_files["lossless"].read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    src = VideoFileSource(cut)
    assert src.num_frames == 60  # the header still states the full length
    assert src.read_frames([1]).shape == (1, H, W, 3)
    with pytest.raises(ValueError, match=r"video cut: frame 5\d \(t=1.\d\d\d s\) could not be decoded .*truncated"):
        src.read_clip(57, 4, 1)
    with pytest.raises(ValueError, match=r"video cut: only \d+ of the 60 frames .* truncated"):
        VideoFileSource(cut, cache=True).read_frames([0])
    mp4 = clip_files["h264"].read_bytes()
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(mp4[: len(mp4) // 2])  # the index (moov) is written last: nothing can be opened
    with pytest.raises(ValueError, match="video cut: cannot open .*cut.mp4 .*truncated or corrupt"):
        _ = VideoFileSource(cut_mp4).num_frames


def test_frame_outside_the_video(clip_files):
    with pytest.raises(IndexError, match=r"video vid: frame 60 \(t=2.000 s\) is outside its 60 frames"):
        VideoFileSource(clip_files["lossless"]).read_frames([60])
