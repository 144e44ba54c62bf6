"""Pieces shared by the video backbones: 3D patch embedding, MLP (the detection heads' too), drop path,
and the shape adapters that let a checkpoint made for one input size load into a model built for another.

Adapted from timm (huggingface/pytorch-image-models, timm/layers/{mlp.py,drop.py,patch_embed.py,
pos_embed.py}) and PySlowFast (facebookresearch/SlowFast, slowfast/models/{common.py,stem_helper.py},
``get_rel_pos`` in slowfast/models/attention.py); changes: video-only (3D), one file, no
format/padding options we do not use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PatchEmbed3d(nn.Module):
    """Cube embedding: a 3D convolution, then the grid flattened to tokens.

    ``forward(x [B, C_in, T, H, W]) -> (tokens [B, T'*H'*W', C], (T', H', W'))`` with tokens in
    ``t, h, w`` raster order.
    """

    def __init__(
        self,
        in_chans: int,
        embed_dim: int,
        kernel: tuple[int, int, int],
        stride: tuple[int, int, int],
        padding: tuple[int, int, int] = (0, 0, 0),
    ) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=stride, padding=padding)

    def output_grid(self, input_size: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(T', H', W')`` the convolution gives for an input of ``(T, H, W)``."""
        return conv_output_size(input_size, self.proj.kernel_size, self.proj.stride, self.proj.padding)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int, int]]:
        x = self.proj(x)
        thw = (int(x.shape[2]), int(x.shape[3]), int(x.shape[4]))
        return x.flatten(2).transpose(1, 2), thw


MLP_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "relu": nn.ReLU}

MLP_PARAM_NAMES: tuple[str, ...] = ("fc", "layers")


class Mlp(nn.Module):
    """``num_layers`` linear layers on the last dimension with ``activation`` between consecutive ones:
    ``[..., in_features]`` -> ``[..., out_features]``.

    The one MLP of the package: the transformer blocks' feed-forward (two layers, GELU: the defaults)
    and the detection heads' box/actor/action MLPs (``num_layers`` layers, ReLU). No dropout: no model
    here asked for any.

    Args:
        in_features, hidden_features, out_features: widths of the input, of every hidden layer, of the output.
        num_layers: linear layers (>= 1); ``hidden_features`` is unused when it is 1.
        activation: ``"gelu"`` or ``"relu"``, between consecutive layers.
        param_names: how the linear layers are named in the state dict, which checkpoints fix:
            ``"fc"``: ``fc1``, ``fc2``, ... (timm's and PySlowFast's ``Mlp``, whose pretrained backbone
            weights load by these names); ``"layers"``: ``layers.0``, ``layers.1``, ... (DETR's ``MLP``,
            the layout of the heads of every bmvit checkpoint).
    """

    def __init__(self, in_features: int, hidden_features: int, out_features: int, num_layers: int = 2, *,
                 activation: str = "gelu", param_names: str = "fc") -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"Mlp needs num_layers >= 1, got {num_layers}")
        if activation not in MLP_ACTIVATIONS:
            raise ValueError(f"Mlp activation must be one of {sorted(MLP_ACTIVATIONS)}, got {activation!r}")
        if param_names not in MLP_PARAM_NAMES:
            raise ValueError(f"Mlp param_names must be one of {MLP_PARAM_NAMES}, got {param_names!r}")
        dims = [in_features] + [hidden_features] * (num_layers - 1) + [out_features]
        linears = [nn.Linear(d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:])]
        if param_names == "layers":
            self.layers = nn.ModuleList(linears)
        else:
            for i, linear in enumerate(linears, start=1):
                self.add_module(f"fc{i}", linear)
        # Parameter-free: the state-dict keys are the linear layers' alone.
        self.act = MLP_ACTIVATIONS[activation]()
        self.param_names = param_names
        self.num_layers = num_layers

    @property
    def linears(self) -> list[nn.Linear]:
        """The linear layers, first to last."""
        if self.param_names == "layers":
            return list(self.layers)
        return [getattr(self, f"fc{i}") for i in range(1, self.num_layers + 1)]

    @property
    def last(self) -> nn.Linear:
        """The output layer (the heads initialise its weight and bias)."""
        return self.linears[-1]

    def forward(self, x: Tensor) -> Tensor:
        linears = self.linears
        for linear in linears[:-1]:
            x = self.act(linear(x))
        return linears[-1](x)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples while training,
    scaling the survivors by ``1 / (1 - p)`` so the expectation is unchanged."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path probability must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def as_triple(name: str, value: Sequence[int], allow_zero: bool = False) -> tuple[int, int, int]:
    """A config's ``(t, h, w)`` field as a tuple of three ints, each >= 1 (>= 0 with ``allow_zero``)."""
    values = tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < (0 if allow_zero else 1):
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be three {kind} ints (t, h, w), got {value!r}")
    return values


def conv_output_size(
    size: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]
) -> tuple[int, ...]:
    """Output size of a convolution or pooling (no dilation, floor mode), per dimension."""
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(size, kernel, stride, padding))


def interpolate_rel_pos(table: Tensor, length: int) -> Tensor:
    """Resize a decomposed relative-position table ``[L, C]`` to ``[length, C]``.

    Linear interpolation along ``L`` (``align_corners=False``), as PySlowFast's ``get_rel_pos``
    does when a model runs at another input size; doing it once at load time gives the same
    numbers as PySlowFast does at run time.
    """
    if table.ndim != 2:
        raise ValueError(f"relative-position table must be [L, C], got shape {tuple(table.shape)}")
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0).float(), size=length, mode="linear", align_corners=False)
    return resized.squeeze(0).t().to(table.dtype).contiguous()


def interpolate_pos_embed_3d(
    pos_embed: Tensor, old_thw: tuple[int, int, int], new_thw: tuple[int, int, int], num_prefix_tokens: int = 0
) -> Tensor:
    """Resize an absolute position embedding ``[1, P + T*H*W, C]`` to a new token grid.

    The ``P = num_prefix_tokens`` leading entries (class tokens) are kept as they are; the grid
    part is resized trilinearly (``align_corners=False``). Returns ``[1, P + T'*H'*W', C]``.
    """
    t, h, w = old_thw
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or pos_embed.shape[1] != num_prefix_tokens + t * h * w:
        raise ValueError(
            f"position embedding must be [1, {num_prefix_tokens} + {t}*{h}*{w}, C] for grid {old_thw}, "
            f"got shape {tuple(pos_embed.shape)}"
        )
    if tuple(old_thw) == tuple(new_thw):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    channels = grid.shape[-1]
    grid = grid.reshape(1, t, h, w, channels).permute(0, 4, 1, 2, 3).float()
    grid = F.interpolate(grid, size=tuple(new_thw), mode="trilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 4, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)


def preset_config(config_cls: type, family: str, defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A preset's config: ``defaults`` updated by ``overrides``; an unknown field names the valid ones."""
    fields = {f.name for f in dataclasses.fields(config_cls) if f.init}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown {family} config field(s) {unknown}; valid fields: {sorted(fields)}")
    return config_cls(**{**defaults, **overrides})


def init_linear_and_norm(root: nn.Module) -> None:
    """The usual transformer init over every submodule: Linear weights truncated-normal (std 0.02) with
    zero biases, LayerNorm weights one and biases zero."""
    for module in root.modules():
        if isinstance(module, nn.Linear):
            nn.init.trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def check_clip(x: Tensor, in_chans: int, input_size: tuple[int, int, int], owner: str) -> None:
    """A clear error for a clip that is not ``[B, in_chans, *input_size]`` float."""
    t, h, w = input_size
    expected = f"[B, {in_chans}, {t}, {h}, {w}]"
    if not isinstance(x, Tensor) or x.ndim != 5:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{owner} expects a clip shaped {expected} (batch, channels, frames, height, width), "
                         f"got {got}")
    if x.shape[1] != in_chans:
        raise ValueError(f"{owner} expects {in_chans} channels, {expected}; got {tuple(x.shape)} "
                         f"(a [B, T, C, H, W] clip must be permuted to [B, C, T, H, W])")
    if tuple(x.shape[2:]) != (t, h, w):
        raise ValueError(f"clip is {x.shape[2]} frames of {x.shape[3]}x{x.shape[4]} pixels but this {owner} was "
                         f"built for {t} frames of {h}x{w} (build it with input_size=({x.shape[2]}, {x.shape[3]}, "
                         f"{x.shape[4]}) to change it); expected {expected}, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{owner} expects a float clip, got dtype {x.dtype}")
