"""The two-stage baseline through the same engine: `fit` on a few seconds of synthetic data."""

import json
from pathlib import Path

import numpy as np
import pytest

from bmvit import trainer
from bmvit.checkpoint import load_model
from bmvit.baselines.twostage.model import TwoStageMViT
from bmvit.baselines.twostage.person_boxes import read_person_boxes, write_synthetic_person_boxes

CONFIG = Path(__file__).resolve().parents[3] / "configs" / "twostage_synthetic_tiny.yaml"


@pytest.fixture(scope="module")
def person_boxes(tiny_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("person_boxes")
    write_synthetic_person_boxes(tiny_dataset, seed=0, out_dir=out)
    return out


def _config(tiny_dataset, person_boxes, out_dir, tiny_overrides, **extra):
    from bmvit.config import load_config

    boxes = {"twostage.train_boxes": person_boxes / "person_boxes_train.csv",
             "twostage.val_boxes": person_boxes / "person_boxes_val.csv", **extra}
    return load_config(CONFIG, tiny_overrides(tiny_dataset, out_dir, **boxes))


def test_fit_trains_and_evaluates_on_the_detector_boxes(tiny_dataset, person_boxes, tmp_path, tiny_overrides):
    final = trainer.fit(_config(tiny_dataset, person_boxes, tmp_path / "run", tiny_overrides))
    run = tmp_path / "run"
    for name in ("metrics.json", "model.safetensors", "detections_val.csv", "per_class_ap_val.json",
                 "per_class_ap_val.png"):
        assert (run / name).is_file(), name
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1] and all(0.0 <= r["mAP"] <= 1.0 for r in history)
    assert final["mAP"] == history[-1]["mAP"] and history[-1]["loss_action"] > 0
    model = load_model(run / "model.safetensors")
    assert isinstance(model, TwoStageMViT) and model.metadata["input_size"] == [4, 64, 64]
    # Every detection row is one of the detector's boxes above the threshold, scored in (0, 1).
    detected = read_person_boxes(person_boxes / "person_boxes_val.csv", 0.8)
    rows = [line.split(",") for line in (run / "detections_val.csv").read_text().splitlines()]
    assert rows
    labelled = {c["id"] for c in json.loads((run / "per_class_ap_val.json").read_text())["per_class"]}
    scored = labelled & set(model.metadata["class_ids"])  # evaluated classes the model was trained on
    for vid, ts, *box, action, score in rows:
        known = detected[(vid, int(ts))].boxes_xyxy
        assert np.abs(known - np.asarray(box, dtype=np.float32)).max(axis=1).min() < 1e-4
        assert 0.0 < float(score) < 1.0 and int(action) in scored
    per_frame = {(r[0], r[1]) for r in rows}
    expected_rows = sum(min(50, len(detected[(v, int(t))]) * len(scored)) for v, t in per_frame)
    assert len(rows) == expected_rows  # every (box, evaluated class) pair, up to the 50-row cap


def test_missing_val_person_boxes_fail_before_training(tiny_dataset, person_boxes, tmp_path, tiny_overrides):
    config = _config(tiny_dataset, person_boxes, tmp_path / "run", tiny_overrides, **{"twostage.val_boxes": ""})
    with pytest.raises(FileNotFoundError, match="twostage.val_boxes"):
        trainer.fit(config)
    config = _config(tiny_dataset, person_boxes, tmp_path / "run", tiny_overrides,
                     **{"twostage.val_boxes": tmp_path / "nope.csv"})
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        trainer.fit(config)
