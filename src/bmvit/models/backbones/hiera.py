"""Hiera video backbone (Ryali et al., "Hiera: A Hierarchical Vision Transformer without the
Bells-and-Whistles", ICML 2023), as BMViT's Hiera-L variant uses it (supplementary Table 1).

Adapted from the ``hiera-transformer`` package (facebookresearch/hiera, hiera/hiera.py:
MaskUnitAttention, HieraBlock, Hiera; hiera/hiera_utils.py: Unroll, Reroll, do_pool;
hiera/hiera_mae.py for the MAE checkpoint layout). Changes: a typed config whose per-block
values (dims, heads, Q strides, mask-unit windows, token grids) are derived once in
``__post_init__``; the pooled stages are named (``q_pool_stages``) rather than counted from the
start, so any pooling can be removed; the tokens stay in spatial ``t, h, w`` raster order and
mask units are cut out by reshapes, instead of Hiera's unroll/reroll token permutation (every
operation is invariant to the order of tokens inside a window, so the numbers are the same);
no classifier and no mean pooling: tokens are returned as ``[B, T', H', W', C]`` after a
per-token final norm; pure remap functions for the package's fine-tuned and MAE checkpoints.
Parameter names follow the package, so its checkpoints load unrenamed.

Hiera's attention has no relative positions; a separable learned position embedding (spatial
``[1, H*W, C]`` plus temporal ``[1, T, C]``) is added once after the patch embedding.
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
    check_clip,
    conv_output_size,
    init_linear_and_norm,
    interpolate_pos_embed_3d,
    preset_config,
)
from bmvit.models.weights import WeightsFormat

Triple = tuple[int, int, int]


@dataclass(frozen=True)
class HieraBlockSpec:
    """One Hiera block, derived from ``HieraConfig`` (never written by hand)."""

    dim_in: int
    dim_out: int
    num_heads: int
    q_stride: Triple  # max-pooling of the queries and of the residual; (1, 1, 1) = none
    window: Triple | None  # mask unit in input tokens (keys of one attention); None = global attention
    thw_in: Triple
    thw_out: Triple
    drop_path: float


@dataclass
class HieraConfig:
    """Hiera for video. Defaults are Hiera-B at 16x224 (``hiera_base_16x224``).

    Stage ``s`` (0-based) has ``stages[s]`` blocks; at each stage change the channels are
    multiplied by ``dim_mul`` and the heads by ``head_mul``, and when ``s`` is in
    ``q_pool_stages`` that first block max-pools Q (and the residual) by ``q_stride``. Hiera's
    ``q_pool=k`` is ``q_pool_stages=(1, ..., k)``. Blocks of a stage with ``mask_unit_attn[s]``
    attend within mask units (``mask_unit_size`` tokens of the first stage, shrinking with each
    pooling), others globally; as in Hiera the switch lags one block, so the first block of a
    stage still uses the previous stage's kind of attention (it pools Q at the finer grid).
    """

    input_size: Triple = (16, 224, 224)
    in_chans: int = 3
    embed_dim: int = 96  # channels of the first stage
    num_heads: int = 1  # heads of the first stage
    stages: tuple[int, ...] = (2, 3, 16, 3)
    q_stride: Triple = (1, 2, 2)
    q_pool_stages: tuple[int, ...] = (1, 2, 3)
    mask_unit_size: Triple = (1, 8, 8)
    mask_unit_attn: tuple[bool, ...] = (True, True, False, False)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    patch_kernel: Triple = (3, 7, 7)
    patch_stride: Triple = (2, 4, 4)
    patch_padding: Triple = (1, 3, 3)
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0  # linearly increasing over blocks, from 0 at the first
    use_checkpoint: bool = False  # activation checkpointing of every block while training
    norm_eps: float = 1e-6

    patch_grid: Triple = field(init=False)
    blocks: tuple[HieraBlockSpec, ...] = field(init=False)
    stage_ends: tuple[int, ...] = field(init=False)  # index of each stage's last block
    output_dim: int = field(init=False)
    output_grid: Triple = field(init=False)

    def __post_init__(self) -> None:
        for name in ("input_size", "q_stride", "mask_unit_size", "patch_kernel", "patch_stride", "patch_padding"):
            setattr(self, name, as_triple(name, getattr(self, name), allow_zero=name == "patch_padding"))
        self.stages = tuple(int(d) for d in self.stages)
        self.q_pool_stages = tuple(sorted(int(s) for s in self.q_pool_stages))
        self.mask_unit_attn = tuple(bool(m) for m in self.mask_unit_attn)
        self._validate()
        self.patch_grid = conv_output_size(self.input_size, self.patch_kernel, self.patch_stride, self.patch_padding)
        self.stage_ends = tuple(sum(self.stages[: s + 1]) - 1 for s in range(len(self.stages)))
        self.blocks = self._derive_blocks()
        self.output_dim = self.blocks[-1].dim_out
        self.output_grid = self.blocks[-1].thw_out

    def _validate(self) -> None:
        if not self.stages or min(self.stages) < 1:
            raise ValueError(f"stages must be a non-empty tuple of positive block counts, got {self.stages}")
        if len(self.mask_unit_attn) != len(self.stages):
            raise ValueError(f"mask_unit_attn needs one flag per stage ({len(self.stages)}), got {self.mask_unit_attn}")
        if any(s < 1 or s >= len(self.stages) for s in self.q_pool_stages) or len(set(self.q_pool_stages)) != len(
                self.q_pool_stages):
            raise ValueError(f"q_pool_stages must be distinct stage indices in [1, {len(self.stages) - 1}] (stage 0 "
                             f"never pools), got {self.q_pool_stages}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")

    def _derive_blocks(self) -> tuple[HieraBlockSpec, ...]:
        depth = sum(self.stages)
        dim, heads, stage = self.embed_dim, self.num_heads, 0
        unit, thw, specs = self.mask_unit_size, self.patch_grid, []
        if any(self.mask_unit_attn):
            _check_divides("the patch grid", thw, "mask_unit_size", unit, self.input_size)
        for i in range(depth):
            dim_out, q_stride = dim, (1, 1, 1)
            use_mask_unit = self.mask_unit_attn[stage]  # read before the stage changes: Hiera's one-block lag
            if i - 1 in self.stage_ends:
                dim_out, heads, stage = int(dim * self.dim_mul), int(heads * self.head_mul), stage + 1
                if stage in self.q_pool_stages:
                    q_stride = self.q_stride
                    _check_divides(f"block {i}'s token grid", thw, "q_stride", q_stride, self.input_size)
                    unit = tuple(u // s for u, s in zip(unit, q_stride))
            if dim_out % heads:
                raise ValueError(f"block {i}: {dim_out} channels are not divisible by {heads} heads")
            window = None
            if use_mask_unit:
                window = tuple(u * s for u, s in zip(unit, q_stride))
                if min(unit) < 1:
                    raise ValueError(f"block {i}: mask_unit_size {self.mask_unit_size} is pooled below one token "
                                     f"by q_stride {self.q_stride}; use a larger mask unit or global attention")
                _check_divides(f"block {i}'s token grid", thw, "its mask unit", window, self.input_size)
            thw_out = tuple(n // s for n, s in zip(thw, q_stride))
            drop_path = self.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0
            specs.append(HieraBlockSpec(dim, dim_out, heads, q_stride, window, thw, thw_out, drop_path))
            dim, thw = dim_out, thw_out
        return tuple(specs)


def _check_divides(what: str, grid: Triple, by_name: str, by: Triple, input_size: Triple) -> None:
    if any(n % b for n, b in zip(grid, by)):
        raise ValueError(f"{what} {grid} is not divisible by {by_name} {by} (input_size {input_size}); "
                         "choose an input size whose token grid divides evenly")


def _pool_max(x: Tensor, thw: Triple, stride: Triple) -> Tensor:
    """Max over each ``stride`` block of a token grid: ``[B, T*H*W, C] -> [B, T'*H'*W', C]``."""
    (t, h, w), (st, sh, sw) = thw, stride
    grid = x.view(x.shape[0], t // st, st, h // sh, sh, w // sw, sw, x.shape[-1])
    return grid.amax(dim=(2, 4, 6)).flatten(1, 3)


class MaskUnitAttention(nn.Module):
    """Attention within mask units (or globally), with the queries max-pooled by ``q_stride``.

    ``forward(x [B, T*H*W, dim_in]) -> (x [B, T'*H'*W', dim_out], weights or None)``; ``weights``
    (global attention only) are ``[B, heads, T'*H'*W', T*H*W]``.
    """

    def __init__(self, spec: HieraBlockSpec) -> None:
        super().__init__()
        self.spec = spec
        self.num_heads = spec.num_heads
        self.head_dim = spec.dim_out // spec.num_heads
        self.qkv = nn.Linear(spec.dim_in, 3 * spec.dim_out)
        self.proj = nn.Linear(spec.dim_out, spec.dim_out)

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        spec, batch = self.spec, x.shape[0]
        (t, h, w), window = spec.thw_in, spec.window or spec.thw_in
        (wt, wh, ww), (st, sh, sw) = window, spec.q_stride
        nt, nh, nw = t // wt, h // wh, w // ww
        qkv = self.qkv(x).view(batch, nt, wt, nh, wh, nw, ww, 3, self.num_heads, self.head_dim)
        # -> [3, B, heads, windows, wt, wh, ww, d]
        qkv = qkv.permute(7, 0, 8, 1, 3, 5, 2, 4, 6, 9).reshape(3, batch, self.num_heads, nt * nh * nw, wt, wh, ww,
                                                                  self.head_dim)
        q, k, v = qkv.unbind(0)
        if spec.q_stride != (1, 1, 1):
            q = q.reshape(*q.shape[:3], wt // st, st, wh // sh, sh, ww // sw, sw, self.head_dim).amax(dim=(4, 6, 8))
        qt, qh, qw = q.shape[3:6]
        # Heads and windows folded into one dimension: SDPA's fused CPU kernels take 4-D inputs only.
        q, k, v = q.flatten(3, 5).flatten(1, 2), k.flatten(3, 5).flatten(1, 2), v.flatten(3, 5).flatten(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads * windows, qt*qh*qw, d]
        out = out.view(batch, self.num_heads, nt, nh, nw, qt, qh, qw, self.head_dim)
        out = out.permute(0, 2, 5, 3, 6, 4, 7, 1, 8).reshape(batch, -1, spec.dim_out)
        weights = None
        if return_attention:
            if spec.window is not None:
                raise ValueError("return_attention needs global attention in the last block; this one attends "
                                 f"within mask units of {spec.window} tokens")
            weights = ((q * self.head_dim**-0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj(out), weights


class HieraBlock(nn.Module):
    """``x [B, N_in, dim_in] -> (x [B, N_out, dim_out], attention or None)``.

    At a stage change the residual is the projected, normed input (max-pooled by the Q stride),
    as in Hiera; elsewhere it is the input itself.
    """

    def __init__(self, spec: HieraBlockSpec, cfg: HieraConfig) -> None:
        super().__init__()
        self.spec = spec
        self.norm1 = nn.LayerNorm(spec.dim_in, eps=cfg.norm_eps)
        self.attn = MaskUnitAttention(spec)
        self.drop_path = DropPath(spec.drop_path) if spec.drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(spec.dim_out, eps=cfg.norm_eps)
        self.mlp = Mlp(spec.dim_out, int(spec.dim_out * cfg.mlp_ratio), spec.dim_out)
        self.proj = nn.Linear(spec.dim_in, spec.dim_out) if spec.dim_in != spec.dim_out else None

    def forward(self, x: Tensor, return_attention: bool = False) -> tuple[Tensor, Tensor | None]:
        x_norm = self.norm1(x)
        if self.proj is not None:
            x = self.proj(x_norm)
        if self.spec.q_stride != (1, 1, 1):
            x = _pool_max(x, self.spec.thw_in, self.spec.q_stride)
        x_attn, attention = self.attn(x_norm, return_attention)
        x = x + self.drop_path(x_attn)
        return x + self.drop_path(self.mlp(self.norm2(x))), attention


class Hiera(nn.Module):
    """Hiera video backbone.

    ``forward(x [B, 3, T, H, W]) -> tokens [B, T', H', W', C]`` after the final per-token norm;
    ``x`` must have exactly the ``input_size`` the model was built for (the position embedding
    is sized for it). ``embed_dim`` is ``C``; ``output_grid`` is ``(T', H', W')``.
    """

    weights_formats: ClassVar[dict[str, WeightsFormat]]  # filled below, after the remap functions

    def __init__(self, cfg: HieraConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_dim = cfg.output_dim
        self.input_size = cfg.input_size
        self.output_grid = cfg.output_grid
        t, h, w = cfg.patch_grid
        self.patch_embed = PatchEmbed3d(cfg.in_chans, cfg.embed_dim, cfg.patch_kernel, cfg.patch_stride,
                                        cfg.patch_padding)
        self.pos_embed_spatial = nn.Parameter(torch.zeros(1, h * w, cfg.embed_dim))
        self.pos_embed_temporal = nn.Parameter(torch.zeros(1, t, cfg.embed_dim))
        self.blocks = nn.ModuleList(HieraBlock(spec, cfg) for spec in cfg.blocks)
        self.norm = nn.LayerNorm(cfg.output_dim, eps=cfg.norm_eps)
        self._init_weights()

    def _init_weights(self) -> None:
        init_linear_and_norm(self)
        nn.init.trunc_normal_(self.pos_embed_spatial, std=0.02)
        nn.init.trunc_normal_(self.pos_embed_temporal, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """The position embeddings (as Hiera's own ``no_weight_decay``)."""
        return {"pos_embed_spatial", "pos_embed_temporal"}

    def forward(self, x: Tensor, return_attention: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Args:
            x: ``[B, 3, T, H, W]`` float clip, normalised, ``(T, H, W) == self.input_size``.
            return_attention: also return the last block's attention weights,
                ``[B, heads, T', H', W', Tk, Hk, Wk]`` over the keys of its input grid (rows sum
                to 1); the last block must attend globally (Hiera's last stage does).

        Returns:
            ``tokens [B, T', H', W', C]``, or ``(tokens, attention)`` when ``return_attention``.
        """
        tokens, attention = self._blocks(x, return_attention, None)
        tokens = self.norm(tokens).reshape(tokens.shape[0], *self.output_grid, self.embed_dim)
        if not return_attention:
            return tokens
        return tokens, attention.reshape(*attention.shape[:2], *self.output_grid, *self.cfg.blocks[-1].thw_in)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """The output of every stage, before the final norm: ``[B, T_s, H_s, W_s, C_s]`` per stage
        (what Hiera's ``forward(x, return_intermediates=True)`` returns)."""
        stages: list[Tensor] = []
        self._blocks(x, False, stages)
        return stages

    def _blocks(self, x: Tensor, return_attention: bool, stages: list[Tensor] | None) -> tuple[Tensor, Tensor | None]:
        check_clip(x, self.cfg.in_chans, self.input_size, type(self).__name__)
        tokens, _ = self.patch_embed(x)
        pos = self.pos_embed_temporal[:, :, None, :] + self.pos_embed_spatial[:, None, :, :]
        tokens = tokens + pos.flatten(1, 2)
        attention, last = None, len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            want = return_attention and i == last
            if self.cfg.use_checkpoint and self.training and torch.is_grad_enabled():
                tokens, attention = checkpoint(block, tokens, want, use_reentrant=False)
            else:
                tokens, attention = block(tokens, want)
            if stages is not None and i in self.cfg.stage_ends:
                stages.append(tokens.reshape(tokens.shape[0], *block.spec.thw_out, -1))
        return tokens, attention


# ---------------------------------------------------------------------------------------------
# Pretrained weights: one pure remap per source format, each returning a state dict in our names.

# Parts of the package's checkpoints that are not the backbone: left out and reported.
_HIERA_DROP = (r"head\.projection\.(weight|bias)", r"multi_scale_fusion_heads\..+", r"decoder_.+", r"mask_token")


def remap_hiera(state_dict: dict[str, Tensor], model: Hiera) -> dict[str, Tensor]:
    """``hiera-transformer`` video checkpoint (the ``model_state`` of e.g. ``hiera_large_16x224.pth``,
    ``mae_k400_ft_k400``, or ``mae_hiera_large_16x224.pth``, ``mae_k400``) -> ours.

    Names are the package's. Hiera normalises the mean-pooled tokens with ``norm``; we keep every
    token, so the same ``norm`` is applied per token. An MAE checkpoint has ``encoder_norm``
    instead (after its multi-scale fusion), which becomes ``norm``; the fusion heads, the decoder
    and ``mask_token`` pass through for the loader to drop and report, as does the classifier
    ``head.projection.*``. Position embeddings are resized to the model's token grid (a 16x224
    checkpoint into a 16x256 model: spatial 56x56 -> 64x64).
    """
    out = {re.sub(r"^encoder_norm\.", "norm.", key): value for key, value in state_dict.items()}
    return _fit_pos_embed(out, model)


def remap_bmvit(state_dict: dict[str, Tensor], model: Hiera) -> dict[str, Tensor]:
    """Our own Hiera state dict -> ours, position embeddings resized to the model's token grid."""
    return _fit_pos_embed(dict(state_dict), model)


def _fit_pos_embed(state_dict: dict[str, Tensor], model: Hiera) -> dict[str, Tensor]:
    """Resize ``pos_embed_spatial [1, h*w, C]`` (square ``h = w`` assumed in the file) and
    ``pos_embed_temporal [1, t, C]`` to the model's grid; other shapes are left for the loader."""
    t, h, w = model.cfg.patch_grid
    spatial, temporal = state_dict.get("pos_embed_spatial"), state_dict.get("pos_embed_temporal")
    channels = model.cfg.embed_dim
    if spatial is not None and spatial.ndim == 3 and spatial.shape[-1] == channels and spatial.shape[1] != h * w:
        side = math.isqrt(spatial.shape[1])
        if side * side != spatial.shape[1]:
            raise ValueError(f"pos_embed_spatial has {spatial.shape[1]} positions, not a square grid; cannot resize "
                             f"it to {h}x{w}")
        state_dict["pos_embed_spatial"] = interpolate_pos_embed_3d(spatial, (1, side, side), (1, h, w))
    if temporal is not None and temporal.ndim == 3 and temporal.shape[-1] == channels and temporal.shape[1] != t:
        state_dict["pos_embed_temporal"] = interpolate_pos_embed_3d(temporal, (temporal.shape[1], 1, 1), (t, 1, 1))
    return state_dict


def _looks_hiera(keys: Collection[str]) -> bool:
    return "pos_embed_spatial" in keys and ("head.projection.weight" in keys or "encoder_norm.weight" in keys)


def _looks_bmvit(keys: Collection[str]) -> bool:
    return "pos_embed_spatial" in keys and "norm.weight" in keys


Hiera.weights_formats = {
    "hiera": WeightsFormat("hiera", remap_hiera, _looks_hiera, drop=_HIERA_DROP),
    "bmvit": WeightsFormat("bmvit", remap_bmvit, _looks_bmvit),
}


# ---------------------------------------------------------------------------------------------
# Presets. Every HieraConfig field can be overridden: create_backbone("hiera_l", drop_path_rate=0.2).


def _create(defaults: dict, overrides: dict) -> Hiera:
    return Hiera(preset_config(HieraConfig, "Hiera", defaults, overrides))


_LARGE = {"embed_dim": 144, "num_heads": 2, "stages": (2, 6, 36, 4)}
_TINY = {"input_size": (16, 128, 128), "embed_dim": 24, "num_heads": 1, "stages": (1, 1, 2, 1)}


@register_backbone
def hiera_b(**overrides) -> Hiera:
    """Hiera-B in its Kinetics geometry (``hiera_base_16x224``): 16x224, 2/3/16/3 blocks, 96 -> 768
    channels, Q pooled at stages 2, 3 and 4; tokens out 768 x 8 x 7 x 7."""
    return _create({}, overrides)


@register_backbone
def hiera_l(**overrides) -> Hiera:
    """Hiera-L in its Kinetics geometry (``hiera_large_16x224``): 16x224, 2/6/36/4 blocks, 144 -> 1152
    channels, Q pooled at stages 2, 3 and 4; tokens out 1152 x 8 x 7 x 7."""
    return _create(dict(_LARGE), overrides)


@register_backbone
def hiera_l_det(**overrides) -> Hiera:
    """Hiera-L as we build BMViT's (supplementary Table 1: 256 px): 16x256 and the Q pooling at the
    start of the last stage removed, so the output keeps stage 3's grid: 1152 x 8 x 16 x 16
    (256 candidates per time slice, as BMViT's MViTv2-S).

    The paper does not say which pooling goes. Removing the last one is the cheapest way to a
    16x16 grid (the 4 blocks of the last stage run at 16x16 instead of the 36 of stage 3 at
    32x32), it is the change BMViT makes to MViTv2-S, and Hiera's own video MAE pre-training
    runs exactly this way (``q_pool=2``). GMACs of each choice are in docs/backbones.md.
    """
    return _create({**_LARGE, "input_size": (16, 256, 256), "q_pool_stages": (1, 2)}, overrides)


@register_backbone
def hiera_tiny(**overrides) -> Hiera:
    """A 5-block Hiera (24 -> 192 channels) at 16x128 for tests and CPU demos; every pooling kept,
    tokens out 192 x 8 x 4 x 4."""
    return _create(dict(_TINY), overrides)


@register_backbone
def hiera_tiny_det(**overrides) -> Hiera:
    """``hiera_tiny`` with BMViT's change (no Q pooling at the last stage): tokens out 192 x 8 x 8 x 8."""
    return _create({**_TINY, "q_pool_stages": (1, 2)}, overrides)
