import json
import os
import stat

import pytest
import torch
from safetensors import safe_open

import bmvit
from bmvit import checkpoint
from bmvit.checkpoint import atomic_write_bytes


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_has_the_mode_of_a_plain_write_and_replaces(tmp_path, umask_022):
    path = tmp_path / "sub" / "model.safetensors"
    atomic_write_bytes(path, b"first")
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.safetensors"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    atomic_write_bytes(path, b"old")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]


def _tiny_detector(num_classes: int = 3):
    torch.manual_seed(0)
    return bmvit.create_model("bmvit_mvit_tiny", num_classes=num_classes, proj_dim=16, head_hidden_dim=16,
                              backbone_overrides={"input_size": (4, 64, 64)})


def test_a_checkpoint_naming_a_former_backbone_preset_loads_resumes_and_initialises(tmp_path):
    model = _tiny_detector()
    old_config = {**model.config.to_dict(), "backbone": "bmvit_mvit_tiny"}  # as files written before the rename
    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, model, {"model_config": old_config, "model_class": "BMViT", "class_ids": [1, 2, 3]})
    _, meta = checkpoint.load_tensors(path)
    assert meta["model_config"] == model.config.to_dict()  # what a resume compares with the run's config
    loaded = checkpoint.load_model(path)
    assert loaded.config == model.config and loaded.config.backbone == "mvit_tiny_det"
    clip = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clip)["pred_actions"], model.eval()(clip)["pred_actions"], rtol=0, atol=0)
    assert "every tensor" in checkpoint.init_from_detector(_tiny_detector(), path, [1, 2, 3])


def test_shipped_weights_store_the_former_backbone_name_and_load_as_the_new_one():
    from bmvit.models.weights import ASSETS_DIR

    paths = sorted(ASSETS_DIR.glob("*.safetensors"))
    assert paths
    for path in paths:
        with safe_open(path, "pt") as handle:
            stored = json.loads(handle.metadata()[checkpoint.METADATA_KEY])["model_config"]["backbone"]
        assert stored == "bmvit_mvit_tiny"
        assert checkpoint.load_model(path).config.backbone == "mvit_tiny_det"


def test_init_weights_trained_on_other_classes_says_what_to_do():
    # The shipped demo config starts from the 9-class synthetic detector; a synthetic set that lacks class 9
    # gives the run 8 classes.
    from bmvit.models.bmvit import BMViT, BMViTConfig
    from bmvit.models.weights import ASSETS_DIR, resolve_weights_path

    path = resolve_weights_path("mvit_tiny_8x128.synthetic_seed1")  # configs/synthetic_tiny.yaml's init_weights
    _, meta = checkpoint.load_tensors(path)
    assert path.parent == ASSETS_DIR and meta["class_ids"] == list(range(1, 10))
    model = BMViT(BMViTConfig.from_dict({**meta["model_config"], "num_classes": 8}))
    with pytest.raises(ValueError) as raised:
        checkpoint.init_from_detector(model, path, list(range(1, 9)))
    message = str(raised.value)
    assert "`model.init_weights=` (empty)" in message and "backbone weights" in message
    assert "train on data with the checkpoint's classes" in message
    assert "[1, 2, 3, 4, 5, 6, 7, 8, 9]" in message and "[1, 2, 3, 4, 5, 6, 7, 8]" in message
    assert "missing from the data: [9]" in message and "another architecture" not in message
    # Same count, other ids: the same advice, naming the extra id.
    model = BMViT(BMViTConfig.from_dict(meta["model_config"]))
    extra = r"missing from the data: \[9\]; in the data but not in the checkpoint: \[10\]"
    with pytest.raises(ValueError, match=extra):
        checkpoint.init_from_detector(model, path, list(range(1, 9)) + [10])
