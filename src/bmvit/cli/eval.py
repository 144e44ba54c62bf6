"""``bmvit eval --weights W --data ROOT [--json OUT] [--thresholds 0.1,0.3] [key=value ...]``."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True,
                        help="a bmvit model file (model.safetensors, best.safetensors), a model name "
                             "(`bmvit weights list`) or an http(s) URL of one")
    parser.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    parser.add_argument("--out", default=None, help="folder for detections CSV, per-class JSON and plot")
    parser.add_argument("--json", default=None, help="also write the per-class AP JSON here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--thresholds", type=_thresholds, default=(), metavar="T1,T2,...",
                        help="also score these actor thresholds, from the same pass of the model "
                             "(e.g. 0.05,0.1,0.2,0.3,0.5); prints a table")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="data.* and eval.* overrides")


def run(args: argparse.Namespace) -> int:
    import shutil
    import sys
    from pathlib import Path

    from bmvit.build import ClassInfo, create_eval_loader, resolve_normalisation
    from bmvit.checkpoint import load
    from bmvit.config import ConfigError, apply_overrides, config_from_dict, load_config
    from bmvit.engine import evaluate
    from bmvit.models.weights import Normalisation
    from bmvit.trainer import select_device

    try:
        device = select_device(args.device)
        model = load(args.weights, device=device)  # a path, a record's name or a URL
        meta = model.metadata
        config = config_from_dict(meta.get("run_config", {})) if meta.get("run_config") else load_config()
        overrides = list(args.overrides) + ([f"data.root={args.data}"] if args.data else [])
        for key in overrides:
            if not key.startswith(("data.", "eval.")):
                raise ConfigError(f"bmvit eval takes only data.* and eval.* overrides, got {key!r}")
        config = apply_overrides(config, overrides)
        config.eval.validate()
        # The model file records the normalisation it was trained with: data.mean/std default to it.
        own = Normalisation(tuple(meta["mean"]), tuple(meta["std"]), "the model file") if "mean" in meta else None
        norm = resolve_normalisation(config.data, own, weights_given=True)
        config.data.mean, config.data.std = list(norm.mean), list(norm.std)
        classes = ClassInfo(class_ids=list(meta["class_ids"]), label_map={int(k): v for k, v in meta["label_map"].items()})
        _check_label_map(config, classes)
        # Beside a model file given by path; a name or URL (a file in the cache) gives ./eval instead.
        beside = Path(args.weights).resolve().parent if Path(args.weights).is_file() else Path.cwd()
        out_dir = Path(args.out) if args.out else beside / "eval"
        out_dir.mkdir(parents=True, exist_ok=True)
        loader = create_eval_loader(config, model, classes, device)
        result = evaluate(model, loader, classes, config.data, config.eval, out_dir, device,
                          thresholds=args.thresholds)
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"bmvit eval: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        shutil.copyfile(out_dir / "per_class_ap_val.json", args.json)
    for entry in result["per_class"]:
        ap = "n/a (no ground truth)" if entry["ap"] is None else f"{entry['ap']:.4f}"
        print(f"{entry['id']:>4}  {entry['name'][:40]:<40} {ap}")
    print(f"detections: {out_dir / 'detections_val.csv'}")
    print(f"per-class AP: {out_dir / 'per_class_ap_val.json'} and .png")
    if result.get("thresholds"):
        _print_threshold_table(result["thresholds"], config.eval.threshold, result["mAP_by_protocol"])
    others = ", ".join(f"{p} {v:.4f}" for p, v in result["mAP_by_protocol"].items() if p != result.get("protocol"))
    print(f"mAP: {result['mAP']:.4f}" + (f" ({result['protocol']}; {others})" if others else ""))
    return 0


def _thresholds(text: str) -> tuple[float, ...]:
    """``0.05,0.1,0.3`` -> (0.05, 0.1, 0.3); each in [0, 1)."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    bad = [v for v in values if not 0.0 <= v < 1.0]
    if not values or bad:
        raise argparse.ArgumentTypeError(f"every threshold must be in [0, 1), got {text!r}")
    return values


def _print_threshold_table(table: list[dict], threshold: float, by_protocol: dict[str, float]) -> None:
    protocols = list(by_protocol)
    print("threshold  rows      " + "  ".join(f"mAP {p:<11}" for p in protocols))
    for row in table:
        print(f"{row['threshold']:<9g}  {row['rows']:<8d}  " + "  ".join(f"{row['mAP_' + p]:<15.4f}" for p in protocols))
    print(f"(eval.threshold={threshold:g} gave the files above)")


def _check_label_map(config, classes) -> None:
    """The data's label map must name classes the model was trained on."""
    from bmvit.build import data_label_map
    from bmvit.config import ConfigError

    label_map = data_label_map(config.data)  # AVA: the label-map file; UCF101-24 / JHMDB-21: the ACT ground truth
    unknown = sorted(set(label_map) - set(classes.class_ids))
    if unknown:
        raise ConfigError(
            f"the label map of {config.data.root} has classes {unknown} that the model was not trained on "
            f"(its classes: {classes.class_ids})"
        )
    classes.label_map = label_map
