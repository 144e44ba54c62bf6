"""``bmvit export``: the whole detector as ONNX, TorchScript or a ``torch.export`` program.

    bmvit export --weights runs/demo/model.safetensors --format onnx --out model.onnx

Input ``clip [B, 3, T, H, W]`` (normalised); outputs ``pred_boxes`` (normalised cxcywh),
``pred_actor`` and ``pred_actions`` logits, batch axis dynamic. The file is checked against PyTorch
at batch 1 and 2 before it is put in place (``--no-verify`` skips that).
"""

from __future__ import annotations

import argparse

FORMAT_CHOICES = ("onnx", "torchscript", "export")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="bmvit model file, model name (`bmvit weights list`) or http(s) URL of one")
    parser.add_argument("--format", default="onnx", choices=FORMAT_CHOICES,
                        help="onnx (default) | torchscript (.pt) | export (torch.export program, .pt2)")
    parser.add_argument("--out", required=True, help="file to write")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--atol", type=float, default=1e-4, help="allowed difference from PyTorch (default 1e-4)")
    parser.add_argument("--no-verify", action="store_true", help="do not run the exported file against PyTorch")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.inference.export import check_exportable, export_model
    from bmvit.checkpoint import load

    try:
        model = load(args.weights, device="cpu")
        check_exportable(model)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"bmvit export: error: {err}", file=sys.stderr)
        return 2
    try:
        result = export_model(model, args.out, args.format, verify=not args.no_verify, atol=args.atol,
                              opset=args.opset)
    except (ValueError, RuntimeError, ImportError) as err:
        print(f"bmvit export: error: {err}", file=sys.stderr)
        return 1
    checked = ", ".join(f"batch {b}: max |diff| {d:.2e}" for b, d in result.max_abs_diff.items()) or "not verified"
    print(f"{result.path} ({result.format}; {checked})")
    return 0
