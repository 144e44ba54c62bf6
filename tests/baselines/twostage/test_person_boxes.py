"""Person-box files (PySlowFast's format), the synthetic detector, and the two-stage dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmvit.data.ava import KeyFrame
from bmvit.data.dataset import KeyFrameDataset, VideoRef
from bmvit.baselines.twostage.dataset import PersonBoxDataset, jitter_boxes_xyxy
from bmvit.baselines.twostage.person_boxes import (
    FramePersonBoxes,
    PersonBoxNoise,
    read_person_boxes,
    write_person_boxes,
    write_synthetic_person_boxes,
)
from bmvit.data.transforms import create_transforms

# PySlowFast's train file: a box with two labels (two rows), a negative (empty action), a low score.
TRAIN_FILE = (
    "vidA,0902,0.100,0.200,0.500,0.900,12,0.990000\n"
    "vidA,0902,0.100,0.200,0.500,0.900,80,0.990000\n"
    "vidA,0902,0.600,0.100,0.900,0.800,,0.850000\n"
    "vidA,0902,0.000,0.000,0.300,0.300,,0.500000\n"
    "vidB,0903,0.250,0.250,0.750,0.500,,0.800000\n"
)


def test_reader_groups_rows_per_box_and_applies_the_threshold(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text(TRAIN_FILE)
    boxes = read_person_boxes(path)  # PySlowFast's 0.8: the 0.5 box goes, 0.8 itself stays
    assert sorted(boxes) == [("vidA", 902), ("vidB", 903)]
    a = boxes[("vidA", 902)]
    np.testing.assert_allclose(a.boxes_xyxy, [[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.8]], rtol=1e-6)
    assert a.action_ids == ((12, 80), ()) and a.scores.tolist() == pytest.approx([0.99, 0.85])
    assert len(read_person_boxes(path, 0.0)[("vidA", 902)]) == 3
    assert read_person_boxes(path, 0.995) == {}


def test_write_then_read_is_the_same(tmp_path):
    frames = {("v", 905): FramePersonBoxes(np.array([[0.1, 0.1, 0.4, 0.9], [0.5, 0.2, 0.7, 0.6]], np.float32),
                                           np.array([0.9, 0.85], np.float32), ((3, 7), ()))}
    path = tmp_path / "out.csv"
    assert write_person_boxes(path, frames) == 3
    assert path.read_text().splitlines()[2] == "v,0905,0.500,0.200,0.700,0.600,,0.850000"
    back = read_person_boxes(path)[("v", 905)]
    np.testing.assert_allclose(back.boxes_xyxy, frames[("v", 905)].boxes_xyxy, atol=5e-4)
    assert back.action_ids == ((3, 7), ())


@pytest.mark.parametrize(
    ("text", "message"),
    [("vidA,0902,0.1,0.2,0.5,0.9,,\n", r"boxes\.csv:1: score"),
     ("vidA,0902,0.1,0.2,0.5,0.9,3\n", r"boxes\.csv:1: expected 8"),
     ("vidA,0902,0.1,0.2,0.5,0.9,,0.9\nvidA,0902,0.5,0.2,0.1,0.9,,0.9\n", r"boxes\.csv:2: person box")],
)
def test_bad_rows_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "boxes.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_person_boxes(path)


def _fake_root(tmp_path, frames_per_video=100):
    """Annotations only (the synthetic detector reads nothing else): 2 actors per key frame."""
    ann = tmp_path / "annotations"
    ann.mkdir()
    for split in ("train", "val"):
        rows = []
        for v in range(2):
            for t in range(902, 902 + frames_per_video):
                rows.append(f"{split}{v},{t:04d},0.100,0.200,0.300,0.800,1,0")
                rows.append(f"{split}{v},{t:04d},0.100,0.200,0.300,0.800,4,0")
                rows.append(f"{split}{v},{t:04d},0.600,0.300,0.700,0.600,2,1")
        (ann / f"ava_{split}_v2.2.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_synthetic_detector_rates_labels_and_determinism(tmp_path):
    root = _fake_root(tmp_path)
    summary = write_synthetic_person_boxes(root, seed=5)
    assert summary.keyframes == {"train": 200, "val": 200} and summary.actors == {"train": 400, "val": 400}
    for split in ("train", "val"):
        assert 0.84 < summary.found[split] / 400 < 0.96  # miss rate 0.1
        assert 0.45 < summary.false[split] / 200 < 0.75  # 0.6 false boxes per key frame
        assert 0.18 < summary.false_above[split] / 200 < 0.45  # half of them score >= 0.8
    assert f"val: {root / 'annotations' / 'person_boxes_val.csv'} (200 key frames): {summary.found['val']} of 400" \
        in summary.describe()
    first = (root / "annotations" / "person_boxes_val.csv").read_text()
    write_synthetic_person_boxes(root, seed=5)
    assert (root / "annotations" / "person_boxes_val.csv").read_text() == first
    val = read_person_boxes(root / "annotations" / "person_boxes_val.csv", 0.0)
    train = read_person_boxes(root / "annotations" / "person_boxes_train.csv", 0.0)
    assert all(a == () for f in val.values() for a in f.action_ids)  # val: no labels, like PySlowFast's file
    labelled = {a for f in train.values() for a in f.action_ids}
    assert {(1, 4), (2,), ()} == labelled  # train: the actor's labels, false boxes none
    # Found actors: jittered by ~5% of the box size, scored >= 0.8.
    for frame in train.values():
        for box, acts, score in zip(frame.boxes_xyxy, frame.action_ids, frame.scores):
            if acts == (1, 4):
                assert np.abs(box - [0.1, 0.2, 0.3, 0.8]).max() < 0.25 * 0.6 and score >= 0.8


def test_people_with_no_action_are_boxed_but_counted_apart_from_the_actors(tmp_path):
    """``bmvit synth --non-actors`` writes bystanders as rows with an empty action id: a person detector
    boxes them as it boxes anyone, and the summary counts them apart from the actors."""
    root = _fake_root(tmp_path, frames_per_video=3)
    for split in ("train", "val"):
        path = root / "annotations" / f"ava_{split}_v2.2.csv"
        extra = "".join(f"{split}{v},{t:04d},0.400,0.100,0.550,0.700,,2\n" for v in range(2) for t in range(902, 905))
        path.write_text(path.read_text() + extra)
    noise = PersonBoxNoise(miss_rate=0.0, false_per_frame=0.0, jitter=0.0)
    summary = write_synthetic_person_boxes(root, seed=0, noise=noise)
    assert summary.actors == summary.found == {"train": 12, "val": 12}
    assert summary.non_actors == summary.non_actors_found == {"train": 6, "val": 6}
    assert "12 of 12 actors found (100.0%), 6 of 6 non-actors, 0.00 false boxes" in summary.describe()
    train = read_person_boxes(root / "annotations" / "person_boxes_train.csv", 0.0)
    assert sum(len(f.action_ids) for f in train.values()) == 18


def test_synthetic_detector_without_noise_is_the_ground_truth(tmp_path):
    root = _fake_root(tmp_path, frames_per_video=3)
    noise = PersonBoxNoise(miss_rate=0.0, false_per_frame=0.0, jitter=0.0)
    write_synthetic_person_boxes(root, seed=0, noise=noise, out_dir=tmp_path / "elsewhere")
    boxes = read_person_boxes(tmp_path / "elsewhere" / "person_boxes_train.csv")
    np.testing.assert_allclose(boxes[("train0", 903)].boxes_xyxy, [[0.1, 0.2, 0.3, 0.8], [0.6, 0.3, 0.7, 0.6]])


class _StillVideo(KeyFrameDataset):
    """Key frames whose clips are a constant grey: no video files needed."""

    def read_clip(self, index):
        return np.full((2, 60, 80, 3), 128, dtype=np.uint8)


def _base(train, resize="square", hflip=0.0):
    kf = KeyFrame("vidA", 902, np.array([[0.1, 0.2, 0.5, 0.9], [0.6, 0.1, 0.9, 0.8]]), ((1,), ()),
                  np.array([0, 1]), labels=np.array([[1.0, 0.0], [0.0, 0.0]], np.float32))
    transform = create_transforms(train, 40, resize=resize, hflip=hflip)
    return _StillVideo([kf], {"vidA": VideoRef("video", "unused.mp4")}, [1, 2], num_frames=2, transform=transform)


DETECTED = {("vidA", 902): FramePersonBoxes(np.array([[0.12, 0.2, 0.5, 0.88], [0.0, 0.5, 0.2, 0.9]], np.float32),
                                            np.array([0.95, 0.9], np.float32), ((1, 2), ()))}


def test_training_items_are_actors_plus_labelled_detector_boxes():
    data = PersonBoxDataset(_base(train=True), DETECTED, train=True, jitter=0.0)
    _, target = data[0]
    # The annotated actor (the non-actor person is left out), then both detector boxes.
    torch.testing.assert_close(target["proposals_xyxy"], torch.tensor(
        [[0.1, 0.2, 0.5, 0.9], [0.12, 0.2, 0.5, 0.88], [0.0, 0.5, 0.2, 0.9]]), atol=1e-6, rtol=0)
    assert target["proposal_labels"].tolist() == [[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    assert "proposal_scores" not in target
    gt_only = PersonBoxDataset(_base(train=True), None, train=True, jitter=0.0)[0][1]
    assert gt_only["proposals_xyxy"].shape == (1, 4)


def test_training_boxes_follow_the_flip_and_are_jittered_within_bounds():
    flipped = PersonBoxDataset(_base(train=True, hflip=1.0), None, train=True, jitter=0.0)[0][1]
    torch.testing.assert_close(flipped["proposals_xyxy"], torch.tensor([[0.5, 0.2, 0.9, 0.9]]), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    jittered = PersonBoxDataset(_base(train=True), None, train=True, jitter=0.1)[0][1]["proposals_xyxy"][0]
    delta = (jittered - torch.tensor([0.1, 0.2, 0.5, 0.9])).abs()
    assert (delta <= torch.tensor([0.04, 0.07, 0.04, 0.07]) + 1e-6).all() and delta.sum() > 0
    boxes = torch.tensor([[0.0, 0.0, 0.001, 1.0]])
    assert (jitter_boxes_xyxy(boxes, 0.4)[:, 2] > jitter_boxes_xyxy(boxes, 0.4)[:, 0]).all()


def test_evaluation_items_are_the_detector_boxes_with_scores_and_map_back_from_a_letterbox():
    data = PersonBoxDataset(_base(train=False), DETECTED, train=False)
    _, target = data[0]
    torch.testing.assert_close(target["proposals_xyxy"], torch.from_numpy(DETECTED[("vidA", 902)].boxes_xyxy))
    assert target["proposal_scores"].tolist() == pytest.approx([0.95, 0.9])
    assert target["proposal_labels"].sum() == 0
    boxed = PersonBoxDataset(_base(train=False, resize="letterbox"), DETECTED, train=False)
    _, target = boxed[0]
    # 80x60 into 40x40: scaled to 40x30, padded 5 px top and bottom -> y' = (5 + 30 y) / 40.
    assert target["proposals_xyxy"][0, 1] == pytest.approx((5 + 30 * 0.2) / 40)
    back = target["letterbox"].boxes_to_original(target["proposals_xyxy"])
    torch.testing.assert_close(back, torch.from_numpy(DETECTED[("vidA", 902)].boxes_xyxy), atol=1e-6, rtol=0)
    assert len(boxed) == 1 and boxed.keyframe_keys() == [("vidA", 902)]
    with pytest.raises(ValueError, match="evaluation needs"):
        PersonBoxDataset(_base(train=False), None, train=False)
    empty = PersonBoxDataset(_base(train=False), {}, train=False)[0][1]
    assert empty["proposals_xyxy"].shape == (0, 4) and empty["proposal_scores"].shape == (0,)


def test_synth_cli_writes_person_boxes_for_an_existing_dataset(tmp_path, capsys):
    import argparse

    from bmvit.cli import synth

    root = _fake_root(tmp_path, frames_per_video=2)
    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    args = parser.parse_args(["--out", str(root), "--seed", "1", "--person-boxes-only", "--person-boxes"])
    assert synth.run(args) == 0
    assert "val: " in capsys.readouterr().out
    assert len(read_person_boxes(root / "annotations" / "person_boxes_val.csv", 0.0)) == 4
