import json
import shutil
from pathlib import Path

from bmvit.cli import main as cli_main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"


def test_demo_runs_end_to_end_and_reports_the_saved_models_map(tiny_dataset, tiny_overrides, tmp_path, capsys):
    out = tmp_path / "demo"
    shutil.copytree(tiny_dataset, out / "data")  # an existing dataset is reused, not rewritten
    overrides = [o for o in tiny_overrides(tiny_dataset, out) if not o.startswith(("data.root=", "train.out_dir="))]
    assert cli_main(["demo", "--out", str(out), "--config", str(CONFIG), *overrides]) == 0

    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[0] == f"[1/3] using the synthetic dataset in {out / 'data'}"
    assert any(line.startswith("loaded ") and "bmvit_mvit_tiny_synthetic_pretrain.safetensors" in line
               for line in printed)  # the shipped pretrained backbone, reported before training
    summary = json.loads((out / "metrics.json").read_text())
    assert printed[-1] == f"mAP: {summary['mAP']:.4f}"  # the headline: the last evaluation's mAP
    assert summary["mAP"] == summary["history"][-1]["mAP"] and summary["model"]["keep"] == "last"
    for name in ("model.safetensors", "metrics.jsonl", "per_class_ap_val.png", "detections_val.csv"):
        assert (out / name).is_file(), name
    videos = [p.name[: -len("_annotated.mp4")] for p in (out / "predict").glob("*_annotated.mp4")]
    assert len(videos) == 1
    for suffix in (".csv", ".json", "_tracks.csv", "_timeline.csv", "_timeline.png"):  # detections, tracks, timeline
        assert (out / "predict" / f"{videos[0]}{suffix}").is_file(), suffix
