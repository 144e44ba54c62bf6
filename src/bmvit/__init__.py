"""bmvit: single-stage spatio-temporal action detection (BMViT, CVPR 2024).

Public API::

    import bmvit
    model = bmvit.create_model("bmvit_mvitv2_s", num_classes=80)
    backbone = bmvit.create_backbone("mvitv2_s", weights="MViTv2_S_16x4_k400_f302660347.pyth")
"""

from bmvit.models import create_backbone, create_model, list_backbones, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_backbone", "create_model", "list_backbones", "list_models"]
