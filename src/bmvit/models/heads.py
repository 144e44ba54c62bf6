"""Per-token prediction heads of BMViT (supplementary Fig. 1a: three parallel "MLP(512)" heads).

Every candidate token (after the 512-d projection) gets a box, actor/no-actor logits and
multi-label action logits. The heads return logits (boxes are the one exception: a sigmoid maps
them to normalised ``cxcywh``, the model-output contract of docs/design.md#contracts); probabilities, thresholds
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
- ``box_reference="token_local"`` goes further: the box centre stays within ``local_range`` grid
  cells of the token's own cell centre (``centre = reference + range * tanh(MLP)``), the extent is
  free as above. With the unbounded offset of ``token_center``, a model trained from scratch
  learns one shared offset for all tokens within a few hundred steps; every token can then
  predict any person's box, the matched token drifts away from the person (in our synthetic runs
  the share of actors matched to the token of their own cell fell from 0.40 to 0.001) and the
  actor head has nothing consistent to learn. Bounding the offset (together with the matcher's
  ``cost_center``) keeps the match on the person (docs/demo.md#keeping-the-match-on-the-person).

The ViT-B variant (supplementary Fig. 1b) replaces the action MLP with
``CrossAttentionActionHead``: each candidate token reads all the clip's tokens before it is
classified (``action_head="cross_attention"``).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bmvit.box_ops import grid_cell_centres
from bmvit.models.backbones.layers import Mlp

# Width and height (normalised) of every token's initial box: a rough standing person in a
# full-frame AVA key frame resized to a square. Only the starting point of training.
INIT_BOX_WH: tuple[float, float] = (0.25, 0.5)

BOX_REFERENCES: tuple[str, ...] = ("token_center", "token_local", "none")

ACTION_HEADS: tuple[str, ...] = ("mlp", "cross_attention")


def without_autocast(x: Tensor) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``x``'s device (nothing to switch off on, e.g., ``meta``).

    The projection and the heads run in it, in fp32 under a bf16 autocast: they cost well under 1%
    of the model's FLOPs, while bf16's 8-bit significand would put a box coordinate near 1 on a
    grid of 1/256 (a pixel at 256 px) before the box losses and the matching costs compare it.
    """
    device = x.device.type
    if torch.amp.is_autocast_available(device):
        return torch.autocast(device_type=device, enabled=False)
    return contextlib.nullcontext()


def _head_mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> Mlp:
    """A head's ``Mlp``: ReLU between layers, no dropout, its layers stored as ``layers.{i}`` (DETR's layout,
    which every bmvit checkpoint's head keys follow)."""
    return Mlp(in_dim, hidden_dim, out_dim, num_layers, activation="relu", param_names="layers")


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def token_reference_logits(grid_thw: tuple[int, int, int], device: torch.device | None = None) -> Tensor:
    """Reference boxes of a token grid, in logit space: ``[T*H*W, 4]`` (``cxcywh`` after a sigmoid).

    Token ``(t, h, w)`` (row-major flattening, as the model flattens its candidates) gets the centre
    of cell ``(h, w)`` of an ``H x W`` partition of the frame, ``((w + 0.5) / W, (h + 0.5) / H)``,
    and the extent ``INIT_BOX_WH``; ``t`` does not change the reference.
    """
    t, h, w = grid_thw
    centres = grid_cell_centres(h, w, device).repeat(t, 1)
    wh = torch.tensor(INIT_BOX_WH, device=device).expand(t * h * w, 2)
    boxes = torch.cat((centres, wh), dim=-1)
    return torch.log(boxes) - torch.log1p(-boxes)


class CrossAttentionActionHead(nn.Module):
    """The action branch of BMViT-ViT-B (supplementary Fig. 1b: MHCA(768), MLP(3072), MLP(768) -> C).

    The candidate tokens (the key-frame slice) are the queries; all ``T'*H'*W'`` tokens of the
    clip are the keys and values, so each candidate gathers the motion of its actor before it is
    classified. The caption names only the operators; the block around them is our choice
    (docs/design.md#other-backbones): a pre-norm decoder block with residuals on the query, ``q = q + MHCA(LN(q),
    LN(memory))``, ``q = q + FFN(LN(q))`` with the FFN ``dim -> mlp_ratio*dim -> dim`` (the
    "MLP(3072)"), then ``LN`` and an MLP of ``num_layers`` linear layers (hidden ``hidden_dim``,
    the "MLP(768)") to the ``C`` logits.

    Args:
        dim: width of the queries and of the memory tokens.
        num_classes: number of action classes C.
        num_heads: attention heads (``dim`` must be divisible by it).
        hidden_dim, num_layers: the classifier MLP.
        mlp_ratio: FFN width over ``dim``.
    """

    def __init__(self, dim: int, num_classes: int, num_heads: int, hidden_dim: int, num_layers: int = 2,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"CrossAttentionActionHead: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = Mlp(dim, int(dim * mlp_ratio), dim)
        self.norm_out = nn.LayerNorm(dim)
        self.classifier = _head_mlp(dim, hidden_dim, num_classes, num_layers)

    @property
    def last(self) -> nn.Linear:
        return self.classifier.last

    def forward(self, queries: Tensor, memory: Tensor) -> Tensor:
        """``queries [B, N, dim]`` (candidates), ``memory [B, M, dim]`` (all tokens) -> logits ``[B, N, C]``."""
        if queries.ndim != 3 or memory.ndim != 3 or queries.shape[0] != memory.shape[0] or \
                queries.shape[-1] != memory.shape[-1]:
            raise ValueError(f"CrossAttentionActionHead expects queries [B, N, D] and memory [B, M, D], got "
                             f"{tuple(queries.shape)} and {tuple(memory.shape)}")
        batch, num, dim = queries.shape
        heads, head_dim = self.num_heads, dim // self.num_heads
        q = self.q(self.norm_q(queries)).view(batch, num, heads, head_dim).transpose(1, 2)
        k, v = self.kv(self.norm_kv(memory)).view(batch, -1, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, num, dim)
        x = queries + self.proj(attended)
        x = x + self.ffn(self.norm_ffn(x))
        return self.classifier(self.norm_out(x))


def attention_heads(dim: int) -> int:
    """Heads of 64 channels, as ViT-B (768 -> 12); one head when ``dim`` is not a multiple of 64."""
    return dim // 64 if dim % 64 == 0 else 1


class DetectionHeads(nn.Module):
    """The box, actor and action heads, applied in parallel to each candidate token.

    Args:
        in_dim: width of the projected tokens (512 in BMViT).
        num_classes: number of action classes C.
        hidden_dim: hidden width of every head.
        box_layers, actor_layers, action_layers: linear layers per head (docs/design.md#heads: 3, 2, 2).
        box_reference: ``"token_center"`` (box = sigmoid(MLP + reference logit of the token's cell)),
            ``"token_local"`` (centre within ``local_range`` cells of the token's cell centre, extent
            as ``token_center``) or ``"none"`` (box = sigmoid(MLP)).
        local_range: reach of a ``token_local`` box centre, in grid cells.
        prior_prob: starting probability of the actor class and of every action class.
        action_head: ``"mlp"`` (per token, Fig. 1a) or ``"cross_attention"``
            (``CrossAttentionActionHead`` over all tokens, Fig. 1b; ``forward`` then needs ``context``).
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
        action_head: str = "mlp",
        local_range: float = 1.0,
    ) -> None:
        super().__init__()
        if local_range <= 0:
            raise ValueError(f"local_range must be > 0 grid cells, got {local_range}")
        if box_reference not in BOX_REFERENCES:
            raise ValueError(f"box_reference must be one of {BOX_REFERENCES}, got {box_reference!r}")
        if action_head not in ACTION_HEADS:
            raise ValueError(f"action_head must be one of {ACTION_HEADS}, got {action_head!r}")
        if not 0.0 < prior_prob < 1.0:
            raise ValueError(f"prior_prob must be in (0, 1), got {prior_prob}")
        self.box_reference = box_reference
        self.local_range = float(local_range)
        self.box = _head_mlp(in_dim, hidden_dim, 4, box_layers)
        self.actor = _head_mlp(in_dim, hidden_dim, 2, actor_layers)
        if action_head == "mlp":
            self.action = _head_mlp(in_dim, hidden_dim, num_classes, action_layers)
        else:
            self.action = CrossAttentionActionHead(in_dim, num_classes, attention_heads(in_dim), hidden_dim,
                                                   action_layers)
        self._init_last_layers(prior_prob)

    @torch.no_grad()
    def _init_last_layers(self, prior_prob: float) -> None:
        nn.init.zeros_(self.box.last.weight)
        nn.init.zeros_(self.box.last.bias)
        # softmax([b, 0])[0] = prior  <=>  b = logit(prior).
        self.actor.last.bias.copy_(torch.tensor([_logit(prior_prob), 0.0]))
        nn.init.constant_(self.action.last.bias, _logit(prior_prob))

    def _boxes(self, raw: Tensor, grid_thw: tuple[int, int, int]) -> Tensor:
        """Box-head output ``[B, N, 4]`` -> normalised cxcywh boxes ``[B, N, 4]``, as ``box_reference`` says."""
        if self.box_reference == "none":
            return raw.sigmoid()
        reference = token_reference_logits(grid_thw, raw.device).to(raw.dtype)  # [N, 4]
        if self.box_reference == "token_center":
            return (raw + reference).sigmoid()
        _, h, w = grid_thw
        reach = raw.new_tensor([self.local_range / w, self.local_range / h])
        centre = (reference[:, :2].sigmoid() + reach * torch.tanh(raw[..., :2])).clamp(0.0, 1.0)
        return torch.cat((centre, (raw[..., 2:] + reference[:, 2:]).sigmoid()), dim=-1)

    def forward(self, tokens: Tensor, grid_thw: tuple[int, int, int], context: Tensor | None = None
                ) -> dict[str, Tensor]:
        """Predict per token.

        Args:
            tokens: ``[B, N, in_dim]`` candidate tokens, flattened row-major from ``grid_thw``.
            grid_thw: the ``(T, H, W)`` grid the ``N = T*H*W`` tokens come from.
            context: ``[B, M, in_dim]`` all the clip's tokens, which the cross-attention action head
                attends over (required by it, ignored by the MLP head).

        Returns:
            ``pred_boxes [B, N, 4]`` normalised cxcywh in (0, 1), ``pred_actor [B, N, 2]`` logits
            (index 0 = actor), ``pred_actions [B, N, C]`` logits; in the heads' dtype (fp32 for an
            fp32 model, autocast or not: ``without_autocast``).
        """
        if isinstance(self.action, CrossAttentionActionHead) and context is None:
            raise ValueError("the cross-attention action head needs context: all tokens [B, M, in_dim]")
        dtype = self.box.last.weight.dtype
        with without_autocast(tokens):
            tokens = tokens.to(dtype)
            boxes = self._boxes(self.box(tokens), grid_thw)
            if isinstance(self.action, CrossAttentionActionHead):
                actions = self.action(tokens, context.to(dtype))
            else:
                actions = self.action(tokens)
            return {
                "pred_boxes": boxes,
                "pred_actor": self.actor(tokens),
                "pred_actions": actions,
            }
