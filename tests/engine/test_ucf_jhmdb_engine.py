"""UCF101-24 / JHMDB-21 through the training engine: config, datasets, evaluation, ``fit`` and ``bmvit eval``.

The data is a fabricated ACT-format dataset (a JSON ground truth with ACT's keys and frame folders of tiny
images): 3 videos of 40 frames, a bright box moving 2 px per frame, class 1 in ``tr1`` and ``te1``, class 2 in
``tr2`` and ``te1``; ``te1`` (test) has frames without any box (1, 2, 21, 39, 40).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bmvit import trainer
from bmvit.build import create_dataset, create_eval_loader, data_label_map, read_class_info, resolve_data_paths
from bmvit.cli import main as cli_main
from bmvit.config import ConfigError, load_config
from bmvit.data.ava import write_ava_csv
from bmvit.engine import evaluate
from bmvit.evaluation.ucf_jhmdb import evaluate_act_detections

Image = pytest.importorskip("PIL.Image")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
W, H, NFRAMES = 112, 48, 40
# video -> [(label index, first frame, last frame)]; frames are 1-based and inclusive.
TUBES = {"tr1": [(0, 1, 40)], "tr2": [(1, 1, 40)], "te1": [(0, 3, 20), (1, 22, 38)]}


def _box(frame: int) -> list[float]:
    """Pixel box x1, y1, x2, y2 on ``frame``: moves 2 px right per frame, so frame numbers matter."""
    x1 = 4.0 + 2.0 * frame
    return [x1, 10.0, x1 + 16.0, 34.0]


def _write_act_dataset(root: Path, frames_dir: str, ext: str, num_splits: int) -> None:
    gttubes, nframes, resolution = {}, {}, {}
    for video, tubes in TUBES.items():
        gttubes[video] = {str(label): [[[f, *_box(f)] for f in range(a, b + 1)]] for label, a, b in tubes}
        nframes[video], resolution[video] = NFRAMES, [H, W]
        folder = root / frames_dir / video
        folder.mkdir(parents=True)
        boxed = {f: label for label, a, b in tubes for f in range(a, b + 1)}
        for f in range(1, NFRAMES + 1):
            image = np.full((H, W, 3), 20, np.uint8)
            if f in boxed:
                x1, y1, x2, y2 = (int(v) for v in _box(f))
                image[y1:y2, x1:x2] = (230, 60, 60) if boxed[f] == 0 else (60, 60, 230)
            Image.fromarray(image).save(folder / f"{f:05d}.{ext}")
    gt = {
        "labels": ["Fencing", "Diving"],
        "gttubes": gttubes,
        "nframes": nframes,
        "resolution": resolution,
        "train_videos": [["tr1", "tr2"]] * num_splits,
        "test_videos": [["te1"]] * num_splits,
    }
    (root / "gt.json").write_text(json.dumps(gt))


@pytest.fixture(scope="module")
def ucf_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ucf")
    _write_act_dataset(root, "rgb-images", "jpg", num_splits=1)
    return root


def _overrides(root: Path, out_dir: Path, fmt: str = "ucf101_24", **extra: object) -> list[str]:
    values = {
        "data.format": fmt,
        "data.root": root,
        "data.act.annotations": "gt.json",
        "data.source": "frames",
        "data.sampling_stride": 2,
        "data.num_workers": 0,
        "data.scale_jitter": "[1.0, 1.0]",
        "data.color_jitter": 0.0,
        "model.name": "bmvit_mvit_tiny",
        "model.input_size": "[4, 64, 64]",
        "model.backbone_weights": "",
        "model.drop_path_rate": 0.0,
        "model.activation_checkpointing": "false",
        "train.out_dir": out_dir,
        "train.batch_size": 2,
        "train.epochs": 1,
        "train.max_steps": 3,
        "train.device": "cpu",
        "train.tensorboard": "false",
        "eval.batch_size": 6,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]


def _config(root: Path, out_dir: Path, **extra: object):
    return load_config(CONFIGS / "bmvit_mvitv2_s_ucf101_24.yaml", _overrides(root, out_dir, **extra))


# ---------------------------------------------------------------------------------------------------------
# config


@pytest.mark.parametrize("name", ["bmvit_mvitv2_s_ucf101_24.yaml", "bmvit_mvitv2_s_jhmdb_21.yaml"])
def test_shipped_act_configs_validate(name):
    config = load_config(CONFIGS / name)
    config.data.validate()
    assert config.data.format == name.removeprefix("bmvit_mvitv2_s_").removesuffix(".yaml")
    assert config.model.input_size == [16, 256, 256] and config.data.source == "frames"


@pytest.mark.parametrize(
    "override, message",
    [
        (["data.format=ucf24"], "data.format must be one of ava | ucf101_24 | jhmdb_21, got 'ucf24'"),
        (["data.format=jhmdb_21", "data.act.split_index=4"], "data.act.split_index must be 1..3 for jhmdb_21, got 4"),
        (["data.format=ucf101_24", "data.act.split_index=2"], "data.act.split_index must be 1..1 for ucf101_24, got 2"),
        (["data.source=jpg"], "data.source must be video or frames, got 'jpg'"),
    ],
)
def test_bad_data_values_are_named(override, message, tmp_path):
    config = load_config(None, override + [f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        resolve_data_paths(config.data)


def test_missing_annotations_name_the_expected_file(tmp_path):
    config = load_config(None, ["data.format=jhmdb_21", f"data.root={tmp_path}"])
    with pytest.raises(FileNotFoundError, match=r"JHMDB-GT\.pkl does not exist .*data.format=jhmdb_21"):
        read_class_info(config.data)


# ---------------------------------------------------------------------------------------------------------
# datasets and classes


def test_classes_and_splits_come_from_the_ground_truth(ucf_root, tmp_path):
    config = _config(ucf_root, tmp_path)
    classes = read_class_info(config.data)
    assert classes.class_ids == [1, 2] and classes.label_map == {1: "Fencing", 2: "Diving"}
    assert data_label_map(config.data) == classes.label_map
    train = create_dataset(config.data, "train", classes.class_ids, (4, 64, 64), train=True)
    val = create_dataset(config.data, "val", classes.class_ids, (4, 64, 64), train=False)
    assert len(train) == 2 * NFRAMES  # every annotated frame of tr1, tr2
    assert len(val) == NFRAMES  # every frame of te1 (eval_all_frames), 35 of them annotated
    assert [k.timestamp for k in val.keyframes] == list(range(1, NFRAMES + 1))
    clip, target = val[4]  # frame 5: class 1 at x 14..30 of 112
    assert clip.shape == (3, 4, 64, 64) and target["timestamp"] == 5
    np.testing.assert_allclose(target["boxes"], [[22 / 112, 22 / 48, 16 / 112, 24 / 48]], atol=1e-6)
    assert target["labels"].tolist() == [[1.0, 0.0]]
    only_annotated = _config(ucf_root, tmp_path, **{"data.act.eval_all_frames": "false"})
    assert len(create_dataset(only_annotated.data, "val", [1, 2], (4, 64, 64), train=False)) == 35


def test_video_files_give_the_frames_clips(ucf_root, tmp_path):
    """data.source=video: each video of the ACT split read from <videos_dir>/<video><video_ext>, the
    same key frames and, up to the codec's loss, the same clips as the frame folders."""
    import av

    videos = tmp_path / "clips"
    videos.mkdir()
    for video in TUBES:
        with av.open(str(videos / f"{video}.mkv"), "w") as container:
            stream = container.add_stream("ffv1", rate=25)  # lossless: the frames come back exactly
            stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
            for f in range(1, NFRAMES + 1):
                rgb = np.asarray(Image.open(ucf_root / "rgb-images" / video / f"{f:05d}.jpg").convert("RGB"))
                container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            container.mux(stream.encode())
    (tmp_path / "gt.json").write_text((ucf_root / "gt.json").read_text())
    from_video = _config(tmp_path, tmp_path / "run", **{"data.source": "video", "data.act.videos_dir": "clips",
                                                        "data.act.video_ext": ".mkv"})
    from_frames = _config(ucf_root, tmp_path / "run")
    val_video = create_dataset(from_video.data, "val", [1, 2], (4, 64, 64), train=False, output="uint8")
    val_frames = create_dataset(from_frames.data, "val", [1, 2], (4, 64, 64), train=False, output="uint8")
    assert [k.timestamp for k in val_video.keyframes] == [k.timestamp for k in val_frames.keyframes]
    (clip_v, target_v), (clip_f, target_f) = val_video[4], val_frames[4]
    assert target_v["timestamp"] == target_f["timestamp"] == 5
    np.testing.assert_allclose(target_v["boxes"], target_f["boxes"])
    assert (clip_v.int() - clip_f.int()).abs().float().mean() < 3.0  # yuv444 round trip of the same pixels
    with pytest.raises(FileNotFoundError, match="data.act.videos_dir"):
        resolve_data_paths(_config(tmp_path, tmp_path / "run", **{"data.source": "video"}).data)


def test_jhmdb_png_frames_and_split_index(tmp_path):
    _write_act_dataset(tmp_path, "Frames", "png", num_splits=3)
    config = load_config(None, _overrides(tmp_path, tmp_path / "run", fmt="jhmdb_21", **{"data.act.split_index": 3}))
    val = create_dataset(config.data, "val", [1, 2], (4, 32, 32), train=False)
    clip, target = val[2]  # frame 3: the first box of te1
    assert clip.shape == (3, 4, 32, 32) and target["timestamp"] == 3 and target["labels"].tolist() == [[1.0, 0.0]]


# ---------------------------------------------------------------------------------------------------------
# evaluation


class OracleDetector(nn.Module):
    """Outputs the ground truth of the key frames in loader order: one actor token per annotated box
    (actor and class logits +-12), and a no-actor token on frames without any box."""

    def __init__(self, keyframes, num_classes: int, input_size) -> None:
        super().__init__()
        self.keyframes, self.num_classes, self.input_size, self.seen = keyframes, num_classes, tuple(input_size), 0

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = self.keyframes[self.seen : self.seen + clips.shape[0]]
        self.seen += clips.shape[0]
        boxes = torch.full((len(batch), 1, 4), 0.5)
        actor = torch.tensor([-12.0, 12.0]).repeat(len(batch), 1, 1)
        actions = torch.full((len(batch), 1, self.num_classes), -12.0)
        for b, k in enumerate(batch):
            if len(k):
                (x1, y1, x2, y2), ((action,),) = k.boxes_xyxy[0], k.action_ids
                boxes[b, 0] = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
                actor[b, 0] = torch.tensor([12.0, -12.0])
                actions[b, 0, action - 1] = 12.0
        return {"pred_boxes": boxes, "pred_actor": actor, "pred_actions": actions}


def test_perfect_detections_through_the_engine_score_one(ucf_root, tmp_path):
    config = _config(ucf_root, tmp_path, **{"eval.batch_size": 5})
    classes = read_class_info(config.data)
    val = create_dataset(config.data, "val", classes.class_ids, (4, 64, 64), train=False)
    oracle = OracleDetector(val.keyframes, 2, (4, 64, 64))
    result = evaluate(oracle, create_eval_loader(config, oracle, classes), classes, config.data, config.eval, tmp_path,
                      torch.device("cpu"))
    assert oracle.seen == NFRAMES
    assert result["protocol"] == "act" and result["mAP"] == pytest.approx(1.0, abs=1e-6)
    assert result["video_mAP@0.2"] == pytest.approx(1.0) and result["video_mAP@0.5"] == pytest.approx(1.0)
    lines = (tmp_path / "detections_val.csv").read_text().splitlines()
    first = lines[0].split(",")  # te1's first box is on frame 3: the row says 0003, not a 0-based 0002
    assert first[:2] == ["te1", "0003"] and first[6] == "1"
    assert [float(v) for v in first[2:6]] == pytest.approx([10 / 112, 10 / 48, 26 / 112, 34 / 48], abs=1e-4)
    saved = json.loads((tmp_path / "per_class_ap_val.json").read_text())
    assert saved["mAP"] == result["mAP"] and (tmp_path / "per_class_ap_val.png").stat().st_size > 0


def test_hand_computed_frame_ap_with_a_false_positive(ucf_root, tmp_path):
    """Class 2 (17 boxes on frames 22..38) ranked FP, then 17 TPs: precision after the k-th TP is k / (k + 1),
    0 after the FP, so ACT's trapezoidal AP = sum_k (1/17) * (k/(k+1) + (k-1)/k) / 2; class 1 (18 TPs) = 1."""
    config = _config(ucf_root, tmp_path)
    val = create_dataset(config.data, "val", [1, 2], (4, 64, 64), train=False)
    rows = [("te1", f, *(np.array(_box(f)) / [W, H, W, H]), 1, 0.8) for f in range(3, 21)]
    rows += [("te1", f, *(np.array(_box(f)) / [W, H, W, H]), 2, 0.8) for f in range(22, 39)]
    rows.append(("te1", 1, 0.1, 0.1, 0.5, 0.5, 2, 0.9))  # frame 1 has no box: a false positive
    write_ava_csv(tmp_path / "det.csv", rows)
    result = evaluate_act_detections(val, tmp_path / "det.csv", {1: "Fencing", 2: "Diving"})
    ap2 = sum((k / (k + 1) + (k - 1) / k) / 2 for k in range(1, 18)) / 17  # 0.8255
    assert [c["ap"] for c in result["per_class"]] == pytest.approx([1.0, ap2], abs=1e-6)
    assert result["mAP"] == pytest.approx((1.0 + ap2) / 2, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------
# training and the CLI, end to end


def test_fit_then_bmvit_eval(ucf_root, tmp_path, capsys):
    torch.manual_seed(0)
    final = trainer.fit(_config(ucf_root, tmp_path / "run"))
    run = tmp_path / "run"
    for name in ("model.safetensors", "detections_val.csv", "per_class_ap_val.json", "per_class_ap_val.png"):
        assert (run / name).is_file(), name
    assert 0.0 <= final["mAP"] <= 1.0 and final["steps"] == 3
    saved = json.loads((run / "per_class_ap_val.json").read_text())
    assert saved["protocol"] == "act" and [c["id"] for c in saved["per_class"]] == [1, 2]
    assert 0.0 <= saved["video_mAP@0.5"] <= 1.0

    out = tmp_path / "eval"
    code = cli_main(["eval", "--weights", str(run / "model.safetensors"), "--out", str(out), "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "per_class_ap_val.json").read_text())
    assert 0.0 <= result["mAP"] <= 1.0 and f"mAP: {result['mAP']:.4f}" in printed
    assert (out / "detections_val.csv").is_file() and (out / "per_class_ap_val.png").is_file()
    assert "Fencing" in printed and "Diving" in printed
