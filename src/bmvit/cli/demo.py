"""``bmvit demo``: the project's main job on its embedded default, end to end on a CPU.

Writes the synthetic AVA-format dataset, trains ``configs/synthetic_tiny.yaml``, evaluates it with
the official frame-mAP and runs prediction on a held-out synthetic video, all under ``--out``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--config", default="configs/synthetic_tiny.yaml", help="training config")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="training config overrides")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    import time
    from pathlib import Path

    from bmvit.config import ConfigError, load_config
    from bmvit.data.synthetic import write_synthetic_dataset
    from bmvit.trainer import fit

    out = Path(args.out)
    data_root = out / "data"
    start = time.time()
    try:
        config = load_config(args.config, [f"train.out_dir={out}", f"data.root={data_root}", *args.overrides])
    except ConfigError as err:
        print(f"bmvit demo: error: {err}", file=sys.stderr)
        return 2
    if not (data_root / "annotations").is_dir():
        print(f"[1/3] writing the synthetic dataset to {data_root}", flush=True)
        print(write_synthetic_dataset(data_root, seed=args.seed).describe(), flush=True)
    else:
        print(f"[1/3] using the synthetic dataset in {data_root}", flush=True)
    print(f"[2/3] training {config.model.name} on {data_root} ({args.config})", flush=True)
    final = fit(config)
    print(f"[3/3] predicting on a held-out video", flush=True)
    outputs = _predict_heldout(out, data_root)
    minutes = (time.time() - start) / 60
    print(f"\ndemo finished in {minutes:.1f} min; outputs:")
    print(f"  model + metadata:      {out / 'model.safetensors'}")
    print(f"  metrics (final mAP):   {out / 'metrics.json'}   (per epoch: {out / 'metrics.jsonl'})")
    print(f"  per-class AP plot:     {out / 'per_class_ap_val.png'}")
    print(f"  val detections (AVA):  {out / 'detections_val.csv'}")
    for label, path in outputs.items():
        print(f"  {label:<22} {path}")
    # The headline is the last evaluation's mAP (as PySlowFast reports); the best, selected on the val
    # set itself, is printed beside it under its own name.
    summary = json.loads((out / "metrics.json").read_text())
    if summary.get("mAP") is not None:
        protocols = ", ".join(f"{k.removeprefix('mAP_')} {v:.4f}" for k, v in summary.items()
                              if k.startswith("mAP_") and isinstance(v, float))
        print(f"best val mAP {summary['best_mAP']:.4f} at epoch {summary['best_epoch']} (chosen on the val set; "
              f"not the headline); by protocol at epoch {summary['epoch']}: {protocols}")
        print(f"mAP: {summary['mAP']:.4f}")
    return 0


def _predict_heldout(out, data_root) -> dict[str, object]:
    """Run ``bmvit predict`` on the first val video when the inference package is present."""
    try:
        from bmvit.inference.predictor import predict_to_files
    except ImportError:
        return {}
    from bmvit.data.ava import read_annotations

    video_id = sorted(set(read_annotations(data_root / "annotations" / "ava_val_v2.2.csv").video_ids.tolist()))[0]
    video = next((data_root / "videos").glob(f"{video_id}.*"))
    return predict_to_files(out / "model.safetensors", video, out / "predict", render=True)
