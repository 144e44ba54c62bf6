"""From model logits to scored detections: the only place with softmax, sigmoid, threshold and top-k.

Shared by evaluation and the predictor, so both score tokens the same way (docs/design.md#inference):

- ``p_actor = softmax(pred_actor)[..., 0]``; a token is kept when ``p_actor > threshold``
  (the paper's p(alpha) > theta; supplementary Fig. 3).
- ``score(box, class) = p_actor * sigmoid(pred_actions[class])``: the chance that the token is an
  actor *and* does the action, so a confident action on an unlikely actor ranks low.
- No NMS by default: one-to-one matching trains duplicate tokens towards "no-actor", and the paper
  mentions none. ``nms_iou > 0`` adds class-agnostic greedy NMS over the kept tokens, an option for
  models that still put near-duplicate tokens on a person (docs/demo.md#where-the-map-is-lost-and-nms).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bmvit.box_ops import box_cxcywh_to_xyxy, box_iou


class PostProcess(nn.Module):
    """Turn ``BMViT`` outputs into per-clip detections.

    Args:
        threshold: keep tokens whose actor probability is strictly greater than this, in [0, 1).
        top_k: keep at most this many tokens per clip (the highest actor scores); ``None`` = all.
        nms_iou: 0 = no NMS (the method's default); otherwise a kept token is dropped when its box
            overlaps a more confident kept token's at IoU > ``nms_iou``, in (0, 1). Before ``top_k``.
    """

    def __init__(self, threshold: float = 0.3, top_k: int | None = None, nms_iou: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
        if not 0.0 <= nms_iou < 1.0:
            raise ValueError(f"nms_iou must be in [0, 1) (0 = no NMS), got {nms_iou}")
        self.threshold = threshold
        self.top_k = top_k
        self.nms_iou = nms_iou

    @torch.no_grad()
    def forward(self, outputs: dict[str, Tensor]) -> list[dict[str, Tensor]]:
        """Score, threshold and sort the candidate tokens of each clip.

        Args:
            outputs: ``pred_boxes [B, N, 4]`` normalised cxcywh, ``pred_actor [B, N, 2]`` logits
                (index 0 = actor), ``pred_actions [B, N, C]`` logits.

        Returns:
            ``B`` dicts, tokens sorted by decreasing actor score (ties keep token order):
            ``token_indices [K]`` int64 (index into the N candidates), ``boxes_xyxy [K, 4]``
            normalised to the key frame and clamped to [0, 1], ``actor_scores [K]`` = p_actor,
            ``action_scores [K, C]`` = p_actor * sigmoid(action logits). All float32.
        """
        missing = [k for k in ("pred_boxes", "pred_actor", "pred_actions") if k not in outputs]
        if missing:
            raise KeyError(f"model outputs lack {missing}; got keys {sorted(outputs)}")
        p_actor = outputs["pred_actor"].float().softmax(-1)[..., 0]  # [B, N]
        action_scores = p_actor[..., None] * outputs["pred_actions"].float().sigmoid()  # [B, N, C]
        boxes_xyxy = box_cxcywh_to_xyxy(outputs["pred_boxes"].float()).clamp(0.0, 1.0)  # [B, N, 4]
        results = []
        for b in range(p_actor.shape[0]):
            keep = torch.nonzero(p_actor[b] > self.threshold).flatten()
            order = torch.sort(p_actor[b, keep], descending=True, stable=True).indices
            keep = keep[order]
            if self.nms_iou > 0:
                keep = keep[greedy_nms(boxes_xyxy[b, keep], self.nms_iou)]
            keep = keep[: self.top_k]
            results.append({
                "token_indices": keep,
                "boxes_xyxy": boxes_xyxy[b, keep],
                "actor_scores": p_actor[b, keep],
                "action_scores": action_scores[b, keep],
            })
        return results


def greedy_nms(boxes_xyxy: Tensor, iou_threshold: float) -> Tensor:
    """Indices (int64, ascending) of the boxes that survive greedy NMS.

    Args:
        boxes_xyxy: ``[K, 4]`` boxes sorted by decreasing score, any consistent coordinates.
        iou_threshold: a box is dropped when its IoU with an earlier surviving box is above this.
    """
    overlaps = box_iou(boxes_xyxy, boxes_xyxy) > iou_threshold  # [K, K]
    index = torch.arange(len(boxes_xyxy), device=boxes_xyxy.device)
    dropped = torch.zeros(len(boxes_xyxy), dtype=torch.bool, device=boxes_xyxy.device)
    for i in range(len(boxes_xyxy)):
        if not dropped[i]:
            dropped |= overlaps[i] & (index > i)
    return torch.nonzero(~dropped).flatten()


def outputs_to_host(outputs: dict[str, Any]) -> dict[str, Any]:
    """Model outputs on the host: every floating tensor (also inside lists, tuples and dicts) as float32
    CPU, other tensors on the CPU, anything else as it is.

    One ``.float().cpu()`` per tensor of the whole batch: each device-to-host copy waits for the
    device, so copying once per batch rather than once per key frame keeps the waits to one.
    """

    def move(value: Any) -> Any:
        if torch.is_tensor(value):
            return value.float().cpu() if value.is_floating_point() else value.cpu()
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)) and any(torch.is_tensor(v) or isinstance(v, (dict, list, tuple))
                                                    for v in value):
            return type(value)(move(v) for v in value)
        return value

    return {k: move(v) for k, v in outputs.items()}
