import math

import pytest
import torch
from torch import nn

import bmvit
from bmvit import distributed as dist_utils
from bmvit.losses import SetCriterion, sigmoid_focal_loss
from bmvit.matcher import HungarianMatcher

NUM_CLASSES = 5


def _criterion(**kwargs) -> SetCriterion:
    return SetCriterion(HungarianMatcher(), NUM_CLASSES, **kwargs)


def _random_outputs(g: torch.Generator, batch: int, num_tokens: int) -> dict[str, torch.Tensor]:
    return {
        "pred_boxes": torch.cat((torch.rand(batch, num_tokens, 2, generator=g) * 0.6 + 0.2,
                                 torch.rand(batch, num_tokens, 2, generator=g) * 0.3 + 0.05), dim=-1),
        "pred_actor": torch.randn(batch, num_tokens, 2, generator=g),
        "pred_actions": torch.randn(batch, num_tokens, NUM_CLASSES, generator=g),
    }


def _random_targets(g: torch.Generator, sizes: list[int]) -> list[dict[str, torch.Tensor]]:
    targets = []
    for m in sizes:
        labels = (torch.rand(m, NUM_CLASSES, generator=g) < 0.3).float()
        labels[torch.arange(m), torch.randint(NUM_CLASSES, (m,), generator=g)] = 1.0  # every row an actor
        boxes = torch.cat((torch.rand(m, 2, generator=g) * 0.6 + 0.2, torch.rand(m, 2, generator=g) * 0.3 + 0.05), -1)
        targets.append({"boxes": boxes, "labels": labels})
    return targets


def _tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return bmvit.create_model("bmvit_mvit_tiny", num_classes=NUM_CLASSES, proj_dim=32, head_hidden_dim=32,
                              backbone_overrides={"input_size": (8, 64, 64)})


def test_hand_computed_losses():
    outputs = {
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1]]]),
        "pred_actor": torch.tensor([[[0.0, 0.0], [0.0, 2.0]]]),
        "pred_actions": torch.zeros(1, 2, NUM_CLASSES),
    }
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2]]), "labels": torch.tensor([[1.0, 0, 0, 1, 0]])}]
    criterion = _criterion()
    assert [(p.tolist(), t.tolist()) for p, t in criterion.match(outputs, targets)] == [([0], [0])]
    losses = criterion(outputs, targets)
    # Token 0 is matched (actor, weight 1, CE log 2); token 1 is no-actor (weight .1, CE log(1 + e^-2)).
    expected_actor = (math.log(2) + 0.1 * math.log(1 + math.exp(-2))) / 1.1
    # L1 |0.2 - 0.4| = .2; xyxy (.4, .4, .6, .6) in (.3, .4, .7, .6): IoU .5, enclosing = target, GIoU .5.
    # BCE of logit 0 is log 2 for each of the 5 classes, summed per box; one actor.
    expected = {"loss_actor": expected_actor, "loss_bbox": 5 * 0.2, "loss_giou": 2 * 0.5,
                "loss_action": 5 * math.log(2)}
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    assert losses["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-5)


def test_one_to_many_terms_hand_computed_and_actor_loss_unchanged():
    # Three tokens, one actor: with two copies the one-to-many matching takes tokens 0 and 1 (token 2
    # is far away); the one-to-one terms stay what they are without the option.
    outputs = {
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.5, 0.5, 0.4, 0.1], [0.1, 0.1, 0.1, 0.1]]]),
        "pred_actor": torch.tensor([[[0.0, 0.0], [0.0, 2.0], [0.0, 2.0]]]),
        "pred_actions": torch.zeros(1, 3, NUM_CLASSES),
    }
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2]]), "labels": torch.tensor([[1.0, 0, 0, 1, 0]])}]
    plain = _criterion()(outputs, targets)
    criterion = _criterion(o2m_weight=0.5, o2m_repeats=2)
    assert [(p.tolist(), t.tolist()) for p, t in criterion.match(outputs, targets, repeats=2)] == [([0, 1], [0, 0])]
    losses = criterion(outputs, targets)
    for name in ("loss_actor", "loss_bbox", "loss_giou", "loss_action"):
        assert losses[name].item() == pytest.approx(plain[name].item(), rel=1e-6), name
    # Token 1: L1 .1, xyxy (.3, .45, .7, .55) in (.3, .4, .7, .6): IoU .5, GIoU .5. Token 0 as in the
    # one-to-one test (L1 .2, GIoU .5). Mean over the 2 copies, times 0.5 x the one-to-one weights.
    expected = {"loss_bbox_o2m": 0.5 * 5 * (0.2 + 0.1) / 2, "loss_giou_o2m": 0.5 * 2 * (0.5 + 0.5) / 2,
                "loss_action_o2m": 0.5 * 5 * math.log(2)}
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    assert losses["loss"].item() == pytest.approx(plain["loss"].item() + sum(expected.values()), rel=1e-5)
    with pytest.raises(ValueError, match="o2m"):
        _criterion(o2m_weight=-1.0)
    with pytest.raises(ValueError, match="o2m"):
        _criterion(o2m_weight=1.0, o2m_repeats=0)


def test_focal_loss_hand_computed_and_option():
    logits, targets = torch.tensor([0.0, 0.0, 2.0]), torch.tensor([1.0, 0.0, 0.0])
    p = 1 / (1 + math.exp(-2.0))
    expected = [0.25 * 0.5**2 * math.log(2), 0.75 * 0.5**2 * math.log(2), 0.75 * p**2 * -math.log(1 - p)]
    assert torch.allclose(sigmoid_focal_loss(logits, targets, 0.25, 2.0), torch.tensor(expected), atol=1e-6)
    g = torch.Generator().manual_seed(5)
    outputs, targets = _random_outputs(g, 2, 8), _random_targets(g, [2, 3])
    focal = _criterion(action_loss="focal")(outputs, targets)
    bce = _criterion()(outputs, targets)
    assert focal["loss_action"] < bce["loss_action"] and focal["loss_bbox"] == bce["loss_bbox"]


def test_losses_finite_and_named():
    g = torch.Generator().manual_seed(0)
    outputs, targets = _random_outputs(g, 3, 16), _random_targets(g, [2, 0, 4])
    losses = _criterion()(outputs, targets)
    assert set(losses) == {"loss", "loss_actor", "loss_bbox", "loss_giou", "loss_action"}
    assert all(torch.isfinite(v) and v.ndim == 0 for v in losses.values())
    assert losses["loss"].item() == pytest.approx(sum(v.item() for k, v in losses.items() if k != "loss"), rel=1e-6)


def test_invariant_to_target_order():
    g = torch.Generator().manual_seed(1)
    outputs, targets = _random_outputs(g, 2, 16), _random_targets(g, [5, 3])
    criterion = _criterion()
    losses = criterion(outputs, targets)
    shuffled = [{k: v[torch.randperm(len(v), generator=torch.Generator().manual_seed(7))] for k, v in t.items()}
                for t in targets]
    shuffled_losses = criterion(outputs, shuffled)
    for name in losses:
        assert shuffled_losses[name].item() == pytest.approx(losses[name].item(), rel=1e-6), name


def test_num_boxes_normalisation(monkeypatch):
    g = torch.Generator().manual_seed(2)
    outputs, targets = _random_outputs(g, 1, 12), _random_targets(g, [3])
    criterion = _criterion()
    single = criterion(outputs, targets)
    # The same clip twice: twice the matched boxes and twice num_boxes, so every term is unchanged.
    doubled = criterion({k: v.repeat(2, 1, 1) for k, v in outputs.items()}, targets * 2)
    for name in single:
        assert doubled[name].item() == pytest.approx(single[name].item(), rel=1e-6), name

    # Two processes with 3 and 9 actors: num_boxes = (3 + 9) / 2 = 6 on each, so the per-box terms
    # of this rank are 3/6 of their single-process value. The actor CE divides this rank's weighted
    # sum by the mean weight sum of the processes: local weights 3 * 1 + 9 * 0.1 = 3.9 (3 matched of
    # 12 tokens), the fake all-reduce adds 9, so the divisor is (3.9 + 9) / 2 instead of 3.9.
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: t.add_(9.0))
    monkeypatch.setattr(dist_utils, "comm_device", lambda: torch.device("cpu"))  # gloo's device, no group needed
    distributed = criterion(outputs, targets)
    for name in ("loss_bbox", "loss_giou", "loss_action"):
        assert distributed[name].item() == pytest.approx(single[name].item() * 3 / 6, rel=1e-6), name
    expected_actor = single["loss_actor"].item() * 3.9 / ((3.9 + 9.0) / 2)
    assert distributed["loss_actor"].item() == pytest.approx(expected_actor, rel=1e-6)


def test_empty_targets_give_only_the_no_actor_loss():
    g = torch.Generator().manual_seed(3)
    outputs = _random_outputs(g, 2, 8)
    outputs = {k: v.requires_grad_() for k, v in outputs.items()}
    empty = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, NUM_CLASSES)}] * 2
    losses = _criterion()(outputs, empty)
    no_actor_ce = -outputs["pred_actor"].log_softmax(-1)[..., 1].mean()
    assert losses["loss_actor"].item() == pytest.approx(no_actor_ce.item(), rel=1e-6)
    for name in ("loss_bbox", "loss_giou", "loss_action"):
        assert losses[name].item() == 0.0
    losses["loss"].backward()
    # Box and action outputs stay in the graph with zero gradient (DDP needs every head used).
    assert torch.equal(outputs["pred_boxes"].grad, torch.zeros_like(outputs["pred_boxes"]))
    assert torch.equal(outputs["pred_actions"].grad, torch.zeros_like(outputs["pred_actions"]))


def test_persons_without_a_class_are_not_actors():
    g = torch.Generator().manual_seed(4)
    outputs, targets = _random_outputs(g, 2, 16), _random_targets(g, [2, 3])
    criterion = _criterion()
    with_persons = [{"boxes": torch.cat((torch.tensor([[0.5, 0.5, 0.2, 0.2]]), t["boxes"])),
                     "labels": torch.cat((torch.zeros(1, NUM_CLASSES), t["labels"]))} for t in targets]
    indices = criterion.match(outputs, with_persons)
    # Indices refer to the given rows; row 0 (the person) is never matched.
    assert all(0 not in tgt.tolist() and len(tgt) == len(t["boxes"]) for (_, tgt), t in zip(indices, targets))
    losses, reference = criterion(outputs, with_persons, indices), criterion(outputs, targets)
    for name in losses:
        assert losses[name].item() == pytest.approx(reference[name].item(), rel=1e-6), name


def test_gradients_reach_every_parameter_of_every_head_and_the_backbone():
    model = _tiny_model()
    # The box head's last layer starts at zero (boxes start at their reference), which zeroes the
    # gradient of its hidden layers on the first step only; give it weights to test the wiring.
    nn.init.normal_(model.heads.box.last.weight, std=0.02)
    g = torch.Generator().manual_seed(6)
    clip = torch.randn(2, 3, *model.input_size, generator=g)
    losses = _criterion()(model(clip), _random_targets(g, [2, 1]))
    losses["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert no_grad == []
    assert any(n.startswith("backbone.") for n, _ in model.named_parameters())


def test_bad_inputs_give_clear_errors():
    g = torch.Generator().manual_seed(8)
    outputs, targets = _random_outputs(g, 1, 4), _random_targets(g, [1])
    with pytest.raises(ValueError, match="built for 7"):
        SetCriterion(HungarianMatcher(), 7)(outputs, targets)
    with pytest.raises(KeyError, match="labels"):
        _criterion()(outputs, [{"boxes": targets[0]["boxes"]}])
    with pytest.raises(ValueError, match=r"labels \[M, 5\]"):
        _criterion()(outputs, [{"boxes": targets[0]["boxes"], "labels": torch.ones(2, NUM_CLASSES)}])
    with pytest.raises(ValueError, match="action_loss"):
        _criterion(action_loss="softmax")
    with pytest.raises(ValueError, match="eos_coef"):
        _criterion(eos_coef=0.0)


def test_model_matcher_criterion_and_postprocess_overfit_one_batch():
    """End to end: 25 AdamW steps on one batch make every actor come out of PostProcess."""
    from bmvit.box_ops import box_cxcywh_to_xyxy, box_iou
    from bmvit.postprocess import PostProcess

    model = _tiny_model()
    clip = torch.randn(2, 3, *model.input_size, generator=torch.Generator().manual_seed(0))
    targets = [
        {"boxes": torch.tensor([[0.3, 0.5, 0.2, 0.6], [0.7, 0.4, 0.25, 0.5]]),
         "labels": torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0]])},
        {"boxes": torch.tensor([[0.5, 0.5, 0.3, 0.8]]), "labels": torch.tensor([[0, 0, 1.0, 0, 0]])},
    ]
    criterion = _criterion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        losses = criterion(model(clip), targets)
        first = first if first is not None else losses["loss"].item()
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    assert losses["loss"].item() < 0.2 * first
    model.eval()
    with torch.no_grad():
        results = PostProcess(threshold=0.3)(model(clip))
    for result, target in zip(results, targets):
        assert len(result["token_indices"]) == len(target["boxes"])
        iou = box_iou(result["boxes_xyxy"], box_cxcywh_to_xyxy(target["boxes"]))
        best_gt = iou.argmax(dim=1)
        assert bool((iou.max(dim=1).values > 0.5).all()) and len(set(best_gt.tolist())) == len(best_gt)
        for k, j in enumerate(best_gt.tolist()):
            positives = set(torch.nonzero(target["labels"][j]).flatten().tolist())
            top = set(result["action_scores"][k].topk(len(positives)).indices.tolist())
            assert top == positives


# ------------------------------------------------------------------------------------------------
# non-actor boxes (loss.nonactor_boxes, the supplementary's Sec. 3 "additional bounding boxes")


def _actor_and_non_actor_batch() -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """One clip, three tokens; an actor A (as in test_hand_computed_losses) and a non-actor N whose box
    token 1 predicts half-overlapping. Token 2 is far from both."""
    outputs = {
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.2, 0.2, 0.1, 0.1], [0.8, 0.8, 0.1, 0.1]]]),
        "pred_actor": torch.tensor([[[0.0, 0.0], [0.0, 2.0], [0.0, 2.0]]]),
        "pred_actions": torch.zeros(1, 3, NUM_CLASSES),
    }
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.4, 0.2], [0.2, 0.2, 0.1, 0.2]]),
                "labels": torch.tensor([[1.0, 0, 0, 1, 0], [0.0, 0, 0, 0, 0]]),
                "is_actor": torch.tensor([True, False])}]
    return outputs, targets


def test_matched_non_actor_gets_no_actor_ce_and_its_box_and_no_action_hand_computed():
    outputs, targets = _actor_and_non_actor_batch()
    criterion = _criterion(nonactor_boxes=True)
    assert [(p.tolist(), t.tolist()) for p, t in criterion.match(outputs, targets)] == [([0, 1], [0, 1])]
    losses = criterion(outputs, targets)
    # CE: token 0 actor (weight 1, log 2); tokens 1 (matched to N) and 2 (unmatched) alike no-actor
    # (weight .1, log(1 + e^-2)) -- the actor loss is the one of the flag off.
    expected_actor = (math.log(2) + 0.2 * math.log(1 + math.exp(-2))) / 1.2
    # Boxes, mean over the 2 matched people: A as in test_hand_computed_losses (L1 .2, GIoU .5); N: L1
    # |.1 - .2| = .1, xyxy (.15, .15, .25, .25) in (.15, .1, .25, .3): IoU .5, enclosing = N, GIoU .5.
    # Action: token 0 only, over the 1 actor: 5 classes x log 2. Token 1 gets none.
    expected = {"loss_actor": expected_actor, "loss_bbox": 5 * (0.2 + 0.1) / 2, "loss_giou": 2 * (0.5 + 0.5) / 2,
                "loss_action": 5 * math.log(2)}
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-5), name
    assert losses["loss"].item() == pytest.approx(sum(expected.values()), rel=1e-5)
    # Flag off: N is not matched; the actor CE is the same, the box terms those of A alone.
    off = _criterion()(outputs, targets)
    assert [(p.tolist(), t.tolist()) for p, t in _criterion().match(outputs, targets)] == [([0], [0])]
    assert torch.equal(off["loss_actor"], losses["loss_actor"]) and torch.equal(off["loss_action"],
                                                                                 losses["loss_action"])
    assert off["loss_bbox"].item() == pytest.approx(5 * 0.2) and off["loss_giou"].item() == pytest.approx(2 * 0.5)


def test_the_non_actor_token_learns_its_box_and_nothing_of_actions():
    outputs, targets = _actor_and_non_actor_batch()
    outputs = {k: v.clone().requires_grad_(True) for k, v in outputs.items()}
    _criterion(nonactor_boxes=True)(outputs, targets)["loss"].backward()
    assert outputs["pred_boxes"].grad[0, 1].abs().sum() > 0  # token 1 regresses N's box
    assert torch.equal(outputs["pred_actions"].grad[0, 1], torch.zeros(NUM_CLASSES))
    assert torch.equal(outputs["pred_boxes"].grad[0, 2], torch.zeros(4))  # token 2 stays unmatched
    # Token 1's actor logits are pushed towards no-actor, as an unmatched token's are.
    assert outputs["pred_actor"].grad[0, 1, 0] > 0 > outputs["pred_actor"].grad[0, 1, 1]


@pytest.mark.parametrize("o2m_weight", [0.0, 0.5])
def test_flag_off_ignores_non_actors_bit_for_bit(o2m_weight):
    """Off: the losses of a batch with non-actor rows are those of the batch without them, bit for bit,
    and on a batch without non-actors the flag changes nothing either."""
    g = torch.Generator().manual_seed(11)
    outputs, targets = _random_outputs(g, 3, 16), _random_targets(g, [2, 0, 3])
    with_persons = [{"boxes": torch.cat((torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.7, 0.6, 0.1, 0.3]]), t["boxes"])),
                     "labels": torch.cat((torch.zeros(2, NUM_CLASSES), t["labels"]))} for t in targets]
    off = _criterion(o2m_weight=o2m_weight)
    reference = off(outputs, targets)
    for name, value in off(outputs, with_persons).items():
        assert torch.equal(value, reference[name]), name
    on = _criterion(o2m_weight=o2m_weight, nonactor_boxes=True)
    flagged = [{**t, "is_actor": torch.ones(len(t["boxes"]), dtype=torch.bool)} for t in targets]
    for name, value in on(outputs, flagged).items():
        assert torch.equal(value, reference[name]), name
    # On, the same batch with the persons differs, in the box terms only (and their sum).
    changed = on(outputs, with_persons)
    assert all(torch.isfinite(v) for v in changed.values())
    assert not torch.equal(changed["loss_bbox"], reference["loss_bbox"])


def test_non_actor_normalisers():
    """num_boxes counts every matched person for the box terms, the actors alone for the action term."""
    outputs, targets = _actor_and_non_actor_batch()
    criterion = _criterion(nonactor_boxes=True)
    assert criterion._num_boxes(targets, torch.device("cpu")) == (2.0, 1.0)
    assert _criterion()._num_boxes(targets, torch.device("cpu")) == (1.0, 1.0)
    only_person = [{"boxes": targets[0]["boxes"][1:], "labels": targets[0]["labels"][1:],
                    "is_actor": torch.tensor([False])}]
    losses = criterion(outputs, only_person)  # no actor at all: an action loss of nothing, not a NaN
    assert losses["loss_action"].item() == 0.0 and losses["loss_bbox"].item() == pytest.approx(5 * 0.1)


def test_is_actor_must_agree_with_the_labels():
    outputs, targets = _actor_and_non_actor_batch()
    targets[0]["is_actor"] = torch.tensor([True, True])
    with pytest.raises(ValueError, match="is_actor"):
        _criterion(nonactor_boxes=True)(outputs, targets)
