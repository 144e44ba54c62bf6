"""MViTv2 backbone: the derived architecture table, the forward contract, checkpointing, bad input,
and the shared layers. Equality with torchvision's MViT is in test_weights_remap.py."""

from __future__ import annotations

import re

import pytest
import torch

import bmvit
from bmvit.models.backbones import Backbone
from bmvit.models.backbones.layers import DropPath, interpolate_pos_embed_3d, interpolate_rel_pos
from bmvit.models.backbones import mvit
from bmvit.models.backbones.mvit import (
    MViT,
    MViTConfig,
    _efficient_kernel_refused,
    _PaddedRelPosBias,
    _rel_pos_bias,
    _rel_pos_index,
    sdpa_backends,
    uses_chunks,
)

# torchvision's mvit_v2_s block table (torchvision/models/video/mvit.py), written out by hand.
TV_HEADS = [1, 2, 2] + [4] * 11 + [8, 8]
TV_IN = [96, 96, 192, 192] + [384] * 11 + [768]
TV_OUT = [96, 192, 192] + [384] * 11 + [768, 768]
TV_STRIDE_Q = {1: (1, 2, 2), 3: (1, 2, 2), 14: (1, 2, 2)}
TV_STRIDE_KV = [(1, 8, 8), (1, 4, 4), (1, 4, 4)] + [(1, 2, 2)] * 11 + [(1, 1, 1), (1, 1, 1)]
TV_REL_POS_H = [111, 55, 55] + [27] * 12 + [13]  # rows of blocks.{i}.attn.rel_pos_h in torchvision's state dict

TINY = ("mvit_tiny", "mvit_tiny_det")


def _tiny(name: str = "mvit_tiny", **overrides) -> MViT:
    torch.manual_seed(0)
    return bmvit.create_backbone(name, **overrides)


def test_mvitv2_s_config_matches_torchvision_table():
    cfg = MViTConfig()
    assert len(cfg.blocks) == 16
    assert [b.num_heads for b in cfg.blocks] == TV_HEADS
    assert [b.dim_in for b in cfg.blocks] == TV_IN
    assert [b.dim_out for b in cfg.blocks] == TV_OUT
    assert [b.stride_q for b in cfg.blocks] == [TV_STRIDE_Q.get(i, (1, 1, 1)) for i in range(16)]
    assert [b.stride_kv for b in cfg.blocks] == TV_STRIDE_KV
    assert cfg.patch_grid == (8, 56, 56) and cfg.output_grid == (8, 7, 7) and cfg.output_dim == 768
    assert cfg.blocks[0].thw_kv == (8, 7, 7) and cfg.blocks[1].thw_q == (8, 28, 28)
    assert cfg.blocks[-1].drop_path == 0.0  # default rate 0; the schedule is tested below


def test_mvitv2_s_det_removes_last_q_pooling_and_keeps_adaptive_kv():
    with torch.device("meta"):
        cfg = bmvit.create_backbone("mvitv2_s_det").cfg
    assert cfg.input_size == (16, 256, 256)
    assert cfg.output_grid == (8, 16, 16) and cfg.output_dim == 768
    assert [b.stride_q for b in cfg.blocks[14:]] == [(1, 1, 1), (1, 1, 1)]
    assert [b.stride_kv for b in cfg.blocks[14:]] == [(1, 2, 2), (1, 2, 2)]  # docs/design.md#backbone: adaptive rule gives (1, 2, 2)
    assert [b.thw_kv for b in cfg.blocks[14:]] == [(8, 8, 8), (8, 8, 8)]
    assert (cfg.blocks[14].dim_in, cfg.blocks[14].dim_out, cfg.blocks[14].num_heads) == (384, 768, 8)


def test_full_presets_parameters_and_rel_pos_shapes():
    with torch.device("meta"):
        small = bmvit.create_backbone("mvitv2_s")
        ours = bmvit.create_backbone("mvitv2_s_det")
    # torchvision mvit_v2_s has 34,537,744 parameters including its 768x400 Kinetics head.
    assert sum(p.numel() for p in small.parameters()) == 34_537_744 - (768 * 400 + 400)
    assert [small.blocks[i].attn.rel_pos_h.shape[0] for i in range(16)] == TV_REL_POS_H
    assert small.blocks[0].attn.rel_pos_t.shape == (15, 96)
    assert ours.blocks[0].attn.rel_pos_h.shape == (127, 96)  # 64 query rows at 256 px
    assert ours.blocks[15].attn.rel_pos_h.shape == (31, 96)  # 16x16 queries, 8x8 keys
    assert isinstance(ours, Backbone) and ours.embed_dim == 768 and ours.input_size == (16, 256, 256)


def test_drop_path_schedule_is_linear():
    cfg = MViTConfig(depths=(1, 1, 2, 1), embed_dim=8, input_size=(4, 64, 64), drop_path_rate=0.2)
    assert [round(b.drop_path, 6) for b in cfg.blocks] == [0.0, 0.05, 0.1, 0.15, 0.2]


def test_dim_mul_in_mlp_moves_the_doubling_to_the_previous_block():
    cfg = MViTConfig(depths=(1, 2, 1, 1), embed_dim=8, input_size=(4, 64, 64), dim_mul_in_att=False)
    assert [(b.dim_in, b.attn_dim, b.dim_out, b.num_heads) for b in cfg.blocks] == [
        (8, 8, 16, 1), (16, 16, 16, 2), (16, 16, 32, 2), (32, 32, 64, 4), (64, 64, 64, 8)]


@pytest.mark.parametrize("config_error", [
    {"depths": (1, 2), "stride_q": ((1, 1, 1),)},
    {"embed_dim": 10, "num_heads": 3},
    {"pool_kernel": (2, 3, 3)},
    {"input_size": (16, 224)},
    {"input_size": (16, 0, 224)},
    {"drop_path_rate": 1.0},
])
def test_bad_config_is_a_clear_error(config_error):
    with pytest.raises(ValueError):
        MViTConfig(**config_error)


def test_rel_pos_index_hand_computed():
    # 4 queries, 2 keys pooled by 2: distances on the query grid, key j sits at 2j.
    assert _rel_pos_index(4, 2).tolist() == [[2, 0], [3, 1], [4, 2], [5, 3]]
    assert _rel_pos_index(3, 3).tolist() == [[2, 1, 0], [3, 2, 1], [4, 3, 2]]
    # 2 queries pooled by 2, 4 keys: queries scaled up instead.
    assert _rel_pos_index(2, 4).tolist() == [[3, 2, 1, 0], [5, 4, 3, 2]]


def test_padded_rel_pos_bias_matches_broadcast_and_pad_and_its_gradient_is_right():
    rel_t = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    rel_hw = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    mask = _PaddedRelPosBias.apply(rel_t, rel_hw, 1)
    naive = torch.nn.functional.pad((rel_t[..., :, None] + rel_hw[..., None, :]).flatten(-2), (1, 0, 1, 0))
    assert mask.shape == (2, 3, 6, 25)
    torch.testing.assert_close(mask, naive, atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda t, hw: _PaddedRelPosBias.apply(t, hw, 1), (rel_t, rel_hw))
    assert torch.autograd.gradcheck(lambda t, hw: _PaddedRelPosBias.apply(t, hw, 0), (rel_t, rel_hw))


def test_aligned_rel_pos_bias_is_a_view_of_8_aligned_rows_in_the_asked_dtype():
    rel_t = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    rel_hw = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    naive = torch.nn.functional.pad((rel_t[..., :, None] + rel_hw[..., None, :]).flatten(-2), (1, 0, 1, 0))
    mask = _rel_pos_bias(rel_t, rel_hw, 1, 1, None, 8)
    assert mask.shape == (2, 3, 6, 25) and mask.stride() == (3 * 6 * 32, 6 * 32, 32, 1)
    torch.testing.assert_close(mask, naive, atol=0, rtol=0)
    assert torch.autograd.gradcheck(lambda t, hw: _rel_pos_bias(t, hw, 1, 1, None, 8), (rel_t, rel_hw))
    # A bf16 mask (the kernel's dtype under autocast) from fp64 terms: gradients come back in fp64.
    low = _rel_pos_bias(rel_t, rel_hw, 1, 1, torch.bfloat16, 8)
    assert low.dtype == torch.bfloat16 and low.stride(-2) == 32
    torch.testing.assert_close(low.double(), naive, atol=0.05, rtol=0.01)
    low.float().square().sum().backward()
    assert rel_t.grad.dtype == torch.float64 and rel_hw.grad.dtype == torch.float64


def test_chunking_policy():
    cpu, meta = torch.empty(1), torch.empty(1, device="meta")
    assert uses_chunks(cpu) and uses_chunks(cpu, "auto") and not uses_chunks(meta, "auto")
    assert uses_chunks(meta, "always") and not uses_chunks(cpu, "never")
    with pytest.raises(ValueError, match="attention_chunking must be one of"):
        uses_chunks(cpu, "sometimes")
    with pytest.raises(ValueError, match="attention_chunking must be one of"):
        MViTConfig(attention_chunking="sometimes")
    model = _tiny(attention_chunking="never")
    assert {b.attention_chunking for b in model.blocks} == {"never"}
    model.set_attention_chunking("auto")
    assert model.cfg.attention_chunking == "auto" and {b.attention_chunking for b in model.blocks} == {"auto"}


# A tiny preset without class token, and one with class token and Q pooling at every stage.
ONE_CALL_PRESETS = [("mvit_tiny_det", {"cls_embed": False}), ("mvit_tiny", {})]


@pytest.mark.parametrize("name, overrides", ONE_CALL_PRESETS)
def test_one_call_attention_gives_the_chunked_numbers_and_gradients(monkeypatch, name, overrides):
    """The CUDA path (one SDPA call per block, its mask 8-aligned, no MLP chunks), forced on CPU."""
    model = _tiny(name, input_size=(8, 64, 64), **overrides).train()
    x = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(1))
    # 8 KiB: the chunked path splits the queries of every block with a mask.
    monkeypatch.setattr(mvit, "_CHUNK_BYTES", 8192)
    runs = {}
    for policy in ("always", "never"):
        model.set_attention_chunking(policy)
        model.zero_grad(set_to_none=True)
        calls = sdpa_backends(model, x)
        tokens = model(x)
        tokens.square().mean().backward()
        runs[policy] = tokens.detach(), {n: p.grad for n, p in model.named_parameters()}, calls
    chunked_tokens, chunked_grads, chunked_calls = runs["always"]
    tokens, grads, calls = runs["never"]
    assert len(calls) == len(model.blocks) < len(chunked_calls)
    assert all(c.mask_stride[-2] % 8 == 0 and c.mask_stride[-1] == 1 for c in calls)
    torch.testing.assert_close(tokens, chunked_tokens, atol=1e-5, rtol=1e-5)
    checked = [n for n in grads if ".rel_pos_" in n or ".qkv." in n]
    assert len(checked) == 5 * len(model.blocks)  # rel_pos_h/w/t, qkv weight and bias
    for name_, grad in grads.items():
        torch.testing.assert_close(grad, chunked_grads[name_], atol=1e-5, rtol=1e-4, msg=name_)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), chunked_tokens, atol=1e-5, rtol=1e-5)


def test_one_call_mask_is_built_in_the_kernel_dtype_under_autocast():
    model = _tiny("mvit_tiny_det", input_size=(8, 64, 64), attention_chunking="never").eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        calls = sdpa_backends(model, x)
        low = model(x)
    assert [(c.dtype, c.mask_dtype) for c in calls] == [(torch.bfloat16, torch.bfloat16)] * len(model.blocks)
    with torch.no_grad():
        full = model(x)
    assert (low.float() - full).abs().max() < 0.1 * full.abs().max()


def test_sdpa_backends_on_cpu():
    model = _tiny("mvit_tiny_det", input_size=(8, 64, 64)).eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        calls = sdpa_backends(model, x)
    assert {c.backend for c in calls} == {"FLASH_ATTENTION"}  # CPU flash takes a mask that needs no gradient
    assert calls[0].query[2] == 1 + 4 * 16 * 16 and calls[0].mask[-1] == calls[0].key[2]
    assert {c.backend for c in sdpa_backends(model.train(), x)} == {"MATH"}


def test_efficient_kernel_error_names_the_inputs():
    q = torch.randn(1, 2, 5, 6)
    message = _efficient_kernel_refused(q, q, q, torch.randn(1, 2, 5, 5), RuntimeError("No available kernel"))
    assert "memory-efficient SDPA kernel" in message and "q (1, 2, 5, 6) torch.float32" in message
    assert "mask (1, 2, 5, 5)" in message and "kernel dtype torch.float32" in message


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_contract(name):
    model = _tiny(name).eval()
    x = torch.randn(2, 3, *model.input_size)
    with torch.no_grad():
        tokens = model(x)
        single = model(x[1:])
    assert tokens.shape == (2, *model.output_grid, model.embed_dim)
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(tokens[1:], single, atol=1e-5, rtol=1e-5)  # batched == per sample
    expected_grid = (8, 4, 4) if name == "mvit_tiny" else (8, 8, 8)
    assert model.output_grid == expected_grid
    # final LayerNorm (weight 1, bias 0 at init): every token has zero mean over channels
    assert tokens.mean(-1).abs().max() < 1e-4


def test_return_attention_matches_plain_forward_and_is_a_distribution():
    model = _tiny("mvit_tiny_det", cls_embed=False).eval()
    x = torch.randn(1, 3, *model.input_size)
    with torch.no_grad():
        tokens, attention = model(x, return_attention=True)
        plain = model(x)
    torch.testing.assert_close(tokens, plain)
    heads, kv = model.cfg.blocks[-1].num_heads, model.cfg.blocks[-1].thw_kv
    assert attention.shape == (1, heads, *model.output_grid, *kv)
    # no class token: every query's weights over the keys sum to one
    torch.testing.assert_close(attention.flatten(-3).sum(-1), torch.ones(1, heads, *model.output_grid))


def test_training_mode_without_drop_path_gives_the_inference_numbers():
    model = _tiny("mvit_tiny_det")
    x = torch.randn(2, 3, *model.input_size)
    with torch.no_grad():
        expected = model.eval()(x)
    torch.testing.assert_close(model.train()(x), expected, atol=1e-5, rtol=1e-5)  # autograd path (math SDPA)


@pytest.mark.parametrize("flags", [{"rel_pos_spatial": False}, {"rel_pos_temporal": False},
                                   {"rel_pos_spatial": False, "rel_pos_temporal": False, "residual_pooling": False}])
def test_optional_parts_can_be_switched_off(flags):
    model = _tiny(**flags).eval()
    names = {n for n, _ in model.named_parameters()}
    assert ("blocks.0.attn.rel_pos_h" in names) == flags.get("rel_pos_spatial", True)
    assert ("blocks.0.attn.rel_pos_t" in names) == flags.get("rel_pos_temporal", True)
    with torch.no_grad():
        assert torch.isfinite(model(torch.randn(1, 3, *model.input_size))).all()


def test_return_attention_with_class_token_drops_its_column():
    model = _tiny("mvit_tiny_det").eval()
    with torch.no_grad():
        _, attention = model(torch.randn(1, 3, *model.input_size), return_attention=True)
    sums = attention.flatten(-3).sum(-1)
    assert (attention >= 0).all() and (sums < 1).all() and (sums > 0.5).all()


@pytest.mark.parametrize("chunking", ["always", "never"])
def test_checkpointing_gives_the_same_gradients_and_reaches_every_parameter(chunking):
    grads = []
    for use_checkpoint in (False, True):
        model = _tiny("mvit_tiny_det", drop_path_rate=0.3, use_checkpoint=use_checkpoint,
                      attention_chunking=chunking).train()
        torch.manual_seed(1)  # same clip and the same drop-path draws in both runs
        x = torch.randn(2, 3, *model.input_size)
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    plain, checkpointed = grads
    for name, grad in plain.items():
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, f"no gradient reaches {name}"
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-5)


def test_overrides_resize_the_model_and_accept_lists():
    model = _tiny(input_size=[8, 96, 96], stride_q=[[1, 1, 1], [1, 2, 2], [1, 2, 2], [1, 2, 2]])
    assert model.input_size == (8, 96, 96) and model.output_grid == (4, 3, 3)
    assert model.blocks[0].attn.rel_pos_h.shape[0] == 2 * 24 - 1
    assert model.blocks[0].attn.rel_pos_t.shape[0] == 2 * 4 - 1
    with pytest.raises(ValueError, match="unknown MViT config field"):
        bmvit.create_backbone("mvit_tiny", depth=3)


def test_no_weight_decay_names_class_token_and_rel_pos_tables():
    model = _tiny()
    names = model.no_weight_decay()
    assert "cls_token" in names and "blocks.0.attn.rel_pos_h" in names and "blocks.4.attn.rel_pos_t" in names
    assert names <= {n for n, _ in model.named_parameters()}
    assert not any("qkv" in n for n in names)


@pytest.mark.parametrize("shape, message", [
    ((3, 16, 128, 128), "expects a clip shaped"),
    ((1, 1, 16, 128, 128), "expects 3 channels"),
    ((1, 3, 8, 128, 128), "8 frames, fewer frames than the 16"),
    ((1, 3, 16, 112, 128), "112x128 pixels but this model was built for 128x128"),
])
def test_bad_input_says_expected_and_given(shape, message):
    model = _tiny()
    with pytest.raises(ValueError, match=message) as err:
        model(torch.zeros(shape))
    assert "[B, 3, 16, 128, 128]" in str(err.value) and str(tuple(shape)) in str(err.value)


def test_integer_clip_is_rejected():
    with pytest.raises(ValueError, match="float clip"):
        _tiny()(torch.zeros(1, 3, 16, 128, 128, dtype=torch.uint8))


# --- shared layers ---------------------------------------------------------------------------


def test_interpolate_rel_pos_hand_computed():
    table = torch.tensor([[0.0], [1.0], [2.0]])
    # align_corners=False: output i samples source (i + 0.5) * 3 / 5 - 0.5, clamped to [0, 2]
    torch.testing.assert_close(interpolate_rel_pos(table, 5)[:, 0], torch.tensor([0.0, 0.4, 1.0, 1.6, 2.0]))
    assert interpolate_rel_pos(table, 3) is table
    with pytest.raises(ValueError, match=r"\[L, C\]"):
        interpolate_rel_pos(torch.zeros(3), 5)


def test_interpolate_pos_embed_3d_keeps_prefix_and_constant_fields():
    grid = torch.full((1, 2 * 3 * 3, 4), 0.5)
    pos = torch.cat([torch.arange(4.0).view(1, 1, 4), grid], dim=1)
    out = interpolate_pos_embed_3d(pos, (2, 3, 3), (4, 5, 5), num_prefix_tokens=1)
    assert out.shape == (1, 1 + 4 * 5 * 5, 4)
    torch.testing.assert_close(out[:, :1], pos[:, :1])
    torch.testing.assert_close(out[:, 1:], torch.full((1, 100, 4), 0.5))
    assert interpolate_pos_embed_3d(pos, (2, 3, 3), (2, 3, 3), 1) is pos
    with pytest.raises(ValueError, match="grid"):
        interpolate_pos_embed_3d(pos, (2, 3, 4), (2, 3, 3), 1)


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    layer = DropPath(0.5).train()
    torch.manual_seed(0)
    out = layer(torch.ones(4000, 3))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert (out[:, 0] == out[:, 1]).all()  # one draw per sample
    assert abs(out.mean().item() - 1.0) < 0.05
    assert torch.equal(layer.eval()(torch.ones(5, 3)), torch.ones(5, 3))
    with pytest.raises(ValueError):
        DropPath(1.0)


# ------------------------------------------------------------------------------------------------
# stride_kv: a per-stage override of the adaptive KV rule (configs/ablations/scale5_kv_full.yaml)

_DET = {"input_size": (16, 256, 256), "stride_q": ((1, 1, 1), (1, 2, 2), (1, 2, 2), (1, 1, 1))}
# mvitv2_s_det's derived KV strides and key grids, written down before stride_kv existed.
DET_STRIDE_KV = [(1, 8, 8), (1, 4, 4), (1, 4, 4)] + [(1, 2, 2)] * 13
DET_THW_KV = [(8, 8, 8), (8, 16, 16), (8, 8, 8), (8, 16, 16)] + [(8, 8, 8)] * 12
SCALE5_FULL = (None, None, None, (1, 1, 1))


def test_stride_kv_left_out_or_all_null_is_the_adaptive_rule():
    default = MViTConfig(**_DET)
    assert [b.stride_kv for b in default.blocks] == DET_STRIDE_KV
    assert [b.thw_kv for b in default.blocks] == DET_THW_KV
    assert MViTConfig(**_DET, stride_kv=[None] * 4).blocks == default.blocks
    assert MViTConfig(stride_kv=(None,) * 4).blocks == MViTConfig().blocks  # torchvision's table, as above


def test_stride_kv_of_one_stage_changes_only_that_stage():
    default = MViTConfig(**_DET)
    full = MViTConfig(**_DET, stride_kv=[None, None, None, [1, 1, 1]])  # lists, as YAML gives them
    assert full.stride_kv == SCALE5_FULL
    assert full.blocks[:14] == default.blocks[:14]
    assert [(b.stride_kv, b.thw_kv) for b in full.blocks[14:]] == [((1, 1, 1), (8, 16, 16))] * 2
    assert full.output_grid == default.output_grid == (8, 16, 16)
    # An override of an early stage leaves the later stages on the adaptive rule, not on the override.
    early = MViTConfig(**_DET, stride_kv=[[1, 2, 2], None, None, None])
    assert [b.stride_kv for b in early.blocks] == [(1, 2, 2)] + DET_STRIDE_KV[1:]


def test_full_size_scale5_kv_full_has_the_defaults_state_dict_shapes():
    """The rel-pos tables are sized by max(query, key) grid = the 16x16 query grid either way, and the
    pooling convs' weights do not depend on their stride: a K400 checkpoint loads as into the base."""
    with torch.device("meta"):
        default = bmvit.create_backbone("mvitv2_s_det")
        full = bmvit.create_backbone("mvitv2_s_det", stride_kv=list(SCALE5_FULL))
    shapes = {k: v.shape for k, v in default.state_dict().items()}
    assert {k: v.shape for k, v in full.state_dict().items()} == shapes
    assert full.blocks[15].attn.rel_pos_h.shape == (31, 96) and full.blocks[15].attn.pool_k.stride == (1, 1, 1)
    assert default.blocks[15].attn.pool_k.stride == (1, 2, 2)


def test_tiny_scale5_kv_full_attends_to_the_whole_grid():
    default = _tiny("mvit_tiny_det").eval()
    full = _tiny("mvit_tiny_det", stride_kv=SCALE5_FULL).eval()
    strides = [b.attn.pool_k.stride for b in full.blocks]
    assert strides == [b.attn.pool_k.stride for b in default.blocks[:4]] + [(1, 1, 1)]
    assert default.blocks[4].attn.pool_k.stride == (1, 2, 2)
    assert {k: v.shape for k, v in full.state_dict().items()} == {k: v.shape for k, v in default.state_dict().items()}
    full.load_state_dict(default.state_dict())  # the same weights fit both
    x = torch.randn(1, 3, *full.input_size)
    with torch.no_grad():
        tokens, attention = full(x, return_attention=True)
        base, base_attention = default(x, return_attention=True)
    assert tokens.shape == base.shape == (1, 8, 8, 8, 192)
    # [B, heads, queries T'H'W', keys TkHkWk]: the last block's keys are the whole 8x8x8 grid, not 8x4x4.
    assert attention.shape == (1, 8, 8, 8, 8, 8, 8, 8) and base_attention.shape == (1, 8, 8, 8, 8, 8, 4, 4)
    assert not torch.allclose(tokens, base)  # the same weights attend differently


def test_a_kinetics_geometry_checkpoint_loads_into_scale5_kv_full(tmp_path):
    """The tiny analogue of K400 MViTv2-S (every Q pooling kept, 7/8 of the det model's input size, as
    224 is of 256) into the det geometry with scale5 KV stride (1, 1, 1): the same keys, and the rel-pos
    tables resized (models/weights.py's ``adapted``) exactly as for the default det model."""
    from safetensors.torch import save_file

    from bmvit.models.weights import load_backbone_weights

    source = _tiny("mvit_tiny", input_size=(16, 112, 112))
    state = dict(source.state_dict()) | {"head.projection.weight": torch.zeros(4, 192),
                                         "head.projection.bias": torch.zeros(4)}
    path = tmp_path / "k400_like.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    reports = {}
    for name, kw in (("default", {}), ("full", {"stride_kv": SCALE5_FULL})):
        reports[name] = load_backbone_weights(_tiny("mvit_tiny_det", **kw), path)
    assert reports["full"].weights_format == "slowfast"
    assert reports["full"].loaded == reports["default"].loaded
    assert reports["full"].adapted == reports["default"].adapted
    # The last block's table: 2 * max(4x4 queries, 7x7 keys) - 1 = 13 rows in the source, 2 * 8 - 1 = 15 here.
    assert source.blocks[4].attn.rel_pos_h.shape[0] == 13 and "blocks.4.attn.rel_pos_h" in reports["full"].adapted


@pytest.mark.parametrize("stride_kv, message", [
    ((None, None, (1, 1, 1)), "stride_kv needs one entry per stage"),
    ((None, None, None, (1, 0, 1)), "stride_kv[3] must be three positive ints"),
    ((None, None, None, (1, -1, 1)), "stride_kv[3] must be three positive ints"),
    ((None, None, None, (1, 1)), "stride_kv[3] must be three positive ints"),
    ("1,1,1", "stride_kv must be a list"),
])
def test_bad_stride_kv_is_a_clear_error(stride_kv, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MViTConfig(**_DET, stride_kv=stride_kv)
