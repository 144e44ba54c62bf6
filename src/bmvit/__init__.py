"""bmvit: single-stage spatio-temporal action detection (BMViT, CVPR 2024).

Public API::

    import bmvit
    model = bmvit.create_model("bmvit_mvitv2_s", num_classes=80)
    backbone = bmvit.create_backbone("mvitv2_s", weights="MViTv2_S_16x4_k400_f302660347.pyth")

    model = bmvit.load("runs/demo/model.safetensors")
    for det in bmvit.Predictor(model).predict("street.mp4", stream=True):
        print(det.timestamp, det.boxes_xyxy, det.top_actions(k=3))
"""

from bmvit.models import create_backbone, create_model, list_backbones, list_models

__version__ = "0.1.0"

# Imported on first use: the inference stack pulls in PyAV and the data layer, which `import bmvit` should not pay for.
_LAZY = {"load": "bmvit.checkpoint", "Predictor": "bmvit.inference.predictor",
         "Detections": "bmvit.inference.results"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bmvit' has no attribute {name!r}")


__all__ = ["Detections", "Predictor", "__version__", "create_backbone", "create_model", "list_backbones", "list_models",
           "load"]
