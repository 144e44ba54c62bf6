"""Decoding in a background thread: the same frames as decoding in the caller's thread, exceptions carried
over with their message, and no thread left behind when the consumer stops early."""

import threading
import time

import numpy as np
import pytest
import torch

import bmvit
from bmvit.data.video import FrameStream, VideoFileSource
from bmvit.inference.predictor import Predictor, _prefetch


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "bmvit-decode"]


def _wait_for_threads(count: int, timeout_s: float = 5.0) -> int:
    """``threading.active_count()`` once it is back to ``count`` (a thread ends just after ``join`` sees it
    finish, so this normally returns at once), or when ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while threading.active_count() != count and time.monotonic() < deadline:
        time.sleep(0.01)
    return threading.active_count()


def _stream_facts(reader: FrameStream) -> tuple[int, bool, str | None]:
    return reader.last_index, reader.complete, reader.error


@pytest.mark.parametrize("cut", [None, 0.55])
def test_threaded_stream_gives_exactly_the_frames_of_the_unthreaded_one(make_video, tmp_path, cut):
    video = make_video(tmp_path / "v.mp4", 90, size=(48, 64), faststart=True)
    if cut:  # a truncated file: both must stop at the same frame and say the same
        data = video.read_bytes()
        video = tmp_path / "cut.mp4"
        video.write_bytes(data[: int(len(data) * cut)])
    wanted = np.unique(np.r_[0:90:7, 3, 4, 5, 89])
    plain_reader, threaded_reader = FrameStream(VideoFileSource(video)), FrameStream(VideoFileSource(video))
    plain = list(plain_reader.frames(wanted))
    threaded = list(_prefetch(lambda: threaded_reader.frames(wanted), maxsize=3))
    assert [i for i, _ in threaded] == [i for i, _ in plain] and len(plain) > 5
    for (_, a), (_, b) in zip(plain, threaded, strict=True):
        np.testing.assert_array_equal(a, b)
    assert _stream_facts(threaded_reader) == _stream_facts(plain_reader)
    assert plain_reader.complete is (cut is None)


def test_predictions_with_and_without_the_thread_are_identical(model_file, synthetic_video):
    model = bmvit.load(model_file)
    threaded = Predictor(model, device="cpu", threshold=0.0, batch_size=2, prefetch_frames=3)
    inline = Predictor(model, device="cpu", threshold=0.0, batch_size=2, prefetch_frames=0)
    assert Predictor(model, device="cpu").prefetch_frames == 4 * 8  # a batch of clips' worth
    for a, b in zip(threaded.predict(synthetic_video), inline.predict(synthetic_video), strict=True):
        assert a.token_indices.tolist() == b.token_indices.tolist()
        torch.testing.assert_close(a.action_scores, b.action_scores, rtol=0, atol=0)
        torch.testing.assert_close(a.boxes_xyxy, b.boxes_xyxy, rtol=0, atol=0)


def test_an_exception_while_decoding_reaches_the_consumer_with_its_message(model_file, synthetic_video,
                                                                        monkeypatch):
    def failing(self, wanted):
        for count, item in enumerate(original(self, wanted)):
            if count == 5:
                raise RuntimeError(f"decoder exploded at frame {item[0]}")
            yield item

    original = FrameStream.frames
    monkeypatch.setattr(FrameStream, "frames", failing)
    before = threading.active_count()
    predictor = Predictor(bmvit.load(model_file), device="cpu", batch_size=1)
    with pytest.raises(RuntimeError, match=r"^decoder exploded at frame \d+$") as info:
        list(predictor.predict(synthetic_video, stream=True))
    assert "failing" in {frame.name for frame in info.traceback}  # the producer's own traceback is kept
    assert _wait_for_threads(before) == before and not _decode_threads()


def test_prefetch_reraises_the_same_exception_and_closes_the_producer():
    closed = []

    def produce():
        try:
            yield 1
            yield 2
            raise KeyError("no frame 3")
        finally:
            closed.append(True)

    items = _prefetch(produce, maxsize=1)
    assert next(items) == 1 and next(items) == 2
    with pytest.raises(KeyError, match="no frame 3"):
        next(items)
    assert closed == [True] and not _decode_threads()


@pytest.mark.parametrize("how", ["close", "break", "garbage"])
def test_stopping_early_leaves_no_thread_running(model_file, make_video, tmp_path, how):
    video = make_video(tmp_path / "long.mp4", 300, size=(48, 64))
    before = threading.active_count()
    # A queue of one frame: the producer is blocked on a full queue when the consumer stops.
    predictor = Predictor(bmvit.load(model_file), device="cpu", batch_size=1, prefetch_frames=1)
    if how == "close":
        detections = predictor.predict(video, stream=True)
        next(detections)
        assert len(_decode_threads()) == 1
        detections.close()
        assert not _decode_threads()  # joined by close() itself
    elif how == "break":
        for _ in predictor.predict(video, stream=True):
            break
    else:
        detections = predictor.predict(video, stream=True)
        next(detections)
        del detections
    assert _wait_for_threads(before) == before
    assert not _decode_threads()


def test_prefetch_stops_an_endless_producer_when_closed():
    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    before = threading.active_count()
    items = _prefetch(endless, maxsize=2, poll_s=0.01)
    assert [next(items) for _ in range(5)] == [0, 1, 2, 3, 4]
    items.close()
    assert closed.is_set() and _wait_for_threads(before) == before
