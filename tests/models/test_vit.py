"""ViT (VideoMAE) backbone and the BMViT ViT-B variant: geometry and parameter counts, the fixed
position tables (hand-computed), equality with VideoMAE's forward on a fabricated VideoMAE
checkpoint, the VideoMAE remaps (fine-tuned, pre-training, containers, errors), attention maps,
and the cross-attention action head of supplementary Fig. 1b."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bmvit
from bmvit.flops import count_flops
from bmvit.models.backbones.layers import interpolate_pos_embed_3d
from bmvit.models.backbones.vit import (
    VisionTransformer,
    ViTConfig,
    position_table,
    sincos_3d_table,
    videomae_sinusoid_table,
)
from bmvit.models.heads import CrossAttentionActionHead
from bmvit.models.weights import load_backbone_weights

# A tiny VideoMAE-shaped model: 4x32x32 clips, 2x16x16 tubelets -> 2x2x2 tokens.
SMALL = {"input_size": (4, 32, 32), "embed_dim": 32, "depth": 2, "num_heads": 4, "pos_embed_grid": (2, 2, 2)}


def _videomae_state_dict(cfg: ViTConfig, seed: int = 0, num_classes: int = 7) -> dict[str, torch.Tensor]:
    """Random tensors under the names of VideoMAE's fine-tuned ``VisionTransformer`` (modeling_finetune.py)."""
    g = torch.Generator().manual_seed(seed)
    c, hidden = cfg.embed_dim, int(cfg.embed_dim * cfg.mlp_ratio)

    def r(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {"patch_embed.proj.weight": r(c, 3, *cfg.patch_size, scale=0.05), "patch_embed.proj.bias": r(c)}
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        sd |= {p + "norm1.weight": 1 + r(c), p + "norm1.bias": r(c), p + "attn.qkv.weight": r(3 * c, c),
               p + "attn.q_bias": r(c), p + "attn.v_bias": r(c), p + "attn.proj.weight": r(c, c),
               p + "attn.proj.bias": r(c), p + "norm2.weight": 1 + r(c), p + "norm2.bias": r(c),
               p + "mlp.fc1.weight": r(hidden, c), p + "mlp.fc1.bias": r(hidden),
               p + "mlp.fc2.weight": r(c, hidden), p + "mlp.fc2.bias": r(c)}
    return sd | {"fc_norm.weight": 1 + r(c), "fc_norm.bias": r(c), "head.weight": r(num_classes, c),
                 "head.bias": r(num_classes)}


def _videomae_tokens(sd: dict[str, torch.Tensor], cfg: ViTConfig, clip: torch.Tensor) -> torch.Tensor:
    """VideoMAE's ``forward_features`` up to the mean pooling, written out from its equations:
    tubelet conv, + 1-D sinusoid table, pre-norm blocks with qkv bias (q_bias, 0, v_bias)."""
    heads, c = cfg.num_heads, cfg.embed_dim
    x = F.conv3d(clip, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=cfg.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = x + videomae_sinusoid_table(x.shape[1], c)
    batch, num, _ = x.shape
    for i in range(cfg.depth):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (c,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(c), sd[p + "attn.v_bias"]])
        q, k, v = (h @ sd[p + "attn.qkv.weight"].t() + bias).reshape(batch, num, 3, heads, -1).permute(2, 0, 3, 1, 4)
        attn = ((q * (c // heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        o = (attn @ v).transpose(1, 2).reshape(batch, num, c)
        x = x + o @ sd[p + "attn.proj.weight"].t() + sd[p + "attn.proj.bias"]
        h = F.layer_norm(x, (c,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ sd[p + "mlp.fc1.weight"].t() + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].t() + sd[p + "mlp.fc2.bias"]
    return x


# --- geometry -------------------------------------------------------------------------------


def test_vit_b_geometry_parameters_and_flops():
    with torch.device("meta"):
        vit_b, ours = bmvit.create_backbone("vit_b"), bmvit.create_backbone("vit_b_det")
    c, hidden = 768, 3072
    block = 2 * 2 * c + 3 * c * c + 2 * c + (c * c + c) + (c * hidden + hidden) + (hidden * c + c)
    patch = c * 3 * 2 * 16 * 16 + c
    expected = patch + 12 * block + 2 * c  # VideoMAE ViT-B without its 400-class head (86.5 M with it)
    assert sum(p.numel() for p in vit_b.parameters()) == expected == 86_227_200
    assert vit_b.output_grid == (8, 14, 14) and ours.output_grid == (8, 18, 18) and ours.input_size == (16, 288, 288)
    assert [b.attn.num_heads for b in ours.blocks] == [12] * 12
    # VideoMAE ViT-B is listed at 180 GFLOPs at 16x224 (supplementary Table 1); docs/design.md#other-backbones estimates 347 at 288.
    assert count_flops(vit_b, (1, 3, 16, 224, 224)).gmacs == pytest.approx(180, rel=0.01)
    assert count_flops(ours, (1, 3, 16, 288, 288)).gmacs == pytest.approx(347, rel=0.01)


@pytest.mark.parametrize("fields", [{"input_size": (16, 224, 200)}, {"embed_dim": 30, "num_heads": 4},
                                    {"pos_embed": "learned"}, {"pos_embed": "sincos_3d", "embed_dim": 40,
                                                               "num_heads": 4}, {"drop_path_rate": 1.0}])
def test_bad_config_is_a_clear_error(fields):
    with pytest.raises(ValueError):
        ViTConfig(**fields)


# --- position tables ------------------------------------------------------------------------


def test_videomae_table_hand_computed():
    table = videomae_sinusoid_table(3, 4)
    for p in range(3):  # channels: sin(p), cos(p), sin(p / 100), cos(p / 100)
        expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
        torch.testing.assert_close(table[p], torch.tensor(expected))


def test_videomae_position_table_is_exact_on_its_grid_and_resized_elsewhere():
    cfg = ViTConfig(**SMALL)
    assert cfg.grid == (2, 2, 2)
    torch.testing.assert_close(position_table(cfg), videomae_sinusoid_table(8, 32)[None])
    bigger = ViTConfig(**{**SMALL, "input_size": (4, 64, 64)})  # grid 2x4x4
    expected = interpolate_pos_embed_3d(videomae_sinusoid_table(8, 32)[None], (2, 2, 2), (2, 4, 4))
    torch.testing.assert_close(position_table(bigger), expected)
    model = VisionTransformer(bigger)
    assert "pos_embed" not in model.state_dict()  # fixed: rebuilt from the config, never loaded


def test_sincos_3d_table_hand_computed():
    table = sincos_3d_table((2, 3, 3), 16)  # 4 channels for t, 6 for h, 6 for w
    row = table.view(2, 3, 3, 16)
    # t part of slice t = 1: sin(1), sin(1/100), cos(1), cos(1/100)
    t_part = [math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]
    torch.testing.assert_close(row[1, 0, 0, :4], torch.tensor(t_part))
    zero = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])  # position 0: sin = 0, cos = 1
    torch.testing.assert_close(row[1, 0, 0, 4:10], zero)
    torch.testing.assert_close(row[1, 0, 0, 10:], zero)
    omega = [1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3)]  # 6 channels: 3 frequencies
    w2 = torch.tensor([math.sin(2 * o) for o in omega] + [math.cos(2 * o) for o in omega])
    torch.testing.assert_close(row[0, 1, 2, 10:], w2)
    # moving along w changes only the w channels
    assert torch.equal(row[:, :, 0, :10], row[:, :, 2, :10])


# --- VideoMAE weights -----------------------------------------------------------------------


@pytest.mark.parametrize("container", ["module", "model"])
def test_videomae_finetuned_checkpoint_gives_videomae_tokens(container, tmp_path):
    cfg = ViTConfig(**SMALL)
    sd = _videomae_state_dict(cfg)
    path = tmp_path / "videomae_vit_small_k400.pth"
    torch.save({container: sd, "epoch": torch.tensor(74)}, path)
    model = VisionTransformer(cfg).eval()
    report = load_backbone_weights(model, path)
    assert report.weights_format == "videomae"
    assert sorted(report.dropped) == ["head.bias", "head.weight"]
    assert report.missing == [] and len(report.loaded) == len(model.state_dict())
    assert torch.equal(model.norm.weight, sd["fc_norm.weight"])  # fc_norm becomes the per-token norm
    clip = torch.randn(2, 3, *cfg.input_size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        tokens = model(clip)
    reference = F.layer_norm(_videomae_tokens(sd, cfg, clip), (32,), sd["fc_norm.weight"], sd["fc_norm.bias"], 1e-6)
    assert tokens.shape == (2, 2, 2, 2, 32)
    torch.testing.assert_close(tokens.flatten(1, 3), reference, atol=1e-5, rtol=1e-5)


def test_videomae_pretraining_checkpoint_drops_and_reports_the_decoder(tmp_path):
    cfg = ViTConfig(**SMALL)
    encoder = _videomae_state_dict(cfg)
    encoder.pop("head.weight"), encoder.pop("head.bias")
    encoder["norm.weight"], encoder["norm.bias"] = encoder.pop("fc_norm.weight"), encoder.pop("fc_norm.bias")
    decoder = {"decoder.blocks.0.norm1.weight": torch.ones(16), "decoder.blocks.0.attn.qkv.weight": torch.zeros(48, 16),
               "decoder.norm.weight": torch.ones(16), "decoder.head.weight": torch.zeros(1536, 16),
               "decoder.head.bias": torch.zeros(1536), "encoder_to_decoder.weight": torch.zeros(16, 32),
               "mask_token": torch.zeros(1, 1, 16)}
    path = tmp_path / "checkpoint-1599.pth"
    torch.save({"model": {f"encoder.{k}": v for k, v in encoder.items()} | decoder}, path)
    model = VisionTransformer(cfg)
    report = load_backbone_weights(model, path)
    assert report.weights_format == "videomae"
    assert sorted(report.dropped) == sorted(decoder)
    for key, value in encoder.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert "known weights" not in str(report) and "dropped: " in str(report)


def test_videomae_misfits_are_named(tmp_path):
    cfg = ViTConfig(**SMALL)
    sd = _videomae_state_dict(cfg)
    sd["blocks.0.gamma_1"] = torch.ones(32)  # VideoMAE's layer scale, which our blocks do not have
    path = tmp_path / "layer_scale.pth"
    torch.save({"module": sd}, path)
    with pytest.raises(ValueError, match=r"blocks\.0\.gamma_1"):
        load_backbone_weights(VisionTransformer(cfg), path)
    sd = _videomae_state_dict(ViTConfig(**{**SMALL, "patch_size": (1, 16, 16), "input_size": (2, 32, 32)}))
    torch.save(sd, path)
    mismatch = r"patch_embed\.proj\.weight: model \(32, 3, 2, 16, 16\), file \(32, 3, 1, 16, 16\)"
    with pytest.raises(ValueError, match=mismatch):
        load_backbone_weights(VisionTransformer(cfg), path)


def test_own_state_dict_round_trips_as_bmvit_format(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    source = VisionTransformer(ViTConfig(**SMALL))
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    torch.manual_seed(1)
    model = VisionTransformer(ViTConfig(**SMALL))
    assert load_backbone_weights(model, path).weights_format == "bmvit"
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())


# --- attention maps -------------------------------------------------------------------------


def test_return_attention_is_the_last_blocks_distribution():
    torch.manual_seed(0)
    model = VisionTransformer(ViTConfig(**SMALL)).eval()
    clip = torch.randn(1, 3, *SMALL["input_size"])
    with torch.no_grad():
        tokens, attention = model(clip, return_attention=True)
        plain = model(clip)
    torch.testing.assert_close(tokens, plain)
    assert attention.shape == (1, 4, 2, 2, 2, 2, 2, 2)
    torch.testing.assert_close(attention.flatten(-3).sum(-1), torch.ones(1, 4, 2, 2, 2))


# --- the BMViT ViT-B variant (supplementary Fig. 1b) -----------------------------------------


def test_bmvit_vit_b_heads_match_figure_1b_and_its_flops():
    with torch.device("meta"):
        model = bmvit.create_model("bmvit_vit_b", num_classes=80)
        out = model.eval()(torch.zeros(1, 3, 16, 288, 288, device="meta"))
    assert out["pred_actions"].shape == (1, 324, 80) and out["token_grid"] == (1, 18, 18)
    assert model.proj.in_features == model.proj.out_features == 768
    heads = model.heads
    assert [layer.out_features for layer in heads.box.layers] == [768, 768, 4]
    assert [layer.out_features for layer in heads.actor.layers] == [768, 2]
    action = heads.action
    assert isinstance(action, CrossAttentionActionHead) and action.num_heads == 12
    assert (action.ffn.fc1.out_features, action.ffn.fc2.out_features) == (3072, 768)
    assert [layer.out_features for layer in action.classifier.layers] == [768, 80]
    # backbone 347.0 + cross-attention over 2592 tokens and the other heads (docs/design.md#other-backbones estimates ~353)
    assert count_flops(model, (1, 3, 16, 288, 288)).gmacs == pytest.approx(355.6, rel=0.005)


def _vit_detector(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bmvit.create_model("bmvit_vit_tiny", num_classes=5, backbone_overrides={"input_size": (8, 64, 64)}).eval()


def test_actions_read_the_whole_clip_while_boxes_read_the_key_frame_tokens():
    model = _vit_detector()
    clip = torch.randn(1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = model.backbone(clip)  # [1, 4, 4, 4, 96]; candidates are slice t = 2
        out = model(clip)
        moved = tokens.clone()
        moved[:, 0] += 1.0  # change only tokens of another time slice
        projected = model.proj(moved)
        candidates = projected[:, 2].flatten(1, 2)
        other = model.heads(candidates, (1, 4, 4), context=projected.flatten(1, 3))
        same = model.heads(model.proj(tokens[:, 2].flatten(1, 2)), (1, 4, 4), context=model.proj(tokens).flatten(1, 3))
    assert out["pred_actions"].shape == (1, 16, 5) and out["token_grid"] == (1, 4, 4)
    for key in ("pred_boxes", "pred_actor", "pred_actions"):
        torch.testing.assert_close(same[key], out[key], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other["pred_boxes"], out["pred_boxes"])
    torch.testing.assert_close(other["pred_actor"], out["pred_actor"])
    assert (other["pred_actions"] - out["pred_actions"]).abs().max() > 1e-3


def test_cross_attention_head_ignores_memory_order_and_needs_context():
    torch.manual_seed(0)
    head = CrossAttentionActionHead(dim=32, num_classes=3, num_heads=4, hidden_dim=16)
    queries, memory = torch.randn(2, 5, 32), torch.randn(2, 9, 32)
    with torch.no_grad():
        logits = head(queries, memory)
        shuffled = head(queries, memory[:, torch.randperm(9)])
        single = head(queries[1:], memory[1:])
    assert logits.shape == (2, 5, 3)
    torch.testing.assert_close(shuffled, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single, logits[1:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="queries"):
        head(queries, torch.randn(2, 9, 16))
    with pytest.raises(ValueError, match="divisible"):
        CrossAttentionActionHead(dim=30, num_classes=3, num_heads=4, hidden_dim=16)
    model = _vit_detector()
    with pytest.raises(ValueError, match="needs context"):
        model.heads(torch.randn(1, 16, 96), (1, 4, 4))


def test_action_head_is_a_config_field_and_starts_at_the_prior():
    model = _vit_detector()
    assert model.config.action_head == "cross_attention"
    with torch.no_grad():
        out = model(torch.randn(2, 3, 8, 64, 64))
    p_action = out["pred_actions"].sigmoid()
    assert 0.003 < float(p_action.median()) < 0.03
    with pytest.raises(ValueError, match="action_head"):
        bmvit.create_model("bmvit_vit_tiny", action_head="transformer")
    mlp = bmvit.create_model("bmvit_vit_tiny", action_head="mlp", backbone_overrides={"input_size": (8, 64, 64)})
    assert not isinstance(mlp.heads.action, CrossAttentionActionHead)
