"""The two-stage baseline: RoIAlign head on the time-averaged token map, config, training step, checkpoints."""

import pytest
import torch

from bmvit.baselines.twostage.criterion import TwoStageCriterion, TwoStagePostProcess
from bmvit.baselines.twostage.family import TWO_STAGE
from bmvit.baselines.twostage.model import TwoStageConfig, TwoStageMViT
from bmvit.baselines.twostage.roi_align import roi_align
from bmvit.build import family_of
from bmvit.checkpoint import load_model, save_model
from bmvit.flops import count_flops
from bmvit.models import create_model, list_models

SMALL = {"input_size": (4, 64, 64)}  # mvit_tiny at 4x64: a 2x2x2 token map, 192 channels


def _model(num_classes=5, **overrides):
    torch.manual_seed(0)
    return create_model("twostage_mvit_tiny", num_classes=num_classes, backbone_overrides=SMALL, **overrides)


def _clips(batch=2):
    return torch.randn(batch, 3, 4, 64, 64, generator=torch.Generator().manual_seed(1))


BOXES = [torch.tensor([[0.1, 0.2, 0.5, 0.9], [0.4, 0.1, 0.95, 0.8]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]])]


def test_presets_are_registered_with_pyslowfast_geometry():
    assert {"twostage_mvitv2_s", "twostage_mvit_tiny"} <= set(list_models())
    model = create_model("twostage_mvitv2_s")
    assert family_of(model) is TWO_STAGE and model.input_size == (16, 224, 224)
    assert model.backbone.output_grid == (8, 7, 7)  # Kinetics geometry: every pooling kept
    cfg = model.config
    assert (cfg.roi_resolution, cfg.sampling_ratio, cfg.aligned, cfg.dropout) == (7, 0, True, 0.5)
    # The whole-frame default box lets the FLOP counter run it; the RoI head adds almost nothing.
    report = count_flops(model, (1, 3, 16, 224, 224))
    assert 64.0 < report.gmacs < 64.5 and 34.2 < report.params_m < 34.4


def test_outputs_and_the_head_computation():
    model = _model().eval()
    clips = _clips()
    out = model(clips, BOXES)
    assert out["pred_actions"].shape == (3, 5) and out["boxes_per_clip"] == [2, 1]
    assert out["box_batch_index"].tolist() == [0, 0, 1]
    torch.testing.assert_close(out["boxes_xyxy"], torch.cat(BOXES))
    # By hand: mean over time, RoIAlign 7x7 in feature pixels, max over the bins, linear.
    fmap = model.backbone(clips).mean(dim=1).permute(0, 3, 1, 2)
    scale = torch.tensor([2.0, 2.0, 2.0, 2.0])
    pooled = roi_align(fmap, [b * scale for b in BOXES], 7, 1.0, 0, True).amax(dim=(2, 3))
    torch.testing.assert_close(out["pred_actions"], model.projection(pooled), rtol=1e-5, atol=1e-6)


def test_batched_equals_per_clip_and_empty_box_lists():
    model = _model().eval()
    clips = _clips()
    batched = model(clips, BOXES)["pred_actions"]
    singles = torch.cat([model(clips[i : i + 1], [BOXES[i]])["pred_actions"] for i in range(2)])
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-5)
    out = model(clips, [torch.zeros(0, 4), BOXES[1]])
    assert out["pred_actions"].shape == (1, 5) and out["box_batch_index"].tolist() == [1]
    torch.testing.assert_close(out["pred_actions"], batched[2:], rtol=1e-4, atol=1e-5)
    none = model(clips, [torch.zeros(0, 4), torch.zeros(0, 4)])
    assert none["pred_actions"].shape == (0, 5)
    assert [r["boxes_xyxy"].shape[0] for r in TwoStagePostProcess()(none)] == [0, 0]


def test_bad_boxes_and_token_selection_are_named():
    model = _model()
    with pytest.raises(ValueError, match="2 box tensors"):
        model(_clips(), [BOXES[0]])
    with pytest.raises(ValueError, match="temporal_mean"):
        create_model("twostage_mvit_tiny", token_selection="central")
    with pytest.raises(ValueError, match="unknown model override"):
        create_model("twostage_mvit_tiny", proj_dim=3)


def test_config_round_trip_and_checks():
    cfg = TwoStageConfig(backbone="mvit_tiny", backbone_overrides={"input_size": [4, 64, 64]}, num_classes=3)
    assert TwoStageConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["backbone_overrides"] == {"input_size": [4, 64, 64]}
    with pytest.raises(ValueError, match="unknown keys"):
        TwoStageConfig.from_dict({**cfg.to_dict(), "token_selection": "central"})
    with pytest.raises(TypeError, match="aligned"):
        TwoStageConfig(aligned=1)
    with pytest.raises(ValueError, match="dropout"):
        TwoStageConfig(dropout=1.0)


def test_gradients_reach_backbone_and_head_and_a_step_lowers_the_loss():
    model = _model(num_classes=3, dropout=0.0)
    criterion = TwoStageCriterion(3)
    clips = _clips()
    targets = [{"proposal_labels": torch.tensor([[1.0, 0, 0], [0, 1, 1]])},
               {"proposal_labels": torch.tensor([[0.0, 0, 1]])}]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        loss = criterion(model(clips, BOXES), targets)["loss"]
        optimizer.zero_grad()
        loss.backward()
        if not losses:
            assert model.projection.weight.grad.abs().sum() > 0
            assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_criterion_is_bce_summed_over_classes_per_box():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.5], [3.0, -3.0]])
    labels = [torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 1.0]])]
    out = TwoStageCriterion(2, weight_action=2.0)({"pred_actions": logits}, [{"proposal_labels": y} for y in labels])
    y = torch.cat(labels)
    by_hand = -(y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits))).sum() / 3
    torch.testing.assert_close(out["loss"], 2.0 * by_hand)
    with pytest.raises(ValueError, match="one row per person box"):
        TwoStageCriterion(2)({"pred_actions": logits}, [{"proposal_labels": labels[0]}])


def test_postprocess_scores_are_class_probabilities_per_clip():
    out = {"pred_actions": torch.tensor([[0.0, 1.0], [2.0, -2.0], [-1.0, 0.0]]),
           "boxes_xyxy": torch.tensor([[0.1, 0.1, 0.5, 1.2], [0.2, 0.2, 0.3, 0.3], [-0.1, 0.0, 0.4, 0.4]]),
           "boxes_per_clip": [2, 1]}
    results = TwoStagePostProcess()(out)
    assert [len(r["boxes_xyxy"]) for r in results] == [2, 1]
    torch.testing.assert_close(results[0]["action_scores"], torch.sigmoid(out["pred_actions"][:2]))
    assert results[0]["boxes_xyxy"][0].tolist() == pytest.approx([0.1, 0.1, 0.5, 1.0])
    assert results[1]["boxes_xyxy"][0, 0] == 0.0


def test_checkpoint_round_trip(tmp_path):
    model = _model().eval()
    path = tmp_path / "twostage.safetensors"
    save_model(path, model, {"model_config": model.config.to_dict(), "model_class": type(model).__name__})
    loaded = load_model(path)
    assert isinstance(loaded, TwoStageMViT) and loaded.config == model.config
    torch.testing.assert_close(loaded(_clips(), BOXES)["pred_actions"], model(_clips(), BOXES)["pred_actions"])
