"""bmvit: single-stage spatio-temporal action detection (BMViT, CVPR 2024).

Public API::

    import bmvit
    model = bmvit.create_model("bmvit_mvitv2_s", num_classes=80)
    backbone = bmvit.create_backbone("mvitv2_s", weights="MViTv2_S_16x4_k400_f302660347.pyth")

    model = bmvit.load("runs/demo/model.safetensors")
    for det in bmvit.Predictor(model).predict("street.mp4", stream=True):
        print(det.timestamp, det.boxes_xyxy, det.top_actions(k=3))
"""

# Private aliases: `dir(bmvit)` should list the API, not this file's helpers.
import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"

# Every public name is imported on first use (PEP 562): the models pull in torch (over a second), and
# the commands that need no model (`bmvit ava-eval`, `bmvit config show`, `bmvit data check`, every
# `--help`) import `bmvit` too, so an eager import would make each of them pay for torch.
# public name -> module that defines it
_LAZY: dict[str, str] = {
    "create_backbone": "bmvit.models",
    "create_model": "bmvit.models",
    "list_backbones": "bmvit.models",
    "list_models": "bmvit.models",
    "load": "bmvit.checkpoint",
    "Predictor": "bmvit.inference.predictor",
    "Detections": "bmvit.inference.results",
}

if _typing.TYPE_CHECKING:  # type checkers and IDEs see the real objects; nothing is imported at run time
    from bmvit.checkpoint import load
    from bmvit.inference.predictor import Predictor
    from bmvit.inference.results import Detections
    from bmvit.models import create_backbone, create_model, list_backbones, list_models


def __getattr__(name: str) -> _typing.Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        # AttributeError (not ImportError) so that `from bmvit import <submodule>` falls back to importing it.
        raise AttributeError(f"module 'bmvit' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Detections", "Predictor", "__version__", "create_backbone", "create_model", "list_backbones", "list_models",
           "load"]
