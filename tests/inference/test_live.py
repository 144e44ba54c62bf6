"""Live sources: standard input and HTTP read as frames arrive, detections equal to a file's, files written
line by line and closed cleanly at the end, when the stream stops short, and on Ctrl-C."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bmvit
from bmvit.inference.live import (
    LiveSource,
    _forget_before,
    is_live_source,
    live_keyframe_clip,
    live_source_name,
    predict_live,
)
from bmvit.inference.predictor import Predictor, clip_frame_indices
from bmvit.inference.results import Detections
from bmvit.inference.timeline import LiveTimeline, TimelineOptions, build_timeline

REPO = Path(__file__).resolve().parents[2]


def _noise_video(make_video, path: Path, container_format: str | None = None, faststart: bool = False) -> Path:
    """6 s at 25 fps, 96x128 of noise over a moving bar. Noise makes the file large (about 1 MB), as a real
    stream's bytes are: half of it holds far more than FFmpeg probes before the first frame."""
    return make_video(path, 150, fps=25, faststart=faststart, container_format=container_format, keyint=25,
                      noise_seed=0)


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory, make_video) -> Path:
    """The same video as MPEG-TS, a container made for streams: cut anywhere, its reader waits for more."""
    return _noise_video(make_video, tmp_path_factory.mktemp("live") / "noise.ts", "mpegts")


@pytest.fixture(scope="module")
def video_file(tmp_path_factory, make_video) -> Path:
    """The noise video as an MP4 with its index first (an MP4 FFmpeg can read from a pipe)."""
    return _noise_video(make_video, tmp_path_factory.mktemp("live") / "noise.mp4", faststart=True)


def test_live_source_names():
    assert [is_live_source(s) for s in ("-", "0", "/dev/video2", "rtsp://h/x", "HTTP://h/a.mp4", "udp://@:5000",
                                        "video=Cam", "a.mp4", "frames/", "file.mkv")] == [True] * 7 + [False] * 3
    assert [live_source_name(s) for s in ("-", "0", "/dev/video2", "rtsp://cam.local:554/live/main?x=1")] == [
        "stdin", "camera0", "camera2", "cam.local_554_live_main"]


@pytest.mark.parametrize("k,fps,source_fps", [(3, 1.0, 30.0), (5, 2.0, 25.0), (7, 5.0, 30.0)])
def test_live_clip_is_the_file_clip_away_from_the_end(k, fps, source_fps, model_file):
    from bmvit.inference.predictor import ClipSpec

    spec = ClipSpec.from_model(bmvit.load(model_file))
    live = live_keyframe_clip(k, fps, spec.timeline_fps, spec.num_frames, spec.stride, source_fps)
    key, indices = clip_frame_indices(k / fps, spec, source_fps, 10_000)
    assert live.frame_index == key and live.clip_indices.tolist() == indices.tolist()
    first = live_keyframe_clip(0, fps, spec.timeline_fps, spec.num_frames, spec.stride, source_fps)
    assert first.clip_indices.min() == 0 and first.frame_index == 0  # clamped at the start, as a file's


def test_forget_before_keeps_a_stand_in_for_a_frame_not_yet_seen():
    window = {i: torch.zeros(1) for i in (3, 5, 8, 9)}
    _forget_before(window, 7)  # 7 has not arrived: 5 may stand in for it
    assert sorted(window) == [5, 8, 9]
    _forget_before(window, 8)
    assert sorted(window) == [8, 9]


def _same(a: list[Detections], b: list[Detections]) -> None:
    assert [d.timestamp for d in a] == [d.timestamp for d in b]
    for x, y in zip(a, b):
        assert x.frame_index == y.frame_index
        torch.testing.assert_close(x.boxes_xyxy_norm, y.boxes_xyxy_norm)
        torch.testing.assert_close(x.action_scores, y.action_scores)


def test_predicting_a_piped_file_equals_predicting_the_file(video_file, model_file):
    predictor = Predictor(bmvit.load(model_file), device="cpu", threshold=0.0, prefetch_frames=0)
    from_file = predictor.predict(video_file, fps=2.0)
    with open(video_file, "rb") as pipe:
        live = list(predict_live(predictor, LiveSource("-", stdin=pipe).open(), fps=2.0))
    _same(live, from_file)


def test_live_timeline_gives_build_timelines_segments():
    rng = np.random.default_rng(0)
    dets = []
    for k in range(40):
        n = int(rng.integers(0, 4))
        ids = rng.choice([1, 2, 3, 4, 5 + k // 10], size=n, replace=False)
        dets.append(Detections(video_id="v", timestamp=k / 2, frame_index=k * 15, image_size=(10, 10),
                               boxes_xyxy=torch.zeros(n, 4), boxes_xyxy_norm=torch.zeros(n, 4),
                               actor_scores=torch.ones(n),
                               action_scores=torch.tensor(rng.random((n, 3)), dtype=torch.float32),
                               class_ids=[1, 2, 3], class_names=["a", "b", "c"],
                               token_indices=torch.zeros(n, dtype=torch.int64),
                               track_ids=torch.tensor(ids, dtype=torch.int64)))
    options = TimelineOptions(high=0.6, low=0.4, max_gap_s=1.0, min_length_s=1.0)
    whole = build_timeline(dets, options, keyframe_fps=2.0, duration_s=20.0)
    live = LiveTimeline(options, 2.0, horizon=40)
    streamed = [s for det in dets for s in live.update(det)] + live.finish(20.0)
    key = lambda s: (s.track_id, s.action_id, s.start_s)  # noqa: E731
    assert sorted(streamed, key=key) == sorted(whole, key=key) and whole
    early = LiveTimeline(options, 2.0, horizon=2)  # tracks 5.. end early: cut as soon as they cannot grow
    assert sorted([s for det in dets for s in early.update(det)] + early.finish(20.0), key=key) == sorted(whole, key=key)


def _cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.Popen([sys.executable, "-m", "bmvit", "predict", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kwargs)


def test_stdin_through_the_cli_streams_json_lines_and_writes_every_file(video_file, model_file, tmp_path):
    with open(video_file, "rb") as pipe:
        proc = _cli(["--weights", str(model_file), "--source", "-", "--out", str(tmp_path), "--fps", "2",
                     "--stream-json", "--threshold", "0", "--threads", "1"], stdin=pipe)
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    lines = [json.loads(line) for line in out.decode().splitlines()]
    summary = json.loads((tmp_path / "stdin.json").read_text())
    assert summary["stopped"] == "end of stream" and summary["keyframes"] == len(lines) > 0
    assert [json.loads(line) for line in (tmp_path / "stdin.jsonl").read_text().splitlines()] == lines
    assert all("track_id" in b for line in lines for b in line["boxes"])
    with open(tmp_path / "stdin_tracks.csv") as f:
        assert len(list(csv.reader(f))) == 1 + sum(len(line["boxes"]) for line in lines)
    assert (tmp_path / "stdin_timeline.png").stat().st_size > 0 and (tmp_path / "stdin.csv").stat().st_size > 0


def test_a_file_served_over_http(video_file, model_file, tmp_path, serve):
    server = serve({"/trainval/clip.mp4": Path(video_file).read_bytes()})
    proc = _cli(["--weights", str(model_file), "--source", server.url + "clip.mp4", "--out", str(tmp_path),
                 "--fps", "1", "--threads", "1"])
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()
    summary = json.loads((tmp_path / f"{live_source_name(server.url + 'clip.mp4')}.json").read_text())
    assert summary["stopped"] == "end of stream" and summary["keyframes"] >= 2


def test_a_stream_that_stops_short_says_where(video_file, model_file, tmp_path):
    data = Path(video_file).read_bytes()
    proc = _cli(["--weights", str(model_file), "--source", "-", "--out", str(tmp_path), "--fps", "2", "--threads", "1"],
                stdin=subprocess.PIPE)
    _, err = proc.communicate(data[: len(data) * 2 // 3], timeout=300)
    summary = json.loads((tmp_path / "stdin.json").read_text())
    full = 150 / 25
    assert 0 < summary["stopped_at_s"] < full and summary["frames_read"] < 150
    assert proc.returncode in (0, 1), err.decode()  # 0 with key frames written, 1 when none could be


def test_ctrl_c_closes_the_files_cleanly(stream_file, model_file, tmp_path):
    """Ctrl-C while the predictor waits for bytes that do not come (a live stream between frames): the
    read runs inside FFmpeg, which must not turn the interrupt into an end of stream."""
    data = Path(stream_file).read_bytes()
    # Ctrl-C as a terminal's foreground process gets it: a background job (`make test &`) starts with SIGINT
    # ignored, and a child inherits that, so the test restores the default in the child.
    proc = _cli(["--weights", str(model_file), "--source", "-", "--out", str(tmp_path), "--fps", "5",
                 "--stream-json", "--threshold", "0", "--threads", "1"], stdin=subprocess.PIPE,
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    printed: list[bytes] = []

    def feed() -> None:  # half the stream, in whole transport-stream packets; the pipe stays open
        try:
            proc.stdin.write(data[: len(data) // 2 // 188 * 188])
            proc.stdin.flush()
        except BrokenPipeError:
            pass

    feeder = threading.Thread(target=feed, daemon=True)
    reader = threading.Thread(target=lambda: printed.extend(proc.stdout), daemon=True)  # keep stdout drained
    feeder.start()
    reader.start()
    feeder.join(timeout=120)
    settled, count = time.monotonic(), -1
    while time.monotonic() - settled < 2.0:  # no new line for 2 s: everything fed is predicted, the read waits
        if len(printed) != count:
            settled, count = time.monotonic(), len(printed)
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.1)
    assert printed and json.loads(printed[0])["timestamp"] == 0.0  # key frames came before the stream ended
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    err = proc.stderr.read().decode()
    assert proc.returncode == 130, err
    summary = json.loads((tmp_path / "stdin.json").read_text())
    assert summary["stopped"] == "interrupted (Ctrl-C)" and summary["keyframes"] == len(printed)
    lines = (tmp_path / "stdin.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [json.loads(line) for line in printed]
    rows = (tmp_path / "stdin.csv").read_text().splitlines()
    assert rows and all(len(row.split(",")) == 8 for row in rows)


def test_a_camera_that_cannot_be_opened(model_file, tmp_path, capsys):
    from bmvit.cli import main

    assert main(["predict", "--weights", str(model_file), "--source", "/dev/video97", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("bmvit predict: error: cannot open camera /dev/video97:")
    assert not (tmp_path / "o").exists()
