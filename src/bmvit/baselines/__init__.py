"""Baselines BMViT is compared with, each self-contained in its own package.

They plug into training and evaluation through the same interfaces as BMViT (a registered model
preset, and a ``bmvit.build.DetectorFamily`` on the model class), so nothing outside a baseline's
package knows of it except the model registry, which imports it to list its presets.
"""
