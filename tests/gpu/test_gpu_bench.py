"""``bmvit bench --device cuda``'s measurements on a real GPU, with a small detector (the GPU check
runs the full-size command itself)."""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_device_bench_times_cuda_work_and_reports_memory():
    from bmvit.bench.device import DeviceMatmulReference, bench_device_infer, bench_device_matmul, bench_device_train

    cuda = torch.device("cuda")
    matmul = bench_device_matmul(DeviceMatmulReference(4096, cuda), repeats=3)
    assert matmul["dtype"] == "bfloat16" and matmul["tflops"] > 10  # any recent data-centre GPU does this
    train = bench_device_train("bmvit_mvit_tiny", (8, 128, 128), [("plain", 4), ("checkpointing", 4)], 3,
                               matmul["tflops"], cuda)
    plain, checkpointed = train["runs"]
    assert 0 < plain["mfu"] < 1 and plain["peak_memory_gib"] > 0
    assert checkpointed["peak_memory_gib"] < plain["peak_memory_gib"]  # recomputing blocks saves activations
    infer = bench_device_infer("bmvit_mvit_tiny", (8, 128, 128), [1, 16], 3, matmul["tflops"], cuda)
    assert infer["runs"][1]["keyframes_per_s"] > infer["runs"][0]["keyframes_per_s"]  # batching pays on a GPU
