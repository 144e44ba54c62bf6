"""Per-token prediction heads of BMViT (supplementary Fig. 1a: three parallel "MLP(512)" heads).

Every candidate token (after the 512-d projection) gets a box, actor/no-actor logits and
multi-label action logits. The heads return logits (boxes are the one exception: a sigmoid maps
them to normalised ``cxcywh``, the model-output contract of DESIGN.md); probabilities, thresholds
and top-k live in ``bmvit.postprocess``.

Initialisation choices (the paper is silent; each one only sets the starting point):

- Actor head: the bias of its last layer makes ``p(actor) = softmax(logits)[0]`` start at
  ``prior_prob`` (0.01, the focal-loss prior of Lin et al. 2017), because nearly all of the 256
  tokens of a clip are non-actors; starting at p = 0.5 would spend the first steps unlearning that.
- Action head: the same prior on every class's sigmoid (AVA has ~1-3 positives out of 80 classes).
- Box head: the last layer is zero-initialised, so every token's first box is its reference box
  (see ``token_reference_logits``): the centre of the token's own grid cell with a person-sized
  extent. The MLP then learns an offset in logit space. This gives every token a distinct
  spatial identity from step 0, so Hungarian matching pairs people with nearby tokens instead of
  arbitrary ones; MViTv2 has only relative position embeddings, so the tokens themselves carry
  little absolute position. ``box_reference="none"`` drops the reference (plain sigmoid(MLP)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Width and height (normalised) of every token's initial box: a rough standing person in a
# full-frame AVA key frame resized to a square. Only the starting point of training.
INIT_BOX_WH: tuple[float, float] = (0.25, 0.5)

BOX_REFERENCES: tuple[str, ...] = ("token_center", "none")


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between them (none after the last).

    Input ``[..., in_dim]`` -> output ``[..., out_dim]``; hidden layers are ``hidden_dim`` wide.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"MLP needs num_layers >= 1, got {num_layers}")
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:]))

    @property
    def last(self) -> nn.Linear:
        return self.layers[-1]

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def token_reference_logits(grid_thw: tuple[int, int, int], device: torch.device | None = None) -> Tensor:
    """Reference boxes of a token grid, in logit space: ``[T*H*W, 4]`` (``cxcywh`` after a sigmoid).

    Token ``(t, h, w)`` (row-major flattening, as the model flattens its candidates) gets the centre
    of cell ``(h, w)`` of an ``H x W`` partition of the frame, ``((w + 0.5) / W, (h + 0.5) / H)``,
    and the extent ``INIT_BOX_WH``; ``t`` does not change the reference.
    """
    t, h, w = grid_thw
    cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
    cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
    cy, cx = torch.meshgrid(cy, cx, indexing="ij")
    centres = torch.stack((cx, cy), dim=-1).reshape(1, h * w, 2).expand(t, h * w, 2).reshape(t * h * w, 2)
    wh = torch.tensor(INIT_BOX_WH, device=device).expand(t * h * w, 2)
    boxes = torch.cat((centres, wh), dim=-1)
    return torch.log(boxes) - torch.log1p(-boxes)


class DetectionHeads(nn.Module):
    """The box, actor and action heads, applied in parallel to each candidate token.

    Args:
        in_dim: width of the projected tokens (512 in BMViT).
        num_classes: number of action classes C.
        hidden_dim: hidden width of every head.
        box_layers, actor_layers, action_layers: linear layers per head (DESIGN.md: 3, 2, 2).
        box_reference: ``"token_center"`` (box = sigmoid(MLP + reference logit of the token's cell))
            or ``"none"`` (box = sigmoid(MLP)).
        prior_prob: starting probability of the actor class and of every action class.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 512,
        box_layers: int = 3,
        actor_layers: int = 2,
        action_layers: int = 2,
        box_reference: str = "token_center",
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        if box_reference not in BOX_REFERENCES:
            raise ValueError(f"box_reference must be one of {BOX_REFERENCES}, got {box_reference!r}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.box_reference = box_reference
        self.box = MLP(in_dim, hidden_dim, 4, box_layers)
        self.actor = MLP(in_dim, hidden_dim, 2, actor_layers)
        self.action = MLP(in_dim, hidden_dim, num_classes, action_layers)
        self._init_last_layers(prior_prob)

    @torch.no_grad()
    def _init_last_layers(self, prior_prob: float) -> None:
        nn.init.zeros_(self.box.last.weight)
        nn.init.zeros_(self.box.last.bias)
        # softmax([b, 0])[0] = prior  <=>  b = logit(prior).
        self.actor.last.bias.copy_(torch.tensor([_logit(prior_prob), 0.0]))
        nn.init.constant_(self.action.last.bias, _logit(prior_prob))

    def forward(self, tokens: Tensor, grid_thw: tuple[int, int, int]) -> dict[str, Tensor]:
        """Predict per token.

        Args:
            tokens: ``[B, N, in_dim]`` candidate tokens, flattened row-major from ``grid_thw``.
            grid_thw: the ``(T, H, W)`` grid the ``N = T*H*W`` tokens come from.

        Returns:
            ``pred_boxes [B, N, 4]`` normalised cxcywh in (0, 1), ``pred_actor [B, N, 2]`` logits
            (index 0 = actor), ``pred_actions [B, N, C]`` logits.
        """
        box_logits = self.box(tokens)
        if self.box_reference == "token_center":
            box_logits = box_logits + token_reference_logits(grid_thw, tokens.device).to(box_logits.dtype)
        return {
            "pred_boxes": box_logits.sigmoid(),
            "pred_actor": self.actor(tokens),
            "pred_actions": self.action(tokens),
        }
