"""The set criterion of BMViT: Hungarian matching, then actor, box and action losses.

Adapted from DETR (facebookresearch/detr, models/detr.py, ``SetCriterion``); changes: a 2-way
actor/no-actor cross-entropy replaces the (K+1)-way class loss, a multi-label action loss (BCE or
sigmoid focal) on matched tokens, no auxiliary decoder losses (there is no decoder), matching
indices can be passed in, and persons without a trained class are non-actors (docs/design.md#actors).

Loss (docs/design.md#matching-and-loss; the paper's Eq. 3 is not available)::

    loss = w_actor * CE_actor + w_bbox * L1 + w_giou * (1 - GIoU) + w_action * L_action

- ``CE_actor``: 2-way cross-entropy over *all* candidate tokens; matched tokens target class 0
  (actor), the rest class 1 (no-actor) with weight ``eos_coef``. As in DETR it is the weighted mean
  over the tokens (divided by the sum of the per-token class weights), not divided by ``num_boxes``.
- ``L1``, ``1 - GIoU``: matched tokens only, summed over the box coordinates / boxes and divided by
  ``num_boxes``.
- ``L_action``: matched tokens only, BCE (or focal) *summed over the C classes* per box and divided
  by ``num_boxes``, i.e. a per-actor loss like DETR's box terms. A mean over classes (PySlowFast's
  ``BCELoss`` reduction) would make it ~C times smaller than the box terms; with the sum, weight 1
  puts it at the same order as ``5 * L1 + 2 * GIoU`` at the start of training.
- ``num_boxes``: ground-truth actors of the batch summed over all processes, divided by the world
  size (DDP averages gradients over processes), at least 1. So the box and action terms are the
  mean per actor over the global batch, whatever the split across processes.

Optional one-to-many auxiliary terms (``o2m_weight > 0``; not in the paper, off by default): H-DETR's
hybrid matching (Jia et al., CVPR 2023) trains a second, one-to-many branch next to the one-to-one
one, to give a set-prediction detector more positive samples per image. BMViT has no queries to
duplicate, so here the branch is a second matching of the *same* tokens in which every actor is
repeated ``o2m_repeats`` times; the box and action losses of those tokens are added as
``loss_bbox_o2m``, ``loss_giou_o2m``, ``loss_action_o2m`` (weights ``o2m_weight`` times the
one-to-one ones, divided by ``num_boxes * o2m_repeats``). The actor loss stays one-to-one, so only
one token per actor is trained to fire and inference stays NMS-free; the extra tokens only learn to
predict the box and actions of the actor next to them (docs/demo.md#what-was-tried-and-dropped).

Non-actor boxes (``nonactor_boxes=True``; the supplementary's Sec. 3 "additional bounding boxes",
off by default as in the paper's final model): the annotated people who are not actors (rows with
no positive class; ``is_actor`` False) join the matching as targets of their own. A token matched to
one is, for ``CE_actor``, exactly an unmatched token (class no-actor, weight ``eos_coef``); it gets
the L1 and GIoU terms of its person's box and no action term. ``num_boxes`` of the box terms then
counts every matched person (actors and non-actors), that of the action term the actors only. Off,
non-actor rows are left out of the matching and every loss is the one of before, bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.box_ops import box_cxcywh_to_xyxy, generalized_box_iou
from bmvit.distributed import get_world_size, mean_over_processes
from bmvit.matcher import HungarianMatcher, MatchIndices

ACTION_LOSSES: tuple[str, ...] = ("bce", "focal")


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (Lin et al., ICCV 2017), same shape as ``logits``.

    ``FL = alpha_t * (1 - p_t) ** gamma * BCE``, with ``p_t`` the probability given to the true
    label and ``alpha_t = alpha`` for positives, ``1 - alpha`` for negatives; ``alpha < 0``
    disables the balancing factor.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p = logits.sigmoid()
    p_true = p * targets + (1 - p) * (1 - targets)
    loss = bce * (1 - p_true) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


class SetCriterion(nn.Module):
    """Losses of BMViT for one batch.

    Args:
        matcher: assigns tokens to actors (``HungarianMatcher``).
        num_classes: C, the width of ``pred_actions`` and of the targets' ``labels``.
        eos_coef: weight of the no-actor class in the actor cross-entropy.
        weight_actor, weight_bbox, weight_giou, weight_action: weights of the four terms.
        action_loss: ``"bce"`` or ``"focal"`` (sigmoid focal with ``focal_alpha``, ``focal_gamma``).
        o2m_weight: weight of the one-to-many auxiliary box and action terms relative to the
            one-to-one ones (0 = off).
        o2m_repeats: tokens per actor in the one-to-many matching.
        nonactor_boxes: match non-actor people too and train their tokens' boxes (see the module
            docstring); off: they are left out of the matching.
    """

    def __init__(
        self,
        matcher: HungarianMatcher,
        num_classes: int,
        eos_coef: float = 0.1,
        weight_actor: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        weight_action: float = 1.0,
        action_loss: str = "bce",
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        o2m_weight: float = 0.0,
        o2m_repeats: int = 4,
        nonactor_boxes: bool = False,
    ) -> None:
        super().__init__()
        if action_loss not in ACTION_LOSSES:
            raise ValueError(f"action_loss must be one of {ACTION_LOSSES}, got {action_loss!r}")
        if not 0.0 < eos_coef <= 1.0:
            raise ValueError(f"eos_coef must be in (0, 1], got {eos_coef}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if o2m_weight < 0 or o2m_repeats < 1:
            raise ValueError(f"o2m_weight must be >= 0 and o2m_repeats >= 1, got {o2m_weight} and {o2m_repeats}")
        self.o2m_weight = float(o2m_weight)
        self.o2m_repeats = int(o2m_repeats)
        self.nonactor_boxes = bool(nonactor_boxes)
        self.matcher = matcher
        self.num_classes = num_classes
        self.action_loss = action_loss
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.weight_dict = {"loss_actor": weight_actor, "loss_bbox": weight_bbox, "loss_giou": weight_giou,
                            "loss_action": weight_action}
        negative = {k: v for k, v in self.weight_dict.items() if v < 0}
        if negative:
            raise ValueError(f"SetCriterion weights must be >= 0, got {negative}")
        if self.o2m_weight > 0:
            self.weight_dict.update({f"{name}_o2m": self.o2m_weight * self.weight_dict[name]
                                     for name in ("loss_bbox", "loss_giou", "loss_action")})
        self.register_buffer("actor_class_weight", torch.tensor([1.0, eos_coef]), persistent=False)

    @torch.no_grad()
    def match(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], repeats: int = 1) -> MatchIndices:
        """Hungarian matching of tokens to people; indices refer to the rows of ``targets``.

        A target row whose ``labels`` has no positive class is a person but not an actor. By default
        it is left out of matching, so no token is trained to detect it (its tokens stay "no-actor").
        With ``nonactor_boxes`` it is matched like an actor, its class cost that of "no-actor"
        (``HungarianMatcher``), so that one token learns its box. ``repeats > 1`` gives each
        matched person that many tokens (the one-to-many matching).
        """
        self._check(outputs, targets)
        if self.nonactor_boxes:
            rows = [torch.arange(len(t["labels"]), device=t["labels"].device) for t in targets]
            matched = [{"boxes": t["boxes"], "labels": t["labels"], "is_actor": _is_actor(t["labels"])}
                       for t in targets]
        else:
            rows = [_actor_rows(t["labels"]) for t in targets]
            matched = [{k: t[k][r] for k in ("boxes", "labels")} for t, r in zip(targets, rows)]
        indices = self.matcher(outputs, matched, repeats=repeats)
        return [(pred_idx, r.cpu()[tgt_idx]) for (pred_idx, tgt_idx), r in zip(indices, rows)]

    def forward(
        self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: MatchIndices | None = None
    ) -> dict[str, Tensor]:
        """Compute the losses.

        Args:
            outputs: ``pred_boxes [B, N, 4]`` normalised cxcywh, ``pred_actor [B, N, 2]`` logits
                (index 0 = actor), ``pred_actions [B, N, C]`` logits.
            targets: ``B`` dicts with ``boxes [M_b, 4]`` normalised cxcywh and ``labels [M_b, C]``
                multi-hot float (an all-zero row: a person who is not an actor), optionally
                ``is_actor [M_b]`` bool (which must then say the same). ``M_b`` may be 0.
            indices: the result of ``self.match(outputs, targets)`` when the caller already has it
                (e.g. to log the matching); computed here otherwise.

        Returns:
            Weighted ``loss_actor``, ``loss_bbox``, ``loss_giou``, ``loss_action`` and, when
            ``o2m_weight > 0``, ``loss_bbox_o2m``, ``loss_giou_o2m``, ``loss_action_o2m`` (unweighted =
            weighted / ``self.weight_dict[name]``), and their sum ``loss``, all scalar tensors.
        """
        if indices is None:
            indices = self.match(outputs, targets)
        else:
            self._check(outputs, targets)
        device = outputs["pred_boxes"].device
        num_boxes, num_actors = self._num_boxes(targets, device)
        actor_indices = self._actor_matches(indices, targets)
        batch_idx, token_idx = _token_index(actor_indices, device)

        losses = {
            "loss_actor": self._actor_loss(outputs["pred_actor"], batch_idx, token_idx),
            **self._matched_losses(outputs, targets, indices, actor_indices, num_boxes, num_actors),
        }
        if self.o2m_weight > 0:
            o2m_indices = self.match(outputs, targets, repeats=self.o2m_repeats)
            o2m = self._matched_losses(outputs, targets, o2m_indices, self._actor_matches(o2m_indices, targets),
                                       num_boxes * self.o2m_repeats, num_actors * self.o2m_repeats)
            losses.update({f"{name}_o2m": value for name, value in o2m.items()})
        losses = {name: self.weight_dict[name] * value for name, value in losses.items()}
        losses["loss"] = sum(losses.values())
        return losses

    def _matched_losses(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]], indices: MatchIndices,
                        actor_indices: MatchIndices, num_boxes: float, num_actors: float) -> dict[str, Tensor]:
        """Unweighted L1 and GIoU terms of every matched token (over ``num_boxes``) and action term of
        the tokens matched to actors (over ``num_actors``)."""
        device = outputs["pred_boxes"].device
        batch_idx, token_idx = _token_index(indices, device)
        src_boxes = outputs["pred_boxes"][batch_idx, token_idx]  # [K, 4], K matched tokens
        batch_idx, token_idx = _token_index(actor_indices, device)
        src_actions = outputs["pred_actions"][batch_idx, token_idx]  # [K_actor, C]
        return {
            **self._box_losses(src_boxes, _matched(targets, indices, "boxes"), num_boxes),
            "loss_action": self._action_loss(src_actions, _matched(targets, actor_indices, "labels"), num_actors),
        }

    def _actor_loss(self, pred_actor: Tensor, batch_idx: Tensor, token_idx: Tensor) -> Tensor:
        target_classes = torch.ones(pred_actor.shape[:2], dtype=torch.int64, device=pred_actor.device)
        target_classes[batch_idx, token_idx] = 0
        per_token = F.cross_entropy(pred_actor.float().transpose(1, 2), target_classes, reduction="none")
        weights = self.actor_class_weight.to(per_token.device)[target_classes]
        # The weighted mean over the tokens of the *global* batch: each process divides by the
        # all-reduced weight sum over the world size, since DDP then averages the gradients.
        return (weights * per_token).sum() / mean_over_processes(weights.sum().detach())

    def _box_losses(self, src_boxes: Tensor, tgt_boxes: Tensor, num_boxes: float) -> dict[str, Tensor]:
        # Empty matchings still go through these ops, so every head stays in the autograd graph
        # (with zero gradient): DDP expects the same parameters to get gradients on every rank.
        src_boxes, tgt_boxes = src_boxes.float(), tgt_boxes.to(src_boxes.device, torch.float32)
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes)).diagonal()
        return {"loss_bbox": loss_bbox, "loss_giou": (1 - giou).sum() / num_boxes}

    def _action_loss(self, src_logits: Tensor, tgt_labels: Tensor, num_boxes: float) -> Tensor:
        src_logits, tgt_labels = src_logits.float(), tgt_labels.to(src_logits.device, torch.float32)
        if self.action_loss == "focal":
            loss = sigmoid_focal_loss(src_logits, tgt_labels, self.focal_alpha, self.focal_gamma)
        else:
            loss = F.binary_cross_entropy_with_logits(src_logits, tgt_labels, reduction="none")
        return loss.sum() / num_boxes

    def _num_boxes(self, targets: list[dict[str, Tensor]], device: torch.device) -> tuple[float, float]:
        """The normalisers ``(num_boxes, num_actors)``: matched people (with ``nonactor_boxes``: every
        person, else the actors) and actors, each averaged over processes (``boxes_per_process``)."""
        num_actors = boxes_per_process(sum(int(_actor_rows(t["labels"]).numel()) for t in targets), device)
        if not self.nonactor_boxes:
            return num_actors, num_actors
        return boxes_per_process(sum(len(t["labels"]) for t in targets), device), num_actors

    def _actor_matches(self, indices: MatchIndices, targets: list[dict[str, Tensor]]) -> MatchIndices:
        """The matched pairs whose target is an actor: all of them unless non-actors were matched too
        (``nonactor_boxes``), which spares the default step a pass over the targets."""
        return _actor_pairs(indices, targets) if self.nonactor_boxes else indices

    def _check(self, outputs: dict[str, Tensor], targets: list[dict[str, Tensor]]) -> None:
        if "pred_actions" not in outputs:
            raise KeyError(f"model outputs lack 'pred_actions'; got keys {sorted(outputs)}")
        if outputs["pred_actions"].shape[-1] != self.num_classes:
            raise ValueError(f"pred_actions has {outputs['pred_actions'].shape[-1]} classes, "
                             f"the criterion was built for {self.num_classes}")
        for b, target in enumerate(targets):
            for key in ("boxes", "labels"):
                if key not in target:
                    raise KeyError(f"targets[{b}] has no {key!r}; got keys {sorted(target)}")
            boxes, labels = target["boxes"], target["labels"]
            if boxes.ndim != 2 or labels.ndim != 2 or len(boxes) != len(labels) or labels.shape[1] != self.num_classes:
                raise ValueError(f"targets[{b}] must have boxes [M, 4] and labels [M, {self.num_classes}], "
                                 f"got boxes {tuple(boxes.shape)} and labels {tuple(labels.shape)}")
            if "is_actor" in target and not torch.equal(target["is_actor"].bool().cpu(), _is_actor(labels).cpu()):
                raise ValueError(f"targets[{b}]['is_actor'] must be True exactly where a labels row has a positive "
                                 "class (an actor); got a person marked otherwise")


def _is_actor(labels: Tensor) -> Tensor:
    """``[M]`` bool: which rows of a multi-hot ``[M, C]`` label matrix are actors (at least one positive
    class); the others are people who are not actors."""
    return labels.sum(-1) > 0


def _actor_rows(labels: Tensor) -> Tensor:
    """Indices of the rows of a multi-hot ``[M, C]`` label matrix with at least one positive class."""
    if labels.ndim != 2:
        raise ValueError(f"target labels must be [M, C] multi-hot, got {tuple(labels.shape)}")
    return torch.nonzero(_is_actor(labels)).flatten()


def _actor_pairs(indices: MatchIndices, targets: list[dict[str, Tensor]]) -> MatchIndices:
    """The pairs of ``indices`` whose target row is an actor (a positive class)."""
    out = []
    for (pred_idx, tgt_idx), t in zip(indices, targets):
        keep = _is_actor(t["labels"]).cpu()[tgt_idx]
        out.append((pred_idx[keep], tgt_idx[keep]))
    return out


def _token_index(indices: MatchIndices, device: torch.device) -> tuple[Tensor, Tensor]:
    """Batch and token indices ``([K], [K])`` of the matched tokens, concatenated over the batch."""
    batch_idx = torch.cat([torch.full_like(pred, b) for b, (pred, _) in enumerate(indices)]).to(device)
    return batch_idx, torch.cat([pred for pred, _ in indices]).to(device)


def _matched(targets: list[dict[str, Tensor]], indices: MatchIndices, key: str) -> Tensor:
    """``targets[b][key]`` rows in matching order, concatenated over the batch."""
    return torch.cat([t[key][tgt_idx.to(t[key].device)] for t, (_, tgt_idx) in zip(targets, indices)])


def boxes_per_process(count: int, device: torch.device) -> float:
    """The normaliser of the box losses: this process's ``count`` averaged over processes (DDP then
    averages the gradients, so the loss is a mean over the boxes of the global batch), at least one
    box in the whole batch so that a batch without actors divides by something."""
    return max(float(mean_over_processes(torch.tensor(float(count), device=device))), 1.0 / get_world_size())
