"""Pretrained weights: torchvision and PySlowFast state dicts load strictly into our MViT and give
the same numbers; relative-position tables follow the input size; every misfit is a named error."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import bmvit
from bmvit.models.backbones.layers import interpolate_rel_pos
from bmvit.models.backbones.mvit import MViT, MViTConfig, remap_torchvision
from bmvit.models.weights import KNOWN_WEIGHTS, load_backbone_weights, read_state_dict, unwrap_state_dict

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _torchvision_fixture(name: str) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
    """State dict, input clip, torchvision's final-norm tokens and our config, made by
    tests/fixtures/make_torchvision_mvit_fixture.py (torchvision 0.29.1)."""
    path = FIXTURES / f"torchvision_mvit_{name}.safetensors"
    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        config = json.loads(f.metadata()["config"])
    state = {k[len("state."):]: v for k, v in tensors.items() if k.startswith("state.")}
    return state, tensors["input"], tensors["expected"], config


@pytest.mark.parametrize("name", ["v2", "mlp_dim_mul"])
def test_torchvision_mvit_loads_strictly_and_matches_its_output(name, tmp_path):
    state, clip, expected, config = _torchvision_fixture(name)
    path = tmp_path / "tv.pth"
    torch.save(state, path)
    model = bmvit.create_backbone("mvit_tiny", **config).eval()
    report = load_backbone_weights(model, path)
    assert report.weights_format == "torchvision"
    assert sorted(report.dropped) == ["head.1.bias", "head.1.weight"]
    assert report.missing == []
    assert len(report.loaded) == len(model.state_dict()) == len(state) - 2
    # torchvision sizes block 4's tables by floor division (3 rows) and resizes them at run time
    assert report.adapted == ["blocks.4.attn.rel_pos_h", "blocks.4.attn.rel_pos_w"]
    with torch.no_grad():
        tokens = model(clip)
    assert tokens.shape == expected.shape
    torch.testing.assert_close(tokens, expected, atol=1e-4, rtol=0)


def test_remap_torchvision_names_every_key():
    state, _, _, config = _torchvision_fixture("v2")
    model = MViT(MViTConfig(**config))
    remapped = remap_torchvision(state, model)
    assert set(remapped) - set(model.state_dict()) == {"head.1.weight", "head.1.bias"}
    assert set(model.state_dict()) - set(remapped) == set()
    assert remapped["cls_token"].shape == (1, 1, 8)
    assert torch.equal(remapped["blocks.1.attn.proj.weight"], state["blocks.1.attn.project.0.weight"])
    assert torch.equal(remapped["blocks.1.attn.norm_k.bias"], state["blocks.1.attn.pool_k.norm_act.0.bias"])
    assert torch.equal(remapped["blocks.1.mlp.fc2.weight"], state["blocks.1.mlp.3.weight"])


def _slowfast_state_dict(cfg: MViTConfig, num_classes: int = 7) -> dict[str, torch.Tensor]:
    """A state dict with PySlowFast's MViT key names (slowfast/models/video_model_builder.py: MViT,
    attention.py: MultiScaleBlock, MultiScaleAttention; common.py: Mlp; stem_helper.py: PatchEmbed;
    head_helper.py: TransformerBasicHead), written out here, with PySlowFast's rel-pos table sizes."""
    g = torch.Generator().manual_seed(0)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    e = cfg.embed_dim
    sd = {"patch_embed.proj.weight": r(e, 3, *cfg.patch_kernel), "patch_embed.proj.bias": r(e), "cls_token": r(1, 1, e)}
    for i, b in enumerate(cfg.blocks):
        p, hd, a = f"blocks.{i}.", b.attn_dim // b.num_heads, b.attn_dim
        size = b.thw_in[1]  # PySlowFast: rel_sp_dim = 2 * max(size // stride_q, size // stride_kv) - 1
        rel_sp = 2 * max(size // b.stride_q[1], size // b.stride_kv[1]) - 1
        sd |= {p + "norm1.weight": r(b.dim_in), p + "norm1.bias": r(b.dim_in),
               p + "attn.qkv.weight": r(3 * a, b.dim_in), p + "attn.qkv.bias": r(3 * a),
               p + "attn.proj.weight": r(a, a), p + "attn.proj.bias": r(a),
               p + "attn.rel_pos_h": r(rel_sp, hd), p + "attn.rel_pos_w": r(rel_sp, hd),
               p + "attn.rel_pos_t": r(2 * b.thw_in[0] - 1, hd),
               p + "norm2.weight": r(a), p + "norm2.bias": r(a),
               p + "mlp.fc1.weight": r(4 * a, a), p + "mlp.fc1.bias": r(4 * a),
               p + "mlp.fc2.weight": r(b.dim_out, 4 * a), p + "mlp.fc2.bias": r(b.dim_out)}
        for x in "qkv":
            sd |= {p + f"attn.pool_{x}.weight": r(hd, 1, 3, 3, 3), p + f"attn.norm_{x}.weight": r(hd),
                   p + f"attn.norm_{x}.bias": r(hd)}
        if b.dim_in != b.dim_out:
            sd |= {p + "proj.weight": r(b.dim_out, b.dim_in), p + "proj.bias": r(b.dim_out)}
    o = cfg.output_dim
    return sd | {"norm.weight": r(o), "norm.bias": r(o), "head.projection.weight": r(num_classes, o),
                 "head.projection.bias": r(num_classes)}


def _write_pyth(path: Path, state: dict) -> Path:
    # PySlowFast's checkpoint layout (slowfast/utils/checkpoint.py: save_checkpoint), cfg dumped as YAML text.
    torch.save({"epoch": 30, "model_state": state, "optimizer_state": {}, "cfg": "MVIT:\n  DEPTH: 5\n"}, path)
    return path


def test_slowfast_checkpoint_loads_strictly_and_drops_the_head(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    state = _slowfast_state_dict(model.cfg)
    report = load_backbone_weights(model, _write_pyth(tmp_path / "k400.pyth", state))
    assert report.weights_format == "slowfast"
    assert sorted(report.dropped) == ["head.projection.bias", "head.projection.weight"]
    assert report.missing == [] and len(report.loaded) == len(state) - 2
    loaded = model.state_dict()
    for key in report.loaded:
        if key in report.adapted:
            assert loaded[key].shape != state[key].shape
        else:
            assert torch.equal(loaded[key], state[key]), key
    assert report.adapted == []  # at 128 px every grid divides evenly: PySlowFast's table sizes are ours
    assert "head.projection" in str(report)


def test_unexpected_missing_and_misshapen_keys_raise_with_their_names(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    extra = _slowfast_state_dict(model.cfg) | {"blocks.0.attn.q_bias": torch.zeros(24)}
    with pytest.raises(ValueError, match=r"does not have: blocks\.0\.attn\.q_bias"):
        load_backbone_weights(model, _write_pyth(tmp_path / "a.pyth", extra))
    short = _slowfast_state_dict(model.cfg)
    del short["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match=r"does not provide: blocks\.1\.mlp\.fc2\.bias"):
        load_backbone_weights(model, _write_pyth(tmp_path / "b.pyth", short))
    wide = _slowfast_state_dict(MViTConfig(**{**_tiny_fields(model), "embed_dim": 32}))
    with pytest.raises(ValueError, match=r"shape mismatch.*patch_embed\.proj\.weight: model \(24, 3, 3, 7, 7\), "
                                         r"file \(32, 3, 3, 7, 7\)"):
        load_backbone_weights(model, _write_pyth(tmp_path / "c.pyth", wide))


def _tiny_fields(model: MViT) -> dict:
    return {"input_size": model.cfg.input_size, "depths": model.cfg.depths, "num_heads": model.cfg.num_heads}


def test_another_architecture_is_a_clear_error(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    # VideoMAE ViT-B keys: absolute position embedding, q/v biases, fc_norm.
    videomae = {"patch_embed.proj.weight": torch.zeros(768, 3, 2, 16, 16), "pos_embed": torch.zeros(1, 1568, 768),
                "blocks.0.attn.qkv.weight": torch.zeros(2304, 768), "blocks.0.attn.q_bias": torch.zeros(768),
                "fc_norm.weight": torch.zeros(768)}
    save_file(videomae, str(tmp_path / "videomae.safetensors"))
    with pytest.raises(ValueError, match=r"does not fit MViT.*pos_embed.*another architecture"):
        load_backbone_weights(model, tmp_path / "videomae.safetensors")
    save_file({"fc.weight": torch.zeros(3, 3)}, str(tmp_path / "resnet.safetensors"))
    with pytest.raises(ValueError, match=r"does not look like weights for this backbone.*fc\.weight"):
        load_backbone_weights(model, tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match=r"weights_format 'hiera' is not one this backbone reads"):
        load_backbone_weights(model, tmp_path / "resnet.safetensors", weights_format="hiera")


def test_missing_unreadable_and_pickled_files(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    with pytest.raises(FileNotFoundError, match=r"nope\.pyth' does not exist"):
        load_backbone_weights(model, tmp_path / "nope.pyth")
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"expected \.safetensors"):
        load_backbone_weights(model, tmp_path / "w.txt")
    torch.save({"model_state": model.state_dict(), "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ValueError, match=r"weights_only=True"):
        load_backbone_weights(model, tmp_path / "pickled.pth")


def test_rel_pos_tables_follow_the_input_size_224_to_256(tmp_path):
    torch.manual_seed(0)
    source = bmvit.create_backbone("mvit_tiny", input_size=(16, 224, 224))
    save_file(source.state_dict(), str(tmp_path / "tiny224.safetensors"))
    target = bmvit.create_backbone("mvit_tiny", input_size=(16, 256, 256))
    report = load_backbone_weights(target, tmp_path / "tiny224.safetensors")
    assert report.weights_format == "bmvit" and report.dropped == [] and report.missing == []
    src, dst = source.state_dict(), target.state_dict()
    resized = sorted(k for k in src if src[k].shape != dst[k].shape)
    assert resized and all(".rel_pos_h" in k or ".rel_pos_w" in k for k in resized)
    assert report.adapted == resized
    assert src["blocks.0.attn.rel_pos_h"].shape[0] == 2 * 56 - 1  # 56x56 queries at 224 px
    assert dst["blocks.0.attn.rel_pos_h"].shape[0] == 2 * 64 - 1  # 64x64 at 256 px
    for key in src:
        want = interpolate_rel_pos(src[key], dst[key].shape[0]) if key in resized else src[key]
        torch.testing.assert_close(dst[key], want, atol=0, rtol=0)
    with torch.no_grad():
        assert torch.isfinite(target(torch.randn(1, 3, 16, 256, 256))).all()


@pytest.mark.slow
def test_full_mvitv2_s_224_weights_load_into_mvitv2_s_det_256(tmp_path):
    source = bmvit.create_backbone("mvitv2_s")
    torch.save({"model_state": source.state_dict(), "epoch": 1}, tmp_path / "s.pyth")
    target = bmvit.create_backbone("mvitv2_s_det")
    report = load_backbone_weights(target, tmp_path / "s.pyth")
    assert len(report.loaded) == len(target.state_dict())
    assert report.adapted == sorted(f"blocks.{i}.attn.rel_pos_{a}" for i in range(16) for a in "hw")


def test_containers_prefixes_and_detector_checkpoints(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    state = model.state_dict()
    nested = {"model": {"state_dict": {f"module.{k}": v for k, v in state.items()}}}
    assert set(unwrap_state_dict(nested)) == set(state)
    detector = {f"backbone.{k}": v for k, v in state.items()} | {"proj.weight": torch.zeros(4, 192)}
    save_file(detector, str(tmp_path / "detector.safetensors"))
    report = load_backbone_weights(bmvit.create_backbone("mvit_tiny"), tmp_path / "detector.safetensors")
    assert report.dropped == ["proj.weight"] and len(report.loaded) == len(state)
    with pytest.raises(ValueError, match="state dict of tensors"):
        unwrap_state_dict({"epoch": 3})


def test_create_backbone_with_weights_loads_them(tmp_path):
    torch.manual_seed(3)
    source = bmvit.create_backbone("mvit_tiny_det")
    torch.save(source.state_dict(), tmp_path / "ours.pth")
    model = bmvit.create_backbone("mvit_tiny_det", weights=str(tmp_path / "ours.pth"))
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert read_state_dict(tmp_path / "ours.pth").keys() == source.state_dict().keys()


def test_known_file_name_with_the_wrong_hash_is_refused(tmp_path):
    model = bmvit.create_backbone("mvit_tiny")
    torch.save(model.state_dict(), tmp_path / "mvit_v2_s-ae3be167.pth")
    with pytest.raises(ValueError, match="sha256"):
        load_backbone_weights(model, tmp_path / "mvit_v2_s-ae3be167.pth")


def test_shipped_weights_resolve_by_record_name_or_file_name(tmp_path, monkeypatch):
    from bmvit.models import weights

    spec = next(iter(KNOWN_WEIGHTS.values()))
    monkeypatch.setattr(weights, "ASSETS_DIR", tmp_path)
    # Neither shipped nor cached: the name is downloaded into the cache, which offline mode refuses
    # (tests/models/test_weights_hub.py tests the download itself, against a local server).
    monkeypatch.setenv("BMVIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BMVIT_OFFLINE", "1")
    with pytest.raises(weights.OfflineError, match=rf"weights '{re.escape(spec.name)}' are not in the cache"):
        weights.resolve_weights_path(spec.name)
    (tmp_path / spec.file_name).write_bytes(b"")
    assert weights.resolve_weights_path(spec.name) == tmp_path / spec.file_name
    assert weights.resolve_weights_path(spec.file_name) == tmp_path / spec.file_name
    with pytest.raises(FileNotFoundError, match=r"'no_such_weights' is neither an existing file nor the name"):
        weights.resolve_weights_path("no_such_weights")
    # A path that exists wins over a shipped file of the same name.
    local = tmp_path / "here" / spec.file_name
    local.parent.mkdir()
    local.write_bytes(b"")
    assert weights.resolve_weights_path(local) == local


def test_the_demo_config_starts_from_every_tensor_of_the_shipped_detector():
    from bmvit.build import create_model_from_config
    from bmvit.checkpoint import init_from_detector
    from bmvit.config import load_config
    from bmvit.data.synthetic import CLASSES
    from bmvit.models.weights import ASSETS_DIR, check_known_file, resolve_weights_path

    config = load_config(Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml")
    assert config.model.backbone_weights is None  # the whole detector, not a backbone with fresh heads
    spec = KNOWN_WEIGHTS[config.model.init_weights]
    path = resolve_weights_path(config.model.init_weights)
    assert path == ASSETS_DIR / spec.file_name and check_known_file(path) is spec  # sha256 checked
    assert spec.input_size == tuple(config.model.input_size) and spec.num_classes == len(CLASSES)
    model = create_model_from_config(config.model, num_classes=spec.num_classes)
    report = init_from_detector(model, path, list(range(1, len(CLASSES) + 1)))  # the synthetic label map's ids
    shipped = load_file(str(path))
    state = model.state_dict()
    assert report.startswith(f"initialised every tensor ({len(state)})")
    assert set(state) == set(shipped)
    assert all(torch.equal(v, shipped[k]) for k, v in state.items())  # the heads included
