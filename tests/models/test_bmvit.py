import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

import bmvit
from bmvit.models.bmvit import BMViT, BMViTConfig
from bmvit.models.heads import INIT_BOX_WH

EXPECT_DIR = Path(__file__).resolve().parents[1] / "expect"
NUM_CLASSES = 5
SMALL_HEADS = {"proj_dim": 32, "head_hidden_dim": 32}


TINY_INPUT = (8, 64, 64)  # 4x4x4 tokens out of mvit_tiny_det: fast enough for many forward passes


def _tiny(token_selection: str = "central", seed: int = 0, backbone_overrides: dict | None = None,
          **overrides) -> BMViT:
    torch.manual_seed(seed)
    backbone_overrides = {"input_size": TINY_INPUT, **(backbone_overrides or {})}
    model = bmvit.create_model("bmvit_mvit_tiny", num_classes=NUM_CLASSES, token_selection=token_selection,
                               backbone_overrides=backbone_overrides, **SMALL_HEADS, **overrides)
    return model.eval()


def _clip(model: BMViT, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, *model.input_size, generator=torch.Generator().manual_seed(seed))


class _StandInBackbone(nn.Module):
    """A one-layer backbone keeping the contract: [B, 3, T, H, W] -> [B, T/2, H/8, W/8, 16]."""

    embed_dim = 16
    input_size = (4, 32, 32)

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 16, kernel_size=(2, 8, 8), stride=(2, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).permute(0, 2, 3, 4, 1)

    def no_weight_decay(self) -> set[str]:
        return {"conv.bias"}


@pytest.fixture(scope="module")
def tokens_thw() -> tuple[int, int, int]:
    model = _tiny()
    with torch.no_grad():
        return tuple(model.backbone(_clip(model, batch=1)).shape[1:4])


@pytest.mark.parametrize("selection", ["central", "temporal_mean", "all"])
def test_output_shapes_for_each_token_selection(selection, tokens_thw):
    t, h, w = tokens_thw
    model = _tiny(selection)
    with torch.no_grad():
        out = model(_clip(model))
    t_sel = t if selection == "all" else 1
    n = t_sel * h * w
    assert out["token_grid"] == (t_sel, h, w)
    assert out["pred_boxes"].shape == (2, n, 4)
    assert out["pred_actor"].shape == (2, n, 2)
    assert out["pred_actions"].shape == (2, n, NUM_CLASSES)
    assert bool(((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all())


def test_token_selection_picks_the_central_slice_and_the_temporal_mean(tokens_thw):
    t, h, w = tokens_thw
    central, all_tokens, mean = _tiny("central"), _tiny("all"), _tiny("temporal_mean")
    assert torch.equal(central.state_dict()["proj.weight"], all_tokens.state_dict()["proj.weight"])
    clip = _clip(central)
    with torch.no_grad():
        out_central, out_all, out_mean = central(clip), all_tokens(clip), mean(clip)
        tokens = central.backbone(clip)
        by_hand = central.heads(central.proj(tokens.mean(1).flatten(1, 2)), (1, h, w))
    # Candidates are flattened t-major, so slice t = T'//2 is one contiguous block of "all".
    block = slice((t // 2) * h * w, (t // 2 + 1) * h * w)
    for key in ("pred_boxes", "pred_actor", "pred_actions"):
        assert torch.allclose(out_all[key][:, block], out_central[key], atol=1e-6)
        assert torch.allclose(out_mean[key], by_hand[key], atol=1e-6)


def test_batched_equals_per_sample_in_eval_mode():
    model = _tiny()
    clip = _clip(model, batch=3)
    with torch.no_grad():
        batched = model(clip)
        for b in range(3):
            single = model(clip[b : b + 1])
            for key in ("pred_boxes", "pred_actor", "pred_actions"):
                assert torch.allclose(batched[key][b], single[key][0], atol=1e-5), key


def test_initial_boxes_and_actor_prior(tokens_thw):
    _, h, w = tokens_thw
    model = _tiny()
    with torch.no_grad():
        out = model(_clip(model))
    # Zero-initialised box layer: token (i, j) starts at the centre of grid cell (i, j), INIT_BOX_WH wide.
    cx = (torch.arange(w) + 0.5) / w
    cy = (torch.arange(h) + 0.5) / h
    expected = torch.stack((cx.repeat(h), cy.repeat_interleave(w), *(torch.full((h * w,), v) for v in INIT_BOX_WH)), -1)
    assert torch.allclose(out["pred_boxes"], expected.expand(2, -1, -1), atol=1e-5)
    p_actor = out["pred_actor"].softmax(-1)[..., 0]
    assert 0.003 < float(p_actor.median()) < 0.03
    p_action = out["pred_actions"].sigmoid()
    assert 0.003 < float(p_action.median()) < 0.03

    plain = _tiny(box_reference="none")
    with torch.no_grad():
        assert torch.allclose(plain(_clip(plain))["pred_boxes"], torch.full((2, h * w, 4), 0.5))


def test_golden_outputs():
    """Outputs of a seeded tiny model, in tests/expect/; regenerate with BMVIT_ACCEPT=1 after a deliberate change."""
    model = _tiny()
    # The box head starts at zero; give it seeded weights so the golden boxes depend on the tokens.
    nn.init.normal_(model.heads.box.last.weight, std=0.05, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(_clip(model, batch=2, seed=3))
    # 16 candidates x 2 clips: small enough to store every output.
    got = {key: out[key].tolist() for key in ("pred_boxes", "pred_actor", "pred_actions")}
    got["token_grid"] = list(out["token_grid"])
    path = EXPECT_DIR / "bmvit_mvit_tiny_outputs.json"
    if os.environ.get("BMVIT_ACCEPT") == "1":
        path.write_text(json.dumps(got) + "\n")
        pytest.skip(f"wrote {path}")
    if not path.exists():
        pytest.fail(f"{path} is missing; create it with BMVIT_ACCEPT=1")
    expected = json.loads(path.read_text())
    assert got["token_grid"] == expected["token_grid"]
    for key in ("pred_boxes", "pred_actor", "pred_actions"):
        diff = (torch.tensor(got[key]) - torch.tensor(expected[key])).abs().max().item()
        assert diff < 1e-4, f"{key} differs from {path.name} by {diff}; if deliberate, rerun with BMVIT_ACCEPT=1"


def test_config_round_trip_and_rebuild():
    model = _tiny("temporal_mean", backbone_overrides={"drop_path_rate": 0.1})
    config = model.config
    assert isinstance(config, BMViTConfig) and config.backbone == "mvit_tiny_det"
    data = json.loads(json.dumps(config.to_dict()))
    assert BMViTConfig.from_dict(data) == config
    torch.manual_seed(0)
    rebuilt = BMViT(BMViTConfig.from_dict(data)).eval()
    rebuilt.load_state_dict(model.state_dict())
    clip = _clip(model)
    with torch.no_grad():
        assert torch.allclose(rebuilt(clip)["pred_actions"], model(clip)["pred_actions"])


def test_config_tuples_survive_json():
    config = BMViTConfig(backbone="b", backbone_overrides={"input_size": [8, 64, 64], "use_checkpoint": True})
    assert config.backbone_overrides["input_size"] == (8, 64, 64)
    assert config.to_dict()["backbone_overrides"]["input_size"] == [8, 64, 64]
    assert BMViTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match=r"unknown keys \['num_heads'\]"):
        BMViTConfig.from_dict({"num_classes": 60, "num_heads": 3})
    with pytest.raises(ValueError, match="token_selection"):
        BMViTConfig(token_selection="middle")
    with pytest.raises(TypeError, match="num_classes must be int"):
        BMViTConfig(num_classes="80")
    with pytest.raises(TypeError, match="proj_dim must be int"):
        BMViTConfig(proj_dim=True)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        BMViTConfig(num_classes=0)
    with pytest.raises(TypeError, match="backbone_overrides"):
        BMViTConfig(backbone_overrides={"x": {"nested": 1}})


def test_create_model_errors():
    with pytest.raises(ValueError, match=r"unknown model override\(s\) \['depth'\]"):
        bmvit.create_model("bmvit_mvit_tiny", depth=3)
    with pytest.raises(ValueError, match="fixed by the preset"):
        bmvit.create_model("bmvit_mvit_tiny", backbone="mvitv2_s")
    assert {"bmvit_mvitv2_s", "bmvit_mvit_tiny"} <= set(bmvit.list_models())


def test_bad_clip_shapes():
    model = _tiny()
    t, h, w = model.input_size
    with pytest.raises(ValueError, match=rf"\[B, 3, T, H, W\].*\(3, {t}, {h}, {w}\)"):
        model(torch.zeros(3, t, h, w))
    with pytest.raises(ValueError, match=rf"got shape \(1, 1, {t}, {h}, {w}\)"):
        model(torch.zeros(1, 1, t, h, w))


def test_explicit_backbone_and_no_weight_decay():
    config = BMViTConfig(backbone="stand_in", num_classes=3, **SMALL_HEADS)
    model = BMViT(config, backbone=_StandInBackbone()).eval()
    out = model(torch.zeros(1, 3, 4, 32, 32))
    assert out["pred_actions"].shape == (1, 16, 3) and out["token_grid"] == (1, 4, 4)
    assert model.no_weight_decay() == {"backbone.conv.bias"}
    assert model.input_size == (4, 32, 32)
    with pytest.raises(TypeError, match="does not support return_attention"):
        model(torch.zeros(1, 3, 4, 32, 32), return_attention=True)


def test_create_model_loads_backbone_weights(tmp_path):
    from safetensors.torch import save_file

    source = _tiny(seed=1)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in source.backbone.state_dict().items()}, str(path))
    torch.manual_seed(2)
    model = bmvit.create_model("bmvit_mvit_tiny", num_classes=NUM_CLASSES, backbone_weights=str(path),
                               backbone_overrides={"input_size": TINY_INPUT}, **SMALL_HEADS)
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    assert not torch.equal(model.proj.weight, source.proj.weight)  # only the backbone is loaded
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bmvit.create_model("bmvit_mvit_tiny", backbone_weights=str(tmp_path / "missing.safetensors"))


def test_return_attention_passes_the_backbone_attention_through(tokens_thw):
    model = _tiny()
    clip = _clip(model)
    with torch.no_grad():
        plain, with_attention = model(clip), model(clip, return_attention=True)
    assert "attention" not in plain
    attention = with_attention["attention"]  # [B, heads, T', H', W', Tk, Hk, Wk] from the MViT backbone
    assert attention.shape[0] == 2 and tuple(attention.shape[2:5]) == tokens_thw
    assert torch.allclose(with_attention["pred_actions"], plain["pred_actions"])


def test_mvitv2_s_preset_geometry():
    # Built on the meta device: the full-size model's structure without allocating its weights.
    with torch.device("meta"):
        model = bmvit.create_model("bmvit_mvitv2_s", num_classes=80)
    assert model.config.proj_dim == 512 and model.proj.in_features == 768
    assert tuple(model.input_size) == (16, 256, 256)
    assert model.heads.box.last.out_features == 4 and len(model.heads.box.layers) == 3
    assert model.heads.actor.last.out_features == 2 and len(model.heads.actor.layers) == 2
    assert model.heads.action.last.out_features == 80


def test_token_local_boxes_stay_within_range_of_their_cell(tokens_thw):
    from bmvit.models.heads import DetectionHeads

    _, h, w = tokens_thw
    model = _tiny(box_reference="token_local", box_local_range=1.5)
    with torch.no_grad():
        start = model(_clip(model))["pred_boxes"]
    reference = _tiny()  # token_center: same zero-initialised start
    with torch.no_grad():
        assert torch.allclose(start, reference(_clip(reference))["pred_boxes"], atol=1e-5)

    # Huge head outputs: each centre saturates at exactly +-1.5 cells from its own cell centre.
    heads = DetectionHeads(8, NUM_CLASSES, hidden_dim=8, box_reference="token_local", local_range=1.5)
    with torch.no_grad():
        heads.box.last.bias.copy_(torch.tensor([100.0, -100.0, 0.0, 0.0]))
        boxes = heads(torch.zeros(1, h * w, 8), (1, h, w))["pred_boxes"][0]
    cx = (torch.arange(w) + 0.5 + 1.5) / w
    cy = (torch.arange(h) + 0.5 - 1.5) / h
    assert torch.allclose(boxes[:, 0], cx.repeat(h).clamp(0, 1), atol=1e-6)
    assert torch.allclose(boxes[:, 1], cy.repeat_interleave(w).clamp(0, 1), atol=1e-6)
    assert torch.allclose(boxes[:, 2:], torch.tensor(INIT_BOX_WH).expand(h * w, 2), atol=1e-6)

    with pytest.raises(ValueError, match="box_local_range must be > 0"):
        BMViTConfig(box_reference="token_local", box_local_range=0.0)
    config = BMViTConfig(box_reference="token_local", box_local_range=2)
    assert config.box_local_range == 2.0 and BMViTConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize("action_head", ["mlp", "cross_attention"])
def test_projection_and_heads_run_in_fp32_under_autocast(action_head):
    model = _tiny(action_head=action_head)
    linears = {"proj": model.proj, **{f"heads.{name}": module for name, module in model.heads.named_modules()
                                      if isinstance(module, nn.Linear)}}
    seen: dict[str, tuple[torch.dtype, torch.dtype]] = {}
    backbone_out: list[torch.Tensor] = []

    def record(name: str):
        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            seen[name] = (args[0].dtype, out.dtype)
        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in linears.items()]
    hooks.append(model.backbone.register_forward_hook(lambda module, args, out: backbone_out.append(out)))
    clip = _clip(model)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(clip)
    for hook in hooks:
        hook.remove()
    assert backbone_out[0].dtype == torch.bfloat16  # the backbone did run under autocast
    assert set(seen) == set(linears) and set(seen.values()) == {(torch.float32, torch.float32)}, seen
    keys = ("pred_boxes", "pred_actor", "pred_actions")
    assert {out[key].dtype for key in keys} == {torch.float32}

    # The same numbers as the fp32 model outside autocast, given the backbone's bf16 tokens.
    model.backbone.register_forward_hook(lambda mod, args, out: backbone_out[0].float())
    with torch.no_grad():
        expected = model(clip)
    for key in keys:
        torch.testing.assert_close(out[key], expected[key], atol=1e-6, rtol=1e-6, msg=key)
