"""Decoding at the needed size (``min_size``), compact frame lists, forward decoding and the sized cache of
video files: each fast path returns what the plain path returns (exactly, or within a measured tolerance)."""

from __future__ import annotations

import multiprocessing
import os
import pickle
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from bmvit.data.ava import FrameList, read_frame_lists
from bmvit.data.dataset import KeyFrameDataset, VideoRef, _find_frames
from bmvit.data.video import (
    CacheLimitError,
    FrameFolderSource,
    VideoFileSource,
    check_min_size,
    jpeg_draft_scale,
    jpeg_draft_size,
    reduced_size,
)


def camera_like(h: int, w: int, seed: int) -> np.ndarray:
    """A frame that JPEG-compresses like footage: smooth background, shapes, pixel noise (sigma 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 6.28, 3)
    background = np.stack([96 + 60 * np.sin(xx / (97 + 13 * c) + yy / (131 - 11 * c) + phase[c]) for c in range(3)], -1)
    img = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(10):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.04, 0.2) * h
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.integers(2) else draw.rectangle)((x - r, y - 1.6 * r, x + r, y + 1.6 * r), fill=colour)
    noise = rng.normal(0, 3, (h, w, 3)).astype(np.int16)
    return np.clip(np.asarray(img, np.int16) + noise, 0, 255).astype(np.uint8)


def write_jpegs(folder: Path, video_id: str, frames: list[np.ndarray], quality: int = 90) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{video_id}_{i + 1:06d}.jpg", quality=quality)
    return folder


def pyav_decode(path: Path) -> np.ndarray:
    """A JPEG or PNG decoded the way frame folders always were: FFmpeg's decoder, to rgb24."""
    ctx = av.CodecContext.create("mjpeg" if path.suffix == ".jpg" else "png", "r")
    return ctx.decode(av.Packet(path.read_bytes()))[0].to_ndarray(format="rgb24")


def resize256(clip: np.ndarray) -> torch.Tensor:
    """What the transforms do next: bilinear (antialiased) resize of [T, H, W, 3] to 256x256, float."""
    x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float()
    return F.interpolate(x, size=(256, 256), mode="bilinear", antialias=True, align_corners=False)


@pytest.fixture(scope="module")
def hd_folder(tmp_path_factory):
    """Three 1280x720 JPEG frames (quality 90), as AVA's frames."""
    return write_jpegs(tmp_path_factory.mktemp("hd") / "hd", "hd", [camera_like(720, 1280, s) for s in range(3)])


# ------------------------------------------------------------------------------------------------ sizes


def test_draft_size_is_the_smallest_scale_that_keeps_min_size():
    # 1280x720 for 256x256: 1/4 would be 320x180 and 180 < 256 rows, so libjpeg decodes at 1/2.
    assert jpeg_draft_scale((720, 1280), (256, 256)) == 2
    assert jpeg_draft_size((720, 1280), (256, 256)) == (360, 640)
    assert jpeg_draft_size((720, 1280), (128, 128)) == (180, 320)
    assert jpeg_draft_size((720, 1280), (90, 90)) == (90, 160)  # 1/8, exactly the minimum
    assert jpeg_draft_size((720, 1280), (720, 1280)) == (720, 1280)
    assert jpeg_draft_size((256, 456), (256, 256)) == (256, 456)  # prepared frames: nothing to gain
    assert jpeg_draft_size((200, 300), (256, 256)) == (200, 300)  # smaller than asked: as stored
    assert jpeg_draft_size((721, 1281), (180, 180)) == (181, 321)  # ceil, as libjpeg
    assert reduced_size((720, 1280), (256, 256)) == (256, 455)
    assert reduced_size((720, 1280), (256, 512)) == (288, 512)
    assert reduced_size((256, 456), (256, 256)) == (256, 456)
    assert reduced_size((100, 80), (256, 256)) == (100, 80)  # never an upscale
    assert reduced_size((720, 1280), None) == (720, 1280)
    with pytest.raises(ValueError, match="min_size must be >= 1"):
        check_min_size((0, 256))
    with pytest.raises(ValueError, match=r"min_size must be \(H, W\)"):
        check_min_size(256)


@pytest.mark.parametrize(
    "size, min_size",
    [((720, 1280), (256, 256)), ((720, 1280), (128, 128)), ((720, 1280), (300, 200)), ((61, 97), (7, 20)),
     ((61, 97), (30, 48)), ((64, 64), (8, 8)), ((100, 60), (256, 256))],
)
def test_draft_decode_keeps_min_size_within_one_halving(tmp_path, size, min_size):
    """The source returns jpeg_draft_size: each side >= min_size (or as stored), and halving once more
    would make a side smaller than min_size (or the scale is already 1/8)."""
    h, w = size
    folder = write_jpegs(tmp_path / "v", "v", [camera_like(h, w, 0)])
    out = FrameFolderSource(folder).read_frames([0], min_size=min_size)
    assert out.shape[1:3] == jpeg_draft_size(size, min_size)
    oh, ow = out.shape[1:3]
    assert oh >= min(h, min_size[0]) and ow >= min(w, min_size[1])
    s = jpeg_draft_scale(size, min_size)
    half = (-(-h // (2 * s)), -(-w // (2 * s)))
    assert s == 8 or half[0] < min_size[0] or half[1] < min_size[1]


def test_hd_frames_decode_at_half_size_and_match_full_decode_after_resize(hd_folder):
    src = FrameFolderSource(hd_folder)
    full = src.read_frames([0, 1, 2])
    small = src.read_frames([0, 1, 2], min_size=(256, 256))
    assert full.shape == (3, 720, 1280, 3) and small.shape == (3, 360, 640, 3) and small.dtype == np.uint8
    # Measured on these frames: mean 0.77, max 13.2 grey levels after both are resized to 256x256
    # (DCT-domain 1/2 scaling is close to a 2x2 box filter; differences sit at sharp colour edges).
    diff = (resize256(full) - resize256(small)).abs()
    assert diff.mean().item() < 1.5
    assert diff.max().item() < 32


def test_min_size_none_is_unchanged_pyav_decoding(hd_folder, tmp_path):
    src = FrameFolderSource(hd_folder)
    np.testing.assert_array_equal(src.read_frames([1])[0], pyav_decode(hd_folder / "hd_000002.jpg"))
    # Frames too small to halve decode exactly as without min_size (FFmpeg, same pixels).
    small = write_jpegs(tmp_path / "p", "p", [camera_like(256, 456, s) for s in range(2)])
    prepared = FrameFolderSource(small)
    np.testing.assert_array_equal(prepared.read_frames([0, 1], min_size=(256, 256)), prepared.read_frames([0, 1]))
    np.testing.assert_array_equal(prepared.read_frames([0])[0], pyav_decode(small / "p_000001.jpg"))
    # PNG frames: full size whatever min_size.
    png = tmp_path / "png"
    png.mkdir()
    frame = camera_like(96, 128, 3)
    Image.fromarray(frame).save(png / "png_000001.png")
    got = FrameFolderSource(png, pattern="{video_id}_{frame:06d}.png").read_frames([0], min_size=(16, 16))
    np.testing.assert_array_equal(got[0], frame)


def test_read_clip_and_at_time_pass_min_size(hd_folder):
    src = FrameFolderSource(hd_folder)
    clip = src.read_clip(1, 4, 1, min_size=(256, 256))
    assert clip.shape == (4, 360, 640, 3)
    np.testing.assert_array_equal(clip, src.read_frames([0, 0, 1, 2], min_size=(256, 256)))
    at = src.read_clip_at_time(1 / 30, 4, 1, min_size=(256, 256))
    np.testing.assert_array_equal(at, clip)
    assert src.clip_indices_at_time(1 / 30, 4, 1).tolist() == [0, 0, 1, 2]


def test_missing_and_broken_jpegs_with_min_size(hd_folder, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    data = (hd_folder / "hd_000001.jpg").read_bytes()
    (folder / "bad_000001.jpg").write_bytes(data)
    (folder / "bad_000002.jpg").write_bytes(data[: len(data) // 2])  # truncated: the header reads, the data not
    (folder / "bad_000003.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    src = FrameFolderSource(folder, num_frames=4)
    assert src.read_frames([0], min_size=(256, 256)).shape == (1, 360, 640, 3)
    truncated = r"video bad: frame 1 \(t=0.033 s\): cannot decode .*bad_000002.jpg.*truncated"
    with pytest.raises(ValueError, match=truncated):
        src.read_frames([0, 1], min_size=(256, 256))
    with pytest.raises(ValueError, match=r"video bad: frame 2 \(t=0.067 s\): cannot decode .*bad_000003.jpg"):
        src.read_frames([2], min_size=(256, 256))
    with pytest.raises(FileNotFoundError, match=r"video bad: frame 3 \(t=0.100 s\) is missing: .*bad_000004.jpg"):
        src.read_clip(3, 1, 1, min_size=(256, 256))


def test_frames_of_different_stored_sizes_are_an_error_with_min_size(tmp_path):
    folder = write_jpegs(tmp_path / "mix", "mix", [camera_like(720, 1280, 0), camera_like(360, 640, 1)])
    with pytest.raises(ValueError, match=r"video mix: frames of different sizes \[\(360, 640, 3\), \(720, 1280, 3\)\]"):
        FrameFolderSource(folder).read_frames([0, 1], min_size=(256, 256))


# ------------------------------------------------------------------------------------------------ frame lists


def reference_frame_lists(text: str, prefix: str | None) -> dict[str, list[str]]:
    """The explicit lists, as read_frame_lists built them before it stored counts."""
    frames: dict[str, list[tuple[int, str]]] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            row = line.split()
            frames.setdefault(row[0], []).append((int(row[2]), os.path.join(prefix, row[3]) if prefix else row[3]))
    return {v: [p for _, p in sorted(items, key=lambda t: t[0])] for v, items in frames.items()}


def standard_rows(vid: str, idx: int, ids, numbers=None) -> list[str]:
    numbers = numbers if numbers is not None else [k + 1 for k in range(len(ids))]
    return [f'{vid} {idx} {i} {vid}/{vid}_{n:06d}.jpg ""' for i, n in zip(ids, numbers)]


FRAME_LIST_CASES = {
    "standard": standard_rows("a", 0, range(5)),
    "ids_from_one": standard_rows("a", 0, range(1, 6)),
    "out_of_order": [standard_rows("a", 0, range(4))[k] for k in (2, 0, 3, 1)],
    "id_gap": standard_rows("a", 0, [0, 1, 5, 6]),  # ids skip, files do not: still frames 0..3
    "file_gap": standard_rows("a", 0, range(4), [1, 2, 4, 5]),  # explicit: the n-th row is frame n
    # a: a repeated id over consecutive files reads as the pattern; b: a file listed twice does not
    "duplicate_id": standard_rows("a", 0, [0, 1, 1, 2], [1, 2, 3, 4])
    + standard_rows("b", 1, [0, 1, 1], [1, 2, 2]),
    "other_names": ['c 0 0 elsewhere/c_000001.jpg ""', 'c 0 1 elsewhere/c_000002.jpg ""'],
    "interleaved": [r for pair in zip(standard_rows("a", 0, range(3)), standard_rows("b", 1, range(3))) for r in pair],
    "switch_midway": standard_rows("a", 0, range(3)) + ['a 0 3 a/other.jpg ""'] + standard_rows("b", 1, range(2)),
    "blank_lines": standard_rows("a", 0, range(2)) + ["", "   "] + standard_rows("a", 0, range(2, 4), [3, 4]),
}


@pytest.mark.parametrize("case", sorted(FRAME_LIST_CASES))
@pytest.mark.parametrize("prefix", [None, "/data/frames"])
def test_compact_frame_lists_read_as_the_explicit_lists(tmp_path, case, prefix):
    text = "original_vido_id video_id frame_id path labels\n" + "\n".join(FRAME_LIST_CASES[case]) + "\n"
    path = tmp_path / "list.csv"
    path.write_text(text)
    lists = read_frame_lists(path, prefix=prefix)
    expected = reference_frame_lists(text, prefix)
    assert list(lists) == list(expected)
    for vid, paths in expected.items():
        got = lists[vid]
        assert isinstance(got, FrameList) and got == paths and list(got) == paths and len(got) == len(paths)
        assert [got[i] for i in range(len(paths))] == paths and got[-1] == paths[-1] and got[1:3] == paths[1:3]
        assert pickle.loads(pickle.dumps(got)) == got
    standard = {v for v, fl in lists.items() if fl.standard}
    assert standard == {
        "standard": {"a"}, "ids_from_one": {"a"}, "out_of_order": {"a"}, "id_gap": {"a"}, "file_gap": set(),
        "duplicate_id": {"a"}, "other_names": set(), "interleaved": {"a", "b"}, "switch_midway": {"b"},
        "blank_lines": {"a"},
    }[case]
    for fl in lists.values():
        assert (fl.paths is None) == fl.standard


def test_frame_list_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="frame list not found"):
        read_frame_lists(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text('header\na 0 0 a/a_000001.jpg ""\na 0 zz a/a_000002.jpg ""\n')
    with pytest.raises(ValueError, match=r"x\.csv:3: frame_id 'zz' is not an integer"):
        read_frame_lists(tmp_path / "x.csv")
    (tmp_path / "y.csv").write_text('header\na 0 0 a/a_000001.jpg ""\na 0 1 a/a_000002.jpg\n')
    with pytest.raises(ValueError, match=r"y\.csv:3: expected 5 space-separated columns"):
        read_frame_lists(tmp_path / "y.csv")


def test_find_frames_keeps_counts_and_reads_the_same_frames(tmp_path):
    frame_dir = tmp_path / "frames"
    frames = [np.full((16, 24, 3), 10 * i, np.uint8) for i in range(6)]
    for vid in ("a", "b"):
        folder = frame_dir / vid
        folder.mkdir(parents=True)
        for i, f in enumerate(frames):
            Image.fromarray(f).save(folder / f"{vid}_{i + 1:06d}.png")
    # a: the standard pattern (but PNG: explicit); c: jpg names, standard; b: reversed files, explicit.
    rows = standard_rows("c", 2, range(6))
    rows += [f'a 0 {i} a/a_{i + 1:06d}.png ""' for i in range(6)]
    rows += [f'b 1 {i} b/b_{6 - i:06d}.png ""' for i in range(6)]
    (frame_dir / "c").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(frame_dir / "c" / f"c_{i + 1:06d}.jpg", quality=95)
    lst = tmp_path / "train.csv"
    lst.write_text("header\n" + "\n".join(rows) + "\n")
    refs = _find_frames(str(frame_dir), str(lst), ["a", "b", "c"], 30.0)
    assert refs["c"] == VideoRef("frames", str(frame_dir / "c"), fps=30.0, num_frames=6)
    assert refs["a"].frame_paths is not None and refs["a"].num_frames is None
    assert refs["b"].frame_paths == tuple(str(frame_dir / "b" / f"b_{6 - i:06d}.png") for i in range(6))
    explicit = VideoRef("frames", str(frame_dir / "c"), fps=30.0,
                        frame_paths=tuple(read_frame_lists(lst, prefix=str(frame_dir))["c"]))
    ds = KeyFrameDataset([], {"b": refs["b"], "c": refs["c"], "x": explicit}, [1], transform=lambda c, t: (c, t))
    compact, listed = ds.source("c"), ds.source("x")
    assert compact.num_frames == listed.num_frames == 6 and compact.frame_paths is None
    assert [compact.frame_path(i) for i in range(6)] == list(listed.frame_paths)
    np.testing.assert_array_equal(compact.read_clip(3, 4, 2), listed.read_clip(3, 4, 2))
    np.testing.assert_array_equal(ds.source("b").read_frames([0])[0], frames[5])


# ------------------------------------------------------------------------------------------------ video files


@pytest.fixture(scope="module")
def h264(tmp_path_factory, make_frames, write_h264):
    """150 frames of 48x64 as ordinary lossy H.264, a key frame every 12 frames."""
    return write_h264(tmp_path_factory.mktemp("vid") / "vid.mp4", make_frames(150, 48, 64))


def seeking(path: Path) -> VideoFileSource:
    """A source that seeks for every read and keeps nothing: each read as from a fresh source."""
    return VideoFileSource(path, ring_frames=0, max_forward_frames=0)


@pytest.mark.parametrize("t, stride", [(16, 4), (32, 2), (8, 8)])
def test_forward_decoding_equals_seeking_for_increasing_clips(h264, t, stride):
    # AVA-like: clips spanning ~64 frames around centres 30 frames apart (overlapping), one frame apart,
    # and at the video's end (clamped). (One source at a time: a process keeps one source's ring.)
    centers = (20, 50, 80, 81, 110, 140)
    forward, reference = VideoFileSource(h264), seeking(h264)
    got = [forward.read_clip(c, t, stride) for c in centers]
    expected = [reference.read_clip(c, t, stride) for c in centers]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    assert reference.seeks == 6
    assert forward.seeks == 1  # everything after the first read continued forward or came from the ring
    assert forward.ring_hits > 0 and forward.frames_decoded < reference.frames_decoded / 2
    small = VideoFileSource(h264)
    got = [small.read_clip(c, 8, 4, min_size=(24, 24)) for c in (20, 50, 51)]
    assert small.seeks == 1
    for a, c in zip(got, (20, 50, 51)):
        np.testing.assert_array_equal(a, seeking(h264).read_clip(c, 8, 4, min_size=(24, 24)))


def test_only_the_last_decoding_source_keeps_its_ring(h264):
    a, b = VideoFileSource(h264), VideoFileSource(h264)
    a.read_clip(40, 4, 2)
    assert len(a._ring) > 0
    b.read_clip(40, 4, 2)
    assert len(a._ring) == 0 and len(b._ring) > 0
    np.testing.assert_array_equal(a.read_clip(42, 4, 2), seeking(h264).read_clip(42, 4, 2))


def test_backward_jump_and_far_jump_seek_and_still_equal(h264):
    forward = VideoFileSource(h264, ring_frames=32, max_forward_frames=20)
    centers = (120, 125, 30, 32, 90, 5)  # back to 30 and to 5: outside the ring; 90: past the limit
    got = [forward.read_clip(c, 8, 3) for c in centers]
    assert forward.seeks == 4  # 120, 30, 90, 5; 125 and 32 continue forward and hit the ring
    got.append(forward.read_frames([149, 0, 75]))
    reference = seeking(h264)
    expected = [reference.read_clip(c, 8, 3) for c in centers] + [reference.read_frames([149, 0, 75])]
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_uncached_min_size_converts_at_the_reduced_size(h264):
    src = VideoFileSource(h264)
    full = src.read_frames([10, 11])
    small = src.read_frames([10, 11], min_size=(24, 24))
    assert full.shape == (2, 48, 64, 3) and small.shape == (2, *reduced_size((48, 64), (24, 24)), 3) == (2, 24, 32, 3)
    # swscale's area filter from YUV against a box filter of the RGB frames: close.
    box = full.reshape(2, 24, 2, 32, 2, 3).mean((2, 4))
    assert np.abs(small - box).mean() < 8  # measured 5.1 (sharp synthetic stripes, lossy yuv420p)


def test_cache_at_min_size_equals_uncached_reads_at_that_size(h264):
    uncached = VideoFileSource(h264)
    cached = VideoFileSource(h264, cache=True)
    clip = cached.read_clip(60, 8, 4, min_size=(24, 24))
    assert cached._frames.shape == (150, 24, 32, 3)  # the whole video, at the size asked for
    np.testing.assert_array_equal(clip, uncached.read_clip(60, 8, 4, min_size=(24, 24)))
    # A smaller min_size is served from the cache (larger than asked, as min_size allows) ...
    assert cached.read_clip(60, 2, 1, min_size=(12, 12)).shape == (2, 24, 32, 3)
    # ... a larger one, or the stored size, decodes the video again at that size.
    np.testing.assert_array_equal(cached.read_clip(61, 4, 2, min_size=(40, 40)),
                                  uncached.read_clip(61, 4, 2, min_size=(40, 40)))
    np.testing.assert_array_equal(cached.read_clip(62, 4, 2), uncached.read_clip(62, 4, 2))
    assert cached._frames.shape == (150, 48, 64, 3)
    assert cached.read_clip(62, 1, 1, min_size=(24, 24)).shape == (1, 48, 64, 3)  # full size serves any size


def test_cache_over_the_limit_is_refused_before_decoding(h264):
    src = VideoFileSource(h264, cache=True, max_cache_bytes=1_000_000)
    need = 150 * 48 * 64 * 3  # 1382400 bytes
    with pytest.raises(CacheLimitError, match=rf"150 x 48 x 64 x 3 = {need} bytes .*max_cache_bytes=1000000.*"
                                              r"frame folders \(`bmvit data prepare-ava`"):
        src.read_frames([0])
    assert src.frames_decoded == 0
    # At a smaller size the same video fits.
    assert src.read_frames([0], min_size=(24, 24)).shape == (1, 24, 32, 3)
    assert not isinstance(CacheLimitError("x"), ValueError)  # not a bad clip to skip: a setting to change


def _read_in_child(src: VideoFileSource, queue) -> None:
    queue.put(src.read_clip(70, 4, 2))


def test_forked_worker_reads_after_the_parent_decoded(h264):
    """The parent's open container, decoder position and ring are inherited by a forked worker, which
    must leave them alone (freeing them could wait on threads that exist only in the parent)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    src = VideoFileSource(h264)
    expected = src.read_clip(70, 4, 2)
    src.read_clip(72, 4, 2)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(src, queue))
    child.start()
    try:
        got = queue.get(timeout=60)
    finally:
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
    np.testing.assert_array_equal(got, expected)
    assert child.exitcode == 0
