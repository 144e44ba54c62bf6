"""Fixtures for the inference tests: tiny model files written as the trainer writes them, and small videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

import bmvit
from bmvit.checkpoint import save_model
from bmvit.config import Config
from bmvit.data.synthetic import CLASSES, create_video_spec, encode_video
from bmvit.build import ClassInfo
from bmvit.trainer import model_metadata

TINY_INPUT = (8, 64, 64)  # bmvit_mvit_tiny at 8x64x64: 4x4x4 tokens, 16 candidates, ~10 ms per clip
STRIDE = 8  # 8 frames at stride 8: a clip spans 64 / 30 = 2.13 s, so clamping at the video ends is exercised


def write_model_file(path: Path, resize: str = "square", seed: int = 0, threshold: float = 0.3) -> Path:
    """A random-weights tiny BMViT saved with the metadata ``bmvit.trainer.model_metadata`` writes."""
    torch.manual_seed(seed)
    model = bmvit.create_model("bmvit_mvit_tiny", num_classes=len(CLASSES), proj_dim=32, head_hidden_dim=32,
                               backbone_overrides={"input_size": TINY_INPUT})
    config = Config()
    config.model.name = "bmvit_mvit_tiny"
    config.model.input_size = list(TINY_INPUT)
    config.data.sampling_stride = STRIDE
    config.data.resize = resize
    config.eval.threshold = threshold
    classes = ClassInfo(class_ids=list(range(1, len(CLASSES) + 1)), label_map=dict(enumerate(CLASSES, 1)))
    save_model(path, model, model_metadata(model, config, classes))
    return path


def write_video(path: Path, num_frames: int, size: tuple[int, int] = (96, 128), fps: int = 30,
                faststart: bool = False, *, container_format: str | None = None, keyint: int = 15,
                noise_seed: int | None = None) -> Path:
    """An H.264 video of ``num_frames`` frames (H, W = ``size``): a bright bar that widens every frame, on a
    flat background or, with ``noise_seed``, on noise (which makes the file as large as camera footage).
    The container comes from the extension unless ``container_format`` names one."""
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    with av.open(str(path), "w", format=container_format, options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size[1], size[0]
        stream.pix_fmt = "yuv420p" if size[0] % 2 == 0 and size[1] % 2 == 0 else "yuv444p"
        stream.options = {"preset": "ultrafast", "x264-params": f"keyint={keyint}:threads=1"}
        for i in range(num_frames):
            image = np.full((*size, 3), 40, np.uint8) if rng is None else rng.integers(0, 256, (*size, 3), np.uint8)
            image[size[0] // 4 : 3 * size[0] // 4, : 1 + (i * 3) % size[1]] = (50 + 7 * i) % 256
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path



@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    return write_model_file(tmp_path_factory.mktemp("models") / "tiny.safetensors")


@pytest.fixture(scope="session")
def letterbox_model_file(tmp_path_factory) -> Path:
    return write_model_file(tmp_path_factory.mktemp("models") / "tiny_letterbox.safetensors", resize="letterbox")


@pytest.fixture(scope="session")
def short_side_model_file(tmp_path_factory) -> Path:
    return write_model_file(tmp_path_factory.mktemp("models") / "tiny_short_side.safetensors", resize="short_side")


@pytest.fixture(scope="session")
def synthetic_video(tmp_path_factory) -> Path:
    """3 s of the synthetic dataset's scenes (figures acting), 160x120 at 30 fps."""
    spec = create_video_spec(np.random.default_rng(0), size=(160, 120), seconds=3)
    path = tmp_path_factory.mktemp("videos") / "scene.mp4"
    encode_video(spec, path)
    return path


@pytest.fixture(scope="session")
def make_video():
    """``write_video`` for tests that need a video of their own."""
    return write_video


@pytest.fixture(scope="session")
def make_model_file():
    """``write_model_file`` for tests that need a model file of their own."""
    return write_model_file
