"""``bmvit bench --device cuda``: its device-generic measurements run on the CPU, and without a GPU the
command is a one-line error (tests/gpu/test_gpu_bench.py runs them on a GPU)."""

from __future__ import annotations

import pytest
import torch

from bmvit.bench.device import DeviceMatmulReference, bench_device_infer, bench_device_matmul, bench_device_train
from bmvit.bench.report import device_table_rows
from bmvit.cli import main


def test_device_benchmark_logic_runs_on_the_cpu():
    """``bmvit bench --device cuda``'s functions are device-generic: on the CPU, with a tiny detector, each
    run reports a positive rate, and the MFU is the FLOP rate over the matmul reference's."""
    cpu = torch.device("cpu")
    matmul = bench_device_matmul(DeviceMatmulReference(128, cpu), repeats=1)
    assert matmul["dtype"] == "float32" and matmul["tflops"] > 0
    train = bench_device_train("bmvit_mvit_tiny", (4, 32, 32), [("plain", 2), ("checkpointing", 2)], 1,
                               matmul["tflops"], cpu)
    assert [(r["variant"], r["batch"]) for r in train["runs"]] == [("plain", 2), ("checkpointing", 2)]
    for r in train["runs"]:
        assert r["clips_per_s"] == pytest.approx(2 / r["median_s"])
        flops = 3 * train["forward_gflops_per_clip"] * 1e9 * r["clips_per_s"]
        assert r["mfu"] == pytest.approx(flops / (matmul["tflops"] * 1e12))
    infer = bench_device_infer("bmvit_mvit_tiny", (4, 32, 32), [1, 3], 1, matmul["tflops"], cpu)
    assert [r["batch"] for r in infer["runs"]] == [1, 3] and all(r["keyframes_per_s"] > 0 for r in infer["runs"])
    rows = device_table_rows({"device_matmul": matmul, "device_train": train, "device_infer": infer})
    assert [r.section for r in rows] == ["matmul", "train", "train", "infer", "infer"]
    assert rows[1].unit == "clips/s" and rows[1].ratio == train["runs"][0]["mfu"]


def test_bench_device_cuda_without_a_gpu_is_a_one_line_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["bench", "--device", "cuda"]) == 2
    assert "no such CUDA device here" in capsys.readouterr().err
