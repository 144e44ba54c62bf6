"""Fixtures shared by every test."""

from pathlib import Path

import pytest
import torch

from bmvit.data.synthetic import write_synthetic_dataset


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run tiny models on small inputs: one thread avoids OpenMP spinning on a busy 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A few seconds of the synthetic AVA-format dataset: 2 train videos, 1 val video, 160x120."""
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(root, seed=3, num_videos=2, num_val_videos=1, seconds=6, size=(160, 120), workers=1)
    return root


@pytest.fixture
def tiny_overrides():
    return make_tiny_overrides


def make_tiny_overrides(root: Path, out_dir: Path, **extra: object) -> list[str]:
    """Overrides that make synthetic_tiny.yaml train in seconds: a 4x64x64 clip, batch 2."""
    values = {
        "data.root": root,
        "train.out_dir": out_dir,
        "model.input_size": "[4, 64, 64]",
        # The config starts from the whole shipped 8x128x128 detector; a 4x64x64 model can take only its
        # backbone (relative-position tables resized), which still exercises the shipped file.
        "model.init_weights": "",
        "model.backbone_weights": "mvit_tiny_8x128.synthetic_seed1",
        "data.sampling_stride": 8,
        "data.num_workers": 0,
        "data.cache_videos": "false",
        "train.batch_size": 2,
        "train.epochs": 2,
        "train.eval_every": 1,
        "train.tensorboard": "false",
        "train.max_minutes": 0,
        "eval.batch_size": 4,
        **extra,
    }
    return [f"{k}={v}" for k, v in values.items()]
