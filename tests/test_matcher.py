import itertools
import math

import pytest
import torch

from bmvit.matcher import HungarianMatcher


def _actor_logits(p_actor: list[float]) -> torch.Tensor:
    # softmax([log p, log(1 - p)])[0] = p exactly.
    p = torch.tensor(p_actor)
    return torch.stack((p.log(), (1 - p).log()), dim=-1)


def _random_case(g: torch.Generator, batch: int, num_tokens: int, sizes: list[int], num_classes: int = 4):
    outputs = {
        "pred_boxes": torch.cat((torch.rand(batch, num_tokens, 2, generator=g) * 0.6 + 0.2,
                                 torch.rand(batch, num_tokens, 2, generator=g) * 0.3 + 0.05), dim=-1),
        "pred_actor": torch.randn(batch, num_tokens, 2, generator=g),
        "pred_actions": torch.randn(batch, num_tokens, num_classes, generator=g),
    }
    targets = []
    for m in sizes:
        centres = torch.rand(m, 2, generator=g) * 0.6 + 0.2
        sizes_wh = torch.rand(m, 2, generator=g) * 0.3 + 0.05
        labels = (torch.rand(m, num_classes, generator=g) < 0.4).float()
        labels[:, 0] = 1.0  # every target is an actor
        targets.append({"boxes": torch.cat((centres, sizes_wh), -1), "labels": labels})
    return outputs, targets


def _total_cost(cost: torch.Tensor, pred_idx: torch.Tensor, tgt_idx: torch.Tensor) -> float:
    return float(cost[pred_idx, tgt_idx].sum())


def test_hand_computed_3x2_case():
    # Targets A = xyxy (0, 0, .5, .5), B = (.5, .5, 1, 1); tokens: P0 = A, P1 = B, P2 = (.25, .25, .75, .75).
    boxes_t = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])
    outputs = {
        "pred_boxes": torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]]]),
        "pred_actor": _actor_logits([0.2, 0.9, 0.6])[None],
    }
    targets = [{"boxes": boxes_t, "labels": torch.ones(2, 3)}]
    # GIoU(A, B): IoU 0, union .5, enclosing 1 -> -0.5.  GIoU(P2, A) = GIoU(P2, B):
    # inter 1/16, union 7/16, enclosing 9/16 -> 1/7 - 2/9.
    giou_p2 = 1 / 7 - 2 / 9
    expected = torch.tensor([
        [-0.2 + 0 - 2 * 1, -0.2 + 5 * 1.0 - 2 * -0.5],
        [-0.9 + 5 * 1.0 - 2 * -0.5, -0.9 + 0 - 2 * 1],
        [-0.6 + 5 * 0.5 - 2 * giou_p2, -0.6 + 5 * 0.5 - 2 * giou_p2],
    ])
    matcher = HungarianMatcher(cost_actor=1.0, cost_bbox=5.0, cost_giou=2.0)
    assert torch.allclose(matcher.cost_matrix(outputs, targets)[0], expected, atol=1e-6)
    (pred_idx, tgt_idx), = matcher(outputs, targets)
    assert pred_idx.tolist() == [0, 1] and tgt_idx.tolist() == [0, 1]
    assert pred_idx.dtype == tgt_idx.dtype == torch.int64

    # With the box terms off only p_actor counts: the two most confident tokens win, P1 and P2.
    (pred_idx, _), = HungarianMatcher(cost_actor=1.0, cost_bbox=0.0, cost_giou=0.0)(outputs, targets)
    assert pred_idx.tolist() == [1, 2]


def test_action_cost_is_minus_mean_probability_of_positive_classes():
    outputs = {
        "pred_boxes": torch.full((1, 2, 4), 0.5),
        "pred_actor": torch.zeros(1, 2, 2),
        "pred_actions": torch.tensor([[[0.0, 2.0, -1.0], [1.0, 0.0, 0.0]]]),
    }
    labels = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    targets = [{"boxes": torch.full((3, 4), 0.5), "labels": labels}]
    base = HungarianMatcher(1.0, 5.0, 2.0, 0.0).cost_matrix(outputs, targets)
    with_action = HungarianMatcher(1.0, 5.0, 2.0, 3.0).cost_matrix(outputs, targets)
    s = torch.sigmoid
    expected = -torch.tensor([
        [(s(torch.tensor(0.0)) + s(torch.tensor(2.0))) / 2, s(torch.tensor(-1.0)), 0.0],
        [(s(torch.tensor(1.0)) + s(torch.tensor(0.0))) / 2, s(torch.tensor(0.0)), 0.0],
    ])
    assert torch.allclose(with_action - base, 3.0 * expected[None], atol=1e-6)


@pytest.mark.parametrize("cost_action", [0.0, 1.0])
def test_optimal_against_brute_force(cost_action):
    g = torch.Generator().manual_seed(0)
    matcher = HungarianMatcher(cost_action=cost_action)
    for trial in range(30):
        num_tokens = 2 + trial % 4
        num_targets = 1 + trial % 6  # sometimes more actors than tokens
        outputs, targets = _random_case(g, 1, num_tokens, [num_targets])
        cost = matcher.cost_matrix(outputs, targets)[0]
        (pred_idx, tgt_idx), = matcher(outputs, targets)
        assert len(pred_idx) == min(num_tokens, num_targets)
        assert len(set(pred_idx.tolist())) == len(pred_idx) and len(set(tgt_idx.tolist())) == len(tgt_idx)
        if num_targets <= num_tokens:
            best = min(sum(float(cost[p, j]) for j, p in enumerate(perm))
                       for perm in itertools.permutations(range(num_tokens), num_targets))
        else:
            best = min(sum(float(cost[i, j]) for i, j in enumerate(perm))
                       for perm in itertools.permutations(range(num_targets), num_tokens))
        assert _total_cost(cost, pred_idx, tgt_idx) == pytest.approx(best, abs=1e-5)


def test_batched_equals_per_sample():
    g = torch.Generator().manual_seed(1)
    sizes = [3, 0, 5, 1]
    outputs, targets = _random_case(g, len(sizes), 12, sizes)
    matcher = HungarianMatcher(cost_action=0.5)
    batched = matcher(outputs, targets)
    for b in range(len(sizes)):
        single = matcher({k: v[b : b + 1] for k, v in outputs.items()}, [targets[b]])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])
    assert [len(p) for p, _ in batched] == sizes


def test_empty_targets_for_one_and_for_all_samples():
    g = torch.Generator().manual_seed(2)
    outputs, targets = _random_case(g, 3, 6, [2, 0, 1])
    indices = HungarianMatcher()(outputs, targets)
    assert [len(p) for p, _ in indices] == [2, 0, 1]
    assert indices[1][0].dtype == torch.int64 and indices[1][1].dtype == torch.int64

    outputs, targets = _random_case(g, 3, 6, [0, 0, 0])
    indices = HungarianMatcher(cost_action=1.0)(outputs, targets)
    assert all(len(p) == 0 and len(t) == 0 for p, t in indices)


def test_invariant_to_target_order():
    g = torch.Generator().manual_seed(3)
    outputs, targets = _random_case(g, 2, 10, [4, 6])
    matcher = HungarianMatcher(cost_action=1.0)
    original = matcher(outputs, targets)
    perms = [torch.randperm(len(t["boxes"]), generator=g) for t in targets]
    shuffled_targets = [{k: v[p] for k, v in t.items()} for t, p in zip(targets, perms)]
    shuffled = matcher(outputs, shuffled_targets)
    for (pred_a, tgt_a), (pred_b, tgt_b), perm in zip(original, shuffled, perms):
        # Row k of the shuffled targets is row perm[k] of the original ones.
        assert dict(zip(pred_a.tolist(), tgt_a.tolist())) == dict(zip(pred_b.tolist(), perm[tgt_b].tolist()))


def test_bad_inputs_give_clear_errors():
    g = torch.Generator().manual_seed(4)
    outputs, targets = _random_case(g, 2, 4, [1, 1])
    matcher = HungarianMatcher()
    with pytest.raises(ValueError, match="2 targets for a batch of 1"):
        matcher({k: v[:1] for k, v in outputs.items()}, targets)
    with pytest.raises(ValueError, match=r"targets\[1\]\['boxes'\] must be \[M, 4\]"):
        matcher(outputs, [targets[0], {"boxes": torch.zeros(4), "labels": torch.zeros(1, 4)}])
    with pytest.raises(ValueError, match=r"labels.*must be \[1, 4\]"):
        matcher(outputs, [targets[0], {"boxes": torch.rand(1, 4), "labels": torch.zeros(1, 7)}])
    with pytest.raises(KeyError, match="pred_actor"):
        matcher({"pred_boxes": outputs["pred_boxes"]}, targets)
    bad = dict(outputs, pred_actor=outputs["pred_actor"].clone())
    bad["pred_actor"][0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        matcher(bad, targets)
    with pytest.raises(ValueError, match=">= 0"):
        HungarianMatcher(cost_bbox=-1.0)
    with pytest.raises(ValueError, match="non-zero"):
        HungarianMatcher(0.0, 0.0, 0.0, 0.0)


def test_center_cost_is_the_cell_distance_and_breaks_ties_by_location():
    # A 1x2x2 grid: cell centres (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75).
    # Every token predicts the same box, so without the prior all tokens cost the same.
    box = torch.tensor([0.6, 0.3, 0.2, 0.2])
    outputs = {"pred_boxes": box.expand(1, 4, 4).clone(), "pred_actor": _actor_logits([0.5] * 4)[None],
               "token_grid": (1, 2, 2)}
    targets = [{"boxes": torch.tensor([[0.8, 0.7, 0.2, 0.2]]), "labels": torch.ones(1, 3)}]
    plain = HungarianMatcher(cost_actor=1.0, cost_bbox=5.0, cost_giou=2.0).cost_matrix(outputs, targets)
    assert torch.allclose(plain[0, :, 0], plain[0, 0, 0].expand(4))
    prior = HungarianMatcher(cost_actor=1.0, cost_bbox=5.0, cost_giou=2.0, cost_center=0.5)
    # Distances in cells (grid 2x2): |1.6 - c_x| + |1.4 - c_y| with c in {0.5, 1.5}.
    expected = torch.tensor([1.1 + 0.9, 0.1 + 0.9, 1.1 + 0.1, 0.1 + 0.1])
    assert torch.allclose(prior.cost_matrix(outputs, targets)[0, :, 0] - plain[0, :, 0], 0.5 * expected, atol=1e-6)
    pred_idx, tgt_idx = prior(outputs, targets)[0]
    assert pred_idx.tolist() == [3] and tgt_idx.tolist() == [0]

    with pytest.raises(KeyError, match="token_grid"):
        prior({k: v for k, v in outputs.items() if k != "token_grid"}, targets)
    with pytest.raises(ValueError, match="does not hold"):
        prior({**outputs, "token_grid": (1, 3, 2)}, targets)
    with pytest.raises(ValueError, match="must be >= 0"):
        HungarianMatcher(cost_center=-1.0)


def test_one_to_many_gives_each_actor_its_cheapest_distinct_tokens():
    # Two actors, 6 tokens, only the L1 box cost: tokens 0-2 lie 0, .01 and .03 from actor 0, tokens 3
    # and 4 lie 0 and .01 from actor 1, token 5 is halfway.
    boxes = torch.tensor([[[0.30, 0.5, 0.1, 0.2], [0.31, 0.5, 0.1, 0.2], [0.27, 0.5, 0.1, 0.2],
                           [0.70, 0.5, 0.1, 0.2], [0.71, 0.5, 0.1, 0.2], [0.50, 0.5, 0.1, 0.2]]])
    outputs = {"pred_boxes": boxes, "pred_actor": torch.zeros(1, 6, 2)}
    targets = [{"boxes": torch.tensor([[0.3, 0.5, 0.1, 0.2], [0.7, 0.5, 0.1, 0.2]])}]
    matcher = HungarianMatcher(cost_actor=0.0, cost_bbox=1.0, cost_giou=0.0)
    (pred_idx, tgt_idx), = matcher(outputs, targets, repeats=2)
    assert dict(zip(pred_idx.tolist(), tgt_idx.tolist())) == {0: 0, 1: 0, 3: 1, 4: 1}
    # Three copies each take all 6 tokens: token 2 goes to actor 0, token 5 to actor 1.
    (pred_idx, tgt_idx), = matcher(outputs, targets, repeats=3)
    assert pred_idx.tolist() == list(range(6)) and tgt_idx.tolist() == [0, 0, 0, 1, 1, 1]
    # More copies than tokens: N assignments, no error.
    (pred_idx, _), = matcher(outputs, targets, repeats=5)
    assert len(pred_idx) == 6
    # repeats=1 is the one-to-one matching.
    one_to_one = matcher(outputs, targets)[0]
    assert [t.tolist() for t in matcher(outputs, targets, repeats=1)[0]] == [t.tolist() for t in one_to_one]
    with pytest.raises(ValueError, match="repeats"):
        matcher(outputs, targets, repeats=0)


# ------------------------------------------------------------------------------------------------
# non-actor targets (loss.nonactor_boxes)


def test_non_actor_target_costs_minus_p_no_actor_hand_computed():
    """Two tokens on the same box as two targets, an actor and a non-actor: the boxes cannot tell them
    apart, the class term does. Token 0 says actor (0.9), token 1 no-actor (p_actor 0.2)."""
    box = [0.5, 0.5, 0.2, 0.4]
    outputs = {"pred_boxes": torch.tensor([[box, box]]), "pred_actor": _actor_logits([0.9, 0.2])[None]}
    targets = [{"boxes": torch.tensor([box, box]), "labels": torch.tensor([[1.0, 0.0], [0.0, 0.0]]),
                "is_actor": torch.tensor([True, False])}]
    matcher = HungarianMatcher(cost_actor=1.0, cost_bbox=5.0, cost_giou=2.0)
    cost = matcher.cost_matrix(outputs, targets)[0]
    # L1 0, GIoU 1 everywhere: cost = -p(target's class) - 2.
    expected = torch.tensor([[-0.9 - 2, -0.1 - 2], [-0.2 - 2, -0.8 - 2]])
    torch.testing.assert_close(cost, expected)
    (pred_idx, tgt_idx), = matcher(outputs, targets)
    assert pred_idx.tolist() == [0, 1] and tgt_idx.tolist() == [0, 1]  # the no-actor token takes the non-actor
    # Read as an actor (no is_actor), the second target would want token 0 as much as the first does.
    plain = matcher.cost_matrix(outputs, [{k: v for k, v in targets[0].items() if k != "is_actor"}])[0]
    torch.testing.assert_close(plain, torch.tensor([[-2.9, -2.9], [-2.2, -2.2]]))


def test_all_actor_is_actor_gives_the_costs_of_before_bit_for_bit():
    g = torch.Generator().manual_seed(7)
    outputs, targets = _random_case(g, batch=3, num_tokens=12, sizes=[2, 0, 4])
    matcher = HungarianMatcher(cost_action=1.0)
    flagged = [{**t, "is_actor": torch.ones(len(t["boxes"]), dtype=torch.bool)} for t in targets]
    assert torch.equal(matcher.cost_matrix(outputs, targets), matcher.cost_matrix(outputs, flagged))


def test_non_actor_target_has_every_other_term_of_an_actor():
    """Only the class term differs: cost(non-actor) - cost(actor) = cost_actor * (p_actor - p_no_actor)."""
    g = torch.Generator().manual_seed(3)
    outputs, targets = _random_case(g, batch=2, num_tokens=8, sizes=[3, 2])
    outputs["token_grid"] = (1, 2, 4)
    matcher = HungarianMatcher(cost_actor=2.0, cost_center=1.0)
    as_actor = matcher.cost_matrix(outputs, targets)
    flagged = [{**t, "is_actor": torch.tensor([False] + [True] * (len(t["boxes"]) - 1))} for t in targets]
    mixed = matcher.cost_matrix(outputs, flagged)
    p = outputs["pred_actor"].softmax(-1)
    diff = (mixed - as_actor).view(2, 8, 5)
    for b, col in ((0, 0), (1, 3)):
        torch.testing.assert_close(diff[b, :, col], 2.0 * (p[b, :, 0] - p[b, :, 1]))
    assert torch.equal(diff[:, :, [1, 2, 4]], torch.zeros(2, 8, 3))


def test_is_actor_of_the_wrong_length_is_refused():
    outputs = {"pred_boxes": torch.rand(1, 2, 4), "pred_actor": torch.zeros(1, 2, 2)}
    with pytest.raises(ValueError, match=r"is_actor'\] must be \[1\] bool"):
        HungarianMatcher()(outputs, [{"boxes": torch.rand(1, 4), "is_actor": torch.tensor([True, False])}])
