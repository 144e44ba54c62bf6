"""Hiera backbone and the BMViT Hiera-L variant: equality with the ``hiera-transformer`` package's
own model (fixture made by tests/fixtures/make_hiera_fixture.py), the derived block table, the
pooling choices and their GMACs, the package's checkpoint layouts (fine-tuned, MAE), position
embeddings resized to a new input size, attention maps and bad configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

import bmvit
from bmvit.flops import count_flops
from bmvit.models.backbones.hiera import HieraConfig
from bmvit.models.backbones.layers import interpolate_pos_embed_3d
from bmvit.models.weights import load_backbone_weights

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "hiera_video.safetensors"


@pytest.fixture(scope="module")
def fixture() -> tuple[dict[str, torch.Tensor], dict]:
    with safe_open(str(FIXTURE), "pt") as f:
        metadata = f.metadata()
    return load_file(str(FIXTURE)), metadata


def _package_state(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"{name}.state."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


@pytest.mark.parametrize("name", ["all_pools", "last_pool_removed"])
def test_tokens_equal_the_hiera_package_features(name, fixture, tmp_path):
    tensors, metadata = fixture
    config = json.loads(metadata["configs"])[name]
    state = _package_state(tensors, name)
    path = tmp_path / "hiera_tiny_16x224.pth"
    torch.save({"model_state": state, "epoch": torch.tensor(1)}, path)  # the package's checkpoint container
    model = bmvit.create_backbone("hiera_tiny", **config).eval()
    report = load_backbone_weights(model, path)
    assert report.weights_format == "hiera"
    assert sorted(report.dropped) == ["head.projection.bias", "head.projection.weight"]
    assert report.missing == [] and report.adapted == [] and len(report.loaded) == len(model.state_dict())
    clip = tensors["input"]
    with torch.no_grad():
        stages = model.forward_intermediates(clip)
        tokens = model(clip)
    expected = [tensors[f"{name}.stage{i}"] for i in range(4)]
    assert [s.shape for s in stages] == [e.shape for e in expected]
    for got, want in zip(stages, expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    # Hiera's norm is our per-token final norm
    normed = F.layer_norm(expected[-1], expected[-1].shape[-1:], state["norm.weight"], state["norm.bias"], eps=1e-6)
    torch.testing.assert_close(tokens, normed, atol=1e-4, rtol=0)
    assert tokens.shape[1:4] == ((4, 2, 2) if name == "all_pools" else (4, 4, 4))


def test_full_presets_have_the_package_parameter_counts(fixture):
    _, metadata = fixture
    with torch.device("meta"):
        base, large, ours = (bmvit.create_backbone(n) for n in ("hiera_b", "hiera_l", "hiera_l_det"))
    assert sum(p.numel() for p in base.parameters()) == int(metadata["params_hiera_base_16x224"]) == 50_784_960
    assert sum(p.numel() for p in large.parameters()) == int(metadata["params_hiera_large_16x224"]) == 212_630_400
    # 256 px: only the spatial position embedding grows (56x56 -> 64x64 positions of 144 channels)
    assert sum(p.numel() for p in ours.parameters()) - 212_630_400 == (64 * 64 - 56 * 56) * 144


def test_hiera_l_block_table():
    cfg = HieraConfig(embed_dim=144, num_heads=2, stages=(2, 6, 36, 4))
    blocks = cfg.blocks
    assert len(blocks) == 48 and cfg.stage_ends == (1, 7, 43, 47)
    assert [blocks[i].dim_out for i in (0, 2, 8, 44)] == [144, 288, 576, 1152]
    assert [blocks[i].num_heads for i in (0, 2, 8, 44)] == [2, 4, 8, 16]
    pooled = [i for i, b in enumerate(blocks) if b.q_stride != (1, 1, 1)]
    assert pooled == [2, 8, 44]
    # mask units of 8x8 tokens, shrinking with each pooling; the first block of a stage keeps the
    # previous stage's kind of attention (Hiera's lag), so block 8 still attends within units.
    assert [blocks[i].window for i in (0, 1, 2, 3, 7, 8, 9, 43, 44, 47)] == [
        (1, 8, 8), (1, 8, 8), (1, 8, 8), (1, 4, 4), (1, 4, 4), (1, 4, 4), None, None, None, None]
    assert [blocks[i].thw_in for i in (0, 2, 8, 44)] == [(8, 56, 56), (8, 56, 56), (8, 28, 28), (8, 14, 14)]
    assert cfg.output_grid == (8, 7, 7) and cfg.output_dim == 1152
    with torch.device("meta"):
        ours = bmvit.create_backbone("hiera_l_det")
    assert ours.cfg.blocks[44].q_stride == (1, 1, 1) and ours.output_grid == (8, 16, 16)


# Which pooling to remove for a 16x16 key-frame grid at 256 px (docs/backbones.md). fvcore-based
# reference counts from docs/design.md#other-backbones: 412.7 (224, all poolings), 579.6 (256, all), 705.8 (256, last removed).
@pytest.mark.parametrize("size, pools, grid, gmacs", [
    (224, (1, 2, 3), (8, 7, 7), 412.7),
    (256, (1, 2, 3), (8, 8, 8), 579.6),
    (256, (1, 2), (8, 16, 16), 705.8),
    (256, (1, 3), (8, 16, 16), 4161.7),
    (256, (2, 3), (8, 16, 16), 4325.7),
])
def test_pooling_choices_grids_and_gmacs(size, pools, grid, gmacs):
    with torch.device("meta"):
        model = bmvit.create_backbone("hiera_l", input_size=(16, size, size), q_pool_stages=pools)
    assert model.output_grid == grid
    assert count_flops(model, (1, 3, 16, size, size)).gmacs == pytest.approx(gmacs, rel=0.005)


def test_mae_checkpoint_takes_encoder_norm_and_drops_the_decoder(tmp_path):
    torch.manual_seed(0)
    source = bmvit.create_backbone("hiera_tiny_det", input_size=(8, 64, 64))
    state = dict(source.state_dict())
    state["encoder_norm.weight"], state["encoder_norm.bias"] = state.pop("norm.weight") + 0.5, state.pop("norm.bias")
    mae_only = {"multi_scale_fusion_heads.0.weight": torch.zeros(192, 24, 1, 4, 4),
                "multi_scale_fusion_heads.0.bias": torch.zeros(192), "decoder_embed.weight": torch.zeros(16, 192),
                "decoder_blocks.0.norm1.weight": torch.ones(16), "decoder_norm.weight": torch.ones(16),
                "decoder_pred.weight": torch.zeros(96, 16), "decoder_pos_embed": torch.zeros(1, 64, 16),
                "mask_token": torch.zeros(1, 1, 16)}
    path = tmp_path / "mae_hiera_tiny_16x224.pth"
    torch.save({"model_state": state | mae_only}, path)
    model = bmvit.create_backbone("hiera_tiny_det", input_size=(8, 64, 64))
    report = load_backbone_weights(model, path)
    assert report.weights_format == "hiera" and sorted(report.dropped) == sorted(mae_only)
    assert torch.equal(model.norm.weight, state["encoder_norm.weight"])
    assert torch.equal(model.blocks[3].attn.qkv.weight, state["blocks.3.attn.qkv.weight"])


def test_position_embeddings_follow_the_input_size(tmp_path):
    torch.manual_seed(0)
    source = bmvit.create_backbone("hiera_tiny", input_size=(8, 64, 64))  # 4x16x16 patch grid
    path = tmp_path / "hiera_tiny.pth"
    torch.save({"model_state": dict(source.state_dict()) | {"head.projection.weight": torch.zeros(5, 192),
                                                            "head.projection.bias": torch.zeros(5)}}, path)
    model = bmvit.create_backbone("hiera_tiny", input_size=(16, 96, 96))  # 8x24x24
    report = load_backbone_weights(model, path)
    assert report.adapted == ["pos_embed_spatial", "pos_embed_temporal"]
    torch.testing.assert_close(model.pos_embed_spatial,
                               interpolate_pos_embed_3d(source.pos_embed_spatial, (1, 16, 16), (1, 24, 24)))
    torch.testing.assert_close(model.pos_embed_temporal,
                               interpolate_pos_embed_3d(source.pos_embed_temporal, (4, 1, 1), (8, 1, 1)))
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.randn(1, 3, 16, 96, 96))).all()


def test_return_attention_of_the_global_last_block():
    torch.manual_seed(0)
    model = bmvit.create_backbone("hiera_tiny", input_size=(4, 64, 64)).eval()  # last block pools 2x4x4 -> 2x2x2
    clip = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        tokens, attention = model(clip, return_attention=True)
        plain = model(clip)
    torch.testing.assert_close(tokens, plain)
    assert attention.shape == (1, 8, 2, 2, 2, 2, 4, 4)
    torch.testing.assert_close(attention.flatten(-3).sum(-1), torch.ones(1, 8, 2, 2, 2))
    windowed = bmvit.create_backbone("hiera_tiny", input_size=(4, 64, 64), mask_unit_attn=(True, True, True, True),
                                     mask_unit_size=(1, 16, 16))
    with pytest.raises(ValueError, match="global attention"):
        windowed(clip, return_attention=True)


@pytest.mark.parametrize("fields, message", [
    ({"q_pool_stages": (0, 1)}, "q_pool_stages"),
    ({"q_pool_stages": (1, 4)}, "q_pool_stages"),
    ({"mask_unit_attn": (True, False)}, "mask_unit_attn"),
    ({"input_size": (16, 200, 200)}, "not divisible by mask_unit_size"),
    ({"mask_unit_size": (1, 4, 4), "mask_unit_attn": (True, True, True, True)}, "pooled below one token"),
    ({"embed_dim": 10, "num_heads": 3}, "not divisible by num_heads"),
])
def test_bad_config_is_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message):
        HieraConfig(**fields)


def test_bmvit_hiera_presets():
    with torch.device("meta"):
        model = bmvit.create_model("bmvit_hiera_l", num_classes=80)
        out = model.eval()(torch.zeros(1, 3, 16, 256, 256, device="meta"))
    assert out["pred_actions"].shape == (1, 256, 80) and out["token_grid"] == (1, 16, 16)
    assert model.proj.in_features == 1152 and model.config.action_head == "mlp"
    assert count_flops(model, (1, 3, 16, 256, 256)).gmacs == pytest.approx(705.5, rel=0.005)
    torch.manual_seed(0)
    tiny = bmvit.create_model("bmvit_hiera_tiny", num_classes=5, backbone_overrides={"input_size": (8, 64, 64)})
    with torch.no_grad():
        out = tiny.eval()(torch.randn(2, 3, 8, 64, 64))
    assert out["pred_actions"].shape == (2, 16, 5) and out["token_grid"] == (1, 4, 4)
    assert tiny.no_weight_decay() == {"backbone.pos_embed_spatial", "backbone.pos_embed_temporal"}
