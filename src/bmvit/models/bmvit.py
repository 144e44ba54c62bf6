"""BMViT: a video backbone whose own output tokens are the detection candidates.

Ntinou, Sanchez, Tzimiropoulos, "Multiscale Vision Transformers meet Bipartite Matching for
efficient single-stage Action Localization", CVPR 2024 (supplementary Fig. 1a). The composition
(backbone, projection, heads) and the output-dict contract follow DETR (facebookresearch/detr,
models/detr.py); changes: no transformer decoder and no queries, the candidates are backbone tokens.

    clip [B, 3, T, H, W] -> backbone -> tokens [B, T', H', W', C]
        -> token selection (central slice t = T' // 2 | temporal mean | all)  -> [B, N, C]
        -> per-token linear projection C -> proj_dim -> box / actor / action heads
    (with ``action_head="cross_attention"``, supplementary Fig. 1b, the action head of each
    candidate also attends over all T'xH'xW' projected tokens)

``BMViTConfig`` is the model's whole description; it travels inside every checkpoint as plain data
(``to_dict`` / ``from_dict``), and ``BMViT(config)`` rebuilds the same architecture from it.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from bmvit.models import (
    create_detector,
    detector_config_from_dict,
    detector_config_to_dict,
    register_detector_class,
    register_model,
)
from bmvit.models.backbones import canonical_backbone_name, create_backbone
from bmvit.models.heads import ACTION_HEADS, BOX_REFERENCES, DetectionHeads, without_autocast

TOKEN_SELECTIONS: tuple[str, ...] = ("central", "temporal_mean", "all")


@dataclass
class BMViTConfig:
    """Architecture of a BMViT detector (saved in checkpoints; every field is plain JSON data).

    Attributes:
        backbone: a name from ``bmvit.list_backbones()`` (a former name, ``RENAMED_BACKBONES``, becomes its new one).
        backbone_overrides: fields of the backbone's config to change (e.g. ``drop_path_rate``,
            ``input_size``, ``use_checkpoint``). Values are scalars or tuples of scalars.
        num_classes: number of action classes C the action head predicts (80 on AVA).
        proj_dim: width of the per-token projection (512 in the paper).
        head_hidden_dim: hidden width of the three heads.
        box_head_layers, actor_head_layers, action_head_layers: linear layers per head.
        token_selection: which tokens are candidates: ``central`` (the T'//2 time slice, the
            paper's choice), ``temporal_mean`` (the mean over T'), ``all`` (every T'xH'xW' token).
        box_reference: ``token_center`` (boxes start at their token's grid cell), ``token_local``
            (box centres stay within ``box_local_range`` cells of their token's cell) or ``none``;
            see ``bmvit.models.heads``.
        box_local_range: reach of a ``token_local`` box centre, in grid cells.
        action_head: ``mlp`` (per-token MLP, Fig. 1a) or ``cross_attention`` (the candidates
            attend over all tokens before the MLP, Fig. 1b; ``CrossAttentionActionHead``).
    """

    backbone: str = "mvitv2_s_det"
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    num_classes: int = 80
    proj_dim: int = 512
    head_hidden_dim: int = 512
    box_head_layers: int = 3
    actor_head_layers: int = 2
    action_head_layers: int = 2
    token_selection: str = "central"
    box_reference: str = "token_center"
    box_local_range: float = 1.0
    action_head: str = "mlp"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        for name in ("num_classes", "proj_dim", "head_hidden_dim", "box_head_layers", "actor_head_layers",
                     "action_head_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"BMViTConfig.{name} must be >= 1, got {getattr(self, name)}")
        self.box_local_range = float(self.box_local_range)
        if self.box_local_range <= 0:
            raise ValueError(f"BMViTConfig.box_local_range must be > 0 grid cells, got {self.box_local_range}")
        if self.token_selection not in TOKEN_SELECTIONS:
            raise ValueError(f"BMViTConfig.token_selection must be one of {TOKEN_SELECTIONS}, "
                             f"got {self.token_selection!r}")
        if self.box_reference not in BOX_REFERENCES:
            raise ValueError(f"BMViTConfig.box_reference must be one of {BOX_REFERENCES}, got {self.box_reference!r}")
        if self.action_head not in ACTION_HEADS:
            raise ValueError(f"BMViTConfig.action_head must be one of {ACTION_HEADS}, got {self.action_head!r}")
        # A config read from a checkpoint written before the backbone presets were renamed names the old preset.
        self.backbone = canonical_backbone_name(self.backbone)
        # JSON turns tuples into lists; normalise so that from_dict(to_dict(c)) == c.
        self.backbone_overrides = {k: _freeze(k, v) for k, v in self.backbone_overrides.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (tuples become lists), ready for ``json.dumps``."""
        return detector_config_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BMViTConfig:
        """Inverse of ``to_dict``; unknown keys are an error (a config from another version or model)."""
        return detector_config_from_dict(cls, d)


_SCALARS = (bool, int, float, str, type(None))


def _check_type(name: str, value: Any, annotation: str) -> None:
    expected = {"str": str, "int": int, "float": (int, float), "dict[str, Any]": dict}[annotation]
    # bool is an int subclass; a True where a count belongs is a mistake, not a 1.
    if not isinstance(value, expected) or isinstance(value, bool):
        raise TypeError(f"BMViTConfig.{name} must be {annotation}, got {type(value).__name__} {value!r}")


def _freeze(key: Any, value: Any) -> Any:
    if not isinstance(key, str):
        raise TypeError(f"BMViTConfig.backbone_overrides keys must be str, got {key!r}")
    frozen = _freeze_value(value)
    if frozen is None and value is not None:
        raise TypeError(
            f"BMViTConfig.backbone_overrides[{key!r}] must be a scalar or a (nested) list of scalars, got {value!r}"
        )
    return frozen


def _freeze_value(value: Any) -> Any:
    """Scalars stay, lists become tuples (recursively, e.g. per-stage strides); anything else -> None."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        items = [_freeze_value(v) for v in value]
        if any(item is None and v is not None for item, v in zip(items, value)):
            return None
        return tuple(items)
    return None


@register_detector_class
class BMViT(nn.Module):
    """Single-stage action detector: backbone tokens -> projection -> box/actor/action heads.

    Args:
        config: the architecture; ``model.config`` keeps it.
        backbone: an already built backbone to use instead of ``create_backbone(config.backbone,
            **config.backbone_overrides)`` (for tests and stand-ins; it must be what the config
            names, or a checkpoint of this model will rebuild something else).
    """

    config_class = BMViTConfig

    def __init__(self, config: BMViTConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = create_backbone(config.backbone, **config.backbone_overrides)
        self.backbone = backbone
        embed_dim = getattr(self.backbone, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise TypeError(f"backbone {type(self.backbone).__name__} has no int attribute embed_dim")
        # The paper's 1x1x1 "proj" on the token map is a per-token linear layer.
        self.proj = nn.Linear(embed_dim, config.proj_dim)
        self.heads = DetectionHeads(
            config.proj_dim,
            config.num_classes,
            hidden_dim=config.head_hidden_dim,
            box_layers=config.box_head_layers,
            actor_layers=config.actor_head_layers,
            action_layers=config.action_head_layers,
            box_reference=config.box_reference,
            local_range=config.box_local_range,
            action_head=config.action_head,
        )

    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(T, H, W)`` of the clips the backbone was built for."""
        return tuple(self.backbone.input_size)

    def no_weight_decay(self) -> set[str]:
        """Full parameter names (as in ``named_parameters()``) to exclude from weight decay."""
        return {f"backbone.{name}" for name in self.backbone.no_weight_decay()}

    def forward(self, clip: Tensor, return_attention: bool = False) -> dict[str, Any]:
        """Detect the actors of the key frame of each clip.

        Args:
            clip: ``[B, 3, T, H, W]`` float, normalised as the backbone expects.
            return_attention: also return the backbone's last-layer attention (key ``"attention"``,
                in the format the backbone gives it); the backbone must accept this flag.

        Returns:
            A dict with ``pred_boxes [B, N, 4]`` normalised cxcywh of the key frame in (0, 1),
            ``pred_actor [B, N, 2]`` logits (index 0 = actor, 1 = no-actor), ``pred_actions [B, N, C]``
            logits, and ``token_grid``: the ``(T_sel, H', W')`` tuple of ints the ``N = T_sel*H'*W'``
            candidates come from, flattened row-major (``T_sel`` is 1 unless ``token_selection="all"``).
            Under autocast only the backbone runs in low precision: the projection and the heads
            run in the heads' dtype (fp32), and so are the outputs.
        """
        if clip.ndim != 5 or clip.shape[1] != 3:
            raise ValueError(f"BMViT expects a clip [B, 3, T, H, W], got shape {tuple(clip.shape)}")
        tokens, attention = self._run_backbone(clip, return_attention)
        if tokens.ndim != 5 or tokens.shape[-1] != self.proj.in_features:
            raise RuntimeError(f"backbone {self.config.backbone!r} returned {tuple(tokens.shape)}; expected "
                               f"[B, T', H', W', {self.proj.in_features}]")
        with without_autocast(tokens):
            tokens = tokens.to(self.proj.weight.dtype)
            if self.config.action_head == "cross_attention":
                # Project every token once: the candidates are a slice of them, and the action head
                # attends over all of them.
                projected = self.proj(tokens)
                candidates, grid_thw = self._select_tokens(projected)
                out: dict[str, Any] = self.heads(candidates, grid_thw, context=projected.flatten(1, 3))
            else:
                candidates, grid_thw = self._select_tokens(tokens)
                out = self.heads(self.proj(candidates), grid_thw)
        out["token_grid"] = grid_thw
        if return_attention:
            out["attention"] = attention
        return out

    def _run_backbone(self, clip: Tensor, return_attention: bool) -> tuple[Tensor, Any]:
        if not return_attention:
            return self.backbone(clip), None
        if "return_attention" not in inspect.signature(self.backbone.forward).parameters:
            raise TypeError(f"backbone {type(self.backbone).__name__} does not support return_attention")
        return self.backbone(clip, return_attention=True)

    def _select_tokens(self, tokens: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        """``[B, T', H', W', C]`` -> candidates ``[B, N, C]`` and their grid ``(T_sel, H', W')``."""
        mode = self.config.token_selection
        if mode == "central":
            # With 16x4 sampling the key frame is input frame 8; the stem's temporal stride 2 puts
            # it in token slice 4 = 8 // 2 (docs/design.md#backbone).
            t = tokens.shape[1] // 2
            tokens = tokens[:, t : t + 1]
        elif mode == "temporal_mean":
            tokens = tokens.mean(dim=1, keepdim=True)
        grid_thw = (int(tokens.shape[1]), int(tokens.shape[2]), int(tokens.shape[3]))
        return tokens.flatten(1, 3), grid_thw


def _create_bmvit(
    backbone_name: str, num_classes: int, backbone_weights: str | None, weights_format: str | None, /, **overrides: Any
) -> BMViT:
    return create_detector(BMViT, BMViTConfig, backbone_name, num_classes, backbone_weights, weights_format, overrides)


@register_model
def bmvit_mvitv2_s(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """BMViT with MViTv2-S at 16x256 (last pooling removed, 8x16x16 tokens, 256 candidates).

    ``backbone_weights`` is a pretrained backbone file (e.g. PySlowFast's K400 MViTv2-S);
    ``overrides`` are other ``BMViTConfig`` fields.
    """
    return _create_bmvit("mvitv2_s_det", num_classes, backbone_weights, weights_format, **overrides)


@register_model
def bmvit_mvit_tiny(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """A few-block BMViT for tests and CPU demos (same structure, small dims)."""
    return _create_bmvit("mvit_tiny_det", num_classes, backbone_weights, weights_format, **overrides)


# Supplementary Fig. 1b: no 512-d projection (the heads are "MLP(768)"), the action branch is
# cross-attention over all tokens. The 768 -> 768 "proj" is kept so that every variant has the same
# structure; it is one linear map in front of linear layers (0.6 M parameters, < 0.6 GMACs).
_VIT_HEADS: dict[str, Any] = {"proj_dim": 768, "head_hidden_dim": 768, "action_head": "cross_attention"}


@register_model
def bmvit_vit_b(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """BMViT with VideoMAE's ViT-B at 16x288 (8x18x18 tokens, 324 candidates; supplementary Fig. 1b):
    box and actor MLPs on the t = T'//2 tokens, actions by cross-attention of those tokens over all
    2592 tokens, then MLP(3072) and MLP(768) -> C.

    ``backbone_weights`` is a VideoMAE checkpoint (fine-tuned or pre-trained); ``overrides`` are
    other ``BMViTConfig`` fields.
    """
    return _create_bmvit("vit_b_det", num_classes, backbone_weights, weights_format, **{**_VIT_HEADS, **overrides})


@register_model
def bmvit_vit_tiny(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """A 4-block ViT (96 channels) with the ViT-B variant's heads (cross-attention action head), for
    tests and CPU demos."""
    heads = {"proj_dim": 96, "head_hidden_dim": 96, "action_head": "cross_attention"}
    return _create_bmvit("vit_tiny", num_classes, backbone_weights, weights_format, **{**heads, **overrides})


@register_model
def bmvit_hiera_l(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """BMViT with Hiera-L at 16x256 (last Q pooling removed: 8x16x16 tokens, 256 candidates;
    supplementary Table 1). The paper gives no head details for Hiera-L, so the heads are those of
    the MViTv2-S variant (proj 1152 -> 512, MLP heads).

    ``backbone_weights`` is a ``hiera-transformer`` checkpoint (``hiera_large_16x224``,
    ``mae_k400_ft_k400`` or ``mae_k400``); its 224-px position embeddings are resized.
    """
    return _create_bmvit("hiera_l_det", num_classes, backbone_weights, weights_format, **overrides)


@register_model
def bmvit_hiera_tiny(
    num_classes: int = 80, backbone_weights: str | None = None, weights_format: str | None = None, **overrides: Any
) -> BMViT:
    """A 5-block Hiera (24 -> 192 channels, last Q pooling removed) for tests and CPU demos."""
    return _create_bmvit("hiera_tiny_det", num_classes, backbone_weights, weights_format, **overrides)
