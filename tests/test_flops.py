"""FLOP counting: hand-computed cases, attention counted, the MViTv2 model-zoo numbers, the CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bmvit
from bmvit.cli import flops as flops_cli
from bmvit.flops import count_flops


class _Attention(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)


def test_linear_and_conv_hand_computed():
    report = count_flops(nn.Linear(10, 20), (3, 10))
    assert report.gmacs * 1e9 == pytest.approx(3 * 10 * 20)
    assert report.params_m * 1e6 == 10 * 20 + 20
    conv = nn.Conv3d(2, 4, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, (1, 2, 2, 5, 5)).gmacs * 1e9 == pytest.approx(4 * 2 * 27 * 2 * 5 * 5)


def test_attention_is_counted():
    # q @ k^T and attn @ v: 2 * (L * L * E) MACs per batch and head
    report = count_flops(_Attention(), (2, 3, 16, 8))
    assert report.gmacs * 1e9 == pytest.approx(2 * 3 * 2 * 16 * 16 * 8)


def test_counting_leaves_the_model_alone():
    model = bmvit.create_backbone("mvit_tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = count_flops(model, (1, 3, *model.input_size))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"
    assert report.gmacs > 0 and set(report.gmacs_by_op) >= {"addmm", "bmm", "convolution"}
    assert count_flops(model, (2, 3, *model.input_size)).gmacs == pytest.approx(2 * report.gmacs)


def test_mvitv2_s_matches_the_model_zoo():
    with torch.device("meta"):  # shapes only: builds and counts in well under a second
        model = bmvit.create_backbone("mvitv2_s")
    report = count_flops(model, (1, 3, 16, 224, 224))
    assert report.gmacs == pytest.approx(64.5, rel=0.02)  # MViTv2 model zoo: 64.5 G (torchvision lists 64.22)
    assert report.params_m == pytest.approx(34.5, rel=0.01)  # 34.5 M with the 400-class head; 34.23 M without


def test_mvitv2_s_det_at_256():
    with torch.device("meta"):
        model = bmvit.create_backbone("mvitv2_s_det")
    report = count_flops(model, (1, 3, 16, 256, 256))
    assert report.gmacs == pytest.approx(110.3, rel=0.02)  # docs/design.md#compute: fvcore on PySlowFast, scale5 KV stride (1,2,2)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    flops_cli.add_arguments(parser)
    return flops_cli.run(parser.parse_args(list(argv)))


def test_cli_prints_and_writes_json(tmp_path, capsys):
    out = tmp_path / "flops.json"
    assert _cli("--model", "mvit_tiny", "--input", "16x96x96", "--json", str(out)) == 0
    printed = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["model"] == "mvit_tiny" and data["kind"] == "backbone" and data["input_shape"] == [1, 3, 16, 96, 96]
    assert f"GMACs: {data['gmacs']:.2f}" in printed and f"params: {data['params_m']:.2f} M" in printed
    expected = count_flops(bmvit.create_backbone("mvit_tiny", input_size=(16, 96, 96)), (1, 3, 16, 96, 96))
    assert data["gmacs"] == pytest.approx(expected.gmacs)


def test_cli_takes_detector_names_too(capsys):
    if "bmvit_mvit_tiny" not in bmvit.list_models():
        pytest.skip("detector presets not registered")
    assert _cli("--model", "bmvit_mvit_tiny") == 0
    detector = capsys.readouterr().out
    assert _cli("--model", "mvit_tiny_det") == 0
    backbone = capsys.readouterr().out
    assert "(detector)" in detector and "(backbone)" in backbone
    params = [float(text.split("params: ")[1].split(" M")[0]) for text in (detector, backbone)]
    assert params[0] > params[1]  # projection and heads on top


@pytest.mark.parametrize("argv, message", [
    (("--model", "nope"), "unknown model 'nope'"),
    (("--model", "mvit_tiny", "--input", "16x96"), "TxHxW"),
    (("--model", "mvit_tiny", "--input", "16x0x96"), "TxHxW"),
])
def test_cli_bad_arguments(argv, message, capsys):
    assert _cli(*argv) == 2
    assert message in capsys.readouterr().err
