"""The backbone contract, checked on every registered preset: ``[B, 3, T, H, W] -> [B, T', H', W', C]``
after the final norm, ``embed_dim``/``input_size``/``no_weight_decay()``, clear errors on wrong
clips; for the tiny presets also no NaN, gradients reaching every parameter, and activation
checkpointing giving the same gradients. Full-size presets are built on the meta device only."""

from __future__ import annotations

import pytest
import torch

import bmvit
from bmvit.models.backbones import Backbone

ALL = bmvit.list_backbones()
TINY = [name for name in ALL if "tiny" in name]
SMALL_INPUT = (4, 64, 64)  # every tiny preset accepts it: 2x16x16 patch grid, 2x4x4 or 2x2x2 tokens out


# (T', H', W', C) of the full-size presets at their own input size, from the papers' tables.
FULL_SIZE_TOKENS = {
    "mvitv2_s": (8, 7, 7, 768),
    "mvitv2_s_det": (8, 16, 16, 768),
    "vit_b": (8, 14, 14, 768),
    "vit_b_det": (8, 18, 18, 768),
    "hiera_b": (8, 7, 7, 768),
    "hiera_l": (8, 7, 7, 1152),
    "hiera_l_det": (8, 16, 16, 1152),
}


def test_registry_holds_every_family_and_tiny_presets():
    assert set(FULL_SIZE_TOKENS) <= set(ALL)
    assert {"mvit_tiny", "mvit_tiny_det", "vit_tiny", "hiera_tiny", "hiera_tiny_det"} <= set(TINY)


@pytest.mark.parametrize("name", ALL)
def test_preset_output_shape_on_the_meta_device(name):
    with torch.device("meta"):
        model = bmvit.create_backbone(name).eval()
    assert isinstance(model, Backbone)
    assert isinstance(model.embed_dim, int) and len(model.input_size) == 3
    out = model(torch.zeros(2, 3, *model.input_size, device="meta"))
    assert out.ndim == 5 and out.shape[0] == 2 and out.shape[-1] == model.embed_dim
    if name in FULL_SIZE_TOKENS:
        assert tuple(out.shape[1:]) == FULL_SIZE_TOKENS[name]
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names


def _tiny(name: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return bmvit.create_backbone(name, input_size=SMALL_INPUT, **overrides)


@pytest.mark.parametrize("name", TINY)
def test_tiny_forward_is_finite_normed_and_batch_independent(name):
    model = _tiny(name).eval()
    clip = torch.randn(2, 3, *SMALL_INPUT, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        tokens = model(clip)
        single = model(clip[1:])
    assert tokens.ndim == 5 and tokens.shape[0] == 2 and tokens.shape[-1] == model.embed_dim
    assert torch.isfinite(tokens).all()
    torch.testing.assert_close(tokens[1:], single, atol=1e-5, rtol=1e-5)
    # final LayerNorm at init (weight 1, bias 0): every token has zero mean and unit variance over C
    assert tokens.mean(-1).abs().max() < 1e-4
    assert (tokens.var(-1, unbiased=False) - 1).abs().max() < 1e-2


@pytest.mark.parametrize("name", TINY)
def test_gradients_reach_every_parameter_and_checkpointing_keeps_them(name):
    grads = []
    for use_checkpoint in (False, True):
        model = _tiny(name, drop_path_rate=0.3, use_checkpoint=use_checkpoint).train()
        torch.manual_seed(1)  # the same clip, weights on the output and drop-path draws in both runs
        clip = torch.randn(2, 3, *SMALL_INPUT)
        tokens = model(clip)
        (tokens * torch.randn(tokens.shape)).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    plain, checkpointed = grads
    for param_name, grad in plain.items():
        assert grad is not None and torch.isfinite(grad).all(), f"{name}: no finite gradient for {param_name}"
        assert grad.abs().sum() > 0, f"{name}: no gradient reaches {param_name}"
        torch.testing.assert_close(checkpointed[param_name], grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_wrong_clips_are_clear_errors(name):
    model = _tiny(name).eval()
    t, h, w = SMALL_INPUT
    expected = f"[B, 3, {t}, {h}, {w}]"
    for shape in [(3, t, h, w), (1, 1, t, h, w), (1, 3, t + 2, h, w), (1, 3, t, h, w + 16)]:
        with pytest.raises(ValueError) as err:
            model(torch.zeros(shape))
        assert expected in str(err.value) and str(shape) in str(err.value), (shape, str(err.value))
    with pytest.raises(ValueError, match="float clip"):
        model(torch.zeros(1, 3, t, h, w, dtype=torch.uint8))


@pytest.mark.parametrize("name", TINY)
def test_unknown_override_is_rejected(name):
    with pytest.raises(ValueError, match="unknown .* config field"):
        bmvit.create_backbone(name, depht=3)


def test_every_weights_record_names_a_format_its_backbone_reads_and_a_license():
    from bmvit.models.weights import KNOWN_WEIGHTS

    assert {"mvitv2_s_16x4.k400", "mvitv2_s_16x4.k400_tv", "vit_b_16x4.videomae_k400_ft_k400", "vit_b_16x4.videomae_k400",
            "hiera_l_16x224.mae_k400_ft_k400", "hiera_l_16x224.mae_k400", "mvit_tiny_8x128.synthetic_seed1"
            } <= set(KNOWN_WEIGHTS)
    for spec in KNOWN_WEIGHTS.values():
        assert spec.backbone in bmvit.list_backbones(), spec.name
        with torch.device("meta"):
            backbone = bmvit.create_backbone(spec.backbone)
        assert spec.source_format in type(backbone).weights_formats, spec.name
        # Kinetics weights come at the backbone's default size; ours (bmvit format) at the demo's clip size.
        expected_size = (8, 128, 128) if spec.source_format == "bmvit" else backbone.input_size
        assert spec.license and spec.input_size == expected_size, spec.name
        if spec.source_format in ("videomae", "hiera"):
            assert spec.license.startswith("CC BY-NC 4.0"), spec.name  # non-commercial weights


def test_detector_and_backbone_names_are_disjoint_and_former_backbone_names_still_build():
    from bmvit.models.backbones import RENAMED_BACKBONES, canonical_backbone_name
    from bmvit.models.bmvit import BMViTConfig

    assert not set(bmvit.list_models()) & set(bmvit.list_backbones())
    for old, new in RENAMED_BACKBONES.items():
        # Each former name is now only the detector built on the renamed backbone.
        assert old in bmvit.list_models() and old not in bmvit.list_backbones() and new in bmvit.list_backbones()
        assert canonical_backbone_name(old) == new and BMViTConfig(backbone=old).backbone == new
        with torch.device("meta"):
            assert bmvit.create_model(old).config.backbone == new
            assert bmvit.create_backbone(old).cfg == bmvit.create_backbone(new).cfg
    assert canonical_backbone_name("mvitv2_s") == "mvitv2_s"
