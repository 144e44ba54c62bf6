"""Writing the dataset: every AVA file and its format, determinism, CSV rows from the scene, errors and the CLI."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from bmvit.data.synthetic.keyframes import keyframe_boxes
from bmvit.data.synthetic.render import figure_parts, parts_box, render_frame
from bmvit.data.synthetic.scene import CLASSES, FPS
from bmvit.data.synthetic.write import (
    GENERATOR_VERSION,
    SyntheticSummary,
    create_split_video_spec,
    write_synthetic_dataset,
)

SIZE = (128, 96)
SECONDS = 6  # key frames 0902 .. 0904
KEY_SECONDS = (902, 903, 904)


def _write(root: Path, seed: int = 3, num_videos: int = 2, frames: bool = False) -> SyntheticSummary:
    return write_synthetic_dataset(root, seed, num_videos=num_videos, num_val_videos=1, seconds=SECONDS, size=SIZE,
                                   frames=frames, workers=1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SyntheticSummary]:
    root = tmp_path_factory.mktemp("synth")
    return root, _write(root, frames=True)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# ---------------------------------------------------------------------------------------------- files


def test_layout_has_every_ava_file(dataset):
    root, summary = dataset
    assert summary.videos == {"train": ["syn_train_000", "syn_train_001"], "val": ["syn_val_000"]}
    for vid in summary.videos["train"] + summary.videos["val"]:
        assert (root / "videos" / f"{vid}.mp4").stat().st_size > 1000
        jpgs = sorted((root / "frames" / vid).iterdir())
        assert len(jpgs) == SECONDS * FPS
        assert jpgs[0].name == f"{vid}_000001.jpg" and jpgs[-1].name == f"{vid}_{SECONDS * FPS:06d}.jpg"
    for name in ("ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv",
                 "ava_action_list_v2.2_for_activitynet_2019.pbtxt"):
        assert (root / "annotations" / name).is_file()
    readme = (root / "README.txt").read_text()
    assert f"generator version {GENERATOR_VERSION}" in readme and "--seed 3" in readme
    assert all(name in readme for name in CLASSES)


def test_label_map_is_the_official_multiline_layout(dataset):
    root, _ = dataset
    text = (root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").read_text()
    assert text.startswith('item {\n  name: "walk"\n  id: 1\n}\nitem {\n  name: "run"\n  id: 2\n}\n')
    items = re.findall(r'item \{\n  name: "([^"]+)"\n  id: (\d+)\n\}\n', text)
    assert [(name, int(i)) for name, i in items] == [(name, i) for i, name in enumerate(CLASSES, 1)]


@pytest.mark.parametrize("split", ["train", "val"])
def test_annotation_rows_are_valid(dataset, split):
    root, summary = dataset
    rows = _rows(root / "annotations" / f"ava_{split}_v2.2.csv")
    assert len(rows) == summary.rows[split] > 0
    seen = set()
    for row in rows:
        assert len(row) == 8
        vid, ts, x1, y1, x2, y2, action, pid = row
        assert vid in summary.videos[split]
        assert re.fullmatch(r"\d{4}", ts) and int(ts) in KEY_SECONDS
        for v in (x1, y1, x2, y2):
            assert re.fullmatch(r"[01]\.\d{3}", v) and 0.0 <= float(v) <= 1.0
        assert float(x1) < float(x2) and float(y1) < float(y2)
        assert 1 <= int(action) <= len(CLASSES)
        assert (vid, ts, pid, action) not in seen  # one row per (person, action)
        seen.add((vid, ts, pid, action))
    labels = sum(summary.class_counts[split].values())
    assert labels == len(rows)


def test_frame_lists_are_pyslowfast_format(dataset):
    root, summary = dataset
    for split in ("train", "val"):
        lines = (root / "frame_lists" / f"{split}.csv").read_text().splitlines()
        assert lines[0] == "original_vido_id video_id frame_id path labels"
        assert len(lines) == 1 + len(summary.videos[split]) * SECONDS * FPS
        for line in lines[1:]:
            vid, idx, frame_id, path, labels = line.split(" ")
            assert path == f"{vid}/{vid}_{int(frame_id) + 1:06d}.jpg" and labels == '""'
            assert summary.videos[split][int(idx)] == vid and 0 <= int(frame_id) < SECONDS * FPS
            assert (root / "frames" / path).is_file()


def test_excluded_timestamps_are_val_keyframes(dataset):
    root, summary = dataset
    rows = _rows(root / "annotations" / "ava_val_excluded_timestamps_v2.2.csv")
    assert [(vid, int(ts)) for vid, ts in rows] == summary.excluded
    for vid, ts in rows:
        assert vid in summary.videos["val"] and re.fullmatch(r"\d{4}", ts) and int(ts) in KEY_SECONDS


def test_videos_decode_with_the_frame_count_and_time_base(dataset):
    root, _ = dataset
    path = root / "videos" / "syn_train_000.mp4"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", *SIZE)
        assert stream.average_rate == FPS
    decoded = _decode(path)
    assert len(decoded) == SECONDS * FPS
    spec = create_split_video_spec(3, "train", 0, SIZE, SECONDS)
    # frame k of the file is the scene at time k / 30 s: it is closer to render k than to k +- 1, 3
    for k in (30, 60, 90, 150):
        errors = {o: np.abs(decoded[k].astype(float) - render_frame(spec, k + o)).mean() for o in (-3, -1, 0, 1, 3)}
        assert min(errors, key=errors.get) == 0, errors
        assert errors[0] < 8.0
    jpg = np.asarray(Image.open(root / "frames" / "syn_train_000" / "syn_train_000_000061.jpg")).astype(float)
    errors = [np.abs(jpg - decoded[k]).mean() for k in (59, 60, 61)]  # 000061 is frame 60 = AVA second 902
    assert errors[1] < min(errors[0], errors[2]) and errors[1] < 5.0


# ---------------------------------------------------------------------------------------------- determinism


def test_same_seed_same_dataset_and_other_seed_differs(dataset, tmp_path):
    root, _ = dataset
    again = _write(tmp_path / "again")
    other = _write(tmp_path / "other", seed=4)
    for name in ("ava_train_v2.2.csv", "ava_val_v2.2.csv", "ava_val_excluded_timestamps_v2.2.csv"):
        assert (root / "annotations" / name).read_bytes() == (tmp_path / "again" / "annotations" / name).read_bytes()
    assert (root / "annotations" / "ava_train_v2.2.csv").read_bytes() != \
        (tmp_path / "other" / "annotations" / "ava_train_v2.2.csv").read_bytes()
    for vid in ("syn_train_001", "syn_val_000"):
        first, second = _decode(root / "videos" / f"{vid}.mp4"), _decode(tmp_path / "again" / "videos" / f"{vid}.mp4")
        assert all(np.array_equal(a, b) for a, b in zip(first, second))
        third = _decode(tmp_path / "other" / "videos" / f"{vid}.mp4")
        assert np.abs(first[0].astype(float) - third[0]).mean() > 10.0
    assert again.class_counts == dataset[1].class_counts and other.rows != {}


def test_val_is_its_own_seed_stream(dataset, tmp_path):
    root, _ = dataset
    _write(tmp_path / "fewer", num_videos=1)  # fewer train videos: val is unchanged
    assert (root / "annotations" / "ava_val_v2.2.csv").read_bytes() == \
        (tmp_path / "fewer" / "annotations" / "ava_val_v2.2.csv").read_bytes()
    train0 = create_split_video_spec(3, "train", 0, SIZE, SECONDS)
    val0 = create_split_video_spec(3, "val", 0, SIZE, SECONDS)
    assert not np.array_equal(render_frame(train0, 0), render_frame(val0, 0))


# ---------------------------------------------------------------------------------------------- content


def test_csv_boxes_and_labels_come_from_the_scene(dataset):
    root, _ = dataset
    spec = create_split_video_spec(3, "val", 0, SIZE, SECONDS)
    expected = []
    for b in keyframe_boxes(spec):
        x1, y1, x2, y2 = b.box_xyxy
        for name in sorted(b.labels, key=CLASSES.index):
            expected.append(["syn_val_000", f"{b.timestamp:04d}", f"{x1:.3f}", f"{y1:.3f}", f"{x2:.3f}", f"{y2:.3f}",
                             str(CLASSES.index(name) + 1), str(b.person_id)])
        t = (b.timestamp - 900) * 1.0
        pose = spec.tracks[b.person_id].pose_at(t)
        px1, py1, px2, py2 = parts_box(figure_parts(spec.tracks[b.person_id].style, pose, spec.shift_at(int(t * FPS))))
        assert b.box_xyxy == pytest.approx((max(px1, 0) / SIZE[0], max(py1, 0) / SIZE[1],
                                            min(px2, SIZE[0]) / SIZE[0], min(py2, SIZE[1]) / SIZE[1]))
    assert _rows(root / "annotations" / "ava_val_v2.2.csv") == expected


# ---------------------------------------------------------------------------------------------- errors, CLI, figure


@pytest.mark.parametrize("kwargs, message", [
    ({"seconds": 3}, "seconds must be >= 4"),
    ({"size": (129, 96)}, "size must be even"),
    ({"num_videos": 0}, "at least one train"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, message):
    args = {"seconds": SECONDS, "size": SIZE, "num_videos": 1} | kwargs
    with pytest.raises(ValueError, match=message):
        write_synthetic_dataset(tmp_path, 0, num_val_videos=1, **args)
    with pytest.raises(ValueError, match="split must be one of"):
        create_split_video_spec(0, "test", 0)


def test_cli_and_keyframe_figure(dataset, tmp_path, capsys):
    import argparse

    from bmvit.cli import synth

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    out = tmp_path / "cli"
    args = parser.parse_args(["--out", str(out), "--seed", "3", "--videos", "1", "--val-videos", "1", "--seconds",
                              str(SECONDS), "--size", "128x96", "--workers", "2", "--figure", str(tmp_path / "kf.png")])
    assert synth.run(args) == 0
    printed = capsys.readouterr().out
    assert "train: 1 videos, 3 key frames" in printed and "took" in printed and "kf.png" in printed
    assert (tmp_path / "kf.png").stat().st_size > 10_000
    root, _ = dataset  # 2 worker processes write the same val video as 1
    assert (out / "annotations" / "ava_val_v2.2.csv").read_bytes() == \
        (root / "annotations" / "ava_val_v2.2.csv").read_bytes()
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(out), "--size", "big"])
