import math

import pytest
import torch

from bmvit.postprocess import PostProcess


def _actor_logits(p_actor: list[float]) -> torch.Tensor:
    p = torch.tensor(p_actor, dtype=torch.float64)
    return torch.stack((p.log(), (1 - p).log()), dim=-1).float()


def _outputs() -> dict[str, torch.Tensor]:
    return {
        "pred_boxes": torch.tensor([
            [[0.1, 0.9, 0.4, 0.4], [0.5, 0.5, 0.4, 0.2], [0.5, 0.5, 0.1, 0.1]],
            [[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]],
        ]),
        "pred_actor": torch.stack((_actor_logits([0.5, 0.8, 0.2]), _actor_logits([0.1, 0.2, 0.25]))),
        "pred_actions": torch.tensor([
            [[math.log(1 / 4), 0.0], [0.0, math.log(3.0)], [5.0, 5.0]],
            [[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]],
        ]),
    }


def test_hand_computed_threshold_scores_and_order():
    first, second = PostProcess(threshold=0.3)(_outputs())
    # Tokens 1 (p = .8) and 0 (p = .5) pass 0.3, most confident first; token 2 (p = .2) does not.
    assert first["token_indices"].tolist() == [1, 0]
    assert torch.allclose(first["actor_scores"], torch.tensor([0.8, 0.5]), atol=1e-6)
    # score = p_actor * sigmoid(logit): .8 * [.5, .75] and .5 * [.2, .5].
    assert torch.allclose(first["action_scores"], torch.tensor([[0.4, 0.6], [0.1, 0.25]]), atol=1e-6)
    # cxcywh -> xyxy; token 0 spills over the frame and is clamped to [0, 1].
    assert torch.allclose(first["boxes_xyxy"], torch.tensor([[0.3, 0.4, 0.7, 0.6], [0.0, 0.7, 0.3, 1.0]]), atol=1e-6)
    # Nothing passes in the second clip, but the shapes still say what is there.
    assert second["token_indices"].shape == (0,) and second["token_indices"].dtype == torch.int64
    assert second["boxes_xyxy"].shape == (0, 4) and second["actor_scores"].shape == (0,)
    assert second["action_scores"].shape == (0, 2)


def test_top_k_and_zero_threshold():
    first, second = PostProcess(threshold=0.3, top_k=1)(_outputs())
    assert first["token_indices"].tolist() == [1] and len(second["token_indices"]) == 0
    first, second = PostProcess(threshold=0.0, top_k=2)(_outputs())
    assert first["token_indices"].tolist() == [1, 0] and second["token_indices"].tolist() == [2, 1]


def test_threshold_is_strict_and_ties_keep_token_order():
    outputs = {
        "pred_boxes": torch.full((1, 4, 4), 0.5),
        "pred_actor": torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]]),  # p = .5, .73, .5, .73
        "pred_actions": torch.zeros(1, 4, 3),
    }
    (result,) = PostProcess(threshold=0.5)(outputs)
    assert result["token_indices"].tolist() == [1, 3]
    (result,) = PostProcess(threshold=0.4)(outputs)
    assert result["token_indices"].tolist() == [1, 3, 0, 2]


def test_bad_arguments():
    with pytest.raises(ValueError, match="threshold"):
        PostProcess(threshold=1.0)
    with pytest.raises(ValueError, match="top_k"):
        PostProcess(top_k=0)
    with pytest.raises(KeyError, match="pred_actions"):
        PostProcess()({"pred_boxes": torch.zeros(1, 1, 4), "pred_actor": torch.zeros(1, 1, 2)})


def test_optional_nms_drops_the_less_confident_of_overlapping_boxes():
    # Tokens 0 and 1: 0.4-wide boxes shifted by 0.1 -> IoU = 0.3 / 0.5 = 0.6. Token 2 is far away.
    outputs = {
        "pred_boxes": torch.tensor([[[0.30, 0.5, 0.4, 0.4], [0.40, 0.5, 0.4, 0.4], [0.85, 0.5, 0.1, 0.1]]]),
        "pred_actor": _actor_logits([0.6, 0.9, 0.5])[None],
        "pred_actions": torch.zeros(1, 3, 2),
    }
    (plain,) = PostProcess(threshold=0.3)(outputs)
    assert plain["token_indices"].tolist() == [1, 0, 2]  # no NMS by default: the duplicate stays
    (nms,) = PostProcess(threshold=0.3, nms_iou=0.5)(outputs)
    assert nms["token_indices"].tolist() == [1, 2]  # token 0 overlaps the more confident token 1
    assert torch.allclose(nms["actor_scores"], torch.tensor([0.9, 0.5]), atol=1e-6)
    (loose,) = PostProcess(threshold=0.3, nms_iou=0.65)(outputs)
    assert loose["token_indices"].tolist() == [1, 0, 2]  # IoU 0.6 is not above 0.65
    (capped,) = PostProcess(threshold=0.3, top_k=2, nms_iou=0.5)(outputs)
    assert capped["token_indices"].tolist() == [1, 2]  # top_k counts the survivors of NMS
    with pytest.raises(ValueError, match="nms_iou"):
        PostProcess(nms_iou=1.0)


def test_a_bad_post_processing_value_is_a_config_error_naming_the_key():
    from bmvit.config import ConfigError, EvalConfig

    EvalConfig(threshold=0.0, nms_iou=0.5).validate()
    with pytest.raises(ConfigError, match="eval.nms_iou"):
        EvalConfig(nms_iou=-0.1).validate()
    with pytest.raises(ConfigError, match="eval.threshold"):
        EvalConfig(threshold=1.5).validate()
