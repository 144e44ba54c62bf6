"""The package keeps the one-module API: every name importers use is importable from ``bmvit.data.synthetic``."""

from __future__ import annotations

import importlib

import bmvit.data.synthetic as synthetic


def test_every_exported_name_resolves_and_submodules_import_on_their_own():
    # The names the CLI, benchmarks, tests and docs import from the package, whichever module defines them now.
    used = ("CLASSES", "CLASS_DESCRIPTIONS", "FLIP_SWAP_PAIRS", "FPS", "AVA_FIRST_SECOND", "GENERATOR_VERSION",
            "EXCLUDE_BELOW_VISIBLE", "SyntheticSummary", "write_synthetic_dataset", "plot_keyframes",
            "create_split_video_spec", "create_video_spec", "encode_video", "render_frame", "keyframe_boxes",
            "keyframe_seconds", "KeyframeBox", "VideoSpec", "Track", "Segment", "BodyState", "figure_parts",
            "parts_box", "draw_parts")
    assert set(used) <= set(synthetic.__all__)
    for name in synthetic.__all__:
        assert getattr(synthetic, name) is not None, name
    for module in ("scene", "render", "generate", "keyframes", "write", "plot"):
        assert importlib.import_module(f"bmvit.data.synthetic.{module}").__doc__
