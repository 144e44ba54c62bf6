"""Hungarian matching between a clip's candidate tokens and the actors of its key frame.

Adapted from DETR (facebookresearch/detr, models/matcher.py): one cost matrix for the whole batch,
split per sample, solved with SciPy's ``linear_sum_assignment``. Changes: the class cost is the
actor probability of a 2-way actor/no-actor head, targets carry multi-hot action labels, an
optional multi-label action cost, an optional location prior (``cost_center``), targets that may be
non-actor people (``is_actor``; ``loss.nonactor_boxes``), and input checks with clear errors.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from bmvit.box_ops import box_cxcywh_to_xyxy, generalized_box_iou, grid_cell_centres

MatchIndices = list[tuple[Tensor, Tensor]]


class HungarianMatcher(nn.Module):
    """One-to-one assignment of candidate tokens to ground-truth actors (and people), per sample.

    Cost of pairing token i with actor j (lower is better)::

        cost_actor * (-p_actor[i]) + cost_bbox * L1(box_i, box_j) + cost_giou * (-GIoU(box_i, box_j))
            + cost_action * (-mean_{c in labels_j} sigmoid(action_logit[i, c]))
            + cost_center * (|cx_j - ref_x_i| * W + |cy_j - ref_y_i| * H)

    ``p_actor`` is the softmax probability of class 0 (actor); L1 is on normalised cxcywh; GIoU on
    xyxy. The action cost (default off, docs/design.md#matching-and-loss) rewards tokens whose action probabilities are
    high on the actor's positive classes; the mean (not the sum) keeps it in [-1, 0] whatever the
    number of labels, like the other probability term. An actor with no positive class adds 0.

    Non-actor targets (``loss.nonactor_boxes``, the supplementary's "additional bounding boxes"): a
    target whose ``is_actor`` is False is a person the criterion trains as *no-actor*. Its class term
    is ``cost_actor * (-p_no_actor[i])``, the probability of the class it will be trained towards,
    as DETR's class cost uses the target's class: the token that already says "no actor" there is
    the natural match, and a token firing on a nearby actor is not pulled off it. Every other term
    is the one of an actor (its action term is 0: it has no positive class). Targets without
    ``is_actor`` are all actors, and then the costs are those of before, bit for bit.

    The centre cost (default off) is a location prior: ``ref_i`` is the centre of token i's cell in
    the ``H x W`` key-frame grid (``outputs["token_grid"]``), so the distance is in grid cells and
    does not depend on what the model predicts. It makes the token whose cell holds an actor's
    centre the natural match, so that the same token keeps its actor from step to step while the
    boxes are still poor (docs/demo.md#keeping-the-match-on-the-person).

    Args:
        cost_actor, cost_bbox, cost_giou, cost_action, cost_center: weights of the terms (all >= 0,
            one > 0).
    """

    def __init__(
        self, cost_actor: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, cost_action: float = 0.0,
        cost_center: float = 0.0,
    ) -> None:
        super().__init__()
        weights = {"cost_actor": cost_actor, "cost_bbox": cost_bbox, "cost_giou": cost_giou, "cost_action": cost_action,
                   "cost_center": cost_center}
        negative = {k: v for k, v in weights.items() if v < 0}
        if negative:
            raise ValueError(f"HungarianMatcher weights must be >= 0, got {negative}")
        if not any(weights.values()):
            raise ValueError("HungarianMatcher needs at least one non-zero cost weight")
        self.cost_actor = float(cost_actor)
        self.cost_bbox = float(cost_bbox)
        self.cost_giou = float(cost_giou)
        self.cost_action = float(cost_action)
        self.cost_center = float(cost_center)

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], repeats: int = 1) -> MatchIndices:
        """Match every sample of the batch.

        Args:
            outputs: ``pred_boxes [B, N, 4]`` normalised cxcywh, ``pred_actor [B, N, 2]`` logits
                (index 0 = actor), and (when ``cost_action > 0``) ``pred_actions [B, N, C]`` logits.
            targets: ``B`` dicts with ``boxes [M_b, 4]`` normalised cxcywh and ``labels [M_b, C]``
                multi-hot float (``labels`` is only read when ``cost_action > 0``), and optionally
                ``is_actor [M_b]`` bool (False: a non-actor person; absent: all actors). ``M_b`` may be 0.
            repeats: how many tokens each actor gets. 1 is the one-to-one matching of BMViT; ``k > 1``
                is the one-to-many matching of H-DETR's hybrid scheme (Jia et al., CVPR 2023): every
                actor is repeated ``k`` times and the same Hungarian solver assigns distinct tokens to
                the copies, i.e. each actor gets its ``k`` cheapest tokens that no other actor wants more.

        Returns:
            ``B`` pairs ``(pred_idx, tgt_idx)`` of int64 CPU tensors of length ``min(N, repeats * M_b)``:
            token ``pred_idx[k]`` is matched to actor ``tgt_idx[k]``; ``pred_idx`` is increasing.
        """
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        cost = self.cost_matrix(outputs, targets)  # [B, N, sum M_b]
        sizes = [len(t["boxes"]) for t in targets]
        indices = []
        for b, cost_b in enumerate(cost.split(sizes, dim=-1)):
            pred_idx, tgt_idx = linear_sum_assignment(cost_b[b].repeat(1, repeats).numpy())
            indices.append((torch.as_tensor(pred_idx, dtype=torch.int64),
                            torch.as_tensor(tgt_idx, dtype=torch.int64) % max(sizes[b], 1)))
        return indices

    def cost_matrix(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> Tensor:
        """Costs of every token of the batch against every actor of the batch: ``[B, N, sum M_b]`` (CPU, float32).

        Only the blocks ``[b, :, actors of sample b]`` are used by ``forward``; computing all of
        them at once is one large matrix product instead of B small ones.
        """
        _check_inputs(outputs, targets, need_actions=self.cost_action > 0)
        batch, num_tokens = outputs["pred_boxes"].shape[:2]
        pred_boxes = outputs["pred_boxes"].flatten(0, 1).float()  # [B*N, 4]
        tgt_boxes = torch.cat([t["boxes"] for t in targets]).to(pred_boxes)  # [sum M, 4]
        p_class = outputs["pred_actor"].flatten(0, 1).float().softmax(-1)  # [B*N, 2]: actor, no-actor
        tgt_class = _target_classes(targets, p_class.device)  # [sum M]: 0 actor, 1 non-actor

        cost = self.cost_actor * -p_class[:, tgt_class]
        if self.cost_bbox:
            cost = cost + self.cost_bbox * torch.cdist(pred_boxes, tgt_boxes, p=1)
        if self.cost_giou:
            giou = generalized_box_iou(box_cxcywh_to_xyxy(pred_boxes), box_cxcywh_to_xyxy(tgt_boxes))
            cost = cost - self.cost_giou * giou
        if self.cost_action:
            cost = cost + self.cost_action * _action_cost(outputs["pred_actions"].flatten(0, 1).float(), targets)
        if self.cost_center:
            cost = cost + self.cost_center * _center_cost(outputs, batch, tgt_boxes)
        if not bool(torch.isfinite(cost).all()):
            raise ValueError("HungarianMatcher: the cost matrix has NaN or inf entries (non-finite model outputs?)")
        return cost.view(batch, num_tokens, len(tgt_boxes)).cpu()


def _target_classes(targets: list[dict[str, Tensor]], device: torch.device) -> Tensor:
    """``[sum M]`` int64: the actor head's class each target is trained towards, 0 actor, 1 no-actor."""
    classes = [(~t["is_actor"].to(device, torch.bool)).long() if "is_actor" in t
               else torch.zeros(len(t["boxes"]), dtype=torch.int64, device=device) for t in targets]
    return torch.cat(classes) if classes else torch.zeros(0, dtype=torch.int64, device=device)


def _center_cost(outputs: dict[str, Tensor], batch: int, tgt_boxes: Tensor) -> Tensor:
    """``[B*N, sum M]``: L1 distance, in grid cells, from each token's cell centre to each box centre."""
    if "token_grid" not in outputs:
        raise KeyError("cost_center needs outputs['token_grid'] (T, H, W) of the candidate tokens")
    t, h, w = (int(v) for v in outputs["token_grid"])
    num_tokens = outputs["pred_boxes"].shape[1]
    if t * h * w != num_tokens:
        raise ValueError(f"token_grid {(t, h, w)} does not hold the {num_tokens} candidate tokens")
    cells = tgt_boxes.new_tensor([w, h])  # normalised -> cell units
    ref = grid_cell_centres(h, w, tgt_boxes.device).to(tgt_boxes).repeat(t * batch, 1) * cells  # [B*N, 2]
    return torch.cdist(ref, tgt_boxes[:, :2] * cells, p=1)


def _action_cost(pred_action_logits: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """``[B*N, C]`` logits -> ``[B*N, sum M]``: minus the mean probability over each actor's positive classes."""
    labels = torch.cat([t["labels"] for t in targets]).to(pred_action_logits)  # [sum M, C]
    mean_prob = pred_action_logits.sigmoid() @ labels.T / labels.sum(-1).clamp(min=1)
    return -mean_prob


def _check_inputs(outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], need_actions: bool) -> None:
    """Clear errors for the mistakes a caller can make; the shapes are checked once, here."""
    required = ["pred_boxes", "pred_actor"] + (["pred_actions"] if need_actions else [])
    missing = [k for k in required if k not in outputs]
    if missing:
        raise KeyError(f"model outputs lack {missing}; got keys {sorted(outputs)}")
    boxes = outputs["pred_boxes"]
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"pred_boxes must be [B, N, 4], got {tuple(boxes.shape)}")
    actor_shape = tuple(outputs["pred_actor"].shape)
    if actor_shape != (*boxes.shape[:2], 2):
        raise ValueError(f"pred_actor must be [B, N, 2] = {[*boxes.shape[:2], 2]}, got {actor_shape}")
    if len(targets) != boxes.shape[0]:
        raise ValueError(f"got {len(targets)} targets for a batch of {boxes.shape[0]} clips")
    num_classes = outputs["pred_actions"].shape[-1] if "pred_actions" in outputs else None
    for b, target in enumerate(targets):
        tgt_boxes = target.get("boxes")
        if tgt_boxes is None or tgt_boxes.ndim != 2 or tgt_boxes.shape[-1] != 4:
            shape = None if tgt_boxes is None else tuple(tgt_boxes.shape)
            raise ValueError(f"targets[{b}]['boxes'] must be [M, 4] cxcywh, got {shape}")
        is_actor = target.get("is_actor")
        if is_actor is not None and (is_actor.ndim != 1 or len(is_actor) != len(tgt_boxes)):
            raise ValueError(f"targets[{b}]['is_actor'] must be [{len(tgt_boxes)}] bool, got {tuple(is_actor.shape)}")
        labels = target.get("labels")
        if labels is None:
            if need_actions:
                raise KeyError(f"targets[{b}] has no 'labels' (needed by the action cost)")
            continue
        wrong_classes = num_classes is not None and labels.shape[-1] != num_classes
        if labels.ndim != 2 or labels.shape[0] != tgt_boxes.shape[0] or wrong_classes:
            raise ValueError(f"targets[{b}]['labels'] must be [{tgt_boxes.shape[0]}, {num_classes or 'C'}] multi-hot, "
                             f"got {tuple(labels.shape)}")
