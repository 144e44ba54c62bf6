"""The training run end to end on a few seconds of synthetic data: outputs, resume, bad input."""

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from bmvit import trainer
from bmvit.checkpoint import init_from_detector, load_model, load_tensors
from bmvit.config import ConfigError, load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"
LOSS_KEYS = ("loss", "loss_actor", "loss_bbox", "loss_giou", "loss_action")


def _config(tiny_dataset, out_dir, tiny_overrides, **extra):
    return load_config(CONFIG, tiny_overrides(tiny_dataset, out_dir, **extra))


def test_fit_writes_every_output(tiny_dataset, tmp_path, tiny_overrides):
    config = _config(tiny_dataset, tmp_path / "run", tiny_overrides)
    final = trainer.fit(config)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "metrics.json", "last.safetensors", "best.safetensors",
                 "model.safetensors", "detections_val.csv", "per_class_ap_val.json", "per_class_ap_val.png"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1]
    assert all(0.0 <= r["mAP"] <= 1.0 for r in lines) and final["mAP"] == lines[-1]["mAP"]
    assert all(r["clips_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in lines)
    model = load_model(run / "model.safetensors")
    meta = model.metadata
    train_csv = tiny_dataset / "annotations" / "ava_train_v2.2.csv"
    trained = sorted({int(line.split(",")[6]) for line in train_csv.read_text().splitlines()})
    assert meta["class_ids"] == trained and meta["input_size"] == [4, 64, 64]
    assert meta["run_config"]["train"]["batch_size"] == 2
    # data.mean/std null: the backbone weights' record (mvit_tiny_8x128.synthetic_seed1) decides, and the
    # resolved values are what the model file and config.yaml record.
    assert (meta["mean"], meta["std"]) == ([0.45] * 3, [0.225] * 3) == (config.data.mean, config.data.std)
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["std"] == [0.225] * 3
    result = json.loads((run / "per_class_ap_val.json").read_text())
    assert result["protocol"] == "activitynet" and len(result["per_class"]) == 9


def _fake_evaluations(maps):
    values = iter(maps)

    def evaluate(model, loader, classes, data_cfg, eval_cfg, out_dir, device, amp_dtype=None, tag="val"):
        value = next(values)
        (out_dir / f"detections_{tag}.csv").write_text(f"detections of {value}\n")
        (out_dir / f"per_class_ap_{tag}.json").write_text(json.dumps({"mAP": value}))
        (out_dir / f"per_class_ap_{tag}.png").write_bytes(f"plot of {value}".encode())
        return {"mAP": value, "mAP_by_protocol": {"activitynet": value, "slowfast": value + 0.01}}

    return evaluate


def test_the_headline_is_the_last_evaluation_and_the_best_is_named_beside_it(tiny_dataset, tmp_path,
                                                                              tiny_overrides, monkeypatch):
    monkeypatch.setattr(trainer, "evaluate", _fake_evaluations([0.5, 0.2]))  # epoch 0 the best, epoch 1 the last
    trainer.fit(_config(tiny_dataset, tmp_path / "run", tiny_overrides))
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert (summary["mAP"], summary["epoch"], summary["best_mAP"], summary["best_epoch"]) == (0.2, 1, 0.5, 0)
    assert (summary["mAP_activitynet"], summary["mAP_slowfast"]) == (0.2, pytest.approx(0.21))
    assert summary["model"] == {"keep": "last", "epoch": 1}
    assert load_model(run / "model.safetensors").metadata["metrics"]["epoch"] == 1
    assert (run / "detections_val.csv").read_text() == "detections of 0.2\n"
    assert load_model(run / "best.safetensors").metadata["metrics"]["epoch"] == 0
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["mAP_slowfast"] for r in lines] == [pytest.approx(0.51), pytest.approx(0.21)]


def test_keep_best_makes_the_saved_model_and_val_files_the_best_epochs(tiny_dataset, tmp_path, tiny_overrides,
                                                                       monkeypatch):
    monkeypatch.setattr(trainer, "evaluate", _fake_evaluations([0.5, 0.2]))
    trainer.fit(_config(tiny_dataset, tmp_path / "run", tiny_overrides, **{"train.keep": "best"}))
    run = tmp_path / "run"
    summary = json.loads((run / "metrics.json").read_text())
    assert (summary["mAP"], summary["best_mAP"], summary["model"]) == (0.2, 0.5, {"keep": "best", "epoch": 0})
    assert load_model(run / "model.safetensors").metadata["metrics"]["epoch"] == 0
    assert json.loads((run / "per_class_ap_val.json").read_text())["mAP"] == 0.5
    assert (run / "detections_val.csv").read_text() == "detections of 0.5\n"
    assert (run / "per_class_ap_val.png").read_bytes() == b"plot of 0.5"
    assert json.loads((run / "per_class_ap_val_last.json").read_text())["mAP"] == 0.2
    assert (run / "detections_val_last.csv").read_text() == "detections of 0.2\n"


def _losses(history, epoch):
    return {k: history[epoch][k] for k in LOSS_KEYS}


def test_resume_continues_exactly(tiny_dataset, tmp_path, tiny_overrides, monkeypatch):
    full = trainer.fit(_config(tiny_dataset, tmp_path / "full", tiny_overrides, **{"train.epochs": 3}))
    full_history = json.loads((tmp_path / "full" / "metrics.json").read_text())["history"]

    # Kill the second run during its second epoch, after the first epoch's checkpoint was written.
    original = trainer.train_one_epoch

    def dying(*args, **kwargs):
        if args[5] == 1:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", dying)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(_config(tiny_dataset, tmp_path / "killed", tiny_overrides, **{"train.epochs": 3}))
    monkeypatch.setattr(trainer, "train_one_epoch", original)
    resumed = trainer.fit(_config(tiny_dataset, tmp_path / "killed", tiny_overrides, **{"train.epochs": 3}), resume=True)
    resumed_history = json.loads((tmp_path / "killed" / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in resumed_history] == [0, 1, 2]
    for epoch in (1, 2):
        assert _losses(resumed_history, epoch) == pytest.approx(_losses(full_history, epoch), rel=1e-5, abs=1e-6)
    assert resumed["mAP"] == pytest.approx(full["mAP"], abs=1e-9)
    full_weights, _ = load_tensors(tmp_path / "full" / "last.safetensors")
    resumed_weights, _ = load_tensors(tmp_path / "killed" / "last.safetensors")
    for key in full_weights:
        if key.startswith("model."):
            torch.testing.assert_close(resumed_weights[key], full_weights[key], rtol=1e-5, atol=1e-6)


def test_resume_with_another_model_config_is_refused(tiny_dataset, tmp_path, tiny_overrides):
    trainer.fit(_config(tiny_dataset, tmp_path / "run", tiny_overrides, **{"train.epochs": 1}))
    other = _config(tiny_dataset, tmp_path / "run", tiny_overrides, **{"model.token_selection": "temporal_mean"})
    with pytest.raises(ConfigError, match="cannot resume"):
        trainer.fit(other, resume=True)


def test_data_root_without_annotations_fails_before_building(tmp_path, tiny_overrides):
    (tmp_path / "empty").mkdir()
    with pytest.raises(trainer.DatasetError, match=r"cannot be trained on(.|\n)*ava_train_v2.2.csv: train annotations not found"):
        trainer.fit(load_config(CONFIG, tiny_overrides(tmp_path / "empty", tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_a_bad_eval_nms_iou_fails_before_training(tiny_dataset, tmp_path, tiny_overrides):
    with pytest.raises(ConfigError, match="eval.nms_iou"):
        trainer.fit(_config(tiny_dataset, tmp_path / "run", tiny_overrides, **{"eval.nms_iou": 1.5}))
    assert not (tmp_path / "run").exists()


def test_eval_cli_takes_the_nms_option_and_names_a_bad_value(tiny_dataset, tmp_path, tiny_overrides, capsys):
    from bmvit.cli import main as cli_main

    trainer.fit(_config(tiny_dataset, tmp_path / "run", tiny_overrides, **{"train.epochs": 1}))
    weights = str(tmp_path / "run" / "model.safetensors")
    # Two training videos do not hold every class; `bmvit eval` wants a label map of the trained ones.
    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    pbtxt = data / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt"
    trained = load_model(weights).metadata["class_ids"]
    pbtxt.write_text("".join(f'item {{\n  name: "c{i}"\n  id: {i}\n}}\n' for i in trained))
    capsys.readouterr()
    args = ["eval", "--weights", weights, "--data", str(data), "--device", "cpu"]
    assert cli_main([*args, "--out", str(tmp_path / "bad"), "eval.nms_iou=1.5"]) == 2
    assert "eval.nms_iou must be in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    every_token = ["eval.threshold=0.0", "eval.max_rows_per_keyframe=100000"]  # rows to compare, no cap
    assert cli_main([*args, "--out", str(tmp_path / "plain"), *every_token]) == 0
    assert cli_main([*args, "--out", str(tmp_path / "nms"), *every_token, "eval.nms_iou=0.5"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("mAP: ")
    plain = (tmp_path / "plain" / "detections_val.csv").read_text().splitlines()
    kept = (tmp_path / "nms" / "detections_val.csv").read_text().splitlines()
    assert set(kept) <= set(plain) and 0 < len(kept) < len(plain)  # NMS only removes rows, and some here

    assert cli_main([*args, "--out", str(tmp_path / "sweep"), "--thresholds", "0.5,0.1"]) == 0
    printed = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(printed) if line.startswith("threshold  rows"))
    assert [line.split()[0] for line in printed[header + 1:header + 3]] == ["0.1", "0.5"]
    sweep = json.loads((tmp_path / "sweep" / "per_class_ap_val.json").read_text())
    low, high = sweep["thresholds"]
    assert low["rows"] >= high["rows"] and set(low) == {"threshold", "rows", "mAP_activitynet", "mAP_slowfast"}
    assert printed[-1].startswith(f"mAP: {sweep['mAP']:.4f} (activitynet; slowfast ")
    with pytest.raises(SystemExit):
        cli_main([*args, "--thresholds", "0.1,1.5"])
    assert "every threshold must be in [0, 1)" in capsys.readouterr().err


def test_init_weights_starts_from_every_tensor_of_a_detector(tiny_dataset, tmp_path, tiny_overrides, monkeypatch):
    trainer.fit(_config(tiny_dataset, tmp_path / "first", tiny_overrides, **{"train.epochs": 1}))
    trained, meta = load_tensors(tmp_path / "first" / "model.safetensors")
    seen = {}

    def stop_at_once(model, *args, **kwargs):
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        raise KeyboardInterrupt("stop")

    monkeypatch.setattr(trainer, "train_one_epoch", stop_at_once)
    second = _config(tiny_dataset, tmp_path / "second", tiny_overrides,
                     **{"model.init_weights": tmp_path / "first" / "model.safetensors"})
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(second)
    assert set(seen) == set(trained) and any(k.startswith("heads.") for k in trained)
    for key, value in trained.items():
        torch.testing.assert_close(seen[key], value, rtol=0, atol=0)

    # Another architecture or other classes: a clear error naming what differs, before any training.
    other = _config(tiny_dataset, tmp_path / "third", tiny_overrides,
                    **{"model.init_weights": tmp_path / "first" / "model.safetensors",
                       "model.token_selection": "temporal_mean"})
    with pytest.raises(ValueError, match="another architecture.*token_selection"):
        trainer.fit(other)
    model = load_model(tmp_path / "first" / "model.safetensors")
    with pytest.raises(ValueError, match=r"other action classes.*missing from the data: \[\d+\]"):
        init_from_detector(model, tmp_path / "first" / "model.safetensors", meta["class_ids"][:-1])
    save_file(dict(model.backbone.state_dict()), str(tmp_path / "backbone_only.safetensors"))
    with pytest.raises(ValueError, match="not a bmvit model file"):
        init_from_detector(model, tmp_path / "backbone_only.safetensors", meta["class_ids"])
