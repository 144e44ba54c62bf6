"""Model registry: ``create_model(name, **overrides)`` builds a full detector (backbone + heads)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from bmvit.models.backbones import create_backbone, list_backbones, register_backbone

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_DETECTOR_CLASSES: dict[str, type] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a detector preset under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def create_detector(
    model_cls: type, config_cls: type, backbone_name: str, num_classes: int,
    backbone_weights: str | None, weights_format: str | None, overrides: dict[str, Any],
) -> nn.Module:
    """A preset's detector: ``config_cls(backbone=..., num_classes=..., **overrides)``, then the
    pretrained backbone weights if given (what they loaded is kept as ``model.backbone_weights_report``,
    a ``LoadReport``). An override that is not a config field is an error."""
    known = {f.name for f in dataclasses.fields(config_cls)} - {"backbone", "num_classes"}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model override(s) {unknown}; {config_cls.__name__} fields are {sorted(known)} "
                         "(the backbone is fixed by the preset's name)")
    model = model_cls(config_cls(backbone=backbone_name, num_classes=num_classes, **overrides))
    if backbone_weights is not None:
        from bmvit.models.weights import load_backbone_weights

        model.backbone_weights_report = load_backbone_weights(model.backbone, backbone_weights,
                                                              weights_format=weights_format)
    return model


def detector_config_to_dict(config: Any) -> dict[str, Any]:
    """A detector config dataclass as plain data (tuples in ``backbone_overrides`` become lists)."""
    d = dataclasses.asdict(config)
    d["backbone_overrides"] = {k: _thaw(v) for k, v in config.backbone_overrides.items()}
    return d


def detector_config_from_dict(config_cls: type, d: dict[str, Any]) -> Any:
    """Inverse of ``detector_config_to_dict``; unknown keys are an error (a config from another
    version or model)."""
    name = config_cls.__name__
    if not isinstance(d, dict):
        raise TypeError(f"{name}.from_dict expects a dict, got {type(d).__name__}")
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"{name}: unknown keys {unknown}; known keys are {sorted(known)}")
    return config_cls(**d)


def _thaw(value: Any) -> Any:
    return [_thaw(v) for v in value] if isinstance(value, tuple) else value


def _ensure_registered() -> None:
    # Importing the modules runs their @register_model and @register_detector_class decorators.
    from bmvit.baselines.twostage import model as _twostage  # noqa: F401
    from bmvit.models import bmvit  # noqa: F401


def register_detector_class(cls: type) -> type:
    """Register a detector class under its name, which model files store as ``model_class``; the class
    must have a ``config_class`` with ``from_dict``."""
    if cls.__name__ in _DETECTOR_CLASSES:
        raise ValueError(f"detector class {cls.__name__!r} is registered twice")
    _DETECTOR_CLASSES[cls.__name__] = cls
    return cls


def detector_class(name: str) -> type:
    """The registered detector class called ``name`` (a model file's ``model_class``)."""
    _ensure_registered()
    if name not in _DETECTOR_CLASSES:
        raise ValueError(f"no detector class {name!r} in this version of bmvit; known: {sorted(_DETECTOR_CLASSES)}")
    return _DETECTOR_CLASSES[name]


def list_models() -> list[str]:
    """Names of all registered detector presets, sorted."""
    _ensure_registered()
    return sorted(_MODELS)


def create_model(name: str, **overrides) -> nn.Module:
    """Build a registered detector preset; ``overrides`` are fields of its model config."""
    _ensure_registered()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**overrides)


__all__ = ["create_backbone", "create_model", "list_backbones", "list_models", "register_backbone", "register_model"]
