"""Two CPU processes (torchrun, gloo) with batch 1 each train exactly like one process with batch 2.

Both runs add the one-to-many auxiliary losses (``loss.o2m_weight``), which share the one-to-one
terms' global normalisation, so their DDP path is checked as well."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bmvit.checkpoint import load_tensors

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_tiny.yaml"
LOSS_KEYS = ("loss", "loss_actor", "loss_bbox", "loss_giou", "loss_action", "loss_bbox_o2m", "loss_giou_o2m",
             "loss_action_o2m")
O2M = {"loss.o2m_weight": 0.5, "loss.o2m_repeats": 3}


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]


def _history(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_equal_one(tiny_dataset, tmp_path, tiny_overrides):
    common = ["--config", str(CONFIG)]
    single = tmp_path / "single"
    _run([sys.executable, "-m", "bmvit", "train", *common, *tiny_overrides(tiny_dataset, single, **O2M)], tmp_path)
    pair = tmp_path / "pair"
    overrides = tiny_overrides(tiny_dataset, pair, **{"train.batch_size": 1, "eval.batch_size": 2, **O2M})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    _run([*torchrun, "-m", "bmvit", "train", *common, *overrides], tmp_path)

    one, two = _history(single), _history(pair)
    assert len(one) == len(two) == 2
    for a, b in zip(one, two):
        assert a["steps"] == b["steps"] and a["mAP"] == pytest.approx(b["mAP"], abs=1e-6)
        for key in LOSS_KEYS:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
    w1, _ = load_tensors(single / "model.safetensors")
    w2, _ = load_tensors(pair / "model.safetensors")
    # Gradients agree to float rounding (DDP averages in another order); Adam divides by sqrt(v), so
    # on parameters whose gradients are ~0 such rounding can move a weight by ~1e-5 after a few steps.
    for key in w1:
        torch.testing.assert_close(w2[key], w1[key], rtol=1e-4, atol=1e-4)
    rows1 = (single / "detections_val.csv").read_text().splitlines()
    rows2 = (pair / "detections_val.csv").read_text().splitlines()
    assert len(rows1) == len(rows2)  # every val key frame evaluated once, none twice


LAUNCHER = """
import os, sys, time
if os.environ["RANK"] == "1":
    # This rank's clock runs 100000x fast from now on: it passes train.max_minutes (1 min) 0.6 ms after
    # the run starts its clock, before the first step ends; rank 0 would take a minute.
    real, start = time.time, time.time()
    time.time = lambda: start + 100_000 * (real() - start)
from bmvit.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_ranks_stop_together_when_one_reaches_the_deadline_first(tiny_dataset, tmp_path, tiny_overrides):
    (tmp_path / "launch.py").write_text(LAUNCHER)
    run = tmp_path / "run"
    overrides = tiny_overrides(tiny_dataset, run, **{"train.batch_size": 1, "train.epochs": 50, "train.log_every": 1,
                                                      "train.max_minutes": 1.0})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29534"]
    _run([*torchrun, str(tmp_path / "launch.py"), "train", "--config", str(CONFIG), *overrides], tmp_path)
    history = _history(run)
    # Rank 1 passed the deadline within seconds; both ranks stopped at the same step, evaluated and exited.
    assert len(history) == 1 and history[0]["steps"] == 1 and history[0]["mAP"] is not None
