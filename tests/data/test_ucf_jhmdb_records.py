"""UCF101-24 / JHMDB-21 tube annotations (ACT layout) -> key-frame records -> dataset items."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from fractions import Fraction
from typing import ClassVar

import av
import numpy as np
import pytest
import torch

from bmvit.data.ucf_jhmdb import JHMDB_21, UCF101_24, read_act_annotations, tubes_to_keyframes, ucf_jhmdb_dataset

H, W = 24, 32  # resolution (height, width) of the fabricated videos


def act_annotations() -> dict:
    """Two videos in the ACT structure: video a has two tubes of class 1, video b one tube of class 0."""
    a1 = np.array([[1, 4, 6, 12, 18], [2, 5, 6, 13, 18], [3, 6, 6, 14, 18]], dtype=np.float32)
    a2 = np.array([[2, 16, 0, 36, 24], [3, 16, 0, 32, 24]], dtype=np.float32)  # reaches past x = 32: clipped
    b1 = np.array([[4, 0, 0, 16, 12]], dtype=np.float32)
    return {
        "labels": ["Basketball", "Biking"],
        "gttubes": {"Biking/v_a": {1: [a1, a2]}, "Basketball/v_b": {0: [b1]}},
        "nframes": {"Biking/v_a": 5, "Basketball/v_b": 6},
        "resolution": {"Biking/v_a": (H, W), "Basketball/v_b": (H, W)},
        "train_videos": [["Biking/v_a"]],
        "test_videos": [["Basketball/v_b"]],
    }


@pytest.fixture()
def pkl_path(tmp_path):
    path = tmp_path / "UCF101v2-GT.pkl"
    path.write_bytes(pickle.dumps(act_annotations(), protocol=2))
    return path


def test_read_pickle_and_json(pkl_path, tmp_path):
    ann = read_act_annotations(pkl_path)
    assert ann.labels == ["Basketball", "Biking"] and ann.label_map() == {1: "Basketball", 2: "Biking"}
    assert ann.nframes["Biking/v_a"] == 5 and ann.resolution["Basketball/v_b"] == (H, W)
    assert len(ann.gttubes["Biking/v_a"][1]) == 2 and ann.gttubes["Biking/v_a"][1][0].shape == (3, 5)
    assert ann.videos("train") == ["Biking/v_a"] and ann.videos("test") == ["Basketball/v_b"]
    with pytest.raises(ValueError, match="split_index must be 1..1, got 2"):
        ann.videos("train", 2)

    raw = act_annotations()
    raw["gttubes"] = {
        v: {str(k): [t.tolist() for t in tubes] for k, tubes in d.items()} for v, d in raw["gttubes"].items()
    }
    raw["train_videos"] = ["Biking/v_a"]  # a flat list is one split
    json_path = tmp_path / "gt.json"
    json_path.write_text(json.dumps(raw))
    from_json = read_act_annotations(json_path)
    np.testing.assert_array_equal(from_json.gttubes["Biking/v_a"][1][1], ann.gttubes["Biking/v_a"][1][1])
    assert from_json.train_videos == [["Biking/v_a"]]


class _Py2Pickler(pickle._Pickler):
    """Writes bytes with Python 2's str opcodes, as the ACT pickles (written by Python 2) hold them."""

    def save_bytes(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)
    dispatch[bytes] = save_bytes


def test_read_python2_style_pickle(tmp_path):
    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(act_annotations())
    assert b"_codecs" not in buf.getvalue()
    path = tmp_path / "JHMDB-GT.pkl"
    path.write_bytes(buf.getvalue())
    ann = read_act_annotations(path)
    np.testing.assert_array_equal(ann.gttubes["Biking/v_a"][1][0], act_annotations()["gttubes"]["Biking/v_a"][1][0])


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    data = act_annotations()
    data["labels"] = [_Evil()]
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pkl: refusing to load global (posix|os|nt)\.system"):
        read_act_annotations(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("nframes"), r"missing key\(s\) \['nframes'\]"),
        (lambda d: d["gttubes"]["Biking/v_a"].update({5: []}), r"video Biking/v_a: label index 5 outside 0..1"),
        (lambda d: d["gttubes"]["Basketball/v_b"].update({0: [np.zeros((2, 4))]}), r"tube 0: expected \[n, 5\]"),
        (lambda d: d["resolution"].pop("Basketball/v_b"), r"video Basketball/v_b has tubes but no"),
    ],
)
def test_bad_structure(tmp_path, change, message):
    data = act_annotations()
    change(data)
    path = tmp_path / "gt.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(ValueError, match=message):
        read_act_annotations(path)
    with pytest.raises(FileNotFoundError, match="tube annotations not found"):
        read_act_annotations(tmp_path / "none.pkl")


def test_keyframes_hand_computed(pkl_path):
    ann = read_act_annotations(pkl_path)
    frames = tubes_to_keyframes(ann, ["Biking/v_a"])
    assert [(k.timestamp, k.frame_index, len(k)) for k in frames] == [(1, 0, 1), (2, 1, 2), (3, 2, 2)]
    k = frames[1]
    np.testing.assert_allclose(k.boxes_xyxy, [[5 / W, 6 / H, 13 / W, 18 / H], [16 / W, 0, 1, 1]])  # clipped at x = 1
    assert k.person_ids.tolist() == [0, 1] and k.action_ids == ((2,), (2,))
    assert k.labels.tolist() == [[0, 1], [0, 1]]
    every = tubes_to_keyframes(ann, ["Basketball/v_b"], include_unannotated=True)
    assert [len(k) for k in every] == [0, 0, 0, 1, 0, 0] and every[3].labels.tolist() == [[1, 0]]
    assert every[0].boxes_xyxy.shape == (0, 4) and every[0].labels.shape == (0, 2)


def test_bad_tube_rows(tmp_path, caplog):
    data = act_annotations()
    data["gttubes"]["Basketball/v_b"][0][0] = np.array([[4, 0, 0, 16, 12], [9, 0, 0, 16, 12], [5, 40, 0, 50, 12]])
    path = tmp_path / "gt.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    ann = read_act_annotations(path)
    with pytest.raises(ValueError, match=r"video Basketball/v_b, tube 0 \(label 0\): frame 9 outside 1..6"):
        tubes_to_keyframes(ann, ["Basketball/v_b"])
    frames = tubes_to_keyframes(ann, ["Basketball/v_b"], skip_bad=True)
    assert [k.timestamp for k in frames] == [4]
    assert any("skipped 2 bad box row(s)" in r.getMessage() for r in caplog.records)


def _write_png(path, img):
    ctx = av.CodecContext.create("png", "w")
    ctx.width, ctx.height, ctx.pix_fmt, ctx.time_base = img.shape[1], img.shape[0], "rgb24", Fraction(1, 25)
    path.write_bytes(b"".join(bytes(p) for p in ctx.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))))


def test_dataset_over_act_frames(pkl_path, tmp_path):
    """JHMDB-style PNG frames numbered %05d from 1: clips centred on each annotated frame, clamped."""
    root = tmp_path / "Frames"
    frames = {}
    for video, n in (("Biking/v_a", 5), ("Basketball/v_b", 6)):
        (root / video).mkdir(parents=True)
        frames[video] = [np.full((H, W, 3), 40 * i + (video == "Basketball/v_b") * 7, np.uint8) for i in range(n)]
        for i, img in enumerate(frames[video]):
            _write_png(root / video / f"{i + 1:05d}.png", img)
    ds = ucf_jhmdb_dataset(pkl_path, JHMDB_21, "train", frames_root=root, num_frames=4, stride=1, input_size=16)
    assert len(ds) == 3 and ds.class_ids == [1, 2] and ds.class_names == ["Basketball", "Biking"]
    assert ds.keyframe_keys() == [("Biking/v_a", 1), ("Biking/v_a", 2), ("Biking/v_a", 3)]
    # frame 2 = index 1: indices 1 - 2 + i -> [0, 0, 1, 2] after clamping
    np.testing.assert_array_equal(ds.read_clip(1), np.stack([frames["Biking/v_a"][i] for i in (0, 0, 1, 2)]))
    test = ucf_jhmdb_dataset(pkl_path, "jhmdb_21", "test", frames_root=root, num_frames=4, stride=2, input_size=16)
    assert test.transform.transforms[1].__class__.__name__ == "Resize"  # no augmentation on test
    clip, target = test[0]
    assert clip.shape == (3, 4, 16, 16)
    torch.testing.assert_close(target["boxes"], torch.tensor([[0.25, 0.25, 0.5, 0.5]]))
    assert target["labels"].tolist() == [[1.0, 0.0]] and target["timestamp"] == 4
    assert UCF101_24.fps == 25.0 and UCF101_24.frame_pattern == "{frame:05d}.jpg"
