"""``bmvit flops --model NAME [--input TxHxW] [--json OUT]``: GMACs and parameters of a model.

NAME is a detector from ``bmvit.list_models()`` or a backbone from ``bmvit.list_backbones()``; no name is in
both (the backbones as BMViT configures them end in ``_det``: ``bmvit_mvitv2_s`` is the detector,
``mvitv2_s_det`` its backbone).
Attention is counted (SDPA runs on its math backend while counting); GMACs = FLOPs / 2.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="a detector (bmvit.list_models()) or backbone (bmvit.list_backbones()) name")
    parser.add_argument("--input", default=None, metavar="TxHxW",
                        help="clip size, e.g. 16x224x224 (default: the size the model was built for)")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the report as JSON to this file")


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"16x224x224"`` -> ``(16, 224, 224)``; anything else is a ValueError saying so."""
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--input must be TxHxW with positive integers, e.g. 16x224x224; got {text!r}")
    return tuple(int(p) for p in parts)  # type: ignore[return-value]


def run(args: argparse.Namespace) -> int:
    import json
    import sys

    import bmvit
    from bmvit.flops import count_flops

    try:
        input_size = parse_input_size(args.input) if args.input else None
        model, kind = _create(args.model, input_size, bmvit)
    except ValueError as err:
        print(f"bmvit flops: {err}", file=sys.stderr)
        return 2
    thw = tuple(input_size or model.input_size)
    report = count_flops(model.eval(), (1, 3, *thw))
    print(f"model: {args.model} ({kind})")
    print(f"input: 1x3x{'x'.join(map(str, thw))}")
    print(f"GMACs: {report.gmacs:.2f}")
    print(f"params: {report.params_m:.2f} M")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "kind": kind, **report.to_dict()}, f, indent=2)
    return 0


def _create(name: str, input_size: tuple[int, int, int] | None, bmvit) -> tuple[object, str]:
    """Build NAME from the detector registry, else from the backbone registry."""
    if name in bmvit.list_models():
        overrides = {"backbone_overrides": {"input_size": input_size}} if input_size else {}
        return bmvit.create_model(name, **overrides), "detector"
    if name in bmvit.list_backbones():
        return bmvit.create_backbone(name, **({"input_size": input_size} if input_size else {})), "backbone"
    raise ValueError(f"unknown model {name!r}; detectors: {', '.join(bmvit.list_models())}; "
                     f"backbones: {', '.join(bmvit.list_backbones())}")
