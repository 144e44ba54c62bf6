"""The paper's model on an accelerator: ``bmvit bench --device cuda``.

Training clips/s and inference key frames/s of ``bmvit_mvitv2_s`` at 16x256, each with its model-FLOP
utilisation (MFU) against a matmul reference measured on the same chip in the same run. The functions are
device-generic (a CPU runs them too, in fp32), which is how the tests check them without a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from bmvit.bench.models import criterion_for_bench, detector_for_bench, random_targets
from bmvit.bench.report import device_table_rows
from bmvit.bench.timing import Timing, machine_info


@dataclass(frozen=True)
class DeviceSizes:
    """What ``run_device_benchmarks`` runs: the detector, (variant, batch) training runs, inference batches."""

    detector: str
    input_size: tuple[int, int, int]
    train_runs: tuple[tuple[str, int], ...]  # variant: plain | checkpointing | compile
    infer_batches: tuple[int, ...]
    matmul_n: int


DEVICE_FULL = DeviceSizes("bmvit_mvitv2_s", (16, 256, 256),
                          tuple((v, b) for v in ("plain", "checkpointing", "compile") for b in (8, 16, 32)), (1, 16),
                          8192)
DEVICE_QUICK = DeviceSizes("bmvit_mvitv2_s", (16, 256, 256),
                           (("plain", 8), ("plain", 16), ("checkpointing", 16), ("compile", 16)), (1, 16), 8192)


class DeviceMatmulReference:
    """``torch.mm`` of two ``n x n`` matrices on ``device``, in the dtype the model trains in there (bf16 on
    CUDA, fp32 on a CPU): the rate every model-FLOP-utilisation (MFU) figure is a fraction of. Measured,
    not a data sheet's peak: the same chip under its clocks, power and driver of the day."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n, self.device = n, device
        self.dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
        g = torch.Generator(device=device).manual_seed(0)
        self.a = torch.randn(n, n, device=device, dtype=self.dtype, generator=g)
        self.b = torch.randn(n, n, device=device, dtype=self.dtype, generator=g)

    def __call__(self) -> None:
        torch.mm(self.a, self.b)

    def tflops(self, seconds: float) -> float:
        """TFLOP/s of one product taking ``seconds`` (``2 n^3`` FLOPs)."""
        return 2 * self.n**3 / seconds / 1e12


def time_on_device(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2,
                   inner: int = 1) -> Timing:
    """Seconds per call of ``fn``: ``repeats`` timings of ``inner`` calls each after ``warmup`` untimed calls
    (cuDNN's autotuning, compilation, the allocator's first blocks). On CUDA the time is between two
    events recorded on the stream and read after synchronising, so queued work is not missed; on a CPU
    it is the wall clock. Returns the ``Timing`` (per call)."""
    for _ in range(warmup):
        fn()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    timing = Timing()
    for _ in range(repeats):
        cpu0 = time.process_time()
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            wall0 = time.perf_counter()
            for _ in range(inner):
                fn()
            seconds = time.perf_counter() - wall0
        timing.runs_s.append(seconds / inner)
        timing.cpu_s.append((time.process_time() - cpu0) / inner)
    return timing


def bench_device_matmul(reference: DeviceMatmulReference, repeats: int) -> dict[str, Any]:
    """The MFU reference alone: returns ``n``, ``dtype``, ``tflops`` and the timing's fields."""
    timing = time_on_device(reference, reference.device, repeats, warmup=3, inner=10)
    return {"n": reference.n, "dtype": str(reference.dtype).removeprefix("torch."), **timing.to_dict(),
            "tflops": reference.tflops(timing.median_s)}


def _uint8_clips(batch: int, input_size: tuple[int, int, int], device: torch.device) -> Tensor:
    clips = torch.randint(0, 256, (batch, 3, *input_size), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    return clips.pin_memory() if device.type == "cuda" else clips


def _bf16_on(device: torch.device) -> AbstractContextManager:
    """bf16 autocast on CUDA, as ``train.amp: auto`` and ``bmvit predict --amp auto`` use; fp32 elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _forward_gflops(name: str, input_size: tuple[int, int, int]) -> float:
    from bmvit.flops import count_flops

    return 2 * count_flops(detector_for_bench(name, input_size), (1, 3, *input_size)).gmacs


def bench_device_train(name: str, input_size: tuple[int, int, int], runs: Iterable[tuple[str, int]], repeats: int,
                       matmul_tflops: float, device: torch.device) -> dict[str, Any]:
    """Training steps as ``bmvit train`` runs them on ``device``: a pinned uint8 batch copied without
    blocking and normalised there, the forward under bf16 autocast (CUDA), the criterion with its
    Hungarian matching, the backward and AdamW (fused on CUDA), for each (variant, batch) of ``runs``.

    Variants: ``plain``; ``checkpointing`` (activation checkpointing per block); ``compile``
    (``torch.compile`` of the backbone). Clips/s = batch / step time; MFU = 3 x the forward's FLOPs
    (the backward costs about twice the forward) x batch / step time / the matmul reference's rate;
    peak memory from the allocator (CUDA). A run that runs out of memory is recorded as such.

    Returns:
        ``name``, ``input``, ``forward_gflops_per_clip`` and ``runs``: per run ``variant``, ``batch``, the
        timing's fields, ``clips_per_s``, ``mfu`` and ``peak_memory_gib`` (CUDA), or ``error``.
    """
    from bmvit.build import create_optimizer
    from bmvit.config import OptimConfig
    from bmvit.data.transforms import normalize_clips

    gflops = _forward_gflops(name, input_size)
    criterion = criterion_for_bench(80).to(device)
    out: dict[str, Any] = {"name": name, "input": list(input_size), "forward_gflops_per_clip": gflops, "runs": []}
    for variant in dict.fromkeys(v for v, _ in runs):
        torch.manual_seed(0)
        model = detector_for_bench(name, input_size, checkpointing=variant == "checkpointing").to(device).train()
        if variant == "compile":
            model.backbone.compile()
        optimizer = create_optimizer(model, OptimConfig())
        for batch in [b for v, b in runs if v == variant]:
            clips = _uint8_clips(batch, input_size, device)
            targets = [{k: v.to(device) for k, v in t.items()}
                       for t in random_targets(batch, 80, torch.Generator().manual_seed(batch))]

            def step() -> None:
                x = normalize_clips(clips.to(device, non_blocking=True), (0.45,) * 3, (0.225,) * 3)
                with _bf16_on(device):
                    outputs = model(x)
                criterion(outputs, targets)["loss"].backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            row: dict[str, Any] = {"variant": variant, "batch": batch}
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            try:
                timing = time_on_device(step, device, repeats, warmup=3 if variant == "compile" else 2)
            except torch.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                out["runs"].append({**row, "error": "out of memory"})
                continue
            seconds = timing.median_s
            row.update(timing.to_dict(), clips_per_s=batch / seconds,
                       mfu=3 * gflops * batch / seconds / 1e3 / matmul_tflops)
            if device.type == "cuda":
                row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            out["runs"].append(row)
        del model, optimizer
    return out


@torch.inference_mode()
def bench_device_infer(name: str, input_size: tuple[int, int, int], batches: Iterable[int], repeats: int,
                       matmul_tflops: float, device: torch.device) -> dict[str, Any]:
    """Key frames/s of the detector as ``bmvit predict`` runs it on ``device``: pinned uint8 clips
    normalised there, the forward under bf16 autocast (CUDA), the outputs copied to the host once per
    batch and post-processed there; at each batch size.

    Returns:
        ``name``, ``input`` and ``runs``: per batch size ``batch``, the timing's fields, ``keyframes_per_s``
        and ``mfu``.
    """
    from bmvit.data.transforms import normalize_clips
    from bmvit.postprocess import PostProcess, outputs_to_host

    gflops = _forward_gflops(name, input_size)
    model = detector_for_bench(name, input_size).to(device).eval()
    postprocess = PostProcess(0.3)
    out: dict[str, Any] = {"name": name, "input": list(input_size), "runs": []}
    for batch in batches:
        clips = _uint8_clips(batch, input_size, device)

        def forward() -> None:
            x = normalize_clips(clips.to(device, non_blocking=True), (0.45,) * 3, (0.225,) * 3)
            with _bf16_on(device):
                outputs = model(x)
            postprocess(outputs_to_host(outputs))

        timing = time_on_device(forward, device, repeats)
        seconds = timing.median_s
        out["runs"].append({"batch": batch, **timing.to_dict(), "keyframes_per_s": batch / seconds,
                            "mfu": gflops * batch / seconds / 1e3 / matmul_tflops})
    return out


def run_device_benchmarks(device: torch.device, repeats: int, quick: bool,
                          log: Callable[[str], None] = lambda _msg: None) -> dict[str, Any]:
    """The accelerator report: the matmul reference, training runs and inference runs of the paper's
    detector (``DEVICE_QUICK`` or ``DEVICE_FULL``).

    Returns:
        ``machine``, ``config``, ``results`` (``device_matmul``, ``device_train``, ``device_infer``),
        ``elapsed_s`` per measurement and ``rows`` for the table, as ``run_benchmarks`` does.
    """
    sizes = DEVICE_QUICK if quick else DEVICE_FULL
    report: dict[str, Any] = {"machine": machine_info(), "config": {"device": str(device), "repeats": repeats,
                                                                    "quick": quick, "threads": torch.get_num_threads()},
                              "results": {}, "elapsed_s": {}}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as bmvit train sets it
    results = report["results"]
    for name, fn in (
        ("device_matmul", lambda: bench_device_matmul(DeviceMatmulReference(sizes.matmul_n, device), repeats)),
        ("device_train", lambda: bench_device_train(sizes.detector, sizes.input_size, sizes.train_runs, repeats,
                                                    results["device_matmul"]["tflops"], device)),
        ("device_infer", lambda: bench_device_infer(sizes.detector, sizes.input_size, sizes.infer_batches, repeats,
                                                    results["device_matmul"]["tflops"], device)),
    ):
        log(f"running {name}")
        start = time.perf_counter()
        results[name] = fn()
        report["elapsed_s"][name] = time.perf_counter() - start
    report["rows"] = [asdict(row) for row in device_table_rows(results)]
    return report


__all__ = ["DEVICE_FULL", "DEVICE_QUICK", "DeviceMatmulReference", "DeviceSizes", "bench_device_infer",
           "bench_device_matmul", "bench_device_train", "run_device_benchmarks", "time_on_device"]
