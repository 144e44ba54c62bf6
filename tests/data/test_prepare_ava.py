"""``bmvit data prepare-ava``: raw AVA-like videos to the frame/video root bmvit's readers take.

The raw videos are tiny (48x32) H.264 files, each frame showing its own number as 16 black or white
blocks, so every output frame tells which source frame landed in it. They are as long as real AVA
needs (>= 1801 s): one at 30 fps in Matroska (millisecond timestamps), one at 25 fps in mp4.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from bmvit.cli import data_prepare
from bmvit.data import prepare_ava as pa
from bmvit.data.ava import read_frame_lists
from bmvit.data.video import FrameFolderSource, VideoFileSource

W, H = 48, 32
BLOCK_W, BLOCK_H = W // 4, H // 4


# ------------------------------------------------------------------------------------------ raw videos


def number_planes(numbers: np.ndarray) -> np.ndarray:
    """Luma planes ``[N, H, W]`` showing each number's 16 bits as a 4x4 grid of black/white blocks."""
    bits = ((numbers[:, None] >> np.arange(16)) & 1).astype(np.uint8).reshape(-1, 4, 4) * 255
    return bits.repeat(BLOCK_H, axis=1).repeat(BLOCK_W, axis=2)


def read_number(rgb: np.ndarray) -> int:
    """The number shown by a frame (any size: blocks are sampled at their centres)."""
    gray = rgb.astype(np.float32).mean(axis=-1)
    h, w = gray.shape
    ys = ((np.arange(4) + 0.5) * h / 4).astype(int)
    xs = ((np.arange(4) + 0.5) * w / 4).astype(int)
    bits = (gray[np.ix_(ys, xs)] > 127).reshape(-1)
    return int((bits.astype(np.int64) << np.arange(16)).sum())


def write_numbered_video(path: Path, fps: int, seconds: float) -> Path:
    """H.264 (lossless luma) at ``fps``: frame ``k`` is shown at ``k / fps`` s and displays ``k``."""
    n = round(fps * seconds)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast", "x264-params": "keyint=250"}
        frame = av.VideoFrame(W, H, "yuv420p")
        for plane in frame.planes[1:]:
            plane.update(bytes([128]) * plane.buffer_size)
        for start in range(0, n, 2000):
            numbers = np.arange(start, min(n, start + 2000))
            for k, luma in zip(numbers, number_planes(numbers), strict=True):
                frame.planes[0].update(luma.tobytes())  # the encoder copies the picture: one frame object serves all
                frame.pts = int(k)
                container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000, layout="mono")
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def expected_source_25(i: int) -> int:
    """Source frame (counted from second 0) in output frame ``i`` of a 25 fps video: the latest frame
    whose slot round((t - 900) * 30) is <= i, i.e. 12 k' < 10 i + 5 with k' counted from second 900."""
    return 900 * 25 + (10 * i + 4) // 12


SAMPLE = sorted({*range(40), *range(0, pa.NUM_FRAMES, 331), *range(pa.NUM_FRAMES - 40, pa.NUM_FRAMES)})


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RAW_DIR: two good videos and four bad ones."""
    folder = tmp_path_factory.mktemp("raw")
    write_numbered_video(folder / "ok30.mkv", 30, 1801)
    write_numbered_video(folder / "ok25.mp4", 25, 1801)
    write_numbered_video(folder / "short.mp4", 5, 930)  # ends at 929.8 s
    write_audio_only(folder / "novideo.mp4")
    (folder / "text.mp4").write_text("this is not a video\n")
    shutil.copyfile(folder / "ok25.mp4", folder / "corrupt.mp4")
    size = (folder / "corrupt.mp4").stat().st_size
    with open(folder / "corrupt.mp4", "r+b") as f:  # garbage over the frames around second 970
        f.seek(int(size * 0.53))
        f.write(np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes())
    (folder / "notes.txt").write_text("not a video extension: ignored\n")
    return folder


@pytest.fixture(scope="module")
def ann(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ann")
    (folder / "ava_train_v2.2.csv").write_text(
        "ok30,0902,0.1,0.1,0.5,0.5,12,0\nok30,0903,0.1,0.1,0.5,0.5,12,0\nshort,0902,0.2,0.2,0.6,0.6,80,1\n"
    )
    (folder / "ava_val_v2.2.csv").write_text("ok25,0902,0.1,0.1,0.5,0.5,12,0\n")
    (folder / "ava_val_excluded_timestamps_v2.2.csv").write_text("ok25,0904\n")
    (folder / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text('item {\n  name: "stand"\n  id: 12\n}\n')
    return folder


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_prepare.add_arguments(parser)
    return data_prepare.run(parser.parse_args([str(a) for a in argv]))


@pytest.fixture(scope="module")
def prepared(raw: Path, ann: Path, tmp_path_factory: pytest.TempPathFactory):
    """ROOT written once by the CLI from all of RAW_DIR: (root, exit status, stdout).

    ROOT starts with what an interrupted earlier run leaves: ``ok25.partial`` with a half-written frame
    and an ``ok30`` folder without its ``.done`` marker; both must be redone, not trusted.
    """
    root = tmp_path_factory.mktemp("root")
    (root / "frames" / "ok25.partial").mkdir(parents=True)
    (root / "frames" / "ok25.partial" / "ok25_000001.jpg").write_bytes(b"\xff\xd8 half a frame")
    (root / "frames" / "ok30").mkdir()
    for n in (1, 2, 30000):
        (root / "frames" / "ok30" / f"ok30_{n:06d}.jpg").write_bytes(b"stale")
    capture = pytest.MonkeyPatch()
    import io
    import sys

    out = io.StringIO()
    capture.setattr(sys, "stdout", out)
    try:
        rc = run_cli("--videos", raw, "--annotations", ann, "--out", root, "--short-side", "0", "--workers", "1")
    finally:
        capture.undo()
    return root, rc, out.getvalue()


def frame_numbers(folder: Path, vid: str, indices: list[int]) -> list[int]:
    source = FrameFolderSource(folder, vid)
    return [read_number(f) for f in source.read_frames(indices)]


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha1 of every file under ``folder`` (markers hold timings: left out)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != ".done":
            out[str(path.relative_to(folder))] = hashlib.sha1(path.read_bytes()).hexdigest()
    return out


# ------------------------------------------------------------------------------------- time, no video


def test_output_slot_rounds_to_nearest_thirtieth():
    assert pa.output_slot(Fraction(900)) == 0
    assert pa.output_slot(Fraction(1800)) == pa.NUM_FRAMES - 1 == 27000
    assert pa.output_slot(Fraction(900) + Fraction(1, 60)) == 1  # a half rounds up
    assert pa.output_slot(Fraction(900) + Fraction(1, 60) - Fraction(1, 10**6)) == 0
    assert pa.output_slot(Fraction(899)) == -30


def test_pick_output_frames_30fps_with_millisecond_timestamps():
    # Matroska stores k/30 s rounded to the millisecond: 900.067 is after 900 + 2/30, still frame 2
    times = [Fraction(round(k * 1000 / 30), 1000) for k in range(26980, 27000 + 200)]
    timed = ((t, k) for k, t in zip(range(26980, 27200), times, strict=True))
    picked = list(pa.pick_output_frames(timed, num_frames=150))
    assert [i for i, _, _ in picked] == list(range(150))
    assert [k for _, k, _ in picked] == [27000 + i for i in range(150)]


def test_pick_output_frames_25fps_and_60fps():
    frames25 = ((Fraction(k, 25), k) for k in range(22480, 22800))
    picked = [k for _, k, _ in pa.pick_output_frames(frames25, num_frames=300)]
    assert picked == [expected_source_25(i) for i in range(300)]
    assert picked[:7] == [22500, 22501, 22502, 22502, 22503, 22504, 22505]  # every 5th source frame twice
    frames60 = ((Fraction(k, 60), k) for k in range(53990, 54500))
    assert [k for _, k, _ in pa.pick_output_frames(frames60, num_frames=200)] == [54000 + 2 * i for i in range(200)]


def test_pick_output_frames_errors():
    with pytest.raises(pa.PrepareError, match=r"ends at 903\.000 s, before 903\.3 s"):
        list(pa.pick_output_frames(((Fraction(k, 30), k) for k in range(26990, 27091)), num_frames=11 + 90))
    with pytest.raises(pa.PrepareError, match=r"no frame between 900\.500 s and 905\.000 s"):
        times = [Fraction(k, 30) for k in range(26990, 27016)] + [Fraction(905 + k, 1) for k in range(10)]
        list(pa.pick_output_frames(((t, 0) for t in times), num_frames=300))
    with pytest.raises(pa._StartedLate):
        list(pa.pick_output_frames(((Fraction(k, 30), k) for k in range(27005, 27100)), num_frames=10))
    with pytest.raises(pa.PrepareError, match="no video frame"):
        list(pa.pick_output_frames(iter(()), num_frames=10))


def test_scaled_size():
    assert pa.scaled_size(1920, 1080, 256) == (455, 256)
    assert pa.scaled_size(1080, 1920, 256) == (256, 455)
    assert pa.scaled_size(1920, 1080, 256, even=True) == (456, 256)
    assert pa.scaled_size(640, 360, 0) == (640, 360)
    assert pa.scaled_size(641, 361, 0, even=True) == (642, 362)


def test_video_id_and_list(tmp_path: Path):
    assert pa.video_id_of("-5KQ66BBWC4.mkv") == "-5KQ66BBWC4"
    assert pa.video_id_of("abc") == "abc"
    (tmp_path / "list.txt").write_text("-5KQ66BBWC4.mkv\n\n053oq2xB3oU.mkv\n-5KQ66BBWC4.mkv\n")
    assert pa.read_video_list(tmp_path / "list.txt") == ["-5KQ66BBWC4.mkv", "053oq2xB3oU.mkv"]


# ---------------------------------------------------------------------------------------- a full run


def test_exit_status_and_summary_name_each_failure(prepared):
    root, rc, out = prepared
    assert rc == 1
    assert "done:    2 video(s), 54002 frames" in out
    failed = {line.split(":")[0].strip(): line for line in out.splitlines() if line.startswith("    ")}
    assert set(failed) == {"short", "novideo", "text", "corrupt"}
    assert "ends at 929.800 s, before 1800.0 s" in failed["short"] and "short.mp4" in failed["short"]
    assert "has no video stream" in failed["novideo"]
    assert "cannot open" in failed["text"] and "text.mp4" in failed["text"]
    assert "decoder error after 9" in failed["corrupt"] and "corrupt.mp4" in failed["corrupt"]
    assert "notes" not in out
    # failed videos leave nothing behind: no frame folder, no partial, no marker
    assert sorted(p.name for p in (root / "frames").iterdir()) == ["ok25", "ok30"]


@pytest.mark.parametrize("vid", ["ok30", "ok25"])
def test_frame_count_and_source_frame_mapping(prepared, vid):
    root = prepared[0]
    folder = root / "frames" / vid
    names = sorted(os.listdir(folder))
    assert names[0] == ".done" and names[1] == f"{vid}_000001.jpg" and names[-1] == f"{vid}_027001.jpg"
    assert len(names) == pa.NUM_FRAMES + 1
    expected = [27000 + i if vid == "ok30" else expected_source_25(i) for i in SAMPLE]
    assert frame_numbers(folder, vid, SAMPLE) == expected
    marker = json.loads((folder / ".done").read_text())
    assert marker["frames"] == 27001 and marker["first_time_s"] == 900.0 and marker["last_time_s"] == 1800.0
    # the source frames shown first and last are those at seconds 900.0 and 1800.0 exactly
    assert marker["source"]["time_at_first_frame_s"] == 900.0
    assert marker["source"]["time_at_last_frame_s"] == 1800.0
    assert marker["source"]["fps"] == (30.0 if vid == "ok30" else 25.0)


def test_root_is_readable_by_bmvit(prepared):
    root = prepared[0]
    source = FrameFolderSource(root / "frames" / "ok30", "ok30")
    assert source.num_frames == 27001
    frames = source.read_frames([0, 27000])
    assert frames.shape == (2, H, W, 3)
    assert [read_number(f) for f in frames] == [27000, 54000]
    # a clip around the last key frame (second 1798, 32 frames at stride 2) needs no clamping
    assert source.read_clip_at_time(1798 - 900, 32, 2).shape == (32, H, W, 3)
    train = read_frame_lists(root / "frame_lists" / "train.csv", prefix=root / "frames")
    val = read_frame_lists(root / "frame_lists" / "val.csv")
    assert list(train) == ["ok30"] and list(val) == ["ok25"]  # "short" is annotated but has no frames
    assert len(train["ok30"]) == len(val["ok25"]) == 27001
    assert train["ok30"][0] == str(root / "frames" / "ok30" / "ok30_000001.jpg")
    assert val["ok25"][-1] == "ok25/ok25_027001.jpg"
    lines = (root / "frame_lists" / "val.csv").read_text().splitlines()
    assert lines[0] == "original_vido_id video_idx frame_id path labels"
    assert lines[1] == 'ok25 0 0 ok25/ok25_000001.jpg ""'
    listed = FrameFolderSource(root / "frames" / "ok30", "ok30", frame_paths=train["ok30"])
    assert read_number(listed.read_frames([13500])[0]) == 40500
    assert "frame list train: 1 video(s); 1 annotated video(s) without frames left out: short" in prepared[2]


def test_annotations_copied(prepared, ann):
    root = prepared[0]
    copied = sorted(p.name for p in (root / "annotations").iterdir())
    assert copied == sorted(p.name for p in ann.iterdir())
    assert not any((root / "annotations" / name).is_symlink() for name in copied)
    assert (root / "annotations" / "ava_val_v2.2.csv").read_text() == (ann / "ava_val_v2.2.csv").read_text()


def test_rerun_skips_finished_videos(prepared, raw, ann, capsys):
    root = prepared[0]
    frame = root / "frames" / "ok30" / "ok30_013501.jpg"
    before = (frame.stat().st_mtime_ns, (root / "frames" / "ok25" / ".done").read_text())
    rc = run_cli("--videos", raw, "--annotations", ann, "--out", root, "--short-side", "0", "--workers", "1")
    out = capsys.readouterr().out
    assert rc == 1  # the bad videos fail again
    assert "done:    0 video(s)" in out and "skipped: 2 video(s) already done" in out
    assert (frame.stat().st_mtime_ns, (root / "frames" / "ok25" / ".done").read_text()) == before


def test_video_list_skips_done_and_reports_missing(prepared, raw, ann, tmp_path, capsys):
    root = prepared[0]
    listing = tmp_path / "list.txt"
    listing.write_text("ok30.mkv\nshort.mkv\ngone.mkv\n")  # short.mkv: found as short.mp4
    rc = run_cli("--videos", raw, "--annotations", ann, "--out", root, "--short-side", "0", "--video-list", listing)
    out = capsys.readouterr().out
    assert rc == 1
    assert "skipped: 1 video(s)" in out and "failed:  1 video(s)" in out and "    short:" in out
    assert f"missing: 1 video(s) listed in {listing} but not found: gone" in out
    assert "ok25" not in out.split("frame list")[0]


def test_leftovers_of_an_interrupted_run_are_redone(prepared):
    frames = prepared[0] / "frames"
    assert sorted(p.name for p in frames.iterdir()) == ["ok25", "ok30"]  # ok25.partial is gone
    names = os.listdir(frames / "ok30")
    assert len(names) == pa.NUM_FRAMES + 1 and "ok30_030000.jpg" not in names  # the stale folder was replaced
    assert (frames / "ok30" / "ok30_000002.jpg").read_bytes() != b"stale"
    assert frame_numbers(frames / "ok30", "ok30", [0, 1]) == [27000, 27001]


@pytest.mark.slow
def test_interrupted_run_is_completed_and_equal(prepared, raw, ann, tmp_path, monkeypatch, capsys):
    original = pa.FrameFolderWriter.write

    def write(self, index, frame):
        if index == 5000:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of the video
        original(self, index, frame)

    listing = tmp_path / "list.txt"
    listing.write_text("ok25.mp4\n")
    root = tmp_path / "root"
    argv = ["--videos", raw, "--annotations", ann, "--out", root, "--short-side", "0", "--video-list", listing,
            "--workers", "1"]
    monkeypatch.setattr(pa.FrameFolderWriter, "write", write)
    assert run_cli(*argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert len(os.listdir(root / "frames" / "ok25.partial")) == 5000 and not (root / "frames" / "ok25").exists()
    monkeypatch.setattr(pa.FrameFolderWriter, "write", original)
    assert run_cli(*argv) == 0
    assert "done:    1 video(s), 27001 frames" in capsys.readouterr().out
    assert not (root / "frames" / "ok25.partial").exists()
    assert tree_digest(root / "frames" / "ok25") == tree_digest(prepared[0] / "frames" / "ok25")


def test_folder_without_marker_is_not_trusted(tmp_path: Path, raw: Path):
    # a complete-looking folder without .done (killed between rename and marker in older layouts, or a
    # copy from elsewhere) is not trusted: it is replaced. Checked on a cheap failing video's terms:
    settings = pa.PrepareSettings(short_side=0)
    (tmp_path / "frames" / "x").mkdir(parents=True)
    (tmp_path / "frames" / "x" / "x_000001.jpg").write_bytes(b"old")
    assert not pa.is_done(tmp_path, "x", settings)
    result = pa.prepare_video(pa.VideoJob("x", str(raw / "short.mp4"), str(tmp_path), settings))
    assert result.status == "failed"
    assert (tmp_path / "frames" / "x" / "x_000001.jpg").read_bytes() == b"old"  # a failure keeps what was there
    assert not (tmp_path / "frames" / "x.partial").exists()


def test_full_disk_is_one_line_and_leaves_the_video_to_redo(raw, ann, tmp_path, monkeypatch, capsys):
    original = pa.FrameFolderWriter.write

    def write(self, index, frame):
        if index == 50:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.folder / "x.jpg"))
        original(self, index, frame)

    monkeypatch.setattr(pa.FrameFolderWriter, "write", write)
    listing = tmp_path / "list.txt"
    listing.write_text("ok30.mkv\nok25.mp4\n")
    root = tmp_path / "root"
    rc = run_cli("--videos", raw, "--annotations", ann, "--out", root, "--video-list", listing, "--workers", "1")
    out = capsys.readouterr().out
    assert rc == 1
    line = next(x for x in out.splitlines() if x.startswith("    ok30:"))
    assert "the output disk is full" in line and str(root) in line and "this video will be redone" in line
    assert "    ok25: not started: the output disk is full" in out
    assert not (root / "frames" / "ok30.partial").exists() and not (root / "frames" / "ok30").exists()
    assert not pa.is_done(root, "ok30", pa.PrepareSettings())


def test_link_annotations_and_bad_arguments(raw, ann, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    root = tmp_path / "root"
    assert run_cli("--videos", empty, "--annotations", ann, "--out", root, "--link-annotations") == 0
    linked = root / "annotations" / "ava_val_v2.2.csv"
    assert linked.is_symlink() and linked.resolve() == (ann / "ava_val_v2.2.csv").resolve()
    assert not (root / "frame_lists").exists()  # no video has frames yet
    capsys.readouterr()
    assert run_cli("--videos", tmp_path / "nope", "--annotations", ann, "--out", root) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"bmvit data prepare-ava: error: video folder not found: {tmp_path / 'nope'}"
    assert run_cli("--videos", raw, "--annotations", ann, "--out", root, "--short-side", "-1") == 2
    assert "short side must be >= 0" in capsys.readouterr().err
    assert run_cli("--videos", raw, "--annotations", ann, "--out", root, "--video-list", tmp_path / "no.txt") == 2
    assert "video list" in capsys.readouterr().err


# -------------------------------------------------------------------------------------- --format video


def test_format_video_opens_with_the_video_reader(raw, ann, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("ok25.mp4\n")
    root = tmp_path / "root"
    argv = ["--videos", raw, "--annotations", ann, "--out", root, "--video-list", listing, "--format", "video",
            "--short-side", "64", "--workers", "1"]
    assert run_cli(*argv) == 0
    path = root / "videos" / "ok25.mp4"
    pa.check_mp4(path)  # 27001 packets timed 0.0 .. 900.0 s
    source = VideoFileSource(path)
    assert (source.num_frames, source.fps, source.size) == (27001, 30.0, (64, 96))
    indices = [0, 1, 2, 3, 4, 5, 6, 13500, 26999, 27000]
    numbers = [read_number(f) for f in source.read_frames(indices)]
    assert numbers == [expected_source_25(i) for i in indices]
    assert numbers[0] == 22500 and numbers[-1] == 45000  # seconds 900.0 and 1800.0
    with av.open(str(path)) as container:  # short GOP: a key frame every 16 frames
        keys = [p.pts for p in container.demux(video=0) if p.is_keyframe]
    assert len(keys) == -(-27001 // 16)
    marker = json.loads((root / "videos" / ".done" / "ok25.json").read_text())
    assert marker["settings"] == {"format": "video", "short_side": 64, "crf": 18, "gop": 16}
    assert not (root / "frame_lists").exists()
    capsys.readouterr()
    assert run_cli(*argv) == 0
    assert "skipped: 1 video(s)" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- workers


@pytest.mark.slow
def test_two_workers_give_the_same_root(prepared, raw, ann, tmp_path):
    root = tmp_path / "root"
    rc = run_cli("--videos", raw, "--annotations", ann, "--out", root, "--short-side", "0", "--workers", "2")
    assert rc == 1
    assert tree_digest(root) == tree_digest(prepared[0])


def test_two_workers_report_failures_like_one(prepared, raw, ann, tmp_path, capsys):
    listing = tmp_path / "list.txt"
    listing.write_text("short.mp4\nnovideo.mp4\ntext.mp4\ncorrupt.mp4\n")
    root = tmp_path / "root"
    assert run_cli("--videos", raw, "--annotations", ann, "--out", root, "--video-list", listing, "--workers", "2") == 1
    out = capsys.readouterr().out

    def reasons(text: str) -> set[str]:
        return {line.strip() for line in text.splitlines() if line.startswith("    ")}

    assert reasons(out) == reasons(prepared[2]) and len(reasons(out)) == 4


# ----------------------------------------------------------------------------------------- --download


def test_download_then_prepare(raw, ann, tmp_path, capsys):
    """``--download`` from a local mirror with the bucket's layout: the list is fetched into ANN_DIR, the
    two good videos are downloaded and prepared; a listed file the mirror lacks fails its download only,
    and the exit status says so. (``tests/data/test_download.py`` covers resuming and the size checks.)"""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format, *args):  # noqa: A002 - the base class's name
            pass

    mirror = tmp_path / "mirror"
    (mirror / "trainval").mkdir(parents=True)
    (mirror / "annotations").mkdir()
    for name in ("ok30.mkv", "ok25.mp4"):
        (mirror / "trainval" / name).symlink_to(raw / name)
    (mirror / "annotations" / pa.VIDEO_LIST_NAME).write_text("ok30.mkv\nok25.mp4\ngone.mkv\n")
    ann_dir = tmp_path / "ann"
    shutil.copytree(ann, ann_dir)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(mirror)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/trainval/"
    videos, root = tmp_path / "raw", tmp_path / "root"
    argv = ["--download", "--download-url", base, "--download-workers", "2", "--videos", videos,
            "--annotations", ann_dir, "--out", root, "--short-side", "0", "--workers", "1"]
    try:
        rc = run_cli(*argv)
        captured = capsys.readouterr()
        rerun = run_cli(*argv)  # again: nothing to download but gone.mkv, nothing to prepare
        again = capsys.readouterr().out
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert rc == 1  # gone.mkv
    assert (ann_dir / pa.VIDEO_LIST_NAME).read_text() == "ok30.mkv\nok25.mp4\ngone.mkv\n"
    assert sorted(p.name for p in videos.iterdir()) == ["ok25.mp4", "ok30.mkv"]
    for name in ("ok30.mkv", "ok25.mp4"):
        assert (videos / name).read_bytes() == (raw / name).read_bytes()
    out = captured.out
    assert f"download into {videos} from {base} (2 at a time)" in out
    assert "downloaded:    2 file(s)" in out and "failed:        1 file(s)" in out
    assert "    gone.mkv: HTTP 404" in out
    assert "done:    2 video(s), 54002 frames" in out
    assert f"missing: 1 video(s) listed in {ann_dir / pa.VIDEO_LIST_NAME} but not found: gone" in out
    assert "FAILED gone.mkv: HTTP 404" in captured.err
    for vid in ("ok30", "ok25"):
        assert pa.is_done(root, vid, pa.PrepareSettings(short_side=0))
        assert len(os.listdir(root / "frames" / vid)) == pa.NUM_FRAMES + 1
    assert list(read_frame_lists(root / "frame_lists" / "train.csv")) == ["ok30"]
    assert list(read_frame_lists(root / "frame_lists" / "val.csv")) == ["ok25"]
    assert (root / "annotations" / pa.VIDEO_LIST_NAME).is_file()
    assert rerun == 1 and "downloaded:    0 file(s)" in again and "already there: 2 file(s)" in again
    assert "skipped: 2 video(s) already done" in again
