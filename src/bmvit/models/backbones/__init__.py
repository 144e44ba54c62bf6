"""Backbone registry and the contract every backbone keeps.

A backbone maps a normalised clip ``x [B, 3, T, H, W]`` to the tokens after its final norm,
``[B, T', H', W', C]`` (class token dropped). Presets are registered by name with
``@register_backbone`` and built with ``create_backbone(name, weights=None, **overrides)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Backbone(Protocol):
    """What BMViT needs from a backbone."""

    embed_dim: int  # C of the output tokens
    input_size: tuple[int, int, int]  # (T, H, W) the preset was designed for

    def forward(self, x: Tensor) -> Tensor: ...  # [B, 3, T, H, W] -> [B, T', H', W', C]

    def no_weight_decay(self) -> set[str]: ...


_BACKBONES: dict[str, Callable[..., nn.Module]] = {}

RENAMED_BACKBONES: dict[str, str] = {
    "bmvit_hiera_l": "hiera_l_det",
    "bmvit_hiera_tiny": "hiera_tiny_det",
    "bmvit_mvit_tiny": "mvit_tiny_det",
    "bmvit_mvitv2_s": "mvitv2_s_det",
    "bmvit_vit_b": "vit_b_det",
}
"""Backbone presets' former names -> their names now. The detector presets of ``bmvit.list_models()`` kept
the old names, which the backbones they are built on also had; checkpoints and configs written before the
rename store these names in ``model_config.backbone``, so every place that reads one maps it here."""


def canonical_backbone_name(name: str) -> str:
    """``name``, or its current name if it is a backbone preset's former name (``RENAMED_BACKBONES``)."""
    return RENAMED_BACKBONES.get(name, name)


def register_backbone(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a preset builder under its function name."""
    if fn.__name__ in _BACKBONES:
        raise ValueError(f"backbone {fn.__name__!r} is registered twice")
    _BACKBONES[fn.__name__] = fn
    return fn


def _ensure_registered() -> None:
    # Importing the modules runs their @register_backbone decorators.
    from bmvit.models.backbones import hiera, mvit, vit  # noqa: F401


def list_backbones() -> list[str]:
    """Names of all registered backbone presets, sorted."""
    _ensure_registered()
    return sorted(_BACKBONES)


def create_backbone(
    name: str, weights: str | None = None, weights_format: str | None = None, **overrides
) -> nn.Module:
    """Build a registered backbone preset, optionally loading a pretrained weights file.

    Args:
        name: a name from ``list_backbones()`` (a former name in ``RENAMED_BACKBONES`` is read as its new one).
        weights: path to a weights file (torchvision/PySlowFast/VideoMAE/Hiera/bmvit format).
        weights_format: the source format; detected from the keys when ``None``.
        **overrides: fields of the backbone's config dataclass to change (e.g. ``drop_path_rate=0.2``).
    """
    _ensure_registered()
    name = canonical_backbone_name(name)
    if name not in _BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(sorted(_BACKBONES))}")
    model = _BACKBONES[name](**overrides)
    if weights is not None:
        from bmvit.models.weights import load_backbone_weights

        load_backbone_weights(model, weights, weights_format=weights_format)
    return model
