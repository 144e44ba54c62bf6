"""``bmvit data check``: each kind of broken AVA-layout root is found and named; clean roots pass.

The roots are written here: three videos of 6 s (180 tiny JPEG frames each, 30 fps), key frames at
seconds 902..904, so ``--expected-frames 180`` makes a root "complete".
"""

from __future__ import annotations

import argparse
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from bmvit.cli import data_check
from bmvit.config import DataConfig
from bmvit.data.check import (
    AVA_EXPECTED_FRAMES,
    VIDEO_EXTENSIONS,
    CheckOptions,
    check_dataset,
    clip_frame_indices,
    describe_label_map,
    frame_count_verdict,
    quick_check,
)

FRAMES = 180  # 6 s at 30 fps
SECONDS = (902, 903, 904)
TRAIN, VAL = ("vtrainA", "vtrainB"), ("vvalA",)
LABELS = {1: "stand", 2: "talk", 3: "walk"}


def _jpeg_bytes() -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


JPEG = _jpeg_bytes()


def _rows(video: str) -> list[str]:
    out = []
    for s in SECONDS:
        out += [f"{video},{s:04d},0.1,0.2,0.5,0.9,1,0", f"{video},{s:04d},0.1,0.2,0.5,0.9,2,0",
                f"{video},{s:04d},0.6,0.1,0.9,0.8,3,1"]
    return out


def write_label_map(path: Path, labels: dict[int, str]) -> None:
    path.write_text("".join(f'item {{\n  name: "{n}"\n  id: {i}\n}}\n' for i, n in labels.items()))


def make_root(tmp_path: Path, frames: int = FRAMES) -> Path:
    """A complete root: annotations, label map, exclusions, frame folders and frame lists."""
    root = tmp_path / "root"
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "ava_train_v2.2.csv").write_text("\n".join(r for v in TRAIN for r in _rows(v)) + "\n")
    (ann / "ava_val_v2.2.csv").write_text("\n".join(r for v in VAL for r in _rows(v)) + "\n")
    write_label_map(ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt", LABELS)
    (ann / "ava_val_excluded_timestamps_v2.2.csv").write_text("vvalA,0903\n")
    (root / "frame_lists").mkdir()
    for split, videos in (("train", TRAIN), ("val", VAL)):
        lines = ["original_vido_id video_id frame_id path labels"]
        for index, video in enumerate(videos):
            write_frames(root / "frames" / video, video, frames)
            lines += [f'{video} {index} {i} {video}/{video}_{i + 1:06d}.jpg ""' for i in range(frames)]
        (root / "frame_lists" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def write_frames(folder: Path, video: str, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, n + 1):
        (folder / f"{video}_{i:06d}.jpg").write_bytes(JPEG)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    data_check.add_arguments(parser)
    return data_check.run(parser.parse_args(list(argv)))


def check(root: Path, **options) -> object:
    options.setdefault("expected_frames", FRAMES)
    return check_dataset(root, CheckOptions(**options))


# ------------------------------------------------------------------------------------------ clean root


def test_clean_root_passes_with_exit_0(tmp_path, capsys):
    root = make_root(tmp_path)
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 0
    out = capsys.readouterr().out
    assert "0 error(s), 0 warning(s)" in out
    for section in ("files", "label map", "annotations", "videos", "clips", "exclusions", "frame lists"):
        assert f"\n{section}\n" in out
    report = check(root)
    assert report.errors == [] and report.warnings == []
    assert "clips_complete" in report.codes("OK")


def test_json_report(tmp_path):
    root = make_root(tmp_path)
    out = tmp_path / "report.json"
    assert run_cli(str(root), "--expected-frames", str(FRAMES), "--json", str(out)) == 0
    data = json.loads(out.read_text())
    assert data["exit_code"] == 0 and data["errors"] == 0
    assert set(data["sections"]) >= {"files", "clips", "frame lists"}
    assert data["facts"]["timings_s"]["frame folders"] >= 0


# ------------------------------------------------------------------------------------------ clips


def test_deleted_frame_is_named_with_its_key_frame(tmp_path, capsys):
    root = make_root(tmp_path)
    # key frame 902 is frame index 60, file number 61; its clip needs 29, 33, ..., 89
    (root / "frames" / "vtrainA" / "vtrainA_000061.jpg").unlink()
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 1
    out = capsys.readouterr().out
    assert "vtrainA_000061.jpg" in out and "key frame 902" in out
    [finding] = check(root).find("missing_frame")
    assert (finding.level, finding.video, finding.frame) == ("ERROR", "vtrainA", 61)
    assert "ava_train_v2.2.csv:1" in finding.message  # the first row of key frame 902
    # the frame list names a file that no longer exists, with its line
    [listed] = check(root).find("frame_list_missing_file")
    assert listed.line == 62 and "vtrainA/vtrainA_000061.jpg" in listed.message


def test_unneeded_missing_frame_is_not_an_error(tmp_path):
    root = make_root(tmp_path)
    (root / "frames" / "vtrainA" / "vtrainA_000062.jpg").unlink()  # odd numbers only are in clips
    report = check(root)
    assert "missing_frame" not in report.codes()
    assert "numbering_gaps" in report.codes("WARNING")


def test_corrupt_frame_found_when_decoding(tmp_path, capsys):
    root = make_root(tmp_path)
    frame = root / "frames" / "vvalA" / "vvalA_000073.jpg"  # in the clip of key frame 903 (index 90 - 32 + 16)
    frame.write_bytes(JPEG[: len(JPEG) // 2])
    assert run_cli(str(root), "--expected-frames", str(FRAMES), "--decode") == 1
    out = capsys.readouterr().out
    assert "vvalA_000073.jpg" in out and "truncated" in out
    [finding] = check(root, decode=True).find("corrupt_frame")
    assert (finding.video, finding.frame) == ("vvalA", 73)
    assert "ava_val_v2.2.csv" in finding.message


def test_decode_sample_catches_the_last_needed_frame(tmp_path):
    root = make_root(tmp_path)
    # the last frame any clip needs: key frame 904 = index 120, last clip frame 120 - 32 + 60 = 148 -> file 149
    (root / "frames" / "vtrainB" / "vtrainB_000149.jpg").write_bytes(JPEG[:100])
    assert [f.frame for f in check(root).find("corrupt_frame")] == [149]
    assert check(root, decode_sample=0).find("corrupt_frame") == []


def test_empty_frame(tmp_path):
    root = make_root(tmp_path)
    (root / "frames" / "vtrainB" / "vtrainB_000089.jpg").write_bytes(b"")
    [finding] = check(root, decode_sample=0).find("empty_frame")
    assert finding.video == "vtrainB" and "vtrainB_000089.jpg" in finding.message and "0 bytes" in finding.message


def test_short_folder_reports_clips_past_the_end(tmp_path):
    root = make_root(tmp_path)
    for i in range(141, FRAMES + 1):
        (root / "frames" / "vtrainA" / f"vtrainA_{i:06d}.jpg").unlink()
    report = check(root)
    assert "short_video" in report.codes("WARNING")
    [past] = report.find("frames_past_end")
    assert past.video == "vtrainA" and "vtrainA_000149.jpg" in past.message and "904" in past.message


# ------------------------------------------------------------------------------------------ videos


def test_25_fps_folder_is_called_out(tmp_path, capsys):
    root = make_root(tmp_path)
    folder = root / "frames" / "vtrainB"
    for i in range(151, FRAMES + 1):  # 6 s at 25 fps = 150 frames
        (folder / f"vtrainB_{i:06d}.jpg").unlink()
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 1
    out = capsys.readouterr().out
    assert "extracted at 25 fps?" in out and "frames/vtrainB" in out
    [finding] = check(root).find("wrong_fps")
    assert finding.video == "vtrainB"


def test_frame_count_verdicts_at_ava_size():
    assert frame_count_verdict(AVA_EXPECTED_FRAMES, 27001, 30)[0] == "OK"
    assert frame_count_verdict(27030, 27001, 30)[0] == "OK"  # PySlowFast's 901 s cut
    level, code, words = frame_count_verdict(22526, 27001, 30)
    assert (level, code) == ("ERROR", "wrong_fps") and "extracted at 25 fps?" in words
    assert frame_count_verdict(26900, 27001, 30)[:2] == ("WARNING", "short_video")
    assert frame_count_verdict(7200 * 30, 27001, 30)[:2] == ("ERROR", "long_video")
    assert "60 fps" in frame_count_verdict(54001, 27001, 30)[2]


def test_stray_files_and_markers(tmp_path):
    root = make_root(tmp_path)
    (root / "frames" / "vtrainA" / ".done").write_text("{}")  # prepare-ava's marker: not a stray
    assert check(root).warnings == []
    (root / "frames" / "vtrainA" / "vtrainA_1.jpg").write_bytes(JPEG)
    [finding] = check(root).find("stray_files")
    assert finding.level == "WARNING" and "'vtrainA_1.jpg'" in finding.message


def test_missing_frame_folder(tmp_path):
    root = make_root(tmp_path)
    for p in (root / "frames" / "vvalA").iterdir():
        p.unlink()
    (root / "frames" / "vvalA").rmdir()
    [finding] = check(root).find("missing_folder")
    assert finding.level == "ERROR" and finding.video == "vvalA"


def test_expected_frames_auto_takes_the_common_count(tmp_path):
    root = make_root(tmp_path)
    assert check(root, expected_frames=None).errors == []
    report = check_dataset(root)  # AVA's 27001 expected: these 6 s folders are short, and their clips complete
    assert report.exit_code == 0
    assert len(report.find("short_video")) == 3


# ------------------------------------------------------------------------------------------ annotations


def test_out_of_range_box_names_its_line(tmp_path, capsys):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    lines = csv_path.read_text().splitlines()
    lines[4] = "vtrainA,0903,0.1,0.2,1.5,0.9,1,0"
    csv_path.write_text("\n".join(lines) + "\n")
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 1
    out = capsys.readouterr().out
    assert "annotations/ava_train_v2.2.csv:5:" in out and "outside [0, 1]" in out
    [finding] = check(root).find("box_out_of_range")
    assert (finding.line, finding.level) == (5, "ERROR")


def test_inverted_box_and_unparsable_row_name_their_lines(tmp_path):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_val_v2.2.csv"
    lines = csv_path.read_text().splitlines()
    lines[1] = "vvalA,0902,0.5,0.2,0.1,0.9,2,0"
    lines[6] = "vvalA,0904,0.1,oops,0.5,0.9,1,0"
    csv_path.write_text("\n".join(lines) + "\n")
    report = check(root)
    assert [f.line for f in report.find("box_out_of_range")] == [2]
    [bad] = report.find("bad_row")
    assert bad.line == 7 and "ava_val_v2.2.csv:7" in bad.message and "'oops'" in bad.message


def test_duplicate_row_is_a_warning(tmp_path, capsys):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(lines + [lines[2].replace(",0902,", ",902,")]) + "\n")
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 0  # warnings only
    out = capsys.readouterr().out
    assert "WARNING" in out and "duplicate of line 3" in out
    [finding] = check(root).find("duplicate_row")
    assert finding.line == len(lines) + 1


def test_an_action_repeated_on_one_box_under_another_person_id_is_a_warning(tmp_path):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    lines = csv_path.read_text().splitlines()
    video, second, *box, action, person = lines[2].split(",")
    other = "2" if action != "2" else "1"
    extra = [",".join([video, second, *box, action, "9"]),  # the same action under person id 9: warned
             ",".join([video, second, *box, other, "9"])]   # another action under id 9: merged, no warning
    csv_path.write_text("\n".join(lines + extra) + "\n")
    report = check(root, media=False)
    [finding] = report.find("repeated_action")
    assert finding.line == len(lines) + 1 and "the box of line 3" in finding.message
    assert f"has action {action} again, under person id 9 after {person}" in finding.message
    assert not report.find("duplicate_row")


def test_boxes_under_several_person_ids_are_counted(tmp_path, capsys):
    """The summary counts, per split, the boxes (and their key frames) annotated under more than one
    person id: training merges each into one target, as PySlowFast does."""
    root = make_root(tmp_path)
    key = "boxes under several person ids"
    clean = check(root, media=False)
    assert clean.facts[key].startswith("train 0 of 12 boxes in 0 of 6 key frames, val 0 of 6 boxes in 0 of 3")
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    csv_path.write_text(csv_path.read_text() + (
        "vtrainA,0903,0.1,0.2,0.5,0.9,3,4\n"  # person 0's box at 903, also under person id 4
        "vtrainA,0903,0.1,0.2,0.5,0.9,1,4\n"  # id 4 again: still one box with two ids
        "vtrainB,0904,0.6,0.1,0.9,0.8,1,7\n"  # person 1's box at 904, also under person id 7
        "vtrainB,0904,0.6,0.1,0.9,0.7,2,1\n"  # person 1 in another box: no shared box
        "vtrainB,0901,0.6,0.1,0.9,0.8,1,7\n"  # outside the key-frame seconds: not counted
    ))
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 0
    out = capsys.readouterr().out
    assert f"  {key}: train 2 of 13 boxes in 2 of 6 key frames, val 0 of 6 boxes in 0 of 3 key frames" in out
    report = check(root, media=False)
    assert report.facts["_shared_boxes"]["train"] == {"key_frames": 2, "boxes": 2, "all_key_frames": 6,
                                                      "all_boxes": 13}
    assert report.to_dict()["facts"]["shared_boxes"]["val"]["boxes"] == 0


def test_seconds_outside_valid_range(tmp_path):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    csv_path.write_text(csv_path.read_text() + "vtrainA,0901,0.1,0.2,0.5,0.9,1,0\n")
    [finding] = check(root).find("second_out_of_range")
    assert finding.level == "WARNING" and finding.line == 19 and "902..1798" in finding.message


def test_many_bad_rows_are_counted_after_the_first_few(tmp_path):
    root = make_root(tmp_path)
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    extra = [f"vtrainA,0902,0.1,0.2,0.5,{1.1 + i / 100:.2f},1,{10 + i}" for i in range(12)]
    csv_path.write_text(csv_path.read_text() + "\n".join(extra) + "\n")
    findings = check(root, max_listed=3).find("box_out_of_range")
    assert [f.line for f in findings[:3]] == [19, 20, 21]
    assert "9 more" in findings[3].message and "12 in all" in findings[3].message


# ------------------------------------------------------------------------------------------ label map


def test_80_class_label_map_as_evaluation_map(tmp_path, capsys):
    root = make_root(tmp_path)
    write_label_map(root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt",
                    {i: f"action {i}" for i in range(1, 81)})
    code = run_cli(str(root), "--expected-frames", str(FRAMES))
    out = capsys.readouterr().out
    assert "label map has 80 classes: this is the full AVA list" in out
    assert "60-class ava_action_list_v2.2_for_activitynet_2019.pbtxt" in out
    assert code == 0  # a warning: an 80-class evaluation may be meant, but is not comparable
    [finding] = check(root).find("label_map_ava80")
    assert finding.level == "WARNING"
    # an AVA label map with 3 trained classes: AVA trains on 80
    assert "AVA v2.2 trains on all 80" in check(root).find("train_classes")[0].message


def test_label_map_kinds():
    from bmvit.data.ava import AVA_V22_CLASS_IDS

    assert describe_label_map({i: str(i) for i in AVA_V22_CLASS_IDS})[1] == "label_map_ava60"
    assert describe_label_map({i: str(i) for i in range(1, 81)})[1] == "label_map_ava80"
    assert describe_label_map(LABELS)[1] == "label_map_custom"


def test_action_ids_missing_from_the_label_map(tmp_path):
    root = make_root(tmp_path)
    write_label_map(root / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt", {1: "a", 2: "b"})
    [val] = [f for f in check(root).find("unknown_action_id") if "ava_val" in f.message]
    assert val.level == "WARNING" and "(3;" in val.message and val.line == 3


# ------------------------------------------------------------------------------------------ exclusions, frame lists


def test_exclusion_matching_no_val_key_frame(tmp_path, capsys):
    root = make_root(tmp_path)
    path = root / "annotations" / "ava_val_excluded_timestamps_v2.2.csv"
    path.write_text("vvalA,0903\nvnowhere,0903\nvvalA,1900\n")
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 0
    out = capsys.readouterr().out
    assert "ava_val_excluded_timestamps_v2.2.csv:2: excludes vnowhere,0903, which matches no val key frame" in out
    findings = check(root).find("exclusion_no_match")
    assert [f.line for f in findings] == [2, 3] and all(f.level == "WARNING" for f in findings)


def test_annotated_video_missing_from_frame_list(tmp_path):
    root = make_root(tmp_path)
    path = root / "frame_lists" / "train.csv"
    path.write_text("\n".join(ln for ln in path.read_text().splitlines() if not ln.startswith("vtrainB")) + "\n")
    [finding] = check(root).find("frame_list_missing_video")
    assert finding.level == "WARNING" and "vtrainB" in finding.message


def test_frame_list_shifted_numbering_and_bad_row(tmp_path):
    root = make_root(tmp_path)
    path = root / "frame_lists" / "val.csv"
    lines = path.read_text().splitlines()
    shifted = [lines[0]] + [f'vvalA 0 {i} vvalA/vvalA_{i + 2:06d}.jpg ""' for i in range(FRAMES - 1)]
    path.write_text("\n".join(shifted) + "\n")
    [finding] = check(root).find("frame_list_order")
    assert finding.level == "WARNING" and finding.line == 2 and "vvalA_000002.jpg" in finding.message
    path.write_text("\n".join(lines[:5] + ["vvalA 0 4 vvalA/vvalA_000005.jpg"] + lines[6:]) + "\n")
    [bad] = check(root).find("bad_frame_list_row")
    assert bad.level == "ERROR" and bad.line == 6 and "frame_lists/val.csv:6" in bad.message


# ------------------------------------------------------------------------------------------ exit status


def test_errors_exit_1_warnings_only_exit_0(tmp_path):
    root = make_root(tmp_path)
    (root / "annotations" / "ava_val_excluded_timestamps_v2.2.csv").unlink()  # a warning
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 0
    (root / "annotations" / "ava_val_v2.2.csv").unlink()  # an error
    assert run_cli(str(root), "--expected-frames", str(FRAMES)) == 1
    assert run_cli(str(tmp_path / "nowhere")) == 2


# ------------------------------------------------------------------------------------------ video files


def write_video(path: Path, frames: int, fps: int = 30) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "30"})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            image = np.full((48, 64, 3), (i * 3) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_video_files_clean_and_short(tmp_path):
    root = make_root(tmp_path)
    for video in TRAIN + VAL:
        write_video(root / "videos" / f"{video}.mp4", FRAMES)
    report = check(root, source="video")
    assert report.errors == [] and "clips_complete" in report.codes("OK")
    write_video(root / "videos" / "vvalA.mp4", 100)  # 3.3 s: key frames 903 and 904 need more
    report = check(root, source="video")
    [past] = report.find("frames_past_end")
    assert past.video == "vvalA" and "903..904" in past.message
    assert "short_video" in report.codes("WARNING")


def test_video_file_missing(tmp_path):
    root = make_root(tmp_path)
    write_video(root / "videos" / "vtrainA.mp4", FRAMES)
    report = check(root, source="video")
    assert {f.video for f in report.find("missing_video")} == {"vtrainB", "vvalA"}


# ------------------------------------------------------------------------------------------ quick_check


def test_quick_check(tmp_path):
    root = make_root(tmp_path)
    data = DataConfig(root=str(root), source="frames")
    assert quick_check(data) == []
    assert quick_check(DataConfig(format="ucf101_24", root=str(root))) == []
    assert quick_check(DataConfig(root=str(tmp_path / "nowhere")))[0].startswith("data.root")
    # video source: no videos/ folder
    errors = quick_check(DataConfig(root=str(root), source="video"))
    assert len(errors) == 1 and "videos/" in errors[0]
    # a missing frame folder and a bad box
    os.rename(root / "frames" / "vvalA", root / "frames" / "elsewhere")
    csv_path = root / "annotations" / "ava_train_v2.2.csv"
    csv_path.write_text(csv_path.read_text().replace("0.6,0.1,0.9,0.8,3,1", "0.6,0.1,0.9,1.8,3,1", 1))
    errors = quick_check(data)
    assert any("frames/vvalA" in e for e in errors)
    assert any("ava_train_v2.2.csv:3:" in e and "outside [0, 1]" in e for e in errors)
    # with skip_bad the loader skips the row: not an error
    assert not any("ava_train" in e for e in quick_check(DataConfig(root=str(root), source="frames", skip_bad=True)))


def test_quick_check_does_not_list_frame_folders(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    (root / "frames" / "vtrainA" / "vtrainA_000061.jpg").unlink()  # only the full check sees this
    called = []
    monkeypatch.setattr("bmvit.data.check.scan_frame_folder", lambda *a: called.append(a))
    assert quick_check(DataConfig(root=str(root), source="frames")) == []
    assert called == []


# ------------------------------------------------------------------------------------------ consistency


def test_clip_frame_indices_match_the_loader():
    from bmvit.data.video import clip_indices

    centers = np.array([0, 5, 60, 90, 26940])
    got = clip_frame_indices(centers, 16, 4, 27001)
    for row, center in zip(got, centers):
        np.testing.assert_array_equal(row, clip_indices(int(center), 16, 4, 27001))


def test_video_extensions_match_the_dataset():
    from bmvit.data.dataset import VIDEO_EXTENSIONS as DATASET_EXTENSIONS

    assert VIDEO_EXTENSIONS == DATASET_EXTENSIONS


@pytest.mark.parametrize("module", ["src/bmvit/data/check.py", "src/bmvit/cli/data_check.py"])
def test_no_torch_import(module):
    source = (Path(__file__).resolve().parents[2] / module).read_text()
    assert "import torch" not in source and "from torch" not in source
