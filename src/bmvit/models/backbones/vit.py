"""Plain video ViT as VideoMAE builds it (Tong et al., "VideoMAE: Masked Autoencoders are
Data-Efficient Learners for Self-Supervised Video Pre-Training", NeurIPS 2022), the backbone of
BMViT's ViT-B variant (supplementary Fig. 1b: 16x288 input, 8x18x18 tokens).

Adapted from VideoMAE (MCG-NJU/VideoMAE, modeling_finetune.py: PatchEmbed, Attention, Block,
VisionTransformer, get_sinusoid_encoding_table; modeling_pretrain.py for the pre-training
checkpoint layout) and STMixer (MCG-NJU/STMixer, alphaction/modeling/backbone/vit_utils.py: the
VideoMAE table resized to another input size). Changes: a typed config; the fixed position table
is a non-persistent buffer built for the model's token grid (VideoMAE's own 1-D table on its
pre-training grid, resized, or a separable 3-D sin-cos table); attention through
``scaled_dot_product_attention``; no classifier, no mean pooling: the tokens are returned as
``[B, T', H', W', C]`` after a per-token final norm; pure remap functions for VideoMAE
fine-tuned and pre-training state dicts. Parameter names follow VideoMAE, so its checkpoints
load with only the norm and the ``encoder.`` prefix renamed.

Token layout everywhere: ``[B, T*H*W, C]`` in ``t, h, w`` raster order; no class token.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from bmvit.models.backbones import register_backbone
from bmvit.models.backbones.layers import (
    DropPath,
    Mlp,
    PatchEmbed3d,
    as_triple,
    conv_output_size,
    check_clip,
    init_linear_and_norm,
    interpolate_pos_embed_3d,
    preset_config,
)
from bmvit.models.weights import WeightsFormat

Triple = tuple[int, int, int]

POS_EMBEDS: tuple[str, ...] = ("videomae", "sincos_3d")


@dataclass
class ViTConfig:
    """Video ViT. Defaults are VideoMAE's ViT-B at 16x224 (``vit_base_patch16_224``).

    ``pos_embed`` chooses the fixed position table added after the tubelet embedding:

    - ``"videomae"``: VideoMAE's table, a 1-D sinusoid over the flattened token index of the
      ``pos_embed_grid`` (its pre-training grid, 8x14x14), reshaped to that grid and resized
      trilinearly to the model's grid when they differ (as detection code built on VideoMAE
      does, e.g. STMixer). With the pre-training grid this is exactly VideoMAE's table, so
      VideoMAE weights see the positions they were trained with.
    - ``"sincos_3d"``: a separable sin-cos table regenerated for the model's grid (a quarter of
      the channels for t, three eighths each for h and w), for training from scratch.
    """

    input_size: Triple = (16, 224, 224)  # (T, H, W) of the clips
    in_chans: int = 3
    patch_size: Triple = (2, 16, 16)  # tubelet: kernel = stride
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # VideoMAE's separate q and v biases (no k bias: it cannot change attention)
    pos_embed: str = "videomae"
    pos_embed_grid: Triple = (8, 14, 14)  # grid the "videomae" table is defined on
    drop_path_rate: float = 0.0  # linearly increasing over blocks, from 0 at the first
    use_checkpoint: bool = False  # activation checkpointing of every block while training
    norm_eps: float = 1e-6

    grid: Triple = field(init=False)  # (T', H', W') of the tokens

    def __post_init__(self) -> None:
        for name in ("input_size", "patch_size", "pos_embed_grid"):
            setattr(self, name, as_triple(name, getattr(self, name)))
        self._validate()
        self.grid = conv_output_size(self.input_size, self.patch_size, self.patch_size, (0, 0, 0))

    def _validate(self) -> None:
        if any(n % p for n, p in zip(self.input_size, self.patch_size)) or min(self.patch_size) < 1:
            raise ValueError(f"input_size {self.input_size} must be a positive multiple of patch_size "
                             f"{self.patch_size} in every dimension")
        if self.depth < 1 or self.embed_dim % self.num_heads:
            raise ValueError(f"need depth >= 1 and embed_dim divisible by num_heads; got depth {self.depth}, "
                             f"embed_dim {self.embed_dim}, num_heads {self.num_heads}")
        if self.pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {self.pos_embed!r}")
        if self.pos_embed == "sincos_3d" and self.embed_dim % 16:
            raise ValueError(f"pos_embed='sincos_3d' needs embed_dim divisible by 16, got {self.embed_dim}")
        if self.pos_embed == "videomae" and self.embed_dim % 2:
            raise ValueError(f"pos_embed='videomae' needs an even embed_dim, got {self.embed_dim}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


def videomae_sinusoid_table(num_positions: int, dim: int) -> Tensor:
    """VideoMAE's fixed position table ``[num_positions, dim]``: position ``p``, channel ``j``
    holds ``sin(p / 10000**(2*(j//2)/dim))`` for even ``j`` and ``cos`` of it for odd ``j``."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = (2 * (torch.arange(dim) // 2)).to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)[None, :]
    table = torch.empty_like(angles)
    table[:, 0::2], table[:, 1::2] = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    return table.float()


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """``[len(positions), dim]``: ``sin`` of ``positions * 10000**(-2i/dim)`` in the first half of the
    channels, ``cos`` in the second (MAE's layout)."""
    omega = 1.0 / torch.pow(10000.0, torch.arange(dim // 2, dtype=torch.float64) * 2.0 / dim)
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d_table(grid: Triple, dim: int) -> Tensor:
    """Separable 3-D sin-cos table ``[T*H*W, dim]`` in ``t, h, w`` raster order: channels
    ``[0, dim/4)`` encode t, the next ``3*dim/8`` encode h, the last ``3*dim/8`` encode w."""
    t, h, w = grid
    dim_t = dim // 4
    dim_hw = (dim - dim_t) // 2
    emb_t = sincos_1d(torch.arange(t), dim_t)[:, None, None, :].expand(t, h, w, dim_t)
    emb_h = sincos_1d(torch.arange(h), dim_hw)[None, :, None, :].expand(t, h, w, dim_hw)
    emb_w = sincos_1d(torch.arange(w), dim_hw)[None, None, :, :].expand(t, h, w, dim_hw)
    return torch.cat([emb_t, emb_h, emb_w], dim=-1).reshape(t * h * w, dim)


def position_table(cfg: ViTConfig) -> Tensor:
    """The fixed position embedding of a config: ``[1, T'*H'*W', C]`` for its token grid."""
    if cfg.pos_embed == "sincos_3d":
        return sincos_3d_table(cfg.grid, cfg.embed_dim)[None]
    table = videomae_sinusoid_table(math.prod(cfg.pos_embed_grid), cfg.embed_dim)[None]
    return interpolate_pos_embed_3d(table, cfg.pos_embed_grid, cfg.grid)


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's q/v biases: ``[B, N, C] -> ([B, N, C], weights or None)``."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        batch, num, dim = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).view(batch, num, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        weights = None
        if return_attention:
            weights = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(out.transpose(1, 2).reshape(batch, num, dim)), weights


class Block(nn.Module):
    """Pre-norm transformer block: ``[B, N, C] -> ([B, N, C], attention weights or None)``."""

    def __init__(self, cfg: ViTConfig, drop_path: float) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=cfg.norm_eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), dim)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        x_attn, weights = self.attn(self.norm1(x), return_attention)
        x = x + self.drop_path(x_attn)
        return x + self.drop_path(self.mlp(self.norm2(x))), weights


class VisionTransformer(nn.Module):
    """Video ViT backbone.

    ``forward(x [B, 3, T, H, W]) -> tokens [B, T', H', W', C]`` after the final per-token norm;
    ``x`` must have exactly the ``input_size`` the model was built for (the position table is
    built for its grid). ``embed_dim`` is ``C``; ``output_grid`` is ``(T', H', W')``.
    """

    weights_formats: ClassVar[dict[str, WeightsFormat]]  # filled below, after the remap functions

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.embed_dim
        self.input_size = cfg.input_size
        self.output_grid = cfg.grid
        self.patch_embed = PatchEmbed3d(cfg.in_chans, cfg.embed_dim, cfg.patch_size, cfg.patch_size)
        # Fixed, so not a parameter and not saved: rebuilt from the config for the model's grid.
        self.register_buffer("pos_embed", position_table(cfg), persistent=False)
        rates = [cfg.drop_path_rate * i / (cfg.depth - 1) if cfg.depth > 1 else 0.0 for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(Block(cfg, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        init_linear_and_norm(self)

    def no_weight_decay(self) -> set[str]:
        """Parameters trained without weight decay: none beyond the norms and biases every
        optimiser group already exempts (the position table is fixed, not a parameter)."""
        return set()

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Args:
            x: ``[B, 3, T, H, W]`` float clip, normalised, ``(T, H, W) == self.input_size``.
            return_attention: also return the last block's attention weights,
                ``[B, heads, T', H', W', T', H', W']`` (rows sum to 1).

        Returns:
            ``tokens [B, T', H', W', C]``, or ``(tokens, attention)`` when ``return_attention``.
        """
        self._check_input(x)
        tokens, _ = self.patch_embed(x)
        tokens = tokens + self.pos_embed.to(tokens.dtype)
        attention, last = None, len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            want = return_attention and i == last
            if self.cfg.use_checkpoint and self.training and torch.is_grad_enabled():
                tokens, attention = checkpoint(block, tokens, want, use_reentrant=False)
            else:
                tokens, attention = block(tokens, want)
        tokens = self.norm(tokens).reshape(tokens.shape[0], *self.output_grid, self.embed_dim)
        if not return_attention:
            return tokens
        return tokens, attention.reshape(*attention.shape[:2], *self.output_grid, *self.output_grid)

    def _check_input(self, x: Tensor) -> None:
        check_clip(x, self.cfg.in_chans, self.input_size, type(self).__name__)


# ---------------------------------------------------------------------------------------------
# Pretrained weights: one pure remap per source format, each returning a state dict in our names.

# Parts of a VideoMAE pre-training checkpoint that are not the encoder: left out and reported.
_VIDEOMAE_DROP = (r"head\.(weight|bias)", r"decoder\..+", r"encoder_to_decoder\.(weight|bias)", r"mask_token")


def remap_videomae(state_dict: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """VideoMAE state dict -> ours.

    Fine-tuned checkpoints (``vit_base_patch16_224`` on Kinetics-400, keys ``patch_embed.proj.*``,
    ``blocks.N.attn.qkv.weight``, ``blocks.N.attn.{q,v}_bias``, ``fc_norm.*``, ``head.*``): VideoMAE
    mean-pools the tokens and normalises the mean with ``fc_norm``; we keep every token, so
    ``fc_norm`` becomes the per-token final ``norm`` (the same statistics it was trained on,
    one token at a time). ``head.*`` passes through for the loader to drop and report.

    Pre-training checkpoints (``encoder.*``, ``decoder.*``, ``encoder_to_decoder.weight``,
    ``mask_token``): the ``encoder.`` prefix is removed; the MAE decoder passes through for the
    loader to drop and report. Containers (``model``, ``module``) are unwrapped by the loader.
    The fixed position table is not in the file; the model builds it (see ``ViTConfig``).
    """
    del model  # every tensor keeps its shape: the position table, the one size-dependent part, is built
    encoder = any(k.startswith("encoder.") for k in state_dict)
    out = {}
    for key, value in state_dict.items():
        if encoder and key.startswith("encoder."):
            key = key[len("encoder."):]
        key = re.sub(r"^fc_norm\.", "norm.", key)
        out[key] = value
    return out


def remap_bmvit(state_dict: dict[str, Tensor], model: VisionTransformer) -> dict[str, Tensor]:
    """Our own ViT state dict -> ours (the names are ours; nothing depends on the input size)."""
    del model
    return dict(state_dict)


def _looks_videomae(keys: Collection[str]) -> bool:
    if "encoder.blocks.0.attn.qkv.weight" in keys:
        return True
    return "blocks.0.attn.qkv.weight" in keys and ("fc_norm.weight" in keys or "head.weight" in keys)


def _looks_bmvit(keys: Collection[str]) -> bool:
    return "patch_embed.proj.weight" in keys and "blocks.0.attn.qkv.weight" in keys and "norm.weight" in keys


VisionTransformer.weights_formats = {
    "videomae": WeightsFormat("videomae", remap_videomae, _looks_videomae, drop=_VIDEOMAE_DROP),
    "bmvit": WeightsFormat("bmvit", remap_bmvit, _looks_bmvit),
}


# ---------------------------------------------------------------------------------------------
# Presets. Every ViTConfig field can be overridden: create_backbone("vit_b", drop_path_rate=0.1).


def _create(defaults: dict, overrides: dict) -> VisionTransformer:
    return VisionTransformer(preset_config(ViTConfig, "ViT", defaults, overrides))


@register_backbone
def vit_b(**overrides) -> VisionTransformer:
    """VideoMAE ViT-B in its Kinetics geometry: 16x224, 2x16x16 tubelets, 12 blocks of MHSA(768) +
    MLP(3072); tokens out 768 x 8 x 14 x 14. 86.2 M parameters."""
    return _create({}, overrides)


@register_backbone
def vit_b_det(**overrides) -> VisionTransformer:
    """ViT-B as BMViT uses it (supplementary Fig. 1b): 16x288 input, tokens out 768 x 8 x 18 x 18
    (324 candidates per time slice). VideoMAE's position table is resized from 8x14x14."""
    return _create({"input_size": (16, 288, 288)}, overrides)


@register_backbone
def vit_tiny(**overrides) -> VisionTransformer:
    """A 4-block ViT (96 channels, 3 heads) at 16x128 for tests and CPU demos, with a 3-D sin-cos
    table (it trains from scratch); tokens out 96 x 8 x 8 x 8."""
    return _create({"input_size": (16, 128, 128), "embed_dim": 96, "depth": 4, "num_heads": 3,
                    "pos_embed": "sincos_3d"}, overrides)
