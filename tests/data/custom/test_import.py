"""bmvit data import (CSV and AVA of another timeline) -> the exact root, the key frames the loader reads,
clips of 25- and 30-fps videos, and one-line errors for bad input that leave nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bmvit.cli import main
from bmvit.data.custom.root import custom_dataset, custom_keyframes, read_dataset_info, timestamp_ms
from bmvit.data.video import clip_indices, clip_indices_around_frame

CSV = """video,time_s,x1,y1,x2,y2,action,person_id
a.mp4,1,10,10,30,40,wave,1
a.mp4,1,10,10,30,40,walk,1
a.mp4,1,40,5,60,45,,2
a,2,12,10,32,40,walk,1
b,1.2,0,0,40,30,wave,7
b,2,,,,,,
c,1,1,1,20,20,walk,
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory, request) -> Path:
    """a.mp4 (30 fps, 90 frames, 64x48), b.mkv (25 fps, 75 frames, 80x60), c.mp4 (30 fps, 60 frames)."""
    encode = request.getfixturevalue("write_h264")
    frames = request.getfixturevalue("make_frames")
    folder = tmp_path_factory.mktemp("videos")
    encode(folder / "a.mp4", frames(90, 48, 64), fps=30)
    encode(folder / "b.mkv", frames(75, 60, 80), fps=25)
    encode(folder / "c.mp4", frames(60, 48, 64), fps=30)
    return folder


def _import(tmp_path: Path, videos: Path, text: str, *extra: str, fmt: str = "csv") -> tuple[int, Path]:
    ann = tmp_path / "labels.csv"
    ann.write_text(text)
    out = tmp_path / "root"
    code = main(["data", "import", "--format", fmt, "--annotations", str(ann), "--videos", str(videos),
                 "--out", str(out), *extra])
    return code, out


def test_csv_import_writes_exactly_the_expected_root(tmp_path, videos, capsys):
    code, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    assert code == 0
    printed = capsys.readouterr().out
    assert "train: 2 video(s), 3 key frame(s) (0 with nobody labelled), 3 actor(s), 1 person(s) who are not actors" in printed
    assert "val  : 1 video(s), 2 key frame(s) (1 with nobody labelled), 1 actor(s), 0 person(s)" in printed
    assert "class 'wave' has 1 training example(s), fewer than 5" in printed
    # pixels -> fractions of each video's own frame; two rows of one person -> two actions, one person id;
    # a person with no action -> an empty action column; no person id -> -1
    assert (root / "annotations/train.csv").read_text() == (
        "a,1000,0.156250,0.208333,0.468750,0.833333,1,1\n"
        "a,1000,0.156250,0.208333,0.468750,0.833333,2,1\n"
        "a,1000,0.625000,0.104167,0.937500,0.937500,,2\n"
        "a,2000,0.187500,0.208333,0.500000,0.833333,1,1\n"
        "c,1000,0.015625,0.020833,0.312500,0.416667,1,-1\n"
    )
    assert (root / "annotations/val.csv").read_text() == "b,1200,0.000000,0.000000,0.500000,0.500000,2,7\n"
    assert (root / "annotations/label_map.pbtxt").read_text() == (
        'item {\n  name: "walk"\n  id: 1\n}\nitem {\n  name: "wave"\n  id: 2\n}\n')
    doc = yaml.safe_load((root / "dataset.yaml").read_text())
    assert doc["classes"] == {1: "walk", 2: "wave"}
    assert doc["videos"]["b"] == {"file": "videos/b.mkv", "split": "val", "fps": 25.0, "num_frames": 75,
                                  "duration_s": 3.0, "width": 80, "height": 60, "keyframes_s": [1.2, 2.0]}
    assert doc["videos"]["a"]["keyframes_s"] == [1.0, 2.0] and doc["videos"]["a"]["fps"] == 30.0
    assert (root / "videos/a.mp4").resolve() == (videos / "a.mp4").resolve()  # linked, not copied
    assert not list(tmp_path.glob(".root.*"))  # no temporary folder left


def test_keyframes_map_times_to_each_videos_own_frames(tmp_path, videos):
    _, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    info = read_dataset_info(root)
    val = custom_keyframes(info, "val", [1, 2])
    # b is 25 fps: 1.2 s is frame 30, 2.0 s frame 50; the key frame at 2.0 s has nobody and stays
    assert [(k.video_id, k.timestamp, k.frame_index, len(k)) for k in val] == [("b", 1200, 30, 1), ("b", 2000, 50, 0)]
    np.testing.assert_array_equal(val[0].labels, [[0, 1]])
    train = custom_keyframes(info, "train", [1, 2])
    assert [(k.video_id, k.timestamp, k.frame_index) for k in train] == [("a", 1000, 30), ("a", 2000, 60), ("c", 1000, 30)]
    a1 = train[0]
    np.testing.assert_array_equal(a1.labels, [[1, 1], [0, 0]])  # the second person is not an actor
    np.testing.assert_array_equal(a1.person_ids, [1, 2])


def test_clip_of_a_25fps_video_spans_the_same_time_centred_on_its_key_frame(tmp_path, videos):
    _, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    info = read_dataset_info(root)
    dataset = custom_dataset(info, "val", [1, 2], num_frames=4, stride=6, sample_fps=30.0,
                             transform=lambda clip, target: (clip, target))
    # offsets -12, -6, 0, 6 frames at 30 fps = -0.4, -0.2, 0, 0.2 s = -10, -5, 0, 5 frames at 25 fps
    np.testing.assert_array_equal(clip_indices_around_frame(30, 4, 6, 30.0, 25.0, 75), [20, 25, 30, 35])
    clip = dataset.read_clip(0)
    source = dataset.source("b")
    np.testing.assert_array_equal(clip, source.read_frames([20, 25, 30, 35]))
    clip, target = dataset[1]  # the key frame where nobody is labelled: an empty target
    assert target["boxes_xyxy"].shape == (0, 4) and target["timestamp"] == 2000


@pytest.mark.parametrize("center,length", [(0, 90), (30, 90), (89, 90), (45, 46)])
def test_clip_indices_around_frame_is_clip_indices_at_equal_rates(center, length):
    np.testing.assert_array_equal(clip_indices_around_frame(center, 16, 4, 30.0, 30.0, length),
                                  clip_indices(center, 16, 4, length))


def test_timestamp_ms_rounds_to_the_millisecond():
    assert [timestamp_ms(t) for t in (0, 1.2, 2.0004, 899.9996)] == [0, 1200, 2000, 900000]


def test_val_fraction_draws_whole_videos_with_a_seed(tmp_path, videos):
    code, root = _import(tmp_path, videos, CSV, "--val-fraction", "0.34", "--seed", "1")
    assert code == 0
    info = read_dataset_info(root)
    splits = {v: info.videos[v].split for v in info.videos}
    assert sorted(splits.values()) == ["train", "train", "val"]
    (tmp_path / "again").mkdir()
    _, again = _import(tmp_path / "again", videos, CSV, "--val-fraction", "0.34", "--seed", "1")
    assert {v: read_dataset_info(again).videos[v].split for v in info.videos} == splits


def test_ava_import_of_another_timeline_keeps_the_label_map_ids(tmp_path, videos):
    ann = tmp_path / "ann"
    ann.mkdir()
    (ann / "labels.pbtxt").write_text('item { name: "sit" id: 3 }\nitem { name: "stand" id: 7 }\n')
    (ann / "my_train.csv").write_text("a,101,0.1,0.2,0.5,0.9,3,0\na,101,0.1,0.2,0.5,0.9,7,0\nc,101,0.2,0.2,0.4,0.4,,4\n")
    (ann / "my_val.csv").write_text("b,102,0.0,0.0,0.5,0.5,7,1\n")
    out = tmp_path / "root"
    code = main(["data", "import", "--format", "ava", "--annotations", str(ann), "--videos", str(videos),
                 "--out", str(out), "--time-offset", "100"])
    assert code == 0
    info = read_dataset_info(out)
    assert info.classes == {3: "sit", 7: "stand"}
    assert {v: (i.split, i.keyframes_s) for v, i in info.videos.items()} == {
        "a": ("train", (1.0,)), "b": ("val", (2.0,)), "c": ("train", (1.0,))}  # the files' own split
    assert (out / "annotations/train.csv").read_text() == (
        "a,1000,0.100000,0.200000,0.500000,0.900000,3,0\n"
        "a,1000,0.100000,0.200000,0.500000,0.900000,7,0\n"
        "c,1000,0.200000,0.200000,0.400000,0.400000,,4\n")


def test_data_check_reads_an_imported_root(tmp_path, videos, capsys):
    _, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    capsys.readouterr()
    assert main(["data", "check", str(root)]) == 0
    text = capsys.readouterr().out
    assert "format: custom" in text and "3 of 3 video(s) match dataset.yaml" in text
    assert "5 clip(s) of 16 frames decoded" in text and "ready to train (exit 0)" in text
    (root / "videos/a.mp4").unlink()
    (root / "videos/a.mp4").symlink_to((videos / "c.mp4").resolve())  # replaced by another video
    assert main(["data", "check", str(root)]) == 1
    assert "a: dataset.yaml says 30.0 fps, 90 frames, 64x48; the file has 30.0 fps, 60 frames" in capsys.readouterr().out


# --- bad input: one line naming the file and the row, exit 1, nothing left behind


def _bad(tmp_path: Path, videos: Path, text: str, *extra: str, capsys) -> str:
    code, root = _import(tmp_path, videos, text, *extra)
    lines = capsys.readouterr().err.strip().splitlines()  # the videos probed, then the error
    assert code == 1, lines
    assert not root.exists() and not list(tmp_path.glob(".root.*"))
    errors = [line for line in lines if line.startswith("bmvit data import: error: ")]
    assert errors == lines[-1:]
    return errors[0]


def test_label_outside_the_action_list(tmp_path, videos, capsys):
    err = _bad(tmp_path, videos, CSV, "--actions", "walk", "--val-videos", "b", capsys=capsys)
    assert "label 'wave'" in err and "not in the action list (walk)" in err


def test_video_missing_from_the_folder(tmp_path, videos, capsys):
    err = _bad(tmp_path, videos, CSV + "d.mp4,1,1,1,5,5,walk,1\n", capsys=capsys)
    assert "labels.csv:9: video 'd.mp4' is not in" in err


def test_box_outside_the_frame(tmp_path, videos, capsys):
    err = _bad(tmp_path, videos, CSV.replace("b,1.2,0,0,40,30", "b,1.2,0,0,90,30"), capsys=capsys)
    assert "labels.csv:6: box (0.0, 0.0, 90.0, 30.0) lies outside the 80x60 frame of b.mkv" in err


def test_time_past_the_end_of_the_video(tmp_path, videos, capsys):
    err = _bad(tmp_path, videos, CSV + "c,2.5,1,1,5,5,walk,1\n", capsys=capsys)
    assert err == ("bmvit data import: error: labels.csv:9: time 2.5 s is past the end of c.mp4 (2.000 s, 60 frames "
                   "at 30 fps)")


def test_video_pyav_cannot_open(tmp_path, videos, capsys):
    folder = tmp_path / "vids"
    folder.mkdir()
    for name in ("a.mp4", "b.mkv"):
        (folder / name).symlink_to(videos / name)
    (folder / "c.mp4").write_bytes(b"not a video at all" * 100)
    err = _bad(tmp_path, folder, CSV, capsys=capsys)
    assert "c.mp4: PyAV cannot read this video" in err


def test_no_action_label_at_all(tmp_path, videos, capsys):
    err = _bad(tmp_path, videos, "a,1,10,10,30,40,,1\nb,1,10,10,30,40,,2\n", capsys=capsys)
    assert "no action label anywhere" in err


def test_malformed_rows(tmp_path, videos, capsys):
    assert "labels.csv:3: x2 'abc' is not a number" in _bad(
        tmp_path, videos, CSV.replace("a.mp4,1,10,10,30,40,walk", "a.mp4,1,10,10,abc,40,walk"), capsys=capsys)
    assert "labels.csv:2: box (30.0, 10.0, 10.0, 40.0) is empty" in _bad(
        tmp_path, videos, CSV.replace("a.mp4,1,10,10,30,40,wave", "a.mp4,1,30,10,10,40,wave"), capsys=capsys)


def test_existing_root_is_kept_unless_overwrite(tmp_path, videos, capsys):
    code, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    assert code == 0
    code, _ = _import(tmp_path, videos, CSV, "--val-videos", "b")
    assert code == 1 and "already exists (pass --overwrite" in capsys.readouterr().err
    code, _ = _import(tmp_path, videos, CSV, "--val-videos", "a", "--overwrite")
    assert code == 0 and read_dataset_info(root).videos["a"].split == "val"


def test_train_eval_predict_on_an_imported_root_of_25_and_30_fps_videos_use_its_class_names(
        tmp_path, videos, tiny_overrides, capsys):
    _, root = _import(tmp_path, videos, CSV, "--val-videos", "b")
    run = tmp_path / "run"
    overrides = tiny_overrides(root, run, **{"data.format": "custom", "train.epochs": 1, "data.flip_swap_pairs": "[]"})
    assert main(["train", "--config", "configs/synthetic_tiny.yaml", *overrides]) == 0
    per_class = json.loads((run / "per_class_ap_val.json").read_text())["per_class"]
    assert [(c["id"], c["name"]) for c in per_class] == [(1, "walk"), (2, "wave")]
    capsys.readouterr()
    assert main(["eval", "--weights", str(run / "model.safetensors")]) == 0
    printed = capsys.readouterr().out
    assert "   1  walk" in printed and "   2  wave" in printed
    assert main(["predict", "--weights", str(run / "model.safetensors"), "--source", str(videos / "b.mkv"),
                 "--out", str(tmp_path / "pred"), "--threshold", "0"]) == 0
    record = json.loads((tmp_path / "pred" / "b.json").read_text())
    assert record["class_names"] == ["walk", "wave"] and record["video_fps"] == 25.0
    assert {a["name"] for k in record["keyframes"] for b in k["boxes"] for a in b["top_actions"]} == {"walk", "wave"}


def _cvat_import(tmp_path: Path, videos: Path, xml: str) -> tuple[int, Path]:
    (tmp_path / "task.xml").write_text(xml)
    out = tmp_path / "root"
    return main(["data", "import", "--format", "cvat", "--annotations", str(tmp_path / "task.xml"),
                 "--videos", str(videos), "--out", str(out), "--val-fraction", "0"]), out


CVAT_TASK = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><name>a</name><size>90</size><mode>interpolation</mode><start_frame>0</start_frame>
<stop_frame>89</stop_frame><frame_filter></frame_filter><source>a.mp4</source>
<labels><label><name>person</name><attributes><attribute><name>wave</name><mutable>True</mutable>
<input_type>checkbox</input_type><default_value>false</default_value><values>false
true</values></attribute></attributes></label></labels>
<original_size><width>64</width><height>48</height></original_size></task></meta>
<track id="3" label="person" source="manual">
<box frame="30" outside="0" occluded="0" keyframe="1" xtl="10" ytl="5" xbr="{xbr}" ybr="40" z_order="0">
<attribute name="wave">true</attribute></box>
<box frame="60" outside="1" occluded="0" keyframe="1" xtl="10" ytl="5" xbr="30" ybr="40" z_order="0">
<attribute name="wave">true</attribute></box>
</track></annotations>
"""


def test_cvat_task_imports_at_one_keyframe_a_second(tmp_path, videos):
    code, root = _cvat_import(tmp_path, videos, CVAT_TASK.format(xbr=30))
    assert code == 0
    info = read_dataset_info(root)
    assert info.keyframe_fps == 1.0 and info.videos["a"].keyframes_s == (1.0,)  # visible on frames 30..59
    assert (root / "annotations/train.csv").read_text() == "a,1000,0.156250,0.104167,0.468750,0.833333,1,3\n"


def test_cvat_box_outside_the_frame_names_the_track(tmp_path, videos, capsys):
    code, root = _cvat_import(tmp_path, videos, CVAT_TASK.format(xbr=70))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not root.exists()
    assert err == ("bmvit data import: error: task.xml: track 3, frame 30: box (10.0, 5.0, 70.0, 40.0) lies "
                   "outside the 64x48 frame of a.mp4")


def test_an_xml_that_is_not_cvat_s(tmp_path, videos, capsys):
    code, root = _cvat_import(tmp_path, videos, "<?xml version='1.0'?><dataset><item/></dataset>")
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 1 and not root.exists()
    assert err == ("bmvit data import: error: task.xml: not a CVAT for video 1.1 export (the root element is "
                   "<dataset>, not <annotations>)")
