"""``bmvit explain``: the paper's qualitative figure (supplementary Fig. 3) for one key frame of a video.

    bmvit explain --weights runs/demo/model.safetensors --source street.mp4 --time 4.0 --out fig.png

p(actor) of every key-frame token as a heat map, the boxes of all tokens with the selected ones
(p > theta) in yellow, and the last-layer attention of each selected token over the whole clip.
"""

from __future__ import annotations

import argparse

from bmvit.cli.predict import AMP_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="bmvit model file, model name (`bmvit weights list`) or http(s) URL of one")
    parser.add_argument("--source", required=True, help="video file or frame folder")
    parser.add_argument("--time", type=float, required=True, help="key-frame time in seconds from the video's start")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--threshold", type=float, default=None, help="p(actor) threshold (default: the checkpoint's)")
    parser.add_argument("--max-tokens", type=int, default=4, help="tokens whose attention is shown (default 4)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--amp", choices=AMP_CHOICES, default="auto",
                        help="mixed precision of the forward pass: auto = bf16 autocast on a CUDA device that "
                             "supports it, float32 on a CPU; bf16; off = float32 (default auto)")


def run(args: argparse.Namespace) -> int:
    import sys

    from bmvit.checkpoint import load
    from bmvit.inference.explain import explain, save_explanation
    from bmvit.inference.predictor import Predictor

    if args.max_tokens < 1:
        print(f"bmvit explain: error: --max-tokens must be >= 1, got {args.max_tokens}", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(load(args.weights, device=args.device), device=args.device, threshold=args.threshold,
                              on_warning=lambda msg: print(f"warning: {msg}", file=sys.stderr), amp=args.amp)
        explanation = explain(predictor, args.source, args.time, max_tokens=args.max_tokens)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"bmvit explain: error: {err}", file=sys.stderr)
        return 2
    path = save_explanation(explanation, args.out)
    chosen = "no token above the threshold; the most confident one is shown" if explanation.below_threshold else \
        f"{len(explanation.selected)} token(s) with p(actor) > {explanation.threshold:g}"
    print(f"{path}: {chosen}")
    return 0
