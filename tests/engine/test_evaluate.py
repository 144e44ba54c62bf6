"""``engine.evaluate``: one uncapped detections file scored by both AVA protocols, and a θ sweep from one pass."""

import json

import pytest
import torch
from torch import nn

from bmvit.build import ClassInfo
from bmvit.config import ConfigError, DataConfig, EvalConfig
from bmvit.engine import StepContext, evaluate, predict_rows
from bmvit.postprocess import PostProcess

GT_BOX = (0.1, 0.1, 0.3, 0.5)  # x1, y1, x2, y2 of the one annotated person (class 1)


class Crowd(nn.Module):
    """20 tokens: 19 confident actors far from the person with confident actions (false positives), and
    token 19 on the person with p(actor) = 0.5 and weak actions, so its 3 rows rank last of 60."""

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = clips.shape[0]
        boxes = torch.tensor([[0.8, 0.8, 0.1, 0.1]] * 19 + [[0.2, 0.3, 0.2, 0.4]])
        actor = torch.tensor([[4.0, 0.0]] * 19 + [[0.0, 0.0]])
        actions = torch.tensor([[5.0, 5.0, 5.0]] * 19 + [[-5.0, -5.0, -5.0]])
        return {"pred_boxes": boxes.expand(batch, 20, 4), "pred_actor": actor.expand(batch, 20, 2),
                "pred_actions": actions.expand(batch, 20, 3)}


def _ava_root(root):
    ann = root / "annotations"
    ann.mkdir(parents=True)
    row = f"vid,0902,{','.join(str(v) for v in GT_BOX)},1,0\n"
    (ann / "ava_train_v2.2.csv").write_text(row)
    (ann / "ava_val_v2.2.csv").write_text(row)
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text(
        "".join(f'item {{\n  name: "a{i}"\n  id: {i}\n}}\n' for i in (1, 2, 3)))
    return root


def _evaluate(tmp_path, thresholds=(), **eval_values):
    data_cfg = DataConfig(root=str(_ava_root(tmp_path / "data")))
    loader = [(torch.zeros(1, 3, 2, 8, 8), [{"video_id": "vid", "timestamp": 902}])]
    classes = ClassInfo(class_ids=[1, 2, 3], label_map={1: "a1", 2: "a2", 3: "a3"})
    out = tmp_path / "out"
    out.mkdir()
    result = evaluate(Crowd(), loader, classes, data_cfg, EvalConfig(**eval_values), out, torch.device("cpu"),
                      thresholds=thresholds)
    return result, out


def test_both_protocols_score_one_uncapped_file(tmp_path):
    result, out = _evaluate(tmp_path)
    rows = (out / "detections_val.csv").read_text().splitlines()
    assert len(rows) == 60  # every row above θ: 20 tokens x 3 classes, no cap in the file
    # The official evaluator keeps the top 50 rows of the key frame: the person's rows (the last 3) are cut,
    # class 1 has 19 false positives and AP 0. PySlowFast's protocol reads all 60: the true positive ranks
    # 20th of class 1's rows, AP = 1/20.
    assert result["protocol"] == "activitynet" and result["mAP"] == 0.0
    assert result["mAP_by_protocol"] == {"activitynet": 0.0, "slowfast": pytest.approx(0.05)}
    assert json.loads((out / "per_class_ap_val.json").read_text())["mAP_by_protocol"]["slowfast"] == \
        pytest.approx(0.05)
    slowfast, _ = _evaluate(tmp_path / "again", protocol="slowfast")
    assert slowfast["protocol"] == "slowfast" and slowfast["mAP"] == pytest.approx(0.05)


def test_a_row_cap_in_the_file_is_asked_for_and_0_means_none(tmp_path):
    result, out = _evaluate(tmp_path, max_rows_per_keyframe=50)
    assert len((out / "detections_val.csv").read_text().splitlines()) == 50
    assert result["mAP_by_protocol"]["slowfast"] == 0.0  # the file itself lost the person's rows
    ctx = StepContext(device=torch.device("cpu"))
    loader = [(torch.zeros(1, 3, 2, 8, 8), [{"video_id": "vid", "timestamp": 902}])]
    every = predict_rows(Crowd(), PostProcess(0.3), loader, [1, 2, 3], None, ctx, max_rows_per_keyframe=0)
    assert len(every) == 60
    with pytest.raises(ValueError, match="max_rows_per_keyframe must be >= 0"):
        predict_rows(Crowd(), PostProcess(0.3), loader, [1, 2, 3], None, ctx, max_rows_per_keyframe=-1)
    with pytest.raises(ConfigError, match="eval.max_rows_per_keyframe must be >= 0"):
        EvalConfig(max_rows_per_keyframe=-1).validate()
    with pytest.raises(ConfigError, match="eval.protocol must be one of activitynet | slowfast, got 'pyslowfast'"):
        EvalConfig(protocol="pyslowfast").validate()


def test_thresholds_are_scored_from_one_pass(tmp_path):
    result, out = _evaluate(tmp_path, thresholds=(0.9, 0.1))
    table = {row["threshold"]: row for row in result["thresholds"]}
    assert sorted(table) == [0.1, 0.9]
    # θ = 0.1 keeps the person's token (p(actor) = 0.5): 60 rows; θ = 0.9 drops it: 57 rows, no true positive.
    assert table[0.1]["rows"] == 60 and table[0.1]["mAP_slowfast"] == pytest.approx(0.05)
    assert table[0.9]["rows"] == 57 and table[0.9]["mAP_slowfast"] == 0.0
    assert len((out / "detections_val.csv").read_text().splitlines()) == 60  # the file is eval.threshold's (0.3)
    assert not list(out.glob(".*theta*"))  # the sweep's scratch file is gone
    with pytest.raises(ConfigError, match=r"every threshold must be in \[0, 1\), got 1.5"):
        _evaluate(tmp_path / "bad", thresholds=(1.5,))
