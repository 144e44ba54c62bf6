"""The two-stage baseline: MViTv2-S classifying a person detector's boxes by RoIAlign.

Supplementary Sec. 2 / Fig. 2 of the paper compares BMViT with the two-stage approach on the same
backbone; this package is that model, self-contained:

- ``model``: ``TwoStageMViT`` and its presets ``twostage_mvitv2_s`` / ``twostage_mvit_tiny``;
- ``roi_align``: RoIAlign in plain PyTorch;
- ``person_boxes``: PySlowFast's person-box files, and a synthetic detector for the synthetic data;
- ``dataset``: key frames served with the boxes to classify;
- ``criterion``: its loss and its post-processing;
- ``family``: how training and evaluation drive it (``bmvit.build.DetectorFamily``).

How to train and compare it: docs/twostage.md.
"""
